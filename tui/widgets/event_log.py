"""The log of a run's events, rendered by the CLI's own :class:`tui.render.EventPrinter` so the
terminal and the TUI say the same thing about the same event."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from tui.render import EventPrinter


class _LogConsole:
    """The part of a Rich console EventPrinter uses, writing into a RichLog."""

    def __init__(self, log: RichLog) -> None:
        self.log = log

    def print(self, text: Any = "", *args: Any, **kwargs: Any) -> None:
        self.log.write(text)


class EventLog(RichLog):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, markup=True, wrap=True, max_lines=5000, highlight=False)
        self.printer = EventPrinter(_LogConsole(self))  # type: ignore[arg-type]

    def add(self, event: dict[str, Any]) -> None:
        try:
            self.printer(event)
        except Exception as exc:  # a malformed event (wrong field types) must not break the screen
            self.write(Text(f"unreadable event {event!r}: {exc}", style="dim"))
