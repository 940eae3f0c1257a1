"""The Evals screen: evaluate two models on a suite (``ollatune eval run SUITE -m BASELINE -m CANDIDATE``, as a
job), list past eval runs and the pairs of them that can be compared, and open a comparison.

What the screen reads is plain data (:func:`load_suites`, :func:`load_store`, :func:`comparable_pairs`), read
in a worker thread and tested without a terminal. Models are the store's registered models (suggested as you
type); any other name is passed to the CLI as typed, which says what to do when the runtime does not have it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal
from textual.events import Resize
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import DataTable, Input, Label, Select, Static

from tui.widgets.tables import fill_table, fit_cell
from tui.screens.base import OllatuneScreen
from tui.screens.compare import CompareScreen

MODEL_CELL = 28  # widest model name cell in the tables
RUN_CELL = 26  # widest pipeline run id cell
SUITE_CELL = 14
DATE_CELL = 16  # "2026-01-02 03:04"
MAX_PAIRS = 40
MAX_RUNS = 300


# ------------------------------------------------------------------------------------------------ data


@dataclass
class SuiteInfo:
    name: str
    task: str
    kind: str  # generate | pairwise | grade
    metrics: list[str]
    description: str
    judge: str | None  # the judge kind of a judged generate suite (ko-safety: refusal)

    @property
    def runnable(self) -> bool:
        """`ollatune eval run` asks models this suite's examples (pairwise/grade suites judge eval runs)."""
        return self.kind == "generate"


@dataclass
class EvalRunRow:
    id: int
    suite: str
    model: str
    role: str
    status: str
    examples: int
    started: datetime | None
    run_id: str | None  # the pipeline run it belongs to


@dataclass
class PairRow:
    """Two finished eval runs that can be compared: a pipeline run's vanilla and tuned, or two models
    evaluated on the same suite."""

    key: str
    label: str
    suite: str
    baseline: str  # model names
    candidate: str
    examples: int
    run_id: str | None = None  # compare by pipeline run
    refs: tuple[str, str] | None = None  # compare by eval run ids (baseline, candidate)


@dataclass
class StoreData:
    models: list[tuple[str, str]] = field(default_factory=list)  # (name, role), newest first, one per name
    runs: list[EvalRunRow] = field(default_factory=list)  # newest first
    pairs: list[PairRow] = field(default_factory=list)
    note: str | None = None  # why there is nothing (no database yet)


def load_suites() -> tuple[list[SuiteInfo], list[str]]:
    """The shipped suites (what `ollatune eval suites` lists), and an error line per suite that fails to load."""
    from evals.suites import load_suite, shipped_suites

    suites: list[SuiteInfo] = []
    errors: list[str] = []
    for name in shipped_suites():
        try:
            s = load_suite(name)
        except Exception as exc:  # one broken suite file must not hide the others
            errors.append(f"suite {name}: {exc}")
            continue
        suites.append(SuiteInfo(name=s.name, task=s.task, kind=s.kind, metrics=list(s.metrics),
                                description=s.description or "", judge=s.judge.kind if s.judge else None))
    return suites, errors


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)  # SQLite gives naive datetimes back
    return dt


