"""Baseline vs candidate: metric by metric (means, delta, confidence interval, wins), then example by example
with the two answers side by side and the pairwise judge's reason, from the store.

A comparison is either a pipeline run's vanilla-vs-tuned evaluation (``CompareScreen(run_id)``) or any two
eval runs or models (``CompareScreen(refs=("12", "14"))``: eval run ids or model names, as
``ollatune eval compare A B`` takes them). The examples can be narrowed to the ones where the candidate is
worse on the selected metric and sorted by that metric's delta; ``n`` / ``p`` (or the arrows) step through
them. Every cell is cut by display width, so Korean text (two columns per character) never pushes a column
off screen.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.events import Resize
from textual.message import Message
from textual.widgets import DataTable, Static

from tui.widgets.tables import fill_table, fit_cell
from tui.screens.base import OllatuneScreen

EPS = 1e-9
CI_SEED = 0
CI_RESAMPLES = 2000
CI_LEVEL = 0.95
SCORE_W = 7  # cells of a score column ("+1.000")
ID_MAX = 14  # widest example id column
WIDE_TEXT = 60  # cells for the table's text columns from which the two outputs get columns of their own
SCROLLBAR = 2  # cells a table's vertical scrollbar may take

SORTS = ("suite order", "worst first", "best first")


# ------------------------------------------------------------------------------------ pure functions


def paired_bootstrap_ci(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    seed: int = CI_SEED,
    resamples: int = CI_RESAMPLES,
    level: float = CI_LEVEL,
) -> tuple[float, float] | None:
    """Percentile interval of the mean per-example difference ``candidate - baseline``.

    The examples are resampled with replacement, pairs kept together. When every possible resample fits in
    ``resamples`` (n**n of them, so only for a handful of examples) they are all enumerated and the interval
    is exact; otherwise ``resamples`` resamples are drawn with a ``random.Random(seed)``, so the same scores
    always give the same interval. The percentile is the empirical quantile (the smallest mean whose
    cumulative share reaches it). None under two pairs: one difference says nothing about the spread."""
    if len(baseline) != len(candidate):
        raise ValueError(f"paired scores: {len(baseline)} baseline values and {len(candidate)} candidate values")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    diffs = [float(c) - float(b) for b, c in zip(baseline, candidate)]
    n = len(diffs)
    if n < 2:
        return None
    if n**n <= resamples:
        means = sorted(sum(draw) / n for draw in itertools.product(diffs, repeat=n))
    else:
        rng = random.Random(seed)
        means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1.0 - level) / 2.0

    def quantile(q: float) -> float:
        index = min(len(means) - 1, max(0, math.ceil(q * len(means) - EPS) - 1))
        return means[index]

    return quantile(tail), quantile(1.0 - tail)


def direction(hib: bool | None) -> int:
    """+1 when higher is better, -1 when lower is, 0 without a direction."""
    return 0 if hib is None else (1 if hib else -1)


def example_delta(ex: Any, metric: str, baseline: str, candidate: str) -> float | None:
    """candidate - baseline of one example on ``metric``; None when either has no score."""
    b = ex.scores.get(baseline, {}).get(metric)
    c = ex.scores.get(candidate, {}).get(metric)
    if b is None or c is None:
        return None
    return c - b


def is_regression(ex: Any, metric: str, baseline: str, candidate: str, hib: bool | None) -> bool:
    """The candidate did worse than the baseline on this example, in the metric's direction."""
    d = example_delta(ex, metric, baseline, candidate)
    sign = direction(hib)
    return d is not None and sign != 0 and d * sign < -EPS


