"""The Textual TUI and the Typer CLI under it. Renders events; heavy work runs in stage functions or
child processes, imported lazily so that ``ollatune --help`` stays fast."""
