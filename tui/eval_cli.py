"""``ollatune eval``: run a suite against any Ollama models, score predictions made elsewhere, judge eval runs
(pairwise, grade) and compare two eval runs (table, Markdown, HTML, JSON, with a threshold for CI scripts)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workspace.errors import OllatuneError

eval_app = typer.Typer(help="Evaluate models on a suite, judge and compare eval runs (results in the workspace's "
                            "SQLite store). Suites: `ollatune eval suites`.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a suite field: limit=20, "
                                                     "params.num_predict=64, dataset.path=rows.jsonl (repeatable).")]
EventsOpt = Annotated[str, typer.Option(help="`jsonl` also writes every event to stdout as JSON lines.")]


class EvalCliError(OllatuneError):
    """A command that cannot do what was asked (an unknown model, no eval run of that name...)."""


def _overrides(items: list[str] | None) -> dict[str, Any]:
    import yaml

    out_: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise EvalCliError(f"--set {item!r} is not KEY=VALUE", "example: --set params.num_predict=64")
        key, raw = item.split("=", 1)
        out_[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
    return out_


def _store():  # noqa: ANN202
    from workspace.settings import get_settings
    from workspace.store import open_store

    return open_store(get_settings().db_path)


def _events(events: str):  # noqa: ANN202
    from tui.render import EventPrinter
    from workspace.events import EventSink

    jsonl = events == "jsonl"
    sink = EventSink(f"eval-{time.strftime('%Y%m%d-%H%M%S')}", None, stdout_jsonl=jsonl,
                     listeners=[] if jsonl else [EventPrinter(err)])
    return sink.stage("evals")


def _model_under_test(session_factory, endpoint, name: str, role: str):  # noqa: ANN001, ANN202
    """The store's record of an Ollama model (made on first use), with its digest now at the endpoint."""
    from sqlalchemy import select

    from evals import ModelUnderTest
    from serve.client import model_digest
    from workspace.settings import get_settings
    from workspace.store import RegisteredModel, session_scope

    full = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
    digest = model_digest(endpoint, name)
    if digest is None:
        raise EvalCliError(f"model {name!r} is not registered at {endpoint.host}",
                           "list models with `ollatune list` (or `ollama list`); register one with `ollatune "
                           "pipeline` or `ollama create`")
    host = f"embedded:{get_settings().ollama_dir}" if endpoint.embedded else endpoint.host
    with session_scope(session_factory) as s:
        row = s.scalars(select(RegisteredModel).where(RegisteredModel.name.in_([name, full]),
                                                      RegisteredModel.host == host,
                                                      RegisteredModel.digest == digest)).first()
        if row is None:
            row = RegisteredModel(name=full, host=host, digest=digest, role="external", template_family="unknown")
            s.add(row)
            s.flush()
        return ModelUnderTest(model_id=row.id, name=full, digest=digest, role=role)


def _print_aggregates(aggregates: dict[str, dict[str, float]], ids: dict[str, int]) -> None:
    """One row per metric, one column per model (readable at 80 columns with many metrics)."""
    metrics = list(dict.fromkeys(m for a in aggregates.values() for m in a))
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("metric", no_wrap=True)
    for role in aggregates:
        table.add_column(f"{role} (#{ids.get(role, '?')})", justify="right", overflow="fold")
    for m in metrics:
        table.add_row(m, *[f"{aggregates[r][m]:.3f}" if m in aggregates[r] else "-" for r in aggregates])
    out.print(table)


@eval_app.command("suites")
def suites_cmd() -> None:
    """List the shipped suites: task, kind, metrics and dataset."""
    from evals.suites import SUITES_DIR, load_suite, shipped_suites

    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("suite", "task", "kind", "metrics", "dataset"):
        table.add_column(col)
    for name in shipped_suites():
        s = load_suite(name)
        kind = s.kind + (f" (judge: {s.judge.kind})" if s.judge and s.kind == "generate" else "")
        table.add_row(name, s.task if s.kind == "generate" else "-", kind,
                      ", ".join(s.metrics) if s.kind == "generate" else "-",
                      escape(s.dataset.path.replace(str(SUITES_DIR) + "/", "") if s.dataset else "eval runs"))
    out.print(table)


