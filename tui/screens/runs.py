"""The runs in the workspace: status, steps, final loss and evaluations; enter opens one."""

from __future__ import annotations

from rich.markup import escape as escape_rich
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from tui.screens.sources import RunSummary, load_runs

REFRESH_S = 5.0


class RunsLoaded(Message):
    def __init__(self, runs: list[RunSummary], error: str | None = None) -> None:
        super().__init__()
        self.runs = runs
        self.error = error


class RunsTable(DataTable):
    BINDINGS = [Binding("enter", "select_cursor", "Open run")]


STATUS_STYLE = {"done": "green", "failed": "red", "running": "yellow", "stopped": "magenta"}


class RunsScreen(Screen):
    BINDINGS = [
        Binding("c", "compare", "Compare"),
        Binding("r", "reload", "Refresh"),
    ]
    DEFAULT_CSS = """
    RunsScreen #runs-hint { height: auto; padding: 0 1; color: $text-muted; }
    RunsScreen RunsTable { height: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[RunSummary] = []
        self._last_error: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading runs…", id="runs-hint")
        yield RunsTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(RunsTable)
        for label, key in (("run", "run"), ("status", "status"), ("steps", "steps"), ("final loss", "loss"),
                           ("evals", "evals"), ("started", "started")):
            table.add_column(label, key=key)
        self.reload()
        self.set_interval(REFRESH_S, self.reload)

    def on_screen_resume(self) -> None:
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
        self.runs = message.runs
        table = self.query_one(RunsTable)
        selected = self.selected_run()
        table.clear()
        for r in message.runs:
            status = f"[{STATUS_STYLE[r.status]}]{r.status}[/]" if r.status in STATUS_STYLE else escape_rich(r.status)
            table.add_row(
                escape_rich(r.run_id), status, "-" if r.steps is None else str(r.steps),
                "-" if r.final_loss is None else f"{r.final_loss:.4f}", str(r.evals),
                r.started.astimezone().strftime("%Y-%m-%d %H:%M") if r.started else "-",
                key=r.run_id,
            )
        if selected is not None:
            index = next((i for i, r in enumerate(message.runs) if r.run_id == selected.run_id), 0)
            table.move_cursor(row=index)
        home = self.app.settings.home  # type: ignore[attr-defined]
        if message.runs:
            hint = (f"{len(message.runs)} runs in {escape(str(home))}  ·  enter: open  ·  c: compare"
                    "  ·  p: new pipeline run")
        else:
            hint = f"no runs in {escape(str(home))} yet: press p to run the pipeline (recipe demo-ko)"
        self.query_one("#runs-hint", Static).update(hint)

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