def select_examples(
    examples: Sequence[Any], metric: str | None, baseline: str | None, candidate: str | None,
    hib: bool | None, *, regressions_only: bool = False, sort: str = SORTS[0],
) -> list[Any]:
    """The examples to list: all, or the regressions on ``metric``; in the suite's order, or by the metric's
    delta in its direction (worst first or best first; examples without a delta last, in suite order)."""
    if metric is None or baseline is None or candidate is None:
        return list(examples)
    rows = list(examples)
    if regressions_only:
        rows = [ex for ex in rows if is_regression(ex, metric, baseline, candidate, hib)]
    if sort == SORTS[0]:
        return rows
    sign = direction(hib) or 1
    if sort == SORTS[2]:
        sign = -sign
    with_delta = [(example_delta(ex, metric, baseline, candidate), i, ex) for i, ex in enumerate(rows)]
    known = sorted(((d * sign, i, ex) for d, i, ex in with_delta if d is not None), key=lambda t: (t[0], t[1]))
    missing = [ex for d, _, ex in with_delta if d is None]
    return [ex for _, _, ex in known] + missing


@dataclass
class ExampleColumns:
    """Widths (cells, padding excluded) of the examples table for a given table width."""

    id: int
    question: int
    outputs: int | None  # None: too narrow for output columns (the side-by-side view shows them)


def example_columns(table_width: int, id_width: int, padding: int = 1) -> ExampleColumns:
    """Split ``table_width`` between the id, the question (and both outputs when there is room) and three
    score columns (baseline, candidate, delta of the selected metric)."""
    id_w = max(2, min(ID_MAX, id_width))
    fixed = 3 * (SCORE_W + 2 * padding) + id_w + 2 * padding + SCROLLBAR
    text = max(6, table_width - fixed)
    if text - 3 * 2 * padding >= WIDE_TEXT:
        budget = text - 3 * 2 * padding
        out = budget * 3 // 10
        return ExampleColumns(id_w, budget - 2 * out, out)
    return ExampleColumns(id_w, max(4, text - 2 * padding), None)