@eval_app.command("run")
def run_cmd(
    suite: Annotated[str, typer.Argument(help="A shipped suite name (`ollatune eval suites`) or a suite YAML.")],
    model: Annotated[list[str], typer.Option("--model", "-m", help="An Ollama model name (repeatable; evaluated one "
                                                                   "at a time, in this order).")],
    set_: SetOpt = None,
    judge: Annotated[Optional[str], typer.Option(help="The judge model of a judged suite (ko-safety).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Calls in flight at a time (the runtime's "
                                                                 "parallel slots).")] = 4,
    events: EventsOpt = "none",
) -> None:
    """Ask each model every example of the suite, score the answers and store everything.

    Answers are cached by model digest + prompt + parameters: an interrupted run resumes where it stopped, and
    a finished one is reused.
    """
    import evals
    from serve import ensure_ollama

    s = evals.load_suite(suite, _overrides(set_))
    ev = _events(events)
    sf = _store()
    endpoint = ensure_ollama(None, ev.sink.stage("serve"))
    try:
        models = [_model_under_test(sf, endpoint, name, name) for name in dict.fromkeys(model)]
        judge_model = _model_under_test(sf, endpoint, judge, f"judge:{judge}") if judge else None
        result = evals.run(s, models, base_url=endpoint.host, session_factory=sf, events=ev,
                           concurrency=concurrency, judge=judge_model)
    finally:
        endpoint.close()
    if events != "jsonl":
        _print_aggregates(result.aggregates, result.eval_run_ids)


@eval_app.command("score")
def score_cmd(
    suite: Annotated[str, typer.Argument(help="A shipped suite name or a suite YAML.")],
    predictions: Annotated[Path, typer.Option(help="JSONL rows {\"id\": ..., \"prediction\": ...}, one per example.")],
    label: Annotated[Optional[str], typer.Option(help="The name to store them under (default: the file's name).")] = None,
    set_: SetOpt = None,
    events: EventsOpt = "none",
) -> None:
    """Score predictions made elsewhere with the suite's metrics and store them as an eval run; no model is
    called. The whole file is checked first: nothing is stored from a file with a bad line."""
    import evals
    from evals.runner import score_predictions

    s_ = evals.load_suite(suite, _overrides(set_))
    result = score_predictions(s_, predictions, label=label or predictions.stem, session_factory=_store(),
                               events=_events(events))
    if events != "jsonl":
        _print_aggregates(result.aggregates, result.eval_run_ids)


@eval_app.command("compare")
def compare_cmd(
    a: Annotated[str, typer.Argument(help="Baseline: an eval run id or a model name (its newest eval run).")],
    b: Annotated[str, typer.Argument(help="Candidate: an eval run id or a model name.")],
    suite: Annotated[Optional[str], typer.Option(help="The suite, when a model has eval runs of several.")] = None,
    format_: Annotated[str, typer.Option("--format", "-f", help="table, md, html or json.")] = "table",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the report to this file.")] = None,
    examples: Annotated[int, typer.Option(help="Examples to list (most improved and most regressed).")] = 5,
    fail_metric: Annotated[Optional[str], typer.Option(help="Exit 1 when this metric regresses more than "
                                                            "--max-regression (for CI scripts).")] = None,
    max_regression: Annotated[float, typer.Option(help="Allowed regression of --fail-metric.")] = 0.0,
) -> None:
    """Compare two eval runs of the same examples: per-metric means, the delta with a paired bootstrap 95%
    interval, win/tie/loss per example, the examples that improved and regressed most, and the judge's
    verdicts when a pairwise judgement of these two runs exists."""
    from evals import report

    if format_ not in ("table", "md", "html", "json"):
        raise EvalCliError(f"--format {format_!r}: choose table, md, html or json")
    cmp = report.compare_refs(_store(), a, b, suite=suite)
    if format_ == "table":
        from tui.report import print_comparison

        print_comparison(out, cmp, examples=examples)
        text = None
    elif format_ == "md":
        text = report.to_markdown(cmp, max_examples=examples)
    elif format_ == "html":
        text = report.to_html(cmp)
    else:
        text = report.to_json(cmp)
    if text is not None:
        if output is not None:
            from workspace.files import write_text_atomic

            write_text_atomic(output, text)
            err.print(f"wrote {escape(str(output))}")
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    elif output is not None:
        raise EvalCliError("--output needs --format md, html or json")
    if fail_metric:
        ok, message = report.check_threshold(cmp, fail_metric, max_regression)
        (out if ok else err).print(escape(message))
        if not ok:
            raise typer.Exit(1)