def load_store(settings: Any) -> StoreData:
    """Registered models, eval runs (with their example counts) and the comparable pairs, from the store.
    Never creates a database: without one the result is empty with a note."""
    if not settings.db_path.exists():
        return StoreData(note="no evaluations yet: the store is created by the first run or evaluation")
    from sqlalchemy import func, select

    from workspace.store import EvalRun, Prediction, RegisteredModel, open_store, session_scope

    factory = open_store(settings.db_path)
    data = StoreData()
    with session_scope(factory) as s:
        seen: set[str] = set()
        for name, role in s.execute(select(RegisteredModel.name, RegisteredModel.role)
                                    .order_by(RegisteredModel.id.desc())):
            if name not in seen:
                seen.add(name)
                data.models.append((name, role))
        counts = (select(Prediction.eval_run_id, func.count(Prediction.id).label("n"))
                  .group_by(Prediction.eval_run_id).subquery())
        rows = s.execute(
            select(EvalRun.id, EvalRun.suite, RegisteredModel.name, RegisteredModel.role, EvalRun.status,
                   func.coalesce(counts.c.n, 0), EvalRun.started_at, EvalRun.run_id, EvalRun.model_id)
            .join(RegisteredModel, EvalRun.model_id == RegisteredModel.id)
            .outerjoin(counts, counts.c.eval_run_id == EvalRun.id)
            .order_by(EvalRun.id.desc()).limit(MAX_RUNS)
        ).all()
    model_ids: dict[int, int] = {}
    for rid, suite, model, role, status, n, started, run_id, model_id in rows:
        data.runs.append(EvalRunRow(rid, suite, model, role, status, int(n), _aware(started), run_id))
        model_ids[rid] = model_id
    data.pairs = comparable_pairs(data.runs, model_ids)
    return data


def comparable_pairs(runs: list[EvalRunRow], model_ids: dict[int, int] | None = None) -> list[PairRow]:
    """What can be compared, newest first: each pipeline run with finished vanilla and tuned evaluations,
    then, for every finished eval run, the newest earlier finished run of the same suite by another model
    (``eval run SUITE -m A -m B`` evaluates A then B, so its two runs pair up)."""
    done = [r for r in runs if r.status == "done"]
    model_of = model_ids or {}

    def model_key(r: EvalRunRow) -> Any:
        return model_of.get(r.id, r.model)

    pairs: list[PairRow] = []
    covered: set[frozenset[int]] = set()
    by_run: dict[str, dict[str, EvalRunRow]] = {}
    for r in sorted(done, key=lambda r: r.id):
        if r.run_id:
            by_run.setdefault(r.run_id, {})[r.role] = r  # the latest per role, as the comparison reads it
    order = sorted(by_run.items(), key=lambda kv: -max(r.id for r in kv[1].values()))
    for run_id, roles in order:
        if "vanilla" in roles and "tuned" in roles:
            b, c = roles["vanilla"], roles["tuned"]
            covered.add(frozenset((b.id, c.id)))
            pairs.append(PairRow(key=f"run:{run_id}", label=f"run {run_id}", suite=c.suite, baseline=b.model,
                                 candidate=c.model, examples=min(b.examples, c.examples), run_id=run_id))
    newest_first = sorted(done, key=lambda r: -r.id)
    for i, cand in enumerate(newest_first):
        base = next((r for r in newest_first[i + 1:] if r.suite == cand.suite and model_key(r) != model_key(cand)),
                    None)
        if base is None or frozenset((base.id, cand.id)) in covered:
            continue
        covered.add(frozenset((base.id, cand.id)))
        pairs.append(PairRow(key=f"ids:{base.id}:{cand.id}", label=f"#{base.id} vs #{cand.id}", suite=cand.suite,
                             baseline=base.model, candidate=cand.model, examples=min(base.examples, cand.examples),
                             refs=(str(base.id), str(cand.id))))
    return pairs[:MAX_PAIRS]


def eval_args(suite: str, baseline: str, candidate: str, judge: str | None = None) -> list[str]:
    """The CLI arguments (after ``ollatune``) that evaluate both models on the suite, baseline first."""
    args = ["eval", "run", suite, "-m", baseline, "-m", candidate]
    if judge:
        args += ["--judge", judge]
    return args


def _date(dt: datetime | None) -> str:
    return dt.astimezone().strftime("%Y-%m-%d %H:%M") if dt is not None else "-"


def _widest(values: list[str], cap: int, floor: int = 1) -> int:
    from rich.cells import cell_len

    return max(floor, min(cap, max([0, *(cell_len(v) for v in values)])))


@dataclass
class TableWidths:
    """Cells (padding excluded) of the cut columns of both tables, for a screen ``width`` wide."""

    pair_label: int
    pair_model: int
    suite: int
    run_model: int
    run_id: int


