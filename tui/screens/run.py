"""One run's live view: the current stage's progress, the loss curves, the job's error until dismissed, and
the event log.

Fed either by following the run's ``events.jsonl`` (any run, finished or still being written by a job
started elsewhere) or by the events of the job this TUI follows. A stage skipped because its outputs exist
shows the curve of the training that made them, read from the run's log."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Static

from tui.screens.base import OllatuneScreen
from tui.screens.sources import EVENTS_FILE, EventTail
from tui.widgets.event_log import EventLog
from tui.widgets.loss_plot import LossPlot
from tui.widgets.stage_progress import StageProgress

if TYPE_CHECKING:
    from tui.app import JobState

POLL_S = 0.5
TITLE_METRICS = (("loss", "loss", ".4f"), ("eval_loss", "eval", ".4f"), ("lr", "lr", ".1e"),
                 ("tokens_per_s", "tok/s", ",.0f"), ("gpu_peak_gib", "GPU GiB", ".1f"), ("eta_s", "eta s", ".0f"))


def last_training_curve(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The metric events of the last training that ran to its end in a run's log (else of the last one
    that started): what a re-run that skips the finetune stage shows."""
    finished: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    for e in events:
        if e.get("stage") != "finetune":
            continue
        kind = e.get("type")
        if kind == "start":
            current = []
        elif kind == "metric":
            current.append(e)
        elif kind == "done" and not e.get("skipped") and current:
            finished = current
    return finished or current


class RunScreen(OllatuneScreen):
    HELP = ("A run's live view: the stage running now and its progress, training and evaluation loss by step, "
            "and every event of the job. A failed job's error and its next step stay here until you press d. "
            "x cancels the job, R runs it again (stages whose outputs exist are skipped and training continues "
            "from its last checkpoint), c opens the vanilla-vs-tuned comparison once the run is evaluated.")
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("x", "cancel", "Cancel"),
        Binding("R", "resume", "Resume", key_display="R"),
        Binding("d", "dismiss_error", "Dismiss error"),
        Binding("c", "compare", "Compare"),
    ]
    DEFAULT_CSS = """
    RunScreen #run-title { height: 2; padding: 0 1; }
    RunScreen #run-error { height: auto; max-height: 8; padding: 0 1; border: round $error; display: none; }
    RunScreen #run-error.shown { display: block; }
    RunScreen StageProgress { padding: 0 1; }
    RunScreen LossPlot { height: 2fr; min-height: 6; }
    RunScreen EventLog { height: 1fr; min-height: 4; border-top: solid $primary; }
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
        self.error_text: str | None = None
        self._job_fed = 0
        self._shown_state: str | None = None
        self._title_text = ""

    def compose_body(self) -> Iterable[Widget]:
        self.NAV = getattr(self.app, "current_mode", "")  # the tab this view was opened from stays lit
        yield Static(id="run-title")
        yield Static(id="run-error")
        yield StageProgress(id="stage")
        yield LossPlot(id="loss")
        yield EventLog(id="events")

    def on_mount(self) -> None:
        if self.tail is not None:
            self.poll_log()
            self.set_interval(POLL_S, self.poll_log)
        elif self.job is not None:
            self.sync_job()
        else:
            self.query_one(EventLog).write(f"no {EVENTS_FILE} for this run: its folder is not in the workspace")
        self._show_title()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        job = self.job
        if action == "dismiss_error":
            return self.error_text is not None
        if action == "cancel":
            return job is not None and job.running
        if action == "resume":
            return job is not None and not job.running
        return True

    def poll_log(self) -> None:
        if self.tail is not None:
            events = self.tail.read_new()
            if events:
                self.feed(events)

    def job_changed(self, job: JobState, event: dict[str, Any] | None) -> None:
        if job is self.job:
            self.sync_job()

    def sync_job(self) -> None:
        """Render the job's events not shown yet, and its state when it changed."""
        job = self.job
        if job is None:
            return
        new = job.events[self._job_fed:]
        self._job_fed += len(new)
        if new:
            self.feed(new)
        if job.state != self._shown_state:
            self._shown_state = job.state
            self._job_state_changed(job)
            self.refresh_bindings()
            self._show_title()

    def _job_state_changed(self, job: JobState) -> None:
        stage = self.query_one(StageProgress)
        plot = self.query_one(LossPlot)
        if job.state == "failed":
            self.error_text = job.failure_text()
            error = self.query_one("#run-error", Static)
            error.update(f"[b]failed[/b]  {escape(self.error_text)}\n[dim]d: dismiss  ·  R: run it again[/dim]")
            error.add_class("shown")
            if job.error is None:  # died without an error event: its exit code and stderr go in the log too
                self.query_one(EventLog).add({"stage": "job", "type": "error", "message": self.error_text})
            stage.finish("failed")
            plot.no_curve("the job failed before any loss was logged")
        elif job.state == "cancelled":
            stage.finish("cancelled")
            plot.no_curve("the job was cancelled before any loss was logged")
        elif job.state == "done":
            plot.no_curve("no training in this job")

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
            elif (event.get("stage"), event.get("type")) == ("finetune", "done") and event.get("skipped"):
                replot = self._load_previous_curve() or replot
            stage.apply(event)
            log.add(event)
        if replot:
            plot.replot()
        self._show_title()

    def _load_previous_curve(self) -> bool:
        """A skipped training: draw the curve of the training that made the adapter, from the run's log."""
        plot = self.query_one(LossPlot)
        if plot.losses or not self.run_id:
            return False
        settings = getattr(self.app, "settings", None)
        if settings is None:
            return False
        path = settings.runs_dir / self.run_id / EVENTS_FILE
        metrics = last_training_curve(EventTail(path).read_new())
        added = False
        for event in metrics:
            added = plot.add_metric(event) or added
            self.last_metric = {**self.last_metric, **event}
        if added:
            plot.note = "from the run's earlier training (the stage was skipped: its outputs exist)"
        return added

    def _show_title(self) -> None:
        parts = [f"run [b]{escape(self.run_id or 'starting...')}[/b]"]
        if self.job is not None and not self.job.running:  # before the metrics: never the part that is cut
            parts.append(escape(self.job.describe()))
        m = self.last_metric
        if m:
            bits = [f"step {m.get('step')}" + (f"/{m['total_steps']}" if m.get("total_steps") else "")]
            for key, label, fmt in TITLE_METRICS:
                value = m.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    bits.append(f"{label} {value:{fmt}}")
            parts.append("  ".join(bits))
        text = "  ·  ".join(parts)
        if text != self._title_text:  # unchanged on most events; its height is fixed, so no layout pass
            self._title_text = text
            self.query_one("#run-title", Static).update(text, layout=False)

    def action_cancel(self) -> None:
        self.app.action_cancel_job()  # type: ignore[attr-defined]

    def action_resume(self) -> None:
        self.app.action_resume_job()  # type: ignore[attr-defined]

    def action_dismiss_error(self) -> None:
        self.error_text = None
        self.query_one("#run-error", Static).remove_class("shown")
        self.refresh_bindings()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_compare(self) -> None:
        if not self.run_id:
            self.notify("the run id is not known yet", severity="warning")
            return
        from tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(self.run_id))
