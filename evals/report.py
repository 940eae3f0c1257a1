"""Vanilla vs tuned, metric by metric and example by example. Pure data; renderers live elsewhere
(``to_markdown`` here for reports, Rich in the CLI, Textual in the TUI)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from workspace.store.engine import session_scope
from workspace.store.models import EvalRun, Prediction

TIE = "tie"
_EPS = 1e-9


@dataclass
class RunInfo:
    eval_run_id: int
    role: str
    model: str
    digest: str
    suite: str
    suite_hash: str
    status: str
    tokenizer: str | None
    examples: int


@dataclass
class MetricRow:
    metric: str
    values: dict[str, float | None]  # role -> mean over examples
    delta: float | None  # candidate - baseline (tuned - vanilla)
    winner: str | None  # a role, "tie", or None when a value is missing
    example_wins: dict[str, int] = field(default_factory=dict)  # role or "tie" -> examples won


@dataclass
class ExampleRow:
    example_id: str
    question: str
    reference: str
    outputs: dict[str, str | None]  # role -> cleaned output
    raw: dict[str, str | None]  # role -> raw output
    scores: dict[str, dict[str, float]]  # role -> metric -> value


@dataclass
class Comparison:
    roles: list[str]
    baseline: str | None
    candidate: str | None
    runs: dict[str, RunInfo]
    metrics: list[MetricRow]
    examples: list[ExampleRow]


def _question(prompt: str) -> str:
    """The last user message of a stored prompt (JSON messages), or the prompt itself."""
    try:
        messages = json.loads(prompt)
        users = [m["content"] for m in messages if m.get("role") == "user"]
        return users[-1] if users else prompt
    except (ValueError, TypeError, KeyError, AttributeError):
        return prompt


def _winner(values: dict[str, float | None]) -> str | None:
    if not values or any(v is None for v in values.values()):
        return None
    best = max(v for v in values.values() if v is not None)
    leaders = [r for r, v in values.items() if v is not None and abs(v - best) <= _EPS]
    return leaders[0] if len(leaders) == 1 else TIE


def _pick_pair(roles: list[str]) -> tuple[str | None, str | None]:
    baseline = "vanilla" if "vanilla" in roles else (roles[0] if roles else None)
    rest = [r for r in roles if r != baseline]
    candidate = "tuned" if "tuned" in rest else (rest[0] if rest else None)
    return baseline, candidate


def compare(session_factory: sessionmaker[Session], eval_run_ids: dict[str, int]) -> Comparison:
    """Compare eval runs (role -> EvalRun.id). Every metric is higher-is-better; delta is
    tuned - vanilla (or second role - first role)."""
    roles = list(eval_run_ids)
    baseline, candidate = _pick_pair(roles)
    runs: dict[str, RunInfo] = {}
    # role -> example id -> (prompt, reference, cleaned, raw, {metric: value}); plain data read inside
    # the session, so the caller's sessionmaker settings (expire_on_commit) do not matter.
    by_role: dict[str, dict[str, tuple[str, str, str, str, dict[str, float]]]] = {}
    metric_names: list[str] = []
    suite_order: list[str] = []  # the metrics in the order the suite lists them
    with session_scope(session_factory) as s:
        for role, rid in eval_run_ids.items():
            er = s.get(EvalRun, rid)
            if er is None:
                raise ValueError(f"no eval run with id {rid} (role {role!r})")
            plist = s.scalars(
                select(Prediction)
                .where(Prediction.eval_run_id == rid)
                .options(selectinload(Prediction.scores))
                .order_by(Prediction.id)
            ).all()
            rows = by_role[role] = {}
            for p in plist:
                scores = {sc.metric: sc.value for sc in p.scores}
                metric_names.extend(m for m in scores if m not in metric_names)
                rows[p.example_id] = (p.prompt, p.reference, p.cleaned, p.raw, scores)
            for m in (er.params or {}).get("metrics", []):
                if m not in suite_order:
                    suite_order.append(m)
            runs[role] = RunInfo(
                eval_run_id=rid,
                role=role,
                model=er.model.name,
                digest=er.model.digest,
                suite=er.suite,
                suite_hash=er.suite_hash,
                status=er.status,
                tokenizer=(er.params or {}).get("tokenizer"),
                examples=len(plist),
            )

    # Example rows in the first run's order, then any examples only later runs have.
    order = list(dict.fromkeys(ex_id for role in roles for ex_id in by_role[role]))
    examples: list[ExampleRow] = []
    for ex_id in order:
        prompt, reference = next(by_role[r][ex_id][:2] for r in roles if ex_id in by_role[r])
        row = ExampleRow(
            example_id=ex_id, question=_question(prompt), reference=reference, outputs={}, raw={}, scores={}
        )
        for role in roles:
            got = by_role[role].get(ex_id)
            row.outputs[role] = got[2] if got else None
            row.raw[role] = got[3] if got else None
            row.scores[role] = dict(got[4]) if got else {}
        examples.append(row)

    metric_names = [m for m in suite_order if m in metric_names] + [m for m in metric_names if m not in suite_order]
    metrics: list[MetricRow] = []
    for metric in metric_names:
        values: dict[str, float | None] = {}
        for role in roles:
            vals = [ex.scores[role][metric] for ex in examples if metric in ex.scores.get(role, {})]
            values[role] = sum(vals) / len(vals) if vals else None
        delta = None
        if baseline and candidate and values.get(baseline) is not None and values.get(candidate) is not None:
            delta = values[candidate] - values[baseline]  # type: ignore[operator]
        wins: dict[str, int] = {r: 0 for r in roles}
        wins[TIE] = 0
        for ex in examples:
            per = {r: ex.scores[r].get(metric) for r in roles}
            w = _winner(per)
            if w is not None:
                wins[w] += 1
        metrics.append(MetricRow(metric=metric, values=values, delta=delta, winner=_winner(values), example_wins=wins))
    return Comparison(
        roles=roles, baseline=baseline, candidate=candidate, runs=runs, metrics=metrics, examples=examples
    )


def _cell(text: str | None, limit: int) -> str:
    if text is None:
        return "—"
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def to_markdown(comparison: Comparison, max_examples: int | None = 20, width: int = 80) -> str:
    """A Markdown report: models, metric table (mean, delta, winner, per-example wins), examples."""
    c = comparison
    lines: list[str] = []
    suite = next(iter(c.runs.values())).suite if c.runs else "?"
    tokenizers = sorted({r.tokenizer for r in c.runs.values() if r.tokenizer})
    lines.append(f"# Evaluation: {suite}")
    lines.append("")
    if tokenizers:
        lines.append(f"Tokenizer for rouge_l/token_f1: {', '.join(tokenizers)}. All metrics: higher is better.")
        lines.append("")
    lines.append("| role | model | digest | eval run | status | examples |")
    lines.append("|---|---|---|---|---|---|")
    for role in c.roles:
        r = c.runs[role]
        lines.append(
            f"| {role} | {_cell(r.model, 60)} | {r.digest[:19]} | {r.eval_run_id} | {r.status} | {r.examples} |"
        )
    lines.append("")
    head = ["metric", *c.roles]
    if c.baseline and c.candidate:
        head.append(f"Δ ({c.candidate} − {c.baseline})")
    head += ["winner", "examples won (" + " / ".join([*c.roles, TIE]) + ")"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for m in c.metrics:
        cells = [m.metric, *[_num(m.values.get(r)) for r in c.roles]]
        if c.baseline and c.candidate:
            cells.append(_num(m.delta, signed=True))
        cells.append(m.winner or "—")
        cells.append(" / ".join(str(m.example_wins.get(k, 0)) for k in [*c.roles, TIE]))
        lines.append("| " + " | ".join(cells) + " |")
    shown = c.examples if max_examples is None else c.examples[:max_examples]
    if shown:
        lines.append("")
        lines.append(f"## Examples ({len(shown)} of {len(c.examples)})")
        lines.append("")
        metric_names = [m.metric for m in c.metrics]
        head = ["id", "question", "reference", *[f"{r} output" for r in c.roles]]
        head += [f"{m} ({'/'.join(c.roles)})" for m in metric_names]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for ex in shown:
            cells = [_cell(ex.example_id, 40), _cell(ex.question, width), _cell(ex.reference, width)]
            cells += [_cell(ex.outputs.get(r), width) for r in c.roles]
            for mname in metric_names:
                cells.append(" / ".join(_num(ex.scores.get(r, {}).get(mname)) for r in c.roles))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
