"""Screens of the TUI: runs, one run (live), vanilla-vs-tuned comparison, and the recipe prompt."""
