"""One run: live loss curve, progress of the current stage, and the event log.

Fed either by following the run's ``events.jsonl`` (any run, finished or still being written by a job
started elsewhere) or by the events of the job this TUI started (read from the child's stdout)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from tui.screens.sources import EVENTS_FILE, EventTail
from tui.widgets.event_log import EventLog
from tui.widgets.loss_plot import LossPlot
from tui.widgets.stage_progress import StageProgress

if TYPE_CHECKING:
    from tui.app import JobState

POLL_S = 0.5


class RunScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("c", "compare", "Compare"),
    ]
    DEFAULT_CSS = """
    RunScreen #run-title { height: 1; padding: 0 1; background: $boost; }
    RunScreen StageProgress { padding: 0 1; margin-bottom: 1; }
    RunScreen LossPlot { height: 2fr; min-height: 8; }
    RunScreen EventLog { height: 1fr; min-height: 5; border-top: solid $primary; }
    """

    def __init__(self, run_id: str | None, run_dir: Path | None = None, *, job: JobState | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.run_dir = run_dir
        self.job = job
        # A job's events come from its stdout; following its log file too would show them twice.
        self.tail = EventTail(run_dir / EVENTS_FILE) if run_dir is not None and job is None else None
        self.events_seen = 0
        self.last_metric: dict[str, Any] = {}
        self._job_fed = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="run-title")
        yield StageProgress(id="stage")
        yield LossPlot(id="loss")
        yield EventLog(id="events")
        yield Footer()

    def on_mount(self) -> None:
        if self.tail is not None:
            self.poll_log()
            self.set_interval(POLL_S, self.poll_log)
        elif self.job is not None:
            self.sync_job()
        else:
            self.query_one(EventLog).write(f"no {EVENTS_FILE} for this run: its folder is not in the workspace")
        self._show_title()

    def poll_log(self) -> None:
        if self.tail is not None:
            events = self.tail.read_new()
            if events:
                self.feed(events)

    def sync_job(self) -> None:
        """Render the job's events not shown yet (the app calls this as they arrive)."""
        if self.job is None:
            return
        new = self.job.events[self._job_fed:]
        self._job_fed += len(new)
        if new:
            self.feed(new)
        else:
            self._show_title()

    def feed(self, events: list[dict[str, Any]]) -> None:
        plot = self.query_one(LossPlot)
        stage = self.query_one(StageProgress)
        log = self.query_one(EventLog)
        replot = False
        for event in events:
            self.events_seen += 1
            if self.run_id is None and event.get("run") not in (None, "-"):
                self.run_id = str(event["run"])
            if event.get("type") == "metric":
                replot = plot.add_metric(event) or replot
                self.last_metric = {**self.last_metric, **event}  # an eval-only event keeps the loss
            stage.apply(event)
            log.add(event)
        if replot:
            plot.replot()
        self._show_title()

    def _show_title(self) -> None:
        parts = [f"run [b]{escape(self.run_id or 'starting…')}[/b]"]
        m = self.last_metric
        if m:
            bits = [f"step {m.get('step')}"]
            for key, fmt in (("loss", ".4f"), ("eval_loss", ".4f"), ("epoch", ".2f"), ("lr", ".2e"),
                             ("tokens_per_s", ".0f"), ("gpu_reserved_gib", ".1f"), ("gpu_peak_gib", ".1f"),
                             ("eta_s", ".0f")):
                if isinstance(m.get(key), (int, float)):
                    bits.append(f"{key} {m[key]:{fmt}}")
            parts.append("  ".join(bits))
        if self.job is not None:
            parts.append(f"job {escape(self.job.recipe)}: {escape(self.job.describe())}")
        self.query_one("#run-title", Static).update("  ·  ".join(parts))

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_compare(self) -> None:
        if not self.run_id:
            self.notify("the run id is not known yet", severity="warning")
            return
        from tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(self.run_id))
