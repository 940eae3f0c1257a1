"""Vanilla vs tuned for one run: metric by metric, then example by example, from the store."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from tui.screens.sources import load_comparison

CELL = 48  # characters of an output shown in the examples table; the detail pane shows all of it


class ComparisonLoaded(Message):
    def __init__(self, comparison: Any) -> None:  # evals.report.Comparison
        super().__init__()
        self.comparison = comparison


class ComparisonFailed(Message):
    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message


def _short(text: str | None, limit: int = CELL) -> Text:
    """One line of at most ``limit`` characters, as Text: model output is never read as markup."""
    if text is None:
        return Text("—", style="dim")
    text = " ".join(str(text).split())
    return Text(text if len(text) <= limit else text[: limit - 1] + "…")


def _num(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _delta_style(m: Any) -> str:
    """Green when the candidate is better in the metric's direction, red when worse, plain otherwise."""
    hib = getattr(m, "higher_is_better", True)
    if m.delta is None or hib is None or m.delta == 0:
        return ""
    return "green" if (m.delta > 0) == bool(hib) else "red"


def _directions(c: Any) -> str:
    """Which way is better, said once for the table (some metrics are lower-is-better or undirected)."""
    lower = [m.metric for m in c.metrics if getattr(m, "higher_is_better", True) is False]
    none = [m.metric for m in c.metrics if getattr(m, "higher_is_better", True) is None]
    text = "higher is better" + (f"; lower: {', '.join(lower)}" if lower else "")
    return text + (f"; no direction: {', '.join(none)}" if none else "")


def _judge_line(c: Any, judge: Any) -> str:
    """The pairwise judge in one line: the candidate's wins/ties/losses and win rate."""
    rate = "—" if judge.win_rate is None else f"{100 * judge.win_rate:.1f}%"
    return (f"judge {judge.judge}: {c.candidate} {judge.wins}/{judge.ties}/{judge.losses} (win/tie/loss), "
            f"{judge.unparseable} unparseable, win rate {rate}")


class CompareScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("r", "reload", "Reload"),
    ]
    DEFAULT_CSS = """
    CompareScreen #compare-title { height: auto; padding: 0 1; background: $boost; }
    CompareScreen #metrics { height: auto; max-height: 12; margin-bottom: 1; }
    CompareScreen #examples { height: 1fr; }
    CompareScreen #example-scroll { height: 10; border-top: solid $primary; }
    CompareScreen #example-detail { padding: 0 1; }
    """

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.comparison: Any = None
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"comparing {escape(self.run_id)}…", id="compare-title")
        yield DataTable(id="metrics", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="examples", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="example-scroll"):
            yield Static(id="example-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    def action_reload(self) -> None:
        self.load()

    def action_back(self) -> None:
        self.app.pop_screen()

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False, description="load comparison")
    def load(self) -> None:
        try:
            comparison = load_comparison(self.app.settings, self.run_id)  # type: ignore[attr-defined]
        except Exception as exc:  # a missing eval or a store error is shown, not raised
            self.post_message(ComparisonFailed(str(exc) or exc.__class__.__name__))
            return
        self.post_message(ComparisonLoaded(comparison))

    def on_comparison_failed(self, message: ComparisonFailed) -> None:
        self.error = message.message
        self.query_one("#compare-title", Static).update(
            f"[b]{escape(self.run_id)}[/b]: {escape(message.message)}\n"
            "[dim]run `ollatune pipeline` to the evals stage, then press r[/dim]"
        )

    def on_comparison_loaded(self, message: ComparisonLoaded) -> None:
        c = self.comparison = message.comparison
        self.error = None
        runs = ", ".join(f"{role}: {escape(info.model)} (eval {info.eval_run_id}, {info.examples} examples)"
                         for role, info in c.runs.items())
        suite = getattr(c, "suite", "") or (next(iter(c.runs.values())).suite if c.runs else "?")
        lines = [f"[b]{escape(self.run_id)}[/b]  suite {escape(suite)}  ·  {runs}  ·  {escape(_directions(c))}"]
        lines += [f"[yellow]warning:[/] {escape(w)}" for w in getattr(c, "warnings", [])]
        lines += [f"[dim]note: {escape(n)}[/dim]" for n in getattr(c, "notes", [])]
        judge = getattr(c, "judge", None)
        if judge is not None:
            lines.append(escape(_judge_line(c, judge)))
        self.query_one("#compare-title", Static).update("\n".join(lines))
        self._fill_metrics(c)
        self._fill_examples(c)

    def _fill_metrics(self, c: Any) -> None:
        table = self.query_one("#metrics", DataTable)
        table.clear(columns=True)
        pair = bool(c.baseline and c.candidate)
        table.add_column("metric", key="metric")
        for role in c.roles:
            table.add_column(role, key=role)
        if pair:
            table.add_column(f"Δ {c.candidate}−{c.baseline}", key="delta")
        table.add_column("winner", key="winner")
        table.add_column("examples won (" + "/".join([*c.roles, "tie"]) + ")", key="wins")
        for m in c.metrics:
            cells: list[Any] = [Text(m.metric), *[_num(m.values.get(r)) for r in c.roles]]
            if pair:
                cells.append(Text(_num(m.delta, signed=True), style=_delta_style(m)))
            cells.append(Text(m.winner or "—"))
            cells.append("/".join(str(m.example_wins.get(k, 0)) for k in [*c.roles, "tie"]))
            table.add_row(*cells, key=m.metric)

    def _fill_examples(self, c: Any) -> None:
        table = self.query_one("#examples", DataTable)
        table.clear(columns=True)
        metric_names = [m.metric for m in c.metrics]
        table.add_column("id", key="id")
        table.add_column("question", key="question")
        table.add_column("reference", key="reference")
        for role in c.roles:
            table.add_column(f"{role} output", key=f"out:{role}")
        for name in metric_names:
            table.add_column(f"{name} ({'/'.join(c.roles)})", key=f"score:{name}")
        for ex in c.examples:
            cells: list[Any] = [_short(ex.example_id, 24), _short(ex.question), _short(ex.reference)]
            cells += [_short(ex.outputs.get(r)) for r in c.roles]
            for name in metric_names:
                cells.append(" / ".join(_num(ex.scores.get(r, {}).get(name)) for r in c.roles))
            table.add_row(*cells, key=ex.example_id)
        if c.examples:
            self._show_example(0)

    @on(DataTable.RowHighlighted, "#examples")
    def _example_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_example(event.cursor_row)

    def _show_example(self, index: int) -> None:
        if self.comparison is None or not (0 <= index < len(self.comparison.examples)):
            return
        c = self.comparison
        ex = c.examples[index]
        lines = [f"[b]{escape(ex.example_id)}[/b]", f"[b]question[/b]  {escape(ex.question)}",
                 f"[b]reference[/b] {escape(ex.reference)}"]
        for role in c.roles:
            scores = ", ".join(f"{k} {v:.3f}" for k, v in ex.scores.get(role, {}).items())
            output = escape(ex.outputs.get(role) or "—")
            lines.append(f"[b]{escape(role)}[/b] [dim]({escape(scores)})[/dim]  {output}")
        self.query_one("#example-detail", Static).update("\n".join(lines))
