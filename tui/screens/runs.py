"""History: every run of the workspace (status, steps, final loss, evaluations, start) and, for the highlighted
one, its lineage from the store: recipe, base model, backend, dataset, duration, artifacts, registered models
and eval runs. Enter opens a run's live view, c its vanilla-vs-tuned comparison."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from rich.console import Group, RenderableType
from rich.markup import escape as escape_rich
from rich.table import Table
from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.events import Resize
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Static

from tui.screens.base import OllatuneScreen
from tui.widgets.tables import fill_table
from tui.screens.sources import Lineage, RunSummary, load_lineage, load_runs

REFRESH_S = 5.0
WIDE = 140  # from this many columns the lineage stands beside the table instead of under it
STATUS_STYLE = {"done": "green", "failed": "red", "running": "yellow", "stopped": "magenta"}


class RunsLoaded(Message):
    def __init__(self, runs: list[RunSummary], error: str | None = None) -> None:
        super().__init__()
        self.runs = runs
        self.error = error


class LineageLoaded(Message):
    def __init__(self, run_id: str, lineage: Lineage | None, error: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.lineage = lineage
        self.error = error


class RunsTable(DataTable):
    BINDINGS = [Binding("enter", "select_cursor", "Open run")]


RUN_COLUMNS = [("run", "run"), ("status", "status"), ("steps", "steps"), ("final loss", "loss"), ("evals", "evals"),
               ("started", "started")]


def run_cells(r: RunSummary) -> list[str]:
    """A run's row (Rich markup): id, status, steps, final loss, finished evaluations, start."""
    status = f"[{STATUS_STYLE[r.status]}]{r.status}[/]" if r.status in STATUS_STYLE else escape_rich(r.status)
    return [escape_rich(r.run_id), status, "-" if r.steps is None else str(r.steps),
            "-" if r.final_loss is None else f"{r.final_loss:.4f}", str(r.evals), _when(r.started)]


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _when(dt: datetime | None) -> str:
    return dt.astimezone().strftime("%Y-%m-%d %H:%M") if dt else "-"


