"""Widgets of the TUI. They render plain data handed to them; none reads the store or starts a job."""
