"""Rich rendering of runs and of the vanilla-vs-tuned comparison."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from workspace.settings import Settings


def print_comparison(console: Console, comparison, examples: int = 0) -> None:  # noqa: ANN001
    table = Table(title="vanilla vs tuned (held-out rows)", show_lines=False)
    table.add_column("metric")
    table.add_column("vanilla", justify="right")
    table.add_column("tuned", justify="right")
    table.add_column("delta", justify="right")
    table.add_column("better")
    for row in comparison.metrics:
        v, t = row.values.get("vanilla"), row.values.get("tuned")
        delta = row.delta
        if delta is None:
            delta_cell = "-"
        elif delta == 0:
            delta_cell = f"{delta:+.4f}"
        else:
            delta_cell = f"[{'green' if delta > 0 else 'red'}]{delta:+.4f}[/]"
        table.add_row(row.metric, _f(v), _f(t), delta_cell, row.winner or "tie")
    console.print(table)
    for ex in comparison.examples[:examples]:
        console.print(f"[bold]{ex.example_id}[/] {ex.question}")
        console.print(f"  reference: {ex.reference}")
        for role, text in ex.outputs.items():
            console.print(f"  {role}: {text}")


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
