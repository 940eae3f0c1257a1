"""Baseline vs candidate (vanilla vs tuned, or any two eval runs), metric by metric and example by example.

:func:`compare` reads finished eval runs from the store into a :class:`Comparison` of plain data: the
mean of every metric per model, the delta (candidate - baseline) with a paired bootstrap confidence
interval, per-example wins, the examples that improved or regressed most on the primary metric, and the
verdicts of a pairwise judge when one compared exactly these two runs. :func:`compare_refs` does the same
from what a person types (a model name or an eval run id). Renderers for reports live here too
(:func:`to_markdown`, :func:`to_json`, :func:`to_html`); Rich renders in the CLI, Textual in the TUI.
:func:`check_threshold` turns a comparison into a pass/fail for CI scripts.

Why a paired bootstrap: both models answered the same examples, so the per-example differences carry
the signal and the example-to-example spread (some questions are simply hard) cancels out. Resampling
those differences says how much the mean delta could move with another draw of examples of the same
kind, without assuming the scores are normally distributed (most are 0/1 or bounded in 0..1).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from workspace.errors import OllatuneError
from workspace.store.engine import session_scope
from workspace.store.models import EvalRun, JudgeRun, Judgment, Prediction, RegisteredModel

TIE = "tie"
_EPS = 1e-9
DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 2000
DEFAULT_TOP = 5
CI_LEVEL = 0.95
# Bootstrap resamples are drawn in chunks of at most this many indices: memory stays flat for big suites.
_BOOT_CELLS = 2_000_000

# Metric directions when evals.metrics does not say (older code, or a metric it does not describe).
_LOWER_IS_BETTER = frozenset({"repetition_rate"})
_NO_DIRECTION = frozenset({"answer_length"})

EXEC_METRICS = ("exec_acc", "exec_acc_set")
SCHEMA_METRIC = "executes_on_schema"
SCHEMA_ONLY_NOTE = (
    'The examples have a schema but no rows, so "executes on the schema" is reported instead of '
    "execution accuracy."
)
# Whose side the counts in a pairwise JudgeRun.summary are on: evals.judging counts run B's (the
# candidate's) wins over run A. The comparison re-orients them to its candidate, whichever of A and B it is.
JUDGE_SUMMARY_SIDE = "b"
FONT_STACK = '"Malgun Gothic", "Apple SD Gothic Neo", "Noto Sans KR", "Noto Sans CJK KR", sans-serif'


class CompareError(OllatuneError, ValueError):
    """What to compare cannot be resolved, or the runs cannot be compared."""

    default_hint = "pass an eval run id or a model name with a finished evaluation (`ollatune runs` lists them)"


# ---------------------------------------------------------------------------------------------- data


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
    source: str = "generate"  # "generate": the runner asked the model; "score": predictions made elsewhere
    task: str | None = None  # the suite's task when the run recorded it


@dataclass
class MetricRow:
    metric: str
    values: dict[str, float | None]  # role -> mean over examples
    delta: float | None  # candidate - baseline (tuned - vanilla)
    winner: str | None  # a role, "tie", or None when a value is missing or the metric has no direction
    example_wins: dict[str, int] = field(default_factory=dict)  # role or "tie" -> examples won
    ci_low: float | None = None  # paired bootstrap interval of the delta; None under 2 paired examples
    ci_high: float | None = None
    n: int = 0  # examples both baseline and candidate have a score of this metric for
    higher_is_better: bool | None = True  # None: no better direction (e.g. answer_length)
    tokenizer: str | None = None  # what the metric tokenized with (Score.tokenizer), None when not recorded
    wins: int = 0  # paired examples the candidate did better on (in the metric's direction)
    ties: int = 0
    losses: int = 0


@dataclass
class ExampleRow:
    example_id: str
    question: str
    reference: str
    outputs: dict[str, str | None]  # role -> cleaned output
    raw: dict[str, str | None]  # role -> raw output
    scores: dict[str, dict[str, float]]  # role -> metric -> value


@dataclass
class ExampleDelta:
    """An example that moved most on the primary metric, with both answers to read side by side."""

    example_id: str
    question: str
    reference: str
    outputs: dict[str, str | None]  # role -> cleaned output (baseline and candidate)
    values: dict[str, float]  # role -> value of the primary metric
    delta: float  # candidate - baseline


@dataclass
class JudgeExample:
    """A pairwise judge's verdicts on one example, in both presentation orders."""

    example_id: str
    verdicts: dict[str, str | None]  # order ("ab", "ba") -> role, "tie", or None (unparseable)
    reasons: dict[str, str | None]  # order -> the judge's reason
    combined: str | None  # role or "tie"; orders that disagree count as a tie; None: nothing parseable
    consistent: bool  # both orders parsed and agree


@dataclass
class JudgeResult:
    """A pairwise judge run over exactly the compared baseline and candidate, counted for the candidate."""

    judge_run_id: int
    judge: str  # judge model name
    judge_digest: str
    status: str
    wins: int | None  # candidate's wins
    ties: int | None
    losses: int | None
    unparseable: int | None
    win_rate: float | None  # fraction 0..1 for the candidate, as the summary gave it (re-oriented)
    lc_win_rate: float | None  # length-controlled win rate, fraction 0..1
    warning: str | None  # e.g. self-preference: the judge is one of the compared models
    run_a_role: str  # which role the judge run's eval run A is
    summary: dict[str, Any] = field(default_factory=dict)  # the stored summary, unchanged
    examples: list[JudgeExample] = field(default_factory=list)


@dataclass
class Comparison:
    roles: list[str]
    baseline: str | None
    candidate: str | None
    runs: dict[str, RunInfo]
    metrics: list[MetricRow]
    examples: list[ExampleRow]
    suite: str = ""
    task: str | None = None
    primary_metric: str | None = None  # the first directed metric of the suite's order
    improved: list[ExampleDelta] = field(default_factory=list)  # largest improvement first
    regressed: list[ExampleDelta] = field(default_factory=list)  # largest regression first
    judge: JudgeResult | None = None
    schema_only: bool = False  # text-to-SQL without rows: executes_on_schema stands in for exec accuracy
    notes: list[str] = field(default_factory=list)  # things a reader must know to read the numbers right
    warnings: list[str] = field(default_factory=list)  # things that make the comparison less trustworthy
    shared_examples: int = 0  # example ids the baseline and the candidate both have
    seed: int = DEFAULT_SEED
    resamples: int = DEFAULT_RESAMPLES
    ci_level: float = CI_LEVEL


@dataclass
class _Pred:
    prompt: str
    reference: str
    cleaned: str
    raw: str
    scores: dict[str, float]
    tokenizers: dict[str, str | None]


# --------------------------------------------------------------------------------------- statistics


