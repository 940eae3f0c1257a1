"""Rich rendering of runs and of the vanilla-vs-tuned comparison."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workspace.settings import Settings


def print_comparison(console: Console, comparison, examples: int = 0) -> None:  # noqa: ANN001
    """The metric table (baseline, candidate, delta with its CI, winner), then a few examples."""
    c = comparison
    base, cand = c.baseline or "vanilla", c.candidate or "tuned"
    title = f"{base} vs {cand} (held-out rows)" if (base, cand) == ("vanilla", "tuned") else f"{base} vs {cand}"
    table = Table(title=title, show_lines=False)
    table.add_column("metric")
    table.add_column(base, justify="right")
    table.add_column(cand, justify="right")
    table.add_column("delta", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("better")
    for row in c.metrics:
        hib = getattr(row, "higher_is_better", True)
        name = row.metric + {False: " (lower is better)", None: " (no direction)"}.get(hib, "")
        table.add_row(escape(name), _f(row.values.get(base)), _f(row.values.get(cand)), _delta_cell(row.delta, hib),
                      _ci(row), escape(row.winner or ("tie" if hib is not None else "-")))
    console.print(table)
    for text in [*getattr(c, "warnings", []), *getattr(c, "notes", [])]:
        console.print(f"[yellow]![/] {escape(text)}")
    for ex in c.examples[:examples]:
        console.print(f"[bold]{escape(ex.example_id)}[/] {escape(ex.question)}")
        console.print(f"  reference: {escape(ex.reference)}")
        for role, text in ex.outputs.items():
            console.print(f"  {escape(role)}: {escape(text or '-')}")


def _delta_cell(delta: float | None, hib: bool | None) -> str:
    """The delta, green when the candidate is better in the metric's direction and red when worse."""
    if delta is None:
        return "-"
    if delta == 0 or hib is None:
        return f"{delta:+.4f}"
    return f"[{'green' if (delta > 0) == hib else 'red'}]{delta:+.4f}[/]"


def _ci(row) -> str:  # noqa: ANN001
    low, high = getattr(row, "ci_low", None), getattr(row, "ci_high", None)
    return "-" if low is None or high is None else escape(f"[{low:+.3f}, {high:+.3f}]")


def _f(v) -> str:  # noqa: ANN001
    return "-" if v is None else f"{v:.4f}"


def list_runs(console: Console, settings: Settings) -> None:
    from sqlalchemy import select

    from workspace.store import EvalRun, TrainingRun, open_store, session_scope

    factory = open_store(settings.db_path)
    table = Table(title=f"runs in {settings.home}")
    for col in ("run", "status", "steps", "final loss", "evals"):
        table.add_column(col)
    with session_scope(factory) as s:
        for tr in s.scalars(select(TrainingRun).order_by(TrainingRun.started_at.desc())):
            n_evals = len(s.scalars(select(EvalRun.id).where(EvalRun.run_id == tr.run_id)).all())
            table.add_row(tr.run_id, tr.status, str(tr.steps or "-"),
                          f"{tr.final_loss:.4f}" if tr.final_loss is not None else "-", str(n_evals))
    console.print(table)


def latest_eval_ids(settings: Settings, run_id: str) -> dict[str, int]:
    from sqlalchemy import select

    from workspace.store import EvalRun, RegisteredModel, open_store, session_scope

    factory = open_store(settings.db_path)
    ids: dict[str, int] = {}
    with session_scope(factory) as s:
        rows = s.execute(select(EvalRun.id, RegisteredModel.role).join(RegisteredModel)
                         .where(EvalRun.run_id == run_id, EvalRun.status == "done").order_by(EvalRun.id)).all()
        for eval_id, role in rows:
            ids[role] = eval_id
    return ids


def report_run(console: Console, settings: Settings, run_id: str, *, markdown: bool = False) -> None:
    from evals.report import compare, to_markdown
    from workspace.store import open_store

    ids = latest_eval_ids(settings, run_id)
    if not ids:
        raise LookupError(f"run {run_id!r} has no finished evaluation in {settings.db_path}")
    comparison = compare(open_store(settings.db_path), ids)
    if markdown:
        console.print(to_markdown(comparison), markup=False)
    else:
        print_comparison(console, comparison, examples=5)