def table_widths(width: int, store: StoreData) -> TableWidths:
    """Fit both tables into ``width`` cells: fixed columns keep their size, model names and run ids share
    the rest (each cut by display width, never below a few cells)."""
    avail = max(40, width - 2)  # the vertical scrollbar
    suite = _widest([r.suite for r in store.runs] + [p.suite for p in store.pairs], SUITE_CELL, 5)
    label = _widest([p.label for p in store.pairs], RUN_CELL + 4, 7)
    # pairs: label, suite, baseline, candidate, examples (8): five columns of 2 cells padding
    label = min(label, max(12, (avail - 10 - suite - 8) // 3))
    pair_model = max(8, min(MODEL_CELL, (avail - 10 - label - suite - 8) // 2))
    # eval runs: #, suite, model, status (7), examples (8), date, run: seven columns of 2 cells padding
    ids = _widest([str(r.id) for r in store.runs], 8, 1)
    rest = avail - 14 - ids - suite - 7 - 8 - DATE_CELL
    run_id = max(6, min(RUN_CELL, rest - MODEL_CELL))  # the model name first: it tells the runs apart
    run_model = max(10, min(MODEL_CELL, rest - run_id))
    return TableWidths(label, pair_model, suite, run_model, run_id)


def fit_name(name: str, width: int) -> Text:
    """A model name in ``width`` cells, cut at the front (``…demo-ko-vanilla``): names share a namespace
    prefix (``ollatune/``) and differ at the end."""
    from rich.cells import cell_len

    if cell_len(name) <= width:
        return Text(name)
    tail = ""
    for ch in reversed(name):
        if cell_len(ch + tail) > width - 1:
            break
        tail = ch + tail
    return Text("\u2026" + tail)


# ------------------------------------------------------------------------------------------- messages


class EvalsLoaded(Message):
    def __init__(self, suites: list[SuiteInfo], suite_errors: list[str], store: StoreData,
                 store_error: str | None) -> None:
        super().__init__()
        self.suites = suites
        self.suite_errors = suite_errors
        self.store = store
        self.store_error = store_error


class PairsTable(DataTable):
    BINDINGS = [Binding("enter", "select_cursor", "Open")]


class EvalRunsTable(DataTable):
    BINDINGS = [
        Binding("enter", "select_cursor", "Open"),
        Binding("b", "screen.use_model('baseline')", "Baseline"),
        Binding("c", "screen.use_model('candidate')", "Candidate"),
    ]


STATUS_STYLE = {"done": "green", "failed": "red", "running": "yellow"}


class EvalsScreen(OllatuneScreen):
    NAV = "evals"
    HELP = """[b]Evals[/b]: evaluate two models on a suite, then compare them.

Choose a suite and type (or complete, right arrow) the baseline and candidate model names; the store's
registered models are suggested. [b]ctrl+r[/b] starts `ollatune eval run SUITE -m BASELINE -m CANDIDATE`
as a job (a judged suite such as ko-safety also needs a judge model). Answers are cached, so a repeated
evaluation only asks what is new.

[b]Comparisons[/b] lists pairs of finished eval runs: a pipeline run's vanilla and tuned, and two models
evaluated on the same suite. [b]enter[/b] opens one; in [b]Eval runs[/b] enter compares a run with its
pair, [b]b[/b] / [b]c[/b] take its model as the baseline / candidate. [b]ctrl+o[/b] compares the typed
models' newest finished evaluations of the chosen suite."""

    BINDINGS = [
        Binding("ctrl+r", "run_eval", "Run eval", priority=True),
        Binding("ctrl+o", "compare_models", "Compare", priority=True),
        Binding("r", "reload", "Reload"),
    ]
    DEFAULT_CSS = """
    EvalsScreen .form-row { height: 1; margin: 0 1; }
    EvalsScreen .form-row Label { width: auto; padding: 0 1 0 0; color: $text-muted; }
    EvalsScreen .form-row Input { width: 1fr; margin-right: 1; }
    EvalsScreen .form-row Select { width: 1fr; margin-right: 1; }
    EvalsScreen #evals-info { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    EvalsScreen .section { height: 1; padding: 0 1; background: $boost; text-style: bold; }
    EvalsScreen PairsTable { height: auto; max-height: 6; }
    EvalsScreen EvalRunsTable { height: 1fr; min-height: 3; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._loaded = False  # set before any Resize can arrive
        self._widths: TableWidths | None = None
        self.suites: list[SuiteInfo] = []
        self.store = StoreData()
        self.error: str | None = None
        self._errors: list[str] = []

    def compose_body(self):  # noqa: ANN201
        with Horizontal(classes="form-row"):
            yield Label("suite")
            yield Select([], prompt="suite", id="suite", compact=True)
            yield Label("judge")
            yield Input(placeholder="not needed", id="judge", compact=True, disabled=True)
        with Horizontal(classes="form-row"):
            yield Label("baseline")
            yield Input(placeholder="model name", id="baseline", compact=True)
            yield Label("candidate")
            yield Input(placeholder="model name", id="candidate", compact=True)
        yield Static(id="evals-info")
        yield Static("Comparisons", id="pairs-title", classes="section")
        yield PairsTable(id="pairs", cursor_type="row", zebra_stripes=True)
        yield Static("Eval runs", id="runs-title", classes="section")
        yield EvalRunsTable(id="eval-runs", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        super().on_mount()
        self.reload()

    def on_resize(self, event: Resize) -> None:
        if self._loaded and table_widths(self.size.width, self.store) != self._widths:
            self._fill_pairs()
            self._fill_runs()

    def on_screen_resume(self) -> None:
        self.reload()

    def action_reload(self) -> None:
        self.reload()

    # loading

    @work(thread=True, exclusive=True, group="evals", exit_on_error=False, description="load evals")
    def reload(self) -> None:
        suites: list[SuiteInfo] = []
        suite_errors: list[str] = []
        try:
            suites, suite_errors = load_suites()
        except Exception as exc:  # e.g. a dependency of the suite loader is missing
            suite_errors = [f"could not list the suites (evals/suites): {exc}"]
        settings = self.app.settings  # type: ignore[attr-defined]
        try:
            store, store_error = load_store(settings), None
        except Exception as exc:  # a locked or broken store must not take the screen down
            store = StoreData()
            store_error = (f"could not read eval runs from {settings.db_path}: {exc} "
                           "(next: check the file, or run `ollatune doctor`)")
        self.post_message(EvalsLoaded(suites, suite_errors, store, store_error))

    def on_evals_loaded(self, message: EvalsLoaded) -> None:
        self.suites = [s for s in message.suites if s.runnable]
        self.store = message.store
        self._errors = [*message.suite_errors, *([message.store_error] if message.store_error else [])]
        self.error = "; ".join(self._errors) or None
        select = self.query_one("#suite", Select)
        current = select.value
        select.set_options([(s.name, s.name) for s in self.suites])
        names = [s.name for s in self.suites]
        if current in names:
            select.value = current
        elif names:
            newest = next((r.suite for r in self.store.runs if r.suite in names), None)
            select.value = newest or names[0]
        model_names = [name for name, _ in self.store.models]
        for field_id in ("baseline", "candidate", "judge"):
            self.query_one(f"#{field_id}", Input).suggester = SuggestFromList(model_names, case_sensitive=False)
        if not self._loaded:
            self._prefill()
        self._fill_pairs()
        self._fill_runs()
        self._update_info()
        if not self._loaded:  # land where the next step is: a comparison to open, or the models to type
            self._loaded = True
            focused = self.focused
            if focused is None or isinstance(focused, (Select, DataTable)):
                if self.store.pairs:
                    self.query_one(PairsTable).focus()
                else:
                    self.query_one("#baseline" if not self._field("baseline") else "#candidate", Input).focus()

    def _prefill(self) -> None:
        """Empty model fields get the newest registered vanilla (baseline) and tuned (candidate) model."""
        for field_id, role in (("baseline", "vanilla"), ("candidate", "tuned")):
            box = self.query_one(f"#{field_id}", Input)
            if not box.value:
                name = next((n for n, r in self.store.models if r == role), None)
                if name:
                    box.value = name

    def _fill_pairs(self) -> None:
        w = self._widths = table_widths(self.size.width or 80, self.store)
        table = self.query_one(PairsTable)
        key = self._cursor_key(table)
        fill_table(table, [("compare", "label"), ("suite", "suite"), ("baseline", "baseline"),
                           ("candidate", "candidate"), ("examples", "examples")],
                   [(p.key, [fit_cell(p.label, w.pair_label), fit_cell(p.suite, w.suite),
                             fit_name(p.baseline, w.pair_model), fit_name(p.candidate, w.pair_model),
                             Text(str(p.examples), justify="right")]) for p in self.store.pairs])
        self._restore_cursor(table, key)
        self.query_one("#pairs-title", Static).update(
            f"Comparisons ({len(self.store.pairs)})" if self.store.pairs
            else "Comparisons: none yet (two finished eval runs of one suite make one)")

    def _fill_runs(self) -> None:
        w = self._widths = table_widths(self.size.width or 80, self.store)
        table = self.query_one(EvalRunsTable)
        key = self._cursor_key(table)
        fill_table(table, [("#", "id"), ("suite", "suite"), ("model", "model"), ("status", "status"),
                           ("examples", "examples"), ("date", "date"), ("run", "run")],
                   [(str(r.id), [Text(str(r.id), justify="right"), fit_cell(r.suite, w.suite),
                                 fit_name(r.model, w.run_model), Text(r.status, style=STATUS_STYLE.get(r.status, "")),
                                 Text(str(r.examples), justify="right"), Text(_date(r.started)),
                                 fit_cell(r.run_id or "-", w.run_id)]) for r in self.store.runs])
        self._restore_cursor(table, key)
        title = f"Eval runs ({len(self.store.runs)})" if self.store.runs else "Eval runs: none yet"
        self.query_one("#runs-title", Static).update(title)

    @staticmethod
    def _cursor_key(table: DataTable) -> str | None:
        if table.row_count == 0:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # the cursor is past the rows
            return None

    @staticmethod
    def _restore_cursor(table: DataTable, key: str | None) -> None:
        if key is None or table.row_count == 0:
            return
        try:
            table.move_cursor(row=table.get_row_index(key))
        except Exception:  # the row is gone
            table.move_cursor(row=0)

    def _suite(self) -> SuiteInfo | None:
        value = self.query_one("#suite", Select).value
        return next((s for s in self.suites if s.name == value), None)

    @on(Select.Changed, "#suite")
    def _suite_changed(self, event: Select.Changed) -> None:
        suite = self._suite()
        judge = self.query_one("#judge", Input)
        judge.disabled = not (suite is not None and suite.judge is not None)
        judge.placeholder = "judge model" if not judge.disabled else "not needed"
        self._update_info()

    def _update_info(self) -> None:
        text = Text()
        suite = self._suite()
        if suite is not None:
            text.append(f"{suite.task}: ", style="bold")
            text.append(suite.description or ", ".join(suite.metrics))
        elif not self.suites:
            text.append("no suites found (evals/suites)")
        if self.store.models:
            text.append("\nregistered: ", style="bold")
            text.append(", ".join(name for name, _ in self.store.models[:8]))
            if len(self.store.models) > 8:
                text.append(f" (+{len(self.store.models) - 8})")
        elif self.store.note:
            text.append("\n" + self.store.note)
        else:
            text.append("\nno registered models yet: the pipeline registers its vanilla and tuned models "
                        "(5 Models); any Ollama model name works too")
        job = getattr(self.app, "job", None)
        if job is not None and str(getattr(job, "label", "")).startswith("eval "):
            text.append("\n")
            text.append_text(self._job_line(job))
        for err in self._errors:
            text.append("\n" + err, style="red")
        self.query_one("#evals-info", Static).update(text)

    @staticmethod
    def _job_line(job: Any) -> Text:
        line = Text()
        line.append(f"{job.label}: ", style="bold")
        line.append(job.state)
        progress = next((e for e in reversed(job.events) if e.get("type") == "progress"), None)
        if job.running and progress is not None and progress.get("total"):
            line.append(f" \u00b7 {progress.get('done', 0)}/{progress['total']} {progress.get('unit', '')}".rstrip())
        error = getattr(job, "error", None)
        if job.state == "failed" and error:
            line.append(f" \u00b7 {error.get('message', '')}", style="red")
            if error.get("hint"):
                line.append(f" (next: {error['hint']})")
        return line

    # jobs

    def job_changed(self, job: Any, event: dict[str, Any] | None) -> None:
        if event is None and not job.running:
            self.reload()
        if event is None or event.get("type") in ("progress", "error", "done"):
            self._update_info()

    def _field(self, field_id: str) -> str:
        return self.query_one(f"#{field_id}", Input).value.strip()

    def action_run_eval(self) -> None:
        suite = self._suite()
        baseline, candidate = self._field("baseline"), self._field("candidate")
        if suite is None:
            self.notify("choose a suite first", severity="warning")
            return
        if not baseline or not candidate:
            self.notify("type a baseline and a candidate model name", severity="warning")
            self.query_one("#baseline" if not baseline else "#candidate", Input).focus()
            return
        if baseline == candidate:
            self.notify("the baseline and the candidate are the same model", severity="warning")
            return
        judge = self._field("judge") if suite.judge else None
        if suite.judge and not judge:
            self.notify(f"suite {suite.name} is judged: type a judge model (best: neither compared model)",
                        severity="warning")
            self.query_one("#judge", Input).focus()
            return
        self.app.start_job(f"eval {suite.name}", eval_args(suite.name, baseline, candidate, judge))  # type: ignore[attr-defined]
        self._update_info()

    def action_compare_models(self) -> None:
        suite = self._suite()
        baseline, candidate = self._field("baseline"), self._field("candidate")
        if not baseline or not candidate:
            self.notify("type a baseline and a candidate model name", severity="warning")
            return
        self.app.push_screen(CompareScreen(refs=(baseline, candidate), suite=suite.name if suite else None))

    def action_use_model(self, role: str) -> None:
        run = self._selected_run()
        if run is None:
            self.notify("select an eval run first", severity="warning")
            return
        self.query_one(f"#{role}", Input).value = run.model
        if run.suite in [s.name for s in self.suites]:
            self.query_one("#suite", Select).value = run.suite

    def _selected_run(self) -> EvalRunRow | None:
        key = self._cursor_key(self.query_one(EvalRunsTable))
        return next((r for r in self.store.runs if str(r.id) == key), None)

    @on(DataTable.RowSelected, "#pairs")
    def _pair_selected(self, event: DataTable.RowSelected) -> None:
        pair = next((p for p in self.store.pairs if p.key == event.row_key.value), None)
        if pair is not None:
            self._open(pair)

    @on(DataTable.RowSelected, "#eval-runs")
    def _run_selected(self, event: DataTable.RowSelected) -> None:
        rid = event.row_key.value
        pair = next((p for p in self.store.pairs if p.run_id is not None
                     and any(str(r.id) == rid and r.run_id == p.run_id and r.status == "done"
                             and r.role in ("vanilla", "tuned") for r in self.store.runs)), None)
        if pair is None:
            pair = next((p for p in self.store.pairs if p.refs is not None and rid in p.refs), None)
        if pair is None:
            run = next((r for r in self.store.runs if str(r.id) == rid), None)
            why = "it has not finished" if run is not None and run.status != "done" else "no other model was evaluated on its suite"
            self.notify(f"eval run #{rid} has nothing to compare with: {why}", severity="warning")
            return
        self._open(pair)

    def _open(self, pair: PairRow) -> None:
        if pair.run_id is not None:
            self.app.push_screen(CompareScreen(pair.run_id))
        else:
            self.app.push_screen(CompareScreen(refs=pair.refs, suite=pair.suite))