def higher_is_better(metric: str) -> bool | None:
    """The metric's better direction: from ``evals.metrics.METRIC_INFO`` when it describes the metric,
    else a fallback (lower is better for repetition, no direction for length, higher for the rest).
    Read defensively so the report works whether METRIC_INFO holds dicts, objects, or does not exist."""
    from evals import metrics as metrics_module

    info = getattr(metrics_module, "METRIC_INFO", None)
    entry = info.get(metric) if isinstance(info, Mapping) else None
    if isinstance(entry, Mapping) and "higher_is_better" in entry:
        return entry["higher_is_better"]
    if entry is not None and hasattr(entry, "higher_is_better"):
        return getattr(entry, "higher_is_better")
    if metric in _LOWER_IS_BETTER:
        return False
    if metric in _NO_DIRECTION:
        return None
    return True


def bootstrap_ci(
    diffs: Sequence[float], *, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES, level: float = CI_LEVEL
) -> tuple[float, float] | None:
    """Percentile interval of the mean of ``diffs`` over ``resamples`` resamples with replacement.

    None under two values: one difference says nothing about how the mean varies. Seeded, so a report
    regenerated from the same store shows the same interval."""
    d = np.asarray(list(diffs), dtype=float)
    if d.size < 2:
        return None
    if resamples < 1:
        raise CompareError(f"resamples must be at least 1, got {resamples}", "use the default of 2000")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, _BOOT_CELLS // d.size)
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        means[start : start + k] = d[rng.integers(0, d.size, size=(k, d.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def _sign(hib: bool | None) -> int:
    """+1 when higher is better, -1 when lower is, 0 without a direction."""
    return 0 if hib is None else (1 if hib else -1)


def _winner(values: Mapping[str, float | None], hib: bool | None = True) -> str | None:
    """The role with the best value in the metric's direction, "tie" for several, None if undecidable."""
    if not values or hib is None or any(v is None for v in values.values()):
        return None
    best = (max if hib else min)(v for v in values.values() if v is not None)
    leaders = [r for r, v in values.items() if v is not None and abs(v - best) <= _EPS]
    return leaders[0] if len(leaders) == 1 else TIE


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


# ------------------------------------------------------------------------------------------ loading


def _question(prompt: str) -> str:
    """The last user message of a stored prompt (JSON messages), or the prompt itself."""
    try:
        messages = json.loads(prompt)
        users = [m["content"] for m in messages if m.get("role") == "user"]
        return users[-1] if users else prompt
    except (ValueError, TypeError, KeyError, AttributeError):
        return prompt


def _pick_pair(roles: list[str]) -> tuple[str | None, str | None]:
    baseline = "vanilla" if "vanilla" in roles else (roles[0] if roles else None)
    rest = [r for r in roles if r != baseline]
    candidate = "tuned" if "tuned" in rest else (rest[0] if rest else None)
    return baseline, candidate


def _resolve_pair(roles: list[str], baseline: str | None, candidate: str | None) -> tuple[str | None, str | None]:
    """Baseline and candidate roles: the ones asked for, else vanilla/tuned, else the first two roles."""
    if baseline is None and candidate is None:
        return _pick_pair(roles)
    for role in (baseline, candidate):
        if role is not None and role not in roles:
            raise CompareError(f"role {role!r} is not one of the compared roles ({', '.join(roles)})")
    if baseline is None:
        baseline = next((r for r in roles if r != candidate), None)
    if candidate is None:
        rest = [r for r in roles if r != baseline]
        candidate = "tuned" if "tuned" in rest else (rest[0] if rest else None)
    if baseline == candidate:
        raise CompareError(f"baseline and candidate are the same role {baseline!r}")
    return baseline, candidate


def _load_run(s: Session, role: str, rid: int) -> tuple[RunInfo, dict[str, _Pred], list[str]]:
    """One eval run as plain data (read inside the session, so expire_on_commit does not matter)."""
    er = s.get(EvalRun, rid)
    if er is None:
        raise CompareError(f"no eval run with id {rid} (role {role!r})")
    plist = s.scalars(
        select(Prediction)
        .where(Prediction.eval_run_id == rid)
        .options(selectinload(Prediction.scores))
        .order_by(Prediction.id)
    ).all()
    rows = {
        p.example_id: _Pred(
            prompt=p.prompt,
            reference=p.reference,
            cleaned=p.cleaned,
            raw=p.raw,
            scores={sc.metric: sc.value for sc in p.scores},
            tokenizers={sc.metric: sc.tokenizer for sc in p.scores},
        )
        for p in plist
    }
    params = er.params or {}
    info = RunInfo(
        eval_run_id=rid,
        role=role,
        model=er.model.name,
        digest=er.model.digest,
        suite=er.suite,
        suite_hash=er.suite_hash,
        status=er.status,
        tokenizer=params.get("tokenizer"),
        examples=len(plist),
        source=er.source or "generate",
        task=params.get("task"),
    )
    return info, rows, list(params.get("metrics", []))


def _judge_verdict(verdict: str | None, a_role: str, b_role: str) -> str | None:
    """A stored verdict ("a", "b", "tie"; about eval runs A and B) as a role name or "tie"."""
    return {"a": a_role, "b": b_role, TIE: TIE}.get((verdict or "").strip().lower())


def _combine(verdicts: Mapping[str, str | None]) -> tuple[str | None, bool]:
    """One verdict from both orders: agreeing orders give that verdict; disagreeing ones a tie (the judge
    followed the position, not the answer)."""
    parsed = [v for v in verdicts.values() if v is not None]
    if not parsed:
        return None, False
    if len(set(parsed)) == 1:
        return parsed[0], len(parsed) >= 2
    return TIE, False


def _as_fraction(value: Any, expected: float | None) -> float | None:
    """A win rate as a fraction 0..1. Judges store either a fraction or a percentage (AlpacaEval reports
    percent); the counts tell which when the number alone cannot (a value of 1 or less)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return None
    v = float(value)
    if v > 1.0 + _EPS:
        return v / 100.0
    if expected is not None and abs(v - 100.0 * expected) < abs(v - expected):
        return v / 100.0
    return v


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _judge_counts(summary: Mapping[str, Any], examples: list[JudgeExample], candidate: str, flip: bool) -> dict:
    """wins/ties/losses/unparseable for the candidate: the summary's when it has them, else counted."""
    wins, losses = _int_or_none(summary.get("wins")), _int_or_none(summary.get("losses"))
    if flip:
        wins, losses = losses, wins
    counted = {
        "wins": sum(e.combined == candidate for e in examples),
        "ties": sum(e.combined == TIE for e in examples),
        "losses": sum(e.combined not in (None, TIE, candidate) for e in examples),
        "unparseable": sum(e.combined is None for e in examples),
    }
    out = {
        "wins": wins,
        "losses": losses,
        "ties": _int_or_none(summary.get("ties")),
        "unparseable": _int_or_none(summary.get("unparseable")),
    }
    return {k: (counted[k] if v is None and examples else v) for k, v in out.items()}


def _oriented_rate(value: Any, counts: Mapping[str, int | None], flip: bool) -> float | None:
    """A summary win rate as the candidate's fraction (the complement when the summary is run B's)."""
    w, t, lo = counts.get("wins"), counts.get("ties"), counts.get("losses")
    total = (w or 0) + (t or 0) + (lo or 0)
    expected = None
    if total:
        cand = ((w or 0) + 0.5 * (t or 0)) / total
        expected = 1.0 - cand if flip else cand  # the side the stored number is on
    frac = _as_fraction(value, expected)
    if frac is None:
        return None
    return 1.0 - frac if flip else frac


def _self_preference(jr: JudgeRun, runs: Mapping[str, RunInfo], summary: Mapping[str, Any]) -> str | None:
    """The summary's warning, or one of our own when the judge is one of the compared models."""
    if summary.get("warning"):
        return str(summary["warning"])
    for info in runs.values():
        if (jr.judge_digest and jr.judge_digest == info.digest) or jr.judge_name == info.model:
            return (f"the judge {jr.judge_name} is the compared model {info.model} ({info.role}): judges tend "
                    "to prefer their own answers (self-preference); use a judge from another model family")
    return None


def _load_judge(s: Session, runs: Mapping[str, RunInfo], baseline: str, candidate: str) -> JudgeResult | None:
    """The newest pairwise judge run over exactly these two eval runs (as A/B or B/A): finished first."""
    b_id, c_id = runs[baseline].eval_run_id, runs[candidate].eval_run_id
    pair = or_(
        and_(JudgeRun.eval_run_a_id == b_id, JudgeRun.eval_run_b_id == c_id),
        and_(JudgeRun.eval_run_a_id == c_id, JudgeRun.eval_run_b_id == b_id),
    )
    found = s.scalars(select(JudgeRun).where(JudgeRun.kind == "pairwise", pair).order_by(JudgeRun.id.desc())).all()
    done = [j for j in found if j.status == "done"] or [j for j in found if j.summary] or list(found)
    if not done:
        return None
    jr = done[0]
    a_role = candidate if jr.eval_run_a_id == c_id else baseline
    b_role = baseline if a_role == candidate else candidate
    summary = dict(jr.summary or {})
    examples = _judge_examples(s, jr.id, a_role, b_role)
    # Summary counts are on run B's side: flip them when B is the comparison's baseline.
    flip = (a_role == baseline) == (JUDGE_SUMMARY_SIDE == "a")
    counts = _judge_counts(summary, examples, candidate, flip)
    return JudgeResult(
        judge_run_id=jr.id,
        judge=str(summary.get("judge") or jr.judge_name),
        judge_digest=jr.judge_digest,
        status=jr.status,
        win_rate=_oriented_rate(summary.get("win_rate"), counts, flip),
        lc_win_rate=_oriented_rate(summary.get("lc_win_rate"), counts, flip),
        warning=_self_preference(jr, runs, summary),
        run_a_role=a_role,
        summary=summary,
        examples=examples,
        **counts,
    )


def _judge_examples(s: Session, judge_run_id: int, a_role: str, b_role: str) -> list[JudgeExample]:
    """Per-example verdicts and reasons of both orders, in the order the judge stored them."""
    rows = s.scalars(select(Judgment).where(Judgment.judge_run_id == judge_run_id).order_by(Judgment.id)).all()
    by_example: dict[str, JudgeExample] = {}
    for j in rows:
        ex = by_example.setdefault(j.example_id, JudgeExample(j.example_id, {}, {}, None, False))
        ex.verdicts[j.order] = _judge_verdict(j.verdict, a_role, b_role)
        ex.reasons[j.order] = j.reason
    for ex in by_example.values():
        ex.combined, ex.consistent = _combine(ex.verdicts)
    return list(by_example.values())


# -------------------------------------------------------------------------------------- comparison


def _check_suites(
    runs: Mapping[str, RunInfo], by_role: Mapping[str, dict[str, _Pred]]
) -> tuple[set[str] | None, list[str]]:
    """Runs of different suite hashes are comparable only on the example ids they share.

    Returns the ids to keep (None: keep all) and warnings; raises when there is nothing in common, since
    a delta between different questions measures nothing."""
    hashes = {r.suite_hash for r in runs.values()}
    if len(hashes) <= 1:
        return None, []
    shared = set.intersection(*(set(rows) for rows in by_role.values())) if by_role else set()
    described = ", ".join(f"{r.role}: {r.suite} #{r.suite_hash[:12]} ({r.examples} examples)" for r in runs.values())
    if not shared:
        raise CompareError(
            f"the eval runs were made on different suites and share no example id ({described})",
            "compare runs of the same suite: pass --suite NAME, or eval run ids of one suite",
        )
    union = set.union(*(set(rows) for rows in by_role.values()))
    return shared, [
        f"the eval runs come from different suite versions ({described}); only the {len(shared)} example ids "
        f"they share are compared ({len(union) - len(shared)} left out)"
    ]


def _metric_order(suite_order: list[str], by_role: Mapping[str, dict[str, _Pred]]) -> list[str]:
    """Scored metrics in the suite's order, then any others in the order first seen."""
    seen: list[str] = []
    for rows in by_role.values():
        for p in rows.values():
            seen.extend(m for m in p.scores if m not in seen)
    return [m for m in suite_order if m in seen] + [m for m in seen if m not in suite_order]


def _example_rows(roles: list[str], by_role: Mapping[str, dict[str, _Pred]]) -> list[ExampleRow]:
    """Example rows in the first run's order, then any examples only later runs have."""
    order = list(dict.fromkeys(ex_id for role in roles for ex_id in by_role[role]))
    examples: list[ExampleRow] = []
    for ex_id in order:
        first = next(by_role[r][ex_id] for r in roles if ex_id in by_role[r])
        row = ExampleRow(ex_id, _question(first.prompt), first.reference, outputs={}, raw={}, scores={})
        for role in roles:
            got = by_role[role].get(ex_id)
            row.outputs[role] = got.cleaned if got else None
            row.raw[role] = got.raw if got else None
            row.scores[role] = dict(got.scores) if got else {}
        examples.append(row)
    return examples


def _metric_tokenizer(metric: str, by_role: Mapping[str, dict[str, _Pred]]) -> tuple[str | None, str | None]:
    """The tokenizer the metric's scores were computed with, and a warning when the runs used several."""
    used = sorted({t for rows in by_role.values() for p in rows.values() if (t := p.tokenizers.get(metric))})
    if len(used) > 1:
        return ", ".join(used), f"{metric} was scored with different tokenizers ({', '.join(used)}): not comparable"
    return (used[0] if used else None), None


def _metric_row(
    metric: str,
    roles: list[str],
    examples: list[ExampleRow],
    pair: tuple[str | None, str | None],
    seed: int,
    resamples: int,
) -> MetricRow:
    """Means, delta, paired CI and win counts of one metric."""
    baseline, candidate = pair
    hib = higher_is_better(metric)
    values = {r: _mean(ex.scores[r][metric] for ex in examples if metric in ex.scores.get(r, {})) for r in roles}
    wins = {r: 0 for r in roles} | {TIE: 0}
    for ex in examples:
        w = _winner({r: ex.scores[r].get(metric) for r in roles}, hib)
        if w is not None:
            wins[w] += 1
    row = MetricRow(metric=metric, values=values, delta=None, winner=_winner(values, hib), example_wins=wins,
                    higher_is_better=hib)
    if not (baseline and candidate):
        return row
    if values.get(baseline) is not None and values.get(candidate) is not None:
        row.delta = values[candidate] - values[baseline]  # type: ignore[operator]
    diffs = [ex.scores[candidate][metric] - ex.scores[baseline][metric] for ex in examples
             if metric in ex.scores.get(candidate, {}) and metric in ex.scores.get(baseline, {})]
    row.n = len(diffs)
    ci = bootstrap_ci(diffs, seed=seed, resamples=resamples)
    if ci is not None:
        row.ci_low, row.ci_high = ci
    sign = _sign(hib)
    if sign:
        row.wins = sum(d * sign > _EPS for d in diffs)
        row.losses = sum(d * sign < -_EPS for d in diffs)
        row.ties = len(diffs) - row.wins - row.losses
    return row


def _primary(metrics: list[MetricRow]) -> MetricRow | None:
    """The first metric of the suite's order that has a better direction (a length says nothing alone)."""
    return next((m for m in metrics if m.higher_is_better is not None), metrics[0] if metrics else None)


def _movers(
    examples: list[ExampleRow], metric: MetricRow | None, baseline: str | None, candidate: str | None, top: int
) -> tuple[list[ExampleDelta], list[ExampleDelta]]:
    """The ``top`` examples that improved and regressed most on the metric, in its direction."""
    if metric is None or not (baseline and candidate) or top <= 0:
        return [], []
    sign = _sign(metric.higher_is_better) or 1
    moved: list[tuple[float, ExampleDelta]] = []
    for ex in examples:
        b, c = ex.scores[baseline].get(metric.metric), ex.scores[candidate].get(metric.metric)
        if b is None or c is None or abs(c - b) <= _EPS:
            continue
        item = ExampleDelta(ex.example_id, ex.question, ex.reference,
                            {baseline: ex.outputs[baseline], candidate: ex.outputs[candidate]},
                            {baseline: b, candidate: c}, c - b)
        moved.append(((c - b) * sign, item))
    improved = [d for gain, d in sorted(moved, key=lambda t: -t[0]) if gain > 0][:top]
    regressed = [d for gain, d in sorted(moved, key=lambda t: t[0]) if gain < 0][:top]
    return improved, regressed


def _schema_only(names: list[str], task: str | None) -> bool:
    """Text-to-SQL scored on a schema alone: no rows to execute against, so no execution accuracy."""
    return SCHEMA_METRIC in names and not any(m in names for m in EXEC_METRICS) and task in (None, "text2sql")


def compare(
    session_factory: sessionmaker[Session],
    eval_run_ids: dict[str, int],
    *,
    baseline: str | None = None,
    candidate: str | None = None,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    top: int = DEFAULT_TOP,
) -> Comparison:
    """Compare eval runs (role -> EvalRun.id). The delta is candidate - baseline: by default "tuned" -
    "vanilla", else the second role - the first. Runs of different suite hashes are compared on the
    example ids they share (with a warning); none shared is an error."""
    roles = list(eval_run_ids)
    baseline, candidate = _resolve_pair(roles, baseline, candidate)
    runs: dict[str, RunInfo] = {}
    by_role: dict[str, dict[str, _Pred]] = {}
    suite_order: list[str] = []
    judge: JudgeResult | None = None
    with session_scope(session_factory) as s:
        for role, rid in eval_run_ids.items():
            runs[role], by_role[role], order = _load_run(s, role, rid)
            suite_order.extend(m for m in order if m not in suite_order)
        if baseline and candidate:
            judge = _load_judge(s, runs, baseline, candidate)
    keep, warnings = _check_suites(runs, by_role)
    if keep is not None:
        by_role = {r: {k: p for k, p in rows.items() if k in keep} for r, rows in by_role.items()}
    examples = _example_rows(roles, by_role)
    names = _metric_order(suite_order, by_role)
    metrics = [_metric_row(m, roles, examples, (baseline, candidate), seed, resamples) for m in names]
    for m in metrics:
        m.tokenizer, warning = _metric_tokenizer(m.metric, by_role)
        if warning:
            warnings.append(warning)
    primary = _primary(metrics)
    improved, regressed = _movers(examples, primary, baseline, candidate, top)
    suites = list(dict.fromkeys(r.suite for r in runs.values()))
    task = next((r.task for r in runs.values() if r.task), None)
    schema_only = _schema_only(names, task)
    shared = (set(by_role[baseline]) & set(by_role[candidate])) if baseline and candidate else set()
    if judge is not None and judge.warning:
        warnings.append(f"judge: {judge.warning}")
    return Comparison(
        roles=roles, baseline=baseline, candidate=candidate, runs=runs, metrics=metrics, examples=examples,
        suite=" / ".join(suites), task=task, primary_metric=primary.metric if primary else None,
        improved=improved, regressed=regressed, judge=judge, schema_only=schema_only,
        notes=[SCHEMA_ONLY_NOTE] if schema_only else [], warnings=warnings, shared_examples=len(shared),
        seed=seed, resamples=resamples,
    )


# ------------------------------------------------------------------------------ resolving references


def _finished_runs(s: Session, model: str, suite: str | None) -> list[EvalRun]:
    """The model's finished eval runs, newest first, optionally of one suite."""
    query = select(EvalRun).join(RegisteredModel).where(RegisteredModel.name == model, EvalRun.status == "done")
    if suite is not None:
        query = query.where(EvalRun.suite == suite)
    return list(s.scalars(query.order_by(EvalRun.finished_at.desc(), EvalRun.id.desc())).all())


def _known_models(s: Session, limit: int = 12) -> list[str]:
    names = s.scalars(select(RegisteredModel.name).join(EvalRun).distinct().order_by(RegisteredModel.name)).all()
    return list(names)[:limit]


def _resolve_id(s: Session, ref: str, suite: str | None) -> int:
    er = s.get(EvalRun, int(ref))
    if er is None:
        raise CompareError(f"no eval run #{ref} in the store",
                           "pass a model name instead, or an eval run id that `ollatune runs` shows")
    if suite is not None and er.suite != suite:
        raise CompareError(f"eval run #{ref} is of suite {er.suite!r}, not {suite!r}",
                           f"drop --suite, or pass an eval run of suite {suite!r}")
    return er.id


def resolve_eval_run(session: Session, ref: str, suite: str | None = None) -> int:
    """An eval run id from what a person types: an integer id, or a model name (RegisteredModel.name) ->
    that model's newest finished eval run, of ``suite`` when given. Several suites without ``suite`` is
    ambiguous; the error lists what exists and names ``--suite`` as the next step."""
    ref = ref.strip()
    if ref.isdigit():
        return _resolve_id(session, ref, suite)
    found = _finished_runs(session, ref, suite)
    if not found:
        raise _missing(session, ref, suite)
    suites = list(dict.fromkeys(er.suite for er in found))
    if len(suites) > 1:
        listed = ", ".join(f"{name} (eval run #{next(er.id for er in found if er.suite == name)})" for name in suites)
        raise CompareError(f"model {ref!r} has finished eval runs of several suites: {listed}",
                           f"pass --suite NAME (one of: {', '.join(suites)}) or an eval run id")
    return found[0].id


def _missing(session: Session, ref: str, suite: str | None) -> CompareError:
    """The error for a model without a matching finished eval run, naming what the store does have."""
    any_runs = session.scalars(
        select(EvalRun).join(RegisteredModel).where(RegisteredModel.name == ref).order_by(EvalRun.id.desc())
    ).all()
    if any_runs:
        listed = ", ".join(f"#{er.id} {er.suite} ({er.status})" for er in any_runs[:10])
        want = f" of suite {suite!r}" if suite else ""
        done_suites = sorted({er.suite for er in any_runs if er.status == "done"})
        hint = (f"pass --suite with one of: {', '.join(done_suites)}" if done_suites
                else "finish an evaluation of it first (`ollatune pipeline` or the eval command), then re-run")
        return CompareError(f"model {ref!r} has no finished eval run{want}; it has: {listed}", hint)
    known = _known_models(session)
    listed = ", ".join(known) if known else "none yet"
    return CompareError(f"no model named {ref!r} has an eval run in the store; models with eval runs: {listed}",
                        "pass one of those model names, or an eval run id")


def _common_suite(session: Session, refs: Sequence[str]) -> str | None:
    """Without --suite, two model names agree on a suite when exactly one has finished runs of both (and an
    id on the other side fixes the suite), so the common case needs no flag."""
    suites: list[set[str]] = []
    for ref in refs:
        ref = ref.strip()
        if ref.isdigit():
            er = session.get(EvalRun, int(ref))
            suites.append({er.suite} if er else set())
        else:
            suites.append({er.suite for er in _finished_runs(session, ref, None)})
    common = set.intersection(*suites) if suites else set()
    return next(iter(common)) if len(common) == 1 else None


def _roles_for(name_a: str, name_b: str) -> tuple[str, str]:
    """Role names: the model names, or "A"/"B" when they are equal (or would clash with "tie")."""
    if name_a == name_b or TIE in (name_a, name_b):
        return "A", "B"
    return name_a, name_b


def compare_refs(
    session_factory: sessionmaker[Session],
    a: str,
    b: str,
    suite: str | None = None,
    *,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    top: int = DEFAULT_TOP,
) -> Comparison:
    """Compare ``b`` (candidate) against ``a`` (baseline), each a model name or an eval run id."""
    with session_scope(session_factory) as s:
        chosen = suite if suite is not None else _common_suite(s, [a, b])
        ids = [resolve_eval_run(s, ref, chosen) for ref in (a, b)]
        names = [s.get(EvalRun, i).model.name for i in ids]  # type: ignore[union-attr]
    if ids[0] == ids[1]:
        raise CompareError(f"{a!r} and {b!r} are the same eval run (#{ids[0]}): nothing to compare",
                           "pass two different models or eval run ids")
    role_a, role_b = _roles_for(names[0], names[1])
    return compare(session_factory, {role_a: ids[0], role_b: ids[1]}, baseline=role_a, candidate=role_b,
                   seed=seed, resamples=resamples, top=top)


# ------------------------------------------------------------------------------------------- checks


def _metric(comparison: Comparison, metric: str) -> MetricRow:
    row = next((m for m in comparison.metrics if m.metric == metric), None)
    if row is None:
        names = ", ".join(m.metric for m in comparison.metrics) or "none"
        raise CompareError(f"metric {metric!r} is not in the comparison (metrics: {names})",
                           "pass one of the metrics listed")
    return row


def check_threshold(
    comparison: Comparison, metric: str, max_regression: float = 0.0, *, use_ci: bool = False
) -> tuple[bool, str]:
    """Pass when the candidate is not worse than the baseline on ``metric`` by more than ``max_regression``
    (in the metric's units and direction): delta >= -max_regression when higher is better, delta <=
    +max_regression when lower is better. A negative ``max_regression`` demands an improvement of at least
    that size. With ``use_ci`` the pessimistic end of the confidence interval is checked instead of the
    delta, so noise alone cannot pass. Returns (passed, a one-line message saying why)."""
    row = _metric(comparison, metric)
    if row.higher_is_better is None:
        raise CompareError(f"{metric} has no better direction, so a regression threshold means nothing",
                           "check a metric where higher or lower is better")
    if row.delta is None:
        return False, f"FAIL {metric}: no delta (a run has no {metric} scores)"
    hib = row.higher_is_better
    value, label = row.delta, "delta"
    if use_ci:
        end = row.ci_low if hib else row.ci_high
        if end is None:
            return False, f"FAIL {metric}: no confidence interval ({row.n} paired examples; 2 are needed)"
        value, label = end, ("CI low" if hib else "CI high")
    passed = value >= -max_regression - _EPS if hib else value <= max_regression + _EPS
    bound = f">= {-max_regression:+.4f}" if hib else f"<= {max_regression:+.4f}"
    direction = "higher" if hib else "lower"
    verdict = "PASS" if passed else "FAIL"
    return passed, (f"{verdict} {metric} ({direction} is better): {label} {value:+.4f} "
                    f"({comparison.candidate} - {comparison.baseline}), required {bound}")


# ------------------------------------------------------------------------------------------ markdown


def _cell(text: str | None, limit: int) -> str:
    if text is None:
        return "—"
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _ci_text(m: MetricRow) -> str:
    return "—" if m.ci_low is None or m.ci_high is None else f"[{m.ci_low:+.3f}, {m.ci_high:+.3f}]"


def _direction(hib: bool | None) -> str:
    return "—" if hib is None else ("higher" if hib else "lower")


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100.0 * v:.1f}%"


def _md_header(c: Comparison) -> list[str]:
    lines = [f"# Evaluation: {c.suite or '?'}", ""]
    for w in c.warnings:
        lines += [f"> **Warning:** {w}", ""]
    for n in c.notes:
        lines += [f"> **Note:** {n}", ""]
    tokenizers = sorted({r.tokenizer for r in c.runs.values() if r.tokenizer})
    lower = [m.metric for m in c.metrics if m.higher_is_better is False]
    undirected = [m.metric for m in c.metrics if m.higher_is_better is None]
    text = f"Tokenizer for rouge_l/token_f1: {', '.join(tokenizers)}. " if tokenizers else ""
    text += "Higher is better" + (f" except: lower is better for {', '.join(lower)}" if lower else "")
    text += f"; no better direction for {', '.join(undirected)}." if undirected else "."
    lines += [text, ""]
    lines += ["| role | model | digest | eval run | status | examples |", "|---|---|---|---|---|---|"]
    for role in c.roles:
        r = c.runs[role]
        lines.append(f"| {_cell(role, 60)} | {_cell(r.model, 60)} | {r.digest[:19]} | {r.eval_run_id} | "
                     f"{r.status} | {r.examples} |")
    return lines + [""]


def _md_metrics(c: Comparison) -> list[str]:
    pair = bool(c.baseline and c.candidate)
    head = ["metric", *c.roles]
    if pair:
        head.append(f"Δ ({c.candidate} − {c.baseline})")
    head += ["winner", "examples won (" + " / ".join([*c.roles, TIE]) + ")"]
    if pair:
        head += [f"{round(c.ci_level * 100)}% CI", "n"]
    head += ["better", "tokenizer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in c.metrics:
        cells = [m.metric, *[_num(m.values.get(r)) for r in c.roles]]
        if pair:
            cells.append(_num(m.delta, signed=True))
        cells.append(m.winner or "—")
        cells.append(" / ".join(str(m.example_wins.get(k, 0)) for k in [*c.roles, TIE]))
        if pair:
            cells += [_ci_text(m), str(m.n)]
        cells += [_direction(m.higher_is_better), m.tokenizer or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    if pair:
        lines += ["", f"CI: paired bootstrap of the per-example delta over the examples both runs have "
                      f"({c.resamples} resamples, seed {c.seed}, percentile interval)."]
    return lines


def _md_judge(c: Comparison, width: int) -> list[str]:
    j = c.judge
    if j is None:
        return []
    lines = ["", f"## Judge: {j.judge} (pairwise, judge run #{j.judge_run_id}, {j.status})", ""]
    if j.warning:
        lines += [f"> **Warning:** {j.warning}", ""]
    lines += [f"| {c.candidate} wins | ties | {c.candidate} losses | unparseable | win rate | length-controlled |",
              "|---|---|---|---|---|---|",
              f"| {_count(j.wins)} | {_count(j.ties)} | {_count(j.losses)} | {_count(j.unparseable)} | "
              f"{_pct(j.win_rate)} | {_pct(j.lc_win_rate)} |"]
    if j.examples:
        lines += ["", "| id | verdict (ab) | verdict (ba) | combined | reason |", "|---|---|---|---|---|"]
        for e in j.examples:
            reason = next((r for r in e.reasons.values() if r), None)
            lines.append(f"| {_cell(e.example_id, 40)} | {_cell(e.verdicts.get('ab'), 30)} | "
                         f"{_cell(e.verdicts.get('ba'), 30)} | {_cell(e.combined, 30)} | {_cell(reason, width)} |")
    return lines


def _count(v: int | None) -> str:
    return "—" if v is None else str(v)


def _md_movers(c: Comparison, width: int) -> list[str]:
    if not c.primary_metric or not (c.baseline and c.candidate):
        return []
    lines: list[str] = []
    for title, items in (("improved", c.improved), ("regressed", c.regressed)):
        if not items:
            continue
        lines += ["", f"## Most {title} on {c.primary_metric} ({len(items)})", ""]
        for d in items:
            lines += [f"### {_cell(d.example_id, 60)} (Δ {d.delta:+.3f})", "",
                      f"- question: {_cell(d.question, width)}", f"- reference: {_cell(d.reference, width)}"]
            for role in (c.baseline, c.candidate):
                lines.append(f"- {role} ({_num(d.values.get(role))}): {_cell(d.outputs.get(role), width)}")
            lines.append("")
    return lines


def _md_examples(c: Comparison, max_examples: int | None, width: int) -> list[str]:
    shown = c.examples if max_examples is None else c.examples[:max_examples]
    if not shown:
        return []
    lines = ["", f"## Examples ({len(shown)} of {len(c.examples)})", ""]
    metric_names = [m.metric for m in c.metrics]
    head = ["id", "question", "reference", *[f"{r} output" for r in c.roles]]
    head += [f"{m} ({'/'.join(c.roles)})" for m in metric_names]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ex in shown:
        cells = [_cell(ex.example_id, 40), _cell(ex.question, width), _cell(ex.reference, width)]
        cells += [_cell(ex.outputs.get(r), width) for r in c.roles]
        for mname in metric_names:
            cells.append(" / ".join(_num(ex.scores.get(r, {}).get(mname)) for r in c.roles))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(comparison: Comparison, max_examples: int | None = 20, width: int = 80) -> str:
    """A Markdown report: models, metric table (mean, delta, winner, per-example wins, CI), the judge,
    the examples that moved most, then the examples."""
    c = comparison
    lines = _md_header(c) + _md_metrics(c) + _md_judge(c, width) + _md_movers(c, width)
    lines += _md_examples(c, max_examples, width)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- json


def to_json(comparison: Comparison) -> str:
    """Everything in the comparison as JSON: sorted keys (stable diffs between reports), floats as they
    are, Korean kept readable (no \\u escapes)."""
    data = {"format": "ollatune.comparison", "version": 1, **asdict(comparison)}
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------------------- html

_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948")
_GOOD, _BAD, _NEUTRAL = "#1a7f37", "#c62828", "#6b7280"
_CSS = """
body { font-family: %s; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #1f2328;
       line-height: 1.5; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: .5rem 0; } th, td { border: 1px solid #d0d7de; padding: .25rem .5rem;
       text-align: left; vertical-align: top; } th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.good { color: %s; font-weight: 600; } .bad { color: %s; font-weight: 600; } .neutral { color: %s; }
.box { border-left: 4px solid; padding: .5rem 1rem; margin: .75rem 0; }
.warning { border-color: #d29922; background: #fff8e5; } .note { border-color: #4e79a7; background: #eef4fb; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: .75rem; }
.example { border: 1px solid #d0d7de; border-radius: 6px; padding: .75rem; margin: 1rem 0; }
.out { white-space: pre-wrap; word-break: break-word; background: #f6f8fa; padding: .5rem; border-radius: 4px;
       margin: .25rem 0 0; font-family: inherit; }
.meta { color: #57606a; font-size: .9rem; } svg { max-width: 100%%; height: auto; } svg text { font-family: inherit; }
"""


def _e(value: Any) -> str:
    """HTML-escape anything shown: model output and names are untrusted."""
    return html.escape("" if value is None else str(value), quote=True)


def _tone(m: MetricRow) -> str:
    """CSS class of a delta: good/bad in the metric's direction, neutral without one or without a change."""
    sign = _sign(m.higher_is_better)
    if m.delta is None or not sign or abs(m.delta) <= _EPS:
        return "neutral"
    return "good" if m.delta * sign > 0 else "bad"


def _unit_range(values: Iterable[float | None]) -> bool:
    """Values in 0..1 share one axis; others (a length in characters) get their own scale."""
    vals = [v for v in values if v is not None]
    return all(-_EPS <= v <= 1.0 + _EPS for v in vals)


def _svg_text(x: float, y: float, text: str, anchor: str = "start", size: int = 12, fill: str = "#1f2328") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}">'
            f"{_e(text)}</text>")


def svg_bar_chart(c: Comparison) -> str:
    """Horizontal bars: each model's mean per metric. Metrics in 0..1 are drawn on 0..1; others on 0..max
    of their own values (said next to the name), so a length does not flatten the scores."""
    label_w, bar_w, bar_h, gap, top = 190, 420, 14, 12, 28
    rows = [(m, [m.values.get(r) for r in c.roles]) for m in c.metrics]
    height = top + sum(len(c.roles) * (bar_h + 2) + gap for _ in rows) + 8
    parts = [f'<svg class="bars" role="img" viewBox="0 0 {label_w + bar_w + 90} {height}" '
             f'width="{label_w + bar_w + 90}" height="{height}"><title>mean per metric</title>']
    x = label_w
    for i, role in enumerate(c.roles):  # legend
        parts.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{_PALETTE[i % len(_PALETTE)]}"/>')
        parts.append(_svg_text(x + 16, 16, role))
        x += 24 + 8 * min(len(role), 40)
    y = top
    for m, values in rows:
        unit = _unit_range(values)
        scale = 1.0 if unit else max((abs(v) for v in values if v is not None), default=1.0) or 1.0
        group_h = len(c.roles) * (bar_h + 2)
        name = m.metric if unit else f"{m.metric} (0..{scale:.3g})"
        parts.append(_svg_text(label_w - 8, y + group_h / 2 + 4, name, anchor="end"))
        for i, v in enumerate(values):
            width = 0.0 if v is None else max(0.0, v) / scale * bar_w
            parts.append(f'<rect x="{label_w}" y="{y}" width="{width:.1f}" height="{bar_h}" '
                         f'fill="{_PALETTE[i % len(_PALETTE)]}"><title>{_e(c.roles[i])}: {_num(v)}</title></rect>')
            parts.append(_svg_text(label_w + width + 4, y + bar_h - 3, _num(v), size=11))
            y += bar_h + 2
        y += gap
    return "".join(parts) + "</svg>"


def _px(value: float, mid: float, scale: float, half: float) -> float:
    """The x of a delta on a symmetric axis of +-scale around ``mid``."""
    return mid + value / scale * half


def svg_forest_plot(c: Comparison) -> str:
    """Each metric's delta (dot) with its confidence interval (line) around a zero line; green/red in the
    metric's direction, the line faint when the interval holds zero. Metrics in 0..1 share one symmetric
    axis; others use their own (labelled)."""
    rows = [m for m in c.metrics if m.delta is not None]
    if not rows:
        return ""
    label_w, plot_w, row_h, top = 200, 380, 26, 12
    mid = label_w + plot_w / 2
    unit_rows = [m for m in rows if _unit_range(m.values.values())]
    shared = max((abs(v) for m in unit_rows for v in (m.delta, m.ci_low, m.ci_high) if v is not None), default=0.0)
    shared = shared or 1.0
    height = top + row_h * len(rows) + 30
    width = label_w + plot_w + 200
    parts = [f'<svg class="forest" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
             f"<title>delta {_e(c.candidate)} − {_e(c.baseline)} with {round(c.ci_level * 100)}% CI</title>",
             f'<line x1="{mid}" y1="{top - 4}" x2="{mid}" y2="{top + row_h * len(rows)}" stroke="#9ca3af" '
             f'stroke-dasharray="3,3"/>']
    for i, m in enumerate(rows):
        own = m not in unit_rows
        extent = max((abs(v) for v in (m.delta, m.ci_low, m.ci_high) if v is not None), default=0.0) or 1.0
        scale = extent if own else shared
        y = top + row_h * i + row_h / 2
        half = plot_w / 2 - 10
        color = {"good": _GOOD, "bad": _BAD}.get(_tone(m), _NEUTRAL)
        name = f"{m.metric} (±{scale:.3g})" if own else m.metric
        parts.append(_svg_text(label_w - 8, y + 4, name, anchor="end"))
        if m.ci_low is not None and m.ci_high is not None:
            x1, x2 = _px(m.ci_low, mid, scale, half), _px(m.ci_high, mid, scale, half)
            faint = ' stroke-opacity="0.45"' if m.ci_low <= 0.0 <= m.ci_high else ""  # zero is inside: unsure
            parts.append(f'<line x1="{x1:.1f}" y1="{y}" x2="{x2:.1f}" y2="{y}" stroke="{color}" '
                         f'stroke-width="2"{faint}/>')
        parts.append(f'<circle cx="{_px(m.delta, mid, scale, half):.1f}" cy="{y}" r="5" fill="{color}">'
                     f"<title>{_e(m.metric)}: {_num(m.delta, True)} {_e(_ci_text(m))}</title></circle>")
        parts.append(_svg_text(label_w + plot_w + 8, y + 4, f"{_num(m.delta, True)} {_ci_text(m)}", size=11))
    axis_y = top + row_h * len(rows) + 16
    parts.append(_svg_text(label_w + 10, axis_y, f"−{shared:.3g}", anchor="middle", size=11))
    parts.append(_svg_text(mid, axis_y, "0", anchor="middle", size=11))
    parts.append(_svg_text(label_w + plot_w - 10, axis_y, f"+{shared:.3g}", anchor="middle", size=11))
    return "".join(parts) + "</svg>"


def _html_runs(c: Comparison) -> str:
    rows = "".join(
        f"<tr><td>{_e(role)}</td><td>{_e(r.model)}</td><td>{_e(r.digest[:19])}</td><td class=num>{r.eval_run_id}"
        f"</td><td>{_e(r.status)}</td><td class=num>{r.examples}</td><td>{_e(r.tokenizer or '—')}</td></tr>"
        for role, r in ((role, c.runs[role]) for role in c.roles)
    )
    return ("<table><tr><th>role</th><th>model</th><th>digest</th><th>eval run</th><th>status</th>"
            f"<th>examples</th><th>tokenizer</th></tr>{rows}</table>")


def _html_metrics(c: Comparison) -> str:
    pair = bool(c.baseline and c.candidate)
    head = "".join(f"<th>{_e(r)}</th>" for r in c.roles)
    if pair:
        head += f"<th>Δ {_e(c.candidate)} − {_e(c.baseline)}</th><th>{round(c.ci_level * 100)}% CI</th><th>n</th>"
        head += f"<th>{_e(c.candidate)} won / tie / lost</th>"
    head += "<th>winner</th><th>better</th><th>tokenizer</th>"
    body = []
    for m in c.metrics:
        cells = "".join(f"<td class=num>{_num(m.values.get(r))}</td>" for r in c.roles)
        if pair:
            cells += (f'<td class="num {_tone(m)}">{_num(m.delta, True)}</td><td class=num>{_e(_ci_text(m))}</td>'
                      f"<td class=num>{m.n}</td><td class=num>{m.wins} / {m.ties} / {m.losses}</td>")
        cells += (f"<td>{_e(m.winner or '—')}</td><td>{_direction(m.higher_is_better)}</td>"
                  f"<td>{_e(m.tokenizer or '—')}</td>")
        body.append(f"<tr><td>{_e(m.metric)}</td>{cells}</tr>")
    note = (f"<p class=meta>CI: paired bootstrap of the per-example delta over the examples both runs have "
            f"({c.resamples} resamples, seed {c.seed}, percentile interval). Green: better for "
            f"{_e(c.candidate)} in the metric's direction; red: worse.</p>") if pair else ""
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(body)}</table>{note}"


def _html_judge(c: Comparison) -> str:
    j = c.judge
    if j is None:
        return ""
    parts = [f"<h2>Judge: {_e(j.judge)}</h2>",
             f"<p class=meta>pairwise, judge run #{j.judge_run_id} ({_e(j.status)}), both answer orders</p>"]
    if j.warning:
        parts.append(f'<div class="box warning"><b>Warning:</b> {_e(j.warning)}</div>')
    parts.append(f"<table><tr><th>{_e(c.candidate)} wins</th><th>ties</th><th>{_e(c.candidate)} losses</th>"
                 "<th>unparseable</th><th>win rate</th><th>length-controlled win rate</th></tr>"
                 f"<tr><td class=num>{_count(j.wins)}</td><td class=num>{_count(j.ties)}</td>"
                 f"<td class=num>{_count(j.losses)}</td><td class=num>{_count(j.unparseable)}</td>"
                 f"<td class=num>{_pct(j.win_rate)}</td><td class=num>{_pct(j.lc_win_rate)}</td></tr></table>")
    if j.examples:
        rows = "".join(
            f"<tr><td>{_e(e.example_id)}</td><td>{_e(e.verdicts.get('ab') or '—')}</td>"
            f"<td>{_e(e.verdicts.get('ba') or '—')}</td><td>{_e(e.combined or 'unparseable')}"
            f"{'' if e.consistent else ' <span class=meta>(orders disagree or one missing)</span>'}</td>"
            f"<td>{_e(e.reasons.get('ab') or '')}</td><td>{_e(e.reasons.get('ba') or '')}</td></tr>"
            for e in j.examples
        )
        parts.append(f"<details><summary>verdicts per example ({len(j.examples)})</summary><table><tr><th>id</th>"
                     "<th>verdict (ab)</th><th>verdict (ba)</th><th>combined</th><th>reason (ab)</th>"
                     f"<th>reason (ba)</th></tr>{rows}</table></details>")
    return "".join(parts)


def _html_example(c: Comparison, d: ExampleDelta) -> str:
    sides = "".join(
        f"<div><div><b>{_e(role)}</b> <span class=meta>{_e(c.primary_metric)} {_num(d.values.get(role))}</span></div>"
        f'<div class="out">{_e(d.outputs.get(role) or "—")}</div></div>'
        for role in (c.baseline, c.candidate)
    )
    return (f'<div class="example"><div><b>{_e(d.example_id)}</b> <span class=meta>Δ {d.delta:+.3f}</span></div>'
            f'<div><b>question</b><div class="out">{_e(d.question)}</div></div>'
            f'<div><b>reference</b><div class="out">{_e(d.reference)}</div></div>'
            f'<div class="pair">{sides}</div></div>')


def _html_movers(c: Comparison) -> str:
    parts = []
    for title, items in (("improved", c.improved), ("regressed", c.regressed)):
        if items:
            parts.append(f"<h2>Most {title} on {_e(c.primary_metric)} ({len(items)})</h2>")
            parts.extend(_html_example(c, d) for d in items)
    return "".join(parts)


def _html_examples(c: Comparison, max_examples: int | None) -> str:
    shown = c.examples if max_examples is None else c.examples[:max_examples]
    if not shown:
        return ""
    names = [m.metric for m in c.metrics]
    head = "".join(f"<th>{_e(r)} output</th>" for r in c.roles) + "".join(
        f"<th>{_e(m)} ({_e('/'.join(c.roles))})</th>" for m in names)
    rows = []
    for ex in shown:
        cells = "".join(f'<td><div class="out">{_e(ex.outputs.get(r) or "—")}</div></td>' for r in c.roles)
        cells += "".join(f"<td class=num>{' / '.join(_num(ex.scores.get(r, {}).get(m)) for r in c.roles)}</td>"
                         for m in names)
        rows.append(f"<tr><td>{_e(ex.example_id)}</td><td>{_e(ex.question)}</td><td>{_e(ex.reference)}</td>"
                    f"{cells}</tr>")
    return (f"<h2>Examples</h2><details><summary>{len(shown)} of {len(c.examples)}</summary><table><tr><th>id</th>"
            f"<th>question</th><th>reference</th>{head}</tr>{''.join(rows)}</table></details>")


def to_html(comparison: Comparison, max_examples: int | None = 50) -> str:
    """One self-contained HTML file (inline CSS and SVG, no scripts, nothing fetched): charts, the metric
    table, the judge, the examples that moved most side by side. Everything shown is escaped."""
    c = comparison
    title = f"Evaluation: {c.suite or '?'}"
    if c.baseline and c.candidate:
        title += f" — {c.candidate} vs {c.baseline}"
    boxes = "".join(f'<div class="box warning"><b>Warning:</b> {_e(w)}</div>' for w in c.warnings)
    boxes += "".join(f'<div class="box note"><b>Note:</b> {_e(n)}</div>' for n in c.notes)
    forest = svg_forest_plot(c)
    body = [
        f"<h1>{_e(title)}</h1>", boxes, _html_runs(c),
        "<h2>Mean per metric</h2>", svg_bar_chart(c),
        *(["<h2>Delta with confidence interval</h2>", forest] if forest else []),
        "<h2>Metrics</h2>", _html_metrics(c), _html_judge(c), _html_movers(c), _html_examples(c, max_examples),
    ]
    css = _CSS % (FONT_STACK, _GOOD, _BAD, _NEUTRAL)
    return ('<!DOCTYPE html>\n<html lang="ko">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n"
            + "\n".join(p for p in body if p) + "\n</body>\n</html>\n")