def lineage_renderable(lin: Lineage) -> RenderableType:
    """The lineage pane: one labelled row per fact, a line per artifact, model and eval run."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    status = Text(lin.status, style=STATUS_STYLE.get(lin.status, ""))
    grid.add_row("run", Text.assemble((lin.run_id, "bold"), "  ", status))
    grid.add_row("recipe", Text(lin.recipe or "-"))
    grid.add_row("base", Text(lin.base_model or "-"))
    grid.add_row("backend", Text(lin.backend or "-"))
    grid.add_row("dataset", Text(lin.dataset or "-"))
    training = "-" if lin.steps is None else f"{lin.steps} steps"
    if lin.final_loss is not None:
        training += f" · final loss {lin.final_loss:.4f}"
    grid.add_row("training", Text(training))
    if lin.batches:
        grid.add_row("batches", Text(lin.batches))
    if lin.auto_tune:
        grid.add_row("auto-tune", Text("\n".join(lin.auto_tune), overflow="ellipsis", no_wrap=True))
    took = human_duration(lin.duration_s)
    if lin.train_s is not None and lin.duration_s is not None and abs(lin.train_s - lin.duration_s) >= 1:
        took += f" (training {human_duration(lin.train_s)})"
    grid.add_row("time", Text(f"started {_when(lin.started)} · took {took}"))
    if lin.failed:
        grid.add_row(Text("error", style="bold red"), Text(lin.failed, style="red"))
        if lin.hint:
            grid.add_row("next", Text(lin.hint))
    arts = Text("\n".join(
        " ".join(x for x in (a.kind, a.quant or "", human_bytes(a.bytes),
                             f"{a.bits_per_weight:.2f} bpw" if a.bits_per_weight else "") if x)
        for a in lin.artifacts) or "none")
    grid.add_row("artifacts", arts)
    models = Text("\n".join(f"{m.name}  {m.role}" + (f" {m.quant}" if m.quant else "") + f"  {m.host}"
                            for m in lin.models) or "none registered")
    grid.add_row("models", models)
    evals = Text()
    for i, e in enumerate(lin.evals):
        if i:
            evals.append("\n")
        evals.append(f"#{e.eval_id} {e.suite}  {e.role}  ")
        evals.append(e.status, style=STATUS_STYLE.get(e.status, ""))
    grid.add_row("evals", evals if lin.evals else Text("none"))
    return Group(grid)


class HistoryScreen(OllatuneScreen):
    NAV = "history"
    HELP = ("Every run of the workspace, newest first, with its status, steps, final loss, finished evaluations "
            "and start. The pane shows the highlighted run's lineage from the store: recipe, base model, backend, "
            "dataset, duration, artifacts (quantization, size), registered models and eval runs. "
            "[b]enter[/b] opens the run's live view (loss curve, events), [b]c[/b] the vanilla-vs-tuned comparison.")
    BINDINGS = [
        Binding("c", "compare", "Compare"),
        Binding("r", "reload", "Refresh"),
    ]
    DEFAULT_CSS = """
    HistoryScreen #runs-hint { height: 1; padding: 0 1; color: $text-muted; }
    HistoryScreen #history-body { layout: vertical; height: 1fr; }
    HistoryScreen RunsTable { height: 1fr; min-height: 5; }
    HistoryScreen #lineage { height: 45%; min-height: 4; border-top: solid $primary; border-title-color: $text-muted;
                             padding: 0 1; }
    HistoryScreen.-wide #history-body { layout: horizontal; }
    HistoryScreen.-wide RunsTable { width: 90; height: 1fr; }
    HistoryScreen.-wide #lineage { width: 1fr; height: 1fr; border-top: none; border-left: solid $primary; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[RunSummary] = []
        self.lineage: Lineage | None = None
        self.lineage_error: str | None = None
        self._last_error: str | None = None

    def compose_body(self) -> Iterable[Widget]:
        yield Static("loading runs…", id="runs-hint")
        with Container(id="history-body"):
            yield RunsTable(id="runs", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="lineage"):
                yield Static("", id="lineage-text")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#lineage", VerticalScroll).border_title = "lineage"
        fill_table(self.query_one(RunsTable), RUN_COLUMNS, [])
        self.reload()
        self.set_interval(REFRESH_S, self.reload)

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width >= WIDE, "-wide")

    def on_screen_resume(self) -> None:
        self.reload()

    def job_changed(self, job, event) -> None:  # noqa: ANN001 - tui.jobs.JobState, an event dict or None
        if event is None and not job.running:
            self.reload()

    def action_reload(self) -> None:
        self.reload()

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False, description="load runs")
    def reload(self) -> None:
        try:
            runs = load_runs(self.app.settings)  # type: ignore[attr-defined]
        except Exception as exc:  # a locked or broken store must not take the screen down
            self.post_message(RunsLoaded([], f"could not read runs: {exc}"))
            return
        self.post_message(RunsLoaded(runs))

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        if message.error and message.error != self._last_error:
            self.notify(message.error, title="runs", severity="error", markup=False)
        self._last_error = message.error
        if message.error:
            return
        if message.runs == self.runs and self.runs:
            self._load_selected()  # the table stays as it is (cursor, scroll); the lineage may have moved on
            return
        table = self.query_one(RunsTable)
        selected = self.selected_run()
        self.runs = message.runs
        fill_table(table, RUN_COLUMNS, [(r.run_id, run_cells(r)) for r in message.runs])
        if selected is not None:
            index = next((i for i, r in enumerate(message.runs) if r.run_id == selected.run_id), 0)
            table.move_cursor(row=index)
        if message.runs:
            hint = f"{len(message.runs)} runs, newest first  ·  enter: open  ·  c: compare vanilla and tuned"
        else:
            hint = "no runs in this workspace yet: press 3 to train one (recipe demo-ko)"
            self.lineage = None
            self.query_one("#lineage-text", Static).update("")
        self.query_one("#runs-hint", Static).update(hint)
        self._load_selected()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._load_selected()

    def _load_selected(self) -> None:
        run = self.selected_run()
        if run is not None:
            self.load_lineage(run.run_id)

    @work(thread=True, exclusive=True, group="lineage", exit_on_error=False, description="load a run's lineage")
    def load_lineage(self, run_id: str) -> None:
        settings = self.app.settings  # type: ignore[attr-defined]
        try:
            lineage = load_lineage(settings, run_id)
        except LookupError as exc:
            self.post_message(LineageLoaded(run_id, None, str(exc)))
            return
        except Exception as exc:  # a locked or broken store must not take the screen down
            self.post_message(LineageLoaded(run_id, None, f"could not read {settings.db_path}: {exc}; "
                                                          "check the file, or run `ollatune runs`"))
            return
        self.post_message(LineageLoaded(run_id, lineage))

    def on_lineage_loaded(self, message: LineageLoaded) -> None:
        run = self.selected_run()
        if run is None or run.run_id != message.run_id:
            return  # the cursor moved on meanwhile
        self.lineage, self.lineage_error = message.lineage, message.error
        pane = self.query_one("#lineage-text", Static)
        if message.lineage is None:
            pane.update(Text(message.error or "no lineage", style="red"))
        else:
            pane.update(lineage_renderable(message.lineage))

    def selected_run(self) -> RunSummary | None:
        table = self.query_one(RunsTable)
        if not self.runs or table.row_count == 0:
            return None
        row = table.cursor_row
        return self.runs[row] if 0 <= row < len(self.runs) else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        run_id = event.row_key.value
        run = next((r for r in self.runs if r.run_id == run_id), None)
        if run is None:
            return
        from tui.screens.run import RunScreen

        self.app.push_screen(RunScreen(run.run_id, run.run_dir))

    def action_compare(self) -> None:
        run = self.selected_run()
        if run is None:
            self.notify("no run selected", severity="warning")
            return
        from tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(run.run_id))