def _num(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _tone(delta: float | None, hib: bool | None) -> str:
    sign = direction(hib)
    if delta is None or not sign or abs(delta) <= EPS:
        return ""
    return "green" if delta * sign > 0 else "red"


def _arrow(hib: bool | None) -> str:
    return "-" if hib is None else ("\u2191" if hib else "\u2193")


def _head(label: str, width: int) -> Text:
    return fit_cell(label, width)


# ------------------------------------------------------------------------------------------- loading


class ComparisonLoaded(Message):
    def __init__(self, comparison: Any, cis: dict[str, tuple[float, float] | None]) -> None:
        super().__init__()
        self.comparison = comparison  # evals.report.Comparison
        self.cis = cis  # metric -> interval, for metrics the comparison has none for


class ComparisonFailed(Message):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__()
        self.message = message
        self.hint = hint


def fallback_cis(c: Any) -> dict[str, tuple[float, float] | None]:
    """Intervals computed here for the metrics whose row carries none (from the per-example scores)."""
    out: dict[str, tuple[float, float] | None] = {}
    if not (c.baseline and c.candidate):
        return out
    for m in c.metrics:
        if getattr(m, "ci_low", None) is not None and getattr(m, "ci_high", None) is not None:
            continue
        pairs = [(ex.scores[c.baseline][m.metric], ex.scores[c.candidate][m.metric]) for ex in c.examples
                 if m.metric in ex.scores.get(c.baseline, {}) and m.metric in ex.scores.get(c.candidate, {})]
        out[m.metric] = paired_bootstrap_ci([b for b, _ in pairs], [v for _, v in pairs])
    return out


def read_comparison(settings: Any, run_id: str | None, refs: tuple[str, str] | None, suite: str | None) -> Any:
    """The comparison to show: a pipeline run's latest finished evaluations, or two eval runs / models."""
    if not settings.db_path.exists():
        raise LookupError(f"no database at {settings.db_path}")
    if run_id is not None:
        from tui.screens.sources import load_comparison

        return load_comparison(settings, run_id)
    from evals.report import compare_refs
    from workspace.store import open_store

    assert refs is not None
    return compare_refs(open_store(settings.db_path), refs[0], refs[1], suite=suite)


# -------------------------------------------------------------------------------------------- widgets


class MetricsTable(DataTable):
    """One row per metric; the highlighted row is the metric the examples are filtered and sorted by."""


class ExamplesTable(DataTable):
    """The (filtered, sorted) examples; the highlighted one is shown side by side below."""


class ExampleView(VerticalScroll):
    """The highlighted example: question, reference, both answers side by side, the judge; z zooms it."""

    ALLOW_MAXIMIZE = True


class CompareScreen(OllatuneScreen):
    NAV = ""
    AUTO_FOCUS = "#examples"  # the arrows step through the examples from the start
    HELP = """[b]Comparison[/b]: baseline vs candidate on the same examples.

The metric table gives each model's mean, the delta (candidate - baseline) with a 95% paired bootstrap
interval, and how many examples the candidate won, tied and lost. Green: better for the candidate in the
metric's direction (arrow: higher or lower is better); red: worse.

The highlighted metric (up/down in the metric table, or [b]m[/b]) drives the examples below: [b]f[/b] shows
only the examples where the candidate is worse on it, [b]s[/b] sorts by its delta. [b]n[/b] / [b]p[/b] (or
the arrows in the examples table) step through the examples; the two answers are shown side by side with
the pairwise judge's verdict and reason when a judge compared these runs. [b]z[/b] shows that view alone
(arrows scroll it, n / p still step); esc or z returns to the tables."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("n", "step(1)", "Next"),
        Binding("p", "step(-1)", "Prev"),
        Binding("m", "next_metric", "Metric"),
        Binding("f", "toggle_regressions", "Regressions"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("z", "zoom", "Zoom"),
        Binding("r", "reload", "Reload"),
    ]
    DEFAULT_CSS = """
    CompareScreen #compare-title { height: auto; max-height: 4; padding: 0 1; }
    CompareScreen MetricsTable { height: auto; max-height: 8; }
    CompareScreen #compare-filter { height: 1; padding: 0 1; background: $boost; }
    CompareScreen ExamplesTable { height: 1fr; min-height: 4; }
    CompareScreen #example-scroll { height: 2fr; min-height: 6; border-top: solid $primary; }
    CompareScreen #example-head { height: auto; padding: 0 1; }
    CompareScreen #example-answers { height: auto; }
    CompareScreen .answer { width: 1fr; height: auto; padding: 0 1; }
    CompareScreen #answer-baseline { border-right: vkey $primary-muted; }
    CompareScreen #example-judge { height: auto; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, run_id: str | None = None, *, refs: tuple[str, str] | None = None,
                 suite: str | None = None) -> None:
        if (run_id is None) == (refs is None):
            raise ValueError("CompareScreen needs a run id or two eval run refs, not both")
        super().__init__()
        self.run_id = run_id
        self.refs = refs
        self.suite = suite
        self.comparison: Any = None
        self.cis: dict[str, tuple[float, float] | None] = {}
        self.error: str | None = None
        self.metric: str | None = None
        self.regressions_only = False
        self.sort = SORTS[0]
        self.shown: list[Any] = []  # the examples listed, in table order
        self._columns: ExampleColumns | None = None

    @property
    def label(self) -> str:
        if self.run_id is not None:
            return f"run {self.run_id}"
        a, b = self.refs or ("?", "?")
        return f"{'#' + a if a.isdigit() else a} vs {'#' + b if b.isdigit() else b}"

    def compose_body(self):  # noqa: ANN201
        yield Static(Text(f"comparing {self.label}\u2026"), id="compare-title")
        yield MetricsTable(id="metrics", cursor_type="row", zebra_stripes=True)
        yield Static(id="compare-filter")
        yield ExamplesTable(id="examples", cursor_type="row", zebra_stripes=True)
        with ExampleView(id="example-scroll"):
            yield Static(id="example-head")
            with Horizontal(id="example-answers"):
                yield Static(id="answer-baseline", classes="answer")
                yield Static(id="answer-candidate", classes="answer")
            yield Static(id="example-judge")

    def on_mount(self) -> None:
        super().on_mount()
        self.load()

    # loading

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False, description="load comparison")
    def load(self) -> None:
        try:
            comparison = read_comparison(self.app.settings, self.run_id, self.refs, self.suite)  # type: ignore[attr-defined]
            cis = fallback_cis(comparison)
        except Exception as exc:  # a missing eval or a store error is shown, not raised
            hint = getattr(exc, "hint", None) or (
                "run the pipeline to its evals stage (3 Train) or an evaluation (6 Evals), then press r")
            self.post_message(ComparisonFailed(str(exc) or exc.__class__.__name__, str(hint)))
            return
        self.post_message(ComparisonLoaded(comparison, cis))

    def action_reload(self) -> None:
        self.load()

    def action_back(self) -> None:
        if self.maximized is not None:
            self.minimize()
            return
        self.app.pop_screen()

    def action_zoom(self) -> None:
        """The example view alone (question, both answers, the judge), or back to the tables."""
        if self.maximized is not None:
            self.minimize()
            self.query_one(ExamplesTable).focus()
        else:
            view = self.query_one(ExampleView)
            self.maximize(view, container=False)
            view.focus()

    def on_comparison_failed(self, message: ComparisonFailed) -> None:
        self.error = message.message
        self.comparison = None
        title = Text.assemble((f"{self.label}: ", "bold"), message.message, "\n", ("next: " + message.hint, "dim"))
        self.query_one("#compare-title", Static).update(title)
        self.query_one(MetricsTable).clear(columns=True)
        self.query_one(ExamplesTable).clear(columns=True)
        self.shown = []
        self._show_example(None)
        self._update_filter_line()

    def on_comparison_loaded(self, message: ComparisonLoaded) -> None:
        c = self.comparison = message.comparison
        self.cis = message.cis
        self.error = None
        names = [m.metric for m in c.metrics]
        if self.metric not in names:
            primary = getattr(c, "primary_metric", None)
            self.metric = primary if primary in names else (names[0] if names else None)
        self.query_one("#compare-title", Static).update(self._title(c))
        self._fill_metrics()
        self._fill_examples()

    def _title(self, c: Any) -> Text:
        """Two lines: what is compared (suite, examples), then baseline vs candidate with their eval runs."""
        text = Text()
        text.append(self.label, style="bold")
        text.append(f"  \u00b7  suite {c.suite or '?'}  \u00b7  {len(c.examples)} examples\n")
        sides = [r for r in (c.baseline, c.candidate) if r is not None] or list(c.roles)
        for i, role in enumerate(sides):
            if i:
                text.append("  vs  ", style="dim")
            info = c.runs[role]
            text.append(role, style="bold")
            if info.model != role:
                text.append(f" = {info.model}")
            text.append(f" (#{info.eval_run_id})", style="dim")
        for w in getattr(c, "warnings", []):
            text.append("\nwarning: ", style="yellow")
            text.append(w)
        for n in getattr(c, "notes", []):
            text.append(f"\nnote: {n}", style="dim")
        return text

    # metric table

    def _metric_row(self, name: str) -> Any:
        c = self.comparison
        return next((m for m in c.metrics if m.metric == name), None) if c is not None else None

    def metric_ci(self, m: Any) -> tuple[float, float] | None:
        low, high = getattr(m, "ci_low", None), getattr(m, "ci_high", None)
        if low is not None and high is not None:
            return low, high
        return self.cis.get(m.metric)

    def _fill_metrics(self) -> None:
        c = self.comparison
        table = self.query_one(MetricsTable)
        pair = bool(c.baseline and c.candidate)
        roles = [c.baseline, c.candidate] if pair else list(c.roles)
        width = max([11, *(cell_len(m.metric) for m in c.metrics)])
        columns: list[tuple[Any, str]] = [(_head("metric", width), "metric"), (" ", "dir")]
        columns += [(_head(role, SCORE_W), f"mean:{role}") for role in roles]
        if pair:
            columns += [("delta", "delta"), (f"{round(CI_LEVEL * 100)}% CI", "ci"), (_head("won/tie/lost", 12), "wtl")]
        rows = []
        for m in c.metrics:
            hib = getattr(m, "higher_is_better", True)
            cells: list[Any] = [fit_cell(m.metric, width), Text(_arrow(hib), style="dim")]
            cells += [Text(_num(m.values.get(r)), justify="right") for r in roles]
            if pair:
                ci = self.metric_ci(m)
                cells.append(Text(_num(m.delta, signed=True), style=_tone(m.delta, hib), justify="right"))
                cells.append(Text("-" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"))
                wins = getattr(m, "wins", 0)
                cells.append(Text("-" if hib is None else f"{wins}/{getattr(m, 'ties', 0)}/{getattr(m, 'losses', 0)}"))
            rows.append((m.metric, cells))
        fill_table(table, columns, rows)
        if self.metric is not None:
            table.move_cursor(row=table.get_row_index(self.metric))

    @on(DataTable.RowHighlighted, "#metrics")
    def _metric_highlighted(self, event: DataTable.RowHighlighted) -> None:
        name = event.row_key.value if event.row_key is not None else None
        if name is not None and name != self.metric and self._metric_row(name) is not None:
            self.metric = name
            self._fill_examples()

    def action_next_metric(self) -> None:
        c = self.comparison
        if c is None or not c.metrics:
            return
        names = [m.metric for m in c.metrics]
        index = (names.index(self.metric) + 1) % len(names) if self.metric in names else 0
        self.metric = names[index]
        self.query_one(MetricsTable).move_cursor(row=index)
        self._fill_examples()

    # examples

    def action_toggle_regressions(self) -> None:
        self.regressions_only = not self.regressions_only
        self._fill_examples()

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self._fill_examples()

    def action_step(self, by: int) -> None:
        table = self.query_one(ExamplesTable)
        if not self.shown:
            return
        row = min(len(self.shown) - 1, max(0, table.cursor_row + by))
        table.move_cursor(row=row)
        self._show_example(row)

    def on_resize(self, event: Resize) -> None:
        if self.comparison is not None:
            columns = example_columns(self.size.width, self._id_width())
            if columns != self._columns:
                self._fill_examples()

    def _id_width(self) -> int:
        c = self.comparison
        return max([2, *(cell_len(ex.example_id) for ex in c.examples)]) if c is not None else 2

    def _hib(self) -> bool | None:
        m = self._metric_row(self.metric) if self.metric else None
        return getattr(m, "higher_is_better", True) if m is not None else True

    def _fill_examples(self) -> None:
        c = self.comparison
        if c is None:
            return
        table = self.query_one(ExamplesTable)
        current = self.shown[table.cursor_row].example_id if self.shown and 0 <= table.cursor_row < len(self.shown) else None
        hib = self._hib()
        self.shown = select_examples(c.examples, self.metric, c.baseline, c.candidate, hib,
                                     regressions_only=self.regressions_only, sort=self.sort)
        cols = self._columns = example_columns(self.size.width or 80, self._id_width(),
                                               padding=table.cell_padding)
        roles = [c.baseline, c.candidate] if c.baseline and c.candidate else list(c.roles[:2])
        table.clear(columns=True)
        table.add_column(_head("id", cols.id), width=cols.id, key="id")
        table.add_column(_head("question", cols.question), width=cols.question, key="question")
        if cols.outputs is not None:
            for role in roles:
                table.add_column(_head(f"{role} output", cols.outputs), width=cols.outputs, key=f"out:{role}")
        for role in roles:
            table.add_column(_head(role, SCORE_W), width=SCORE_W, key=f"score:{role}")
        table.add_column(_head("delta", SCORE_W), width=SCORE_W, key="delta")
        for ex in self.shown:
            cells: list[Any] = [fit_cell(ex.example_id, cols.id), fit_cell(ex.question, cols.question)]
            if cols.outputs is not None:
                cells += [fit_cell(ex.outputs.get(r), cols.outputs) for r in roles]
            for role in roles:
                cells.append(Text(_num(ex.scores.get(role, {}).get(self.metric)), justify="right"))
            d = example_delta(ex, self.metric, roles[0], roles[1]) if self.metric and len(roles) == 2 else None
            cells.append(Text(_num(d, signed=True), style=_tone(d, hib), justify="right"))
            table.add_row(*cells, key=ex.example_id)
        ids = [ex.example_id for ex in self.shown]
        row = ids.index(current) if current in ids else 0
        if self.shown:
            table.move_cursor(row=row)
            self._show_example(row)
        else:
            self._show_example(None)
        self._update_filter_line()

    @on(DataTable.RowHighlighted, "#examples")
    def _example_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_example(event.cursor_row)

    def _update_filter_line(self) -> None:
        line = Text()
        c = self.comparison
        if c is None or self.metric is None:
            self.query_one("#compare-filter", Static).update(line)
            return
        hib = self._hib()
        line.append(self.metric, style="bold")
        line.append(f" {_arrow(hib)}  ")
        what = "regressions" if self.regressions_only else "all"
        line.append(f"{what}: {len(self.shown)} of {len(c.examples)}")
        if self.regressions_only and hib is None:
            line.append(f" ({self.metric} has no better direction)", style="dim")
        line.append(f"  \u00b7  sort: {self.sort}")
        table = self.query_one(ExamplesTable)
        if self.shown:
            line.append(f"  \u00b7  example {table.cursor_row + 1}/{len(self.shown)}")
        self.query_one("#compare-filter", Static).update(line)

    def _show_example(self, index: int | None) -> None:
        head = self.query_one("#example-head", Static)
        sides = self.query_one("#answer-baseline", Static), self.query_one("#answer-candidate", Static)
        judge = self.query_one("#example-judge", Static)
        c = self.comparison
        if c is None or index is None or not (0 <= index < len(self.shown)):
            empty = ""
            if c is not None and self.regressions_only and self.metric:
                empty = f"no example where {c.candidate} is worse than {c.baseline} on {self.metric}"
            head.update(Text(empty, style="dim"))
            for side in sides:
                side.update("")
            judge.update("")
            self._update_filter_line()
            return
        ex = self.shown[index]
        roles = [c.baseline, c.candidate] if c.baseline and c.candidate else list(c.roles[:2])
        text = Text()
        text.append(ex.example_id, style="bold")
        text.append(f"  ({index + 1} of {len(self.shown)})\n", style="dim")
        text.append("question  ", style="bold")
        text.append(ex.question or "")
        text.append("\nreference ", style="bold")
        text.append(ex.reference or "")
        head.update(text)
        for side, role in zip(sides, roles):
            body = Text()
            body.append(role, style="bold")
            score = ex.scores.get(role, {}).get(self.metric) if self.metric else None
            if score is not None:
                body.append(f"  {self.metric} {score:.3f}", style="dim")
            body.append("\n")
            output = ex.outputs.get(role)
            body.append(output if output is not None else "(no answer)", style="" if output is not None else "dim")
            side.update(body)
        for side in sides[len(roles):]:
            side.update("")
        judge.update(self._judge_text(ex.example_id))
        self._update_filter_line()

    def _judge_text(self, example_id: str) -> Text:
        j = getattr(self.comparison, "judge", None)
        if j is None:
            return Text("no pairwise judge compared these runs (ollatune eval pairwise A B --judge MODEL)",
                        style="dim")
        entry = next((e for e in j.examples if e.example_id == example_id), None)
        text = Text()
        text.append(f"judge {j.judge}: ", style="bold")
        if entry is None:
            text.append("no verdict for this example")
            return text
        text.append(entry.combined or "unparseable")
        orders = ", ".join(f"{order}: {v or 'unparseable'}" for order, v in entry.verdicts.items())
        text.append(f" ({orders}{'' if entry.consistent else '; the orders disagree or one is missing'})")
        reasons = {order: r for order, r in entry.reasons.items() if r}
        if len(set(reasons.values())) == 1:
            text.append("\nreason: ")
            text.append(next(iter(reasons.values())))
        else:
            for order, reason in reasons.items():
                text.append(f"\nreason ({order}): ")
                text.append(reason)
        return text
