"""What every top-level screen of the TUI shares: the navigation line (the seven screens, the job's state
on the right), the footer, and a hook that the app calls for each event of the running job.

A screen subclasses :class:`OllatuneScreen`, sets ``NAV`` to its entry in :data:`NAV_ITEMS` (or leaves it
empty for a screen pushed on top of one, such as a run's live view), writes ``HELP`` (shown by ``?``), and
yields its widgets from :meth:`compose_body`. Only characters that Windows Terminal's default font (Cascadia
Mono) has are used; see :data:`tui.glyphs.SAFE_RANGES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.events import Click
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Static

if TYPE_CHECKING:
    from tui.app import JobState

# (mode name, key, label): the app binds each key to switch to that screen.
NAV_ITEMS: tuple[tuple[str, str, str], ...] = (
    ("home", "1", "Home"),
    ("data", "2", "Data"),
    ("train", "3", "Train"),
    ("export", "4", "Export"),
    ("models", "5", "Models"),
    ("evals", "6", "Evals"),
    ("history", "7", "History"),
)

LABEL_CELLS = 12  # a job's label in the navigation line is cut (by display width) to this many cells
JOB_STYLE = {"starting": "yellow", "running": "yellow", "done": "green", "failed": "red", "cancelled": "magenta"}


def job_badge(job: JobState | None) -> Text:
    """The job's state in at most 24 cells, for the navigation line: ``j demo-ko running`` (j opens it);
    at 80 columns the seven tabs leave no more."""
    if job is None:
        return Text("no job", style="dim")
    state = "stopping" if job.running and job.cancel_requested else job.state
    label = Text(job.label, style="bold")
    label.truncate(LABEL_CELLS, overflow="ellipsis")
    return Text.assemble(("j ", "bold"), label, " ", (state, JOB_STYLE.get(job.state, "")))


class NavTabs(Static):
    """``1 Home  2 Data  ...``, the current screen highlighted; a click switches screens."""

    DEFAULT_CSS = "NavTabs { width: 1fr; height: 1; }"

    def __init__(self, current: str) -> None:
        super().__init__(id="nav-tabs")
        self.current = current
        self._spans: list[tuple[int, int, str]] = []

    def render(self) -> Text:
        text = Text()
        self._spans = []
        if self.size.width >= 70:  # at 80 columns the job's state needs the room
            text.append("ollatune ", style="bold")
        for mode, key, label in NAV_ITEMS:
            start = len(text)
            if mode == self.current:
                text.append(f"{key} {label}", style="reverse bold")
            else:
                text.append(key, style="bold")
                text.append(f" {label}", style="")
            self._spans.append((start, len(text), mode))
            text.append(" ")
        return text

    def on_click(self, event: Click) -> None:
        for start, end, mode in self._spans:
            if start <= event.x < end:
                self.app.switch_mode(mode)
                return


class NavBar(Horizontal):
    """The first line of every screen."""

    DEFAULT_CSS = """
    NavBar { height: 1; background: $boost; }
    NavBar > #nav-job { width: auto; padding: 0 0 0 1; }
    """

    def __init__(self, current: str) -> None:
        super().__init__(id="nav")
        self.current = current
        self._badge: str | None = None

    def compose(self) -> ComposeResult:
        yield NavTabs(self.current)
        yield Static(job_badge(getattr(self.app, "job", None)), id="nav-job")

    def show_job(self, job: JobState | None) -> None:
        badge = job_badge(job)
        if badge.plain != self._badge:  # called for every event of the job: most change nothing
            self._badge = badge.plain
            self.query_one("#nav-job", Static).content = badge  # (update() keeps the old auto width)


class OllatuneScreen(Screen):
    """A screen with the navigation line on top and the footer below its own widgets."""

    NAV: ClassVar[str] = ""  # the NAV_ITEMS mode this screen is; "" for screens pushed on top
    HELP: ClassVar[str] = ""  # what the screen is for and how to use it, shown by `?` (Rich markup)
    TITLE_TEXT: ClassVar[str] = ""  # the help's heading; the NAV_ITEMS label when empty

    def compose(self) -> ComposeResult:
        yield NavBar(self.NAV)
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> Iterable[Widget]:
        """The screen's own widgets, between the navigation line and the footer."""
        return ()

    def on_mount(self) -> None:
        add = getattr(self.app, "add_job_listener", None)
        if add is not None:
            add(self._on_job)

    def on_unmount(self) -> None:
        remove = getattr(self.app, "remove_job_listener", None)
        if remove is not None:
            remove(self._on_job)

    def _on_job(self, job: JobState, event: dict[str, Any] | None) -> None:
        if not self.is_mounted:
            return
        for bar in self.query(NavBar):
            bar.show_job(job)
        self.job_changed(job, event)

    def job_changed(self, job: JobState, event: dict[str, Any] | None) -> None:
        """Called for each event of the app's job (``event``) and each change of its state (``None``)."""