def _resolve(sf, ref: str, suite: str | None) -> int:  # noqa: ANN001
    from evals.report import resolve_eval_run
    from workspace.store import session_scope

    with session_scope(sf) as s:
        return resolve_eval_run(s, ref, suite)


@eval_app.command("pairwise")
def pairwise_cmd(
    a: Annotated[str, typer.Argument(help="Baseline: an eval run id or a model name (its newest eval run).")],
    b: Annotated[str, typer.Argument(help="Candidate: an eval run id or a model name.")],
    judge: Annotated[str, typer.Option(help="The judge: any Ollama model (best: neither compared model).")],
    suite: Annotated[Optional[str], typer.Option(help="The eval runs' suite, when a model has several.")] = None,
    judge_suite: Annotated[str, typer.Option(help="The pairwise suite (judge settings).")] = "pairwise",
    set_: SetOpt = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Judge calls in flight at a time.")] = 4,
    events: EventsOpt = "none",
) -> None:
    """Judge B's answers against A's on their shared examples, both orders (a flip is a tie), and print
    wins / ties / losses, the win rate and the length-controlled win rate. `eval compare A B` then shows it."""
    import evals
    from evals.judging import judge_pairwise
    from serve import ensure_ollama

    sf = _store()
    run_a, run_b = _resolve(sf, a, suite), _resolve(sf, b, suite)
    js = evals.load_suite(judge_suite, _overrides(set_))
    ev = _events(events)
    endpoint = ensure_ollama(None, ev.sink.stage("serve"))
    try:
        j = _model_under_test(sf, endpoint, judge, "judge")
        summary = judge_pairwise(sf, run_a, run_b, judge_name=j.name, judge_digest=j.digest, base_url=endpoint.host,
                                 suite=js, events=ev, concurrency=concurrency)
    finally:
        endpoint.close()
    if events != "jsonl":
        if summary.get("warning"):
            err.print(f"[yellow]warning:[/] {escape(summary['warning'])}")
        rate = "-" if summary["win_rate"] is None else f"{summary['win_rate']:.1f}%"
        lc = "-" if summary["lc_win_rate"] is None else f"{summary['lc_win_rate']:.1f}%"
        out.print(f"{escape(summary['candidate'])} vs {escape(summary['baseline'])} (judge {escape(j.name)}): "
                  f"{summary['wins']} wins, {summary['ties']} ties, {summary['losses']} losses, "
                  f"{summary['unparseable']} unparseable; win rate {rate}, length-controlled {lc}")


@eval_app.command("grade")
def grade_cmd(
    run: Annotated[str, typer.Argument(help="An eval run id or a model name (its newest eval run).")],
    judge: Annotated[str, typer.Option(help="The judge: any Ollama model.")],
    suite: Annotated[Optional[str], typer.Option(help="The eval run's suite, when the model has several.")] = None,
    judge_suite: Annotated[str, typer.Option(help="The grade suite (rubric and judge settings).")] = "grade",
    set_: SetOpt = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Judge calls in flight at a time.")] = 4,
    events: EventsOpt = "none",
) -> None:
    """Grade every answer of an eval run 1-5 against a rubric (G-Eval style; weighted by the judge's token
    probabilities where the server returns them)."""
    import evals
    from evals.judging import grade_run
    from serve import ensure_ollama

    sf = _store()
    eval_run_id = _resolve(sf, run, suite)
    gs = evals.load_suite(judge_suite, _overrides(set_))
    ev = _events(events)
    endpoint = ensure_ollama(None, ev.sink.stage("serve"))
    try:
        j = _model_under_test(sf, endpoint, judge, "judge")
        summary = grade_run(sf, eval_run_id, judge_name=j.name, judge_digest=j.digest, base_url=endpoint.host,
                            suite=gs, events=ev, concurrency=concurrency)
    finally:
        endpoint.close()
    if events != "jsonl":
        mean = "-" if summary["mean_grade"] is None else f"{summary['mean_grade']:.2f}"
        out.print(f"eval run #{eval_run_id}: mean grade {mean} over {summary['graded']} answers "
                  f"({summary['unparseable']} unparseable), judge {escape(j.name)}")
