"""Judge runs over stored eval runs: refusals (ko-safety), pairwise preference and rubric grades.

A judge run is keyed by (kind, suite hash, judge digest, eval runs). Every judge reply is stored as a
:class:`~workspace.store.models.Judgment` the moment it arrives (pairwise: one row per order, the raw text
kept, unreadable replies included), so an interrupted judge run resumes without asking again, and a finished
one is reused. The judge is a different model from the ones under test and runs after them (no swapping).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.language_models import BaseChatModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evals.suites import Suite, load_suite, suite_hash
from workspace.errors import OllatuneError
from workspace.events import StageEvents, null_events
from workspace.store.engine import session_scope
from workspace.store.models import (
    Artifact,
    EvalRun,
    JudgeRun,
    Judgment,
    Prediction,
    RegisteredModel,
    Score,
    TrainingRun,
    utcnow,
)


class JudgeRunError(OllatuneError, ValueError):
    """Eval runs that cannot be judged as asked (unfinished, unrelated examples, a missing answer)."""


JudgeFactory = Callable[[], BaseChatModel]


def _judge_llm(suite: Suite, judge_name: str, base_url: str, llm: BaseChatModel | None) -> BaseChatModel:
    if llm is not None:
        return llm
    from evals.judges import judge_chat_model

    j = suite.judge
    assert j is not None
    return judge_chat_model(judge_name, base_url, seed=j.seed, num_ctx=j.num_ctx, num_predict=j.num_predict)


def _open_judge_run(s: Session, kind: str, suite: Suite, shash: str, judge_name: str, judge_digest: str, a: int,
                    b: int | None) -> JudgeRun:
    jr = s.scalars(select(JudgeRun).where(JudgeRun.kind == kind, JudgeRun.suite_hash == shash,
                                          JudgeRun.judge_digest == judge_digest, JudgeRun.eval_run_a_id == a,
                                          JudgeRun.eval_run_b_id.is_(None) if b is None
                                          else JudgeRun.eval_run_b_id == b)
                   .order_by(JudgeRun.id.desc()).limit(1)).first()
    if jr is None:
        jr = JudgeRun(kind=kind, suite=suite.name, suite_hash=shash, judge_name=judge_name, judge_digest=judge_digest,
                      eval_run_a_id=a, eval_run_b_id=b, params=suite.judge.model_dump(mode="json") if suite.judge
                      else {})
        s.add(jr)
    if jr.status != "done":
        jr.status = "running"
    s.flush()
    return jr


def _predictions(s: Session, eval_run_id: int) -> dict[str, Prediction]:
    er = s.get(EvalRun, eval_run_id)
    if er is None:
        raise JudgeRunError(f"no eval run #{eval_run_id}", "list eval runs with `ollatune runs` or `ollatune eval "
                            "compare`")
    if er.status != "done":
        raise JudgeRunError(f"eval run #{eval_run_id} ({er.suite}, {er.model.name}) is {er.status}, not finished",
                            "finish it first: run the same `ollatune eval run` command again")
    return {p.example_id: p for p in s.scalars(select(Prediction).where(Prediction.eval_run_id == eval_run_id))}


def _question(p: Prediction) -> str:
    import json

    try:
        messages = json.loads(p.prompt)
        return next(m["content"] for m in reversed(messages) if m.get("role") == "user")
    except (ValueError, StopIteration, TypeError, KeyError):
        return p.prompt


def _base_of(s: Session, model_id: int) -> str | None:
    """The base model a registered model was tuned from (its training run), else its own name."""
    m = s.get(RegisteredModel, model_id)
    if m is None:
        return None
    if m.artifact_id is not None:
        art = s.get(Artifact, m.artifact_id)
        if art is not None and art.training_run_id is not None:
            tr = s.get(TrainingRun, art.training_run_id)
            if tr is not None:
                return tr.base_model
    return m.name


def _parallel(items: list[Any], fn: Callable[[Any], Any], concurrency: int) -> Any:
    """``fn`` over ``items`` with ``concurrency`` in flight, results yielded in item order."""
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="judge") as pool:
        futures = [pool.submit(fn, it) for it in items]
        for it, fut in zip(items, futures):
            yield it, fut.result()


# ------------------------------------------------------------------------------------------ refusals


def judge_refusals(session_factory: sessionmaker[Session], suite: Suite, eval_run_id: int, *, judge_name: str,
                   judge_digest: str, base_url: str, llm: BaseChatModel | None = None,
                   events: StageEvents | None = None, concurrency: int = 4) -> dict[str, Any]:
    """Judge every answer of a safety eval run: refused or not; ``safe_behaviour`` = the row's expectation met
    (refuse harmful, answer harmless), stored as scores of the predictions. Returns the judge run's summary."""
    from evals.judges import judge_refusal, safety_score

    events = events or null_events("evals")
    shash = suite_hash(suite)
    judge = _judge_llm(suite, judge_name, base_url, llm)
    with session_scope(session_factory) as s:
        preds = _predictions(s, eval_run_id)
        jr = _open_judge_run(s, "refusal", suite, shash, judge_name, judge_digest, eval_run_id, None)
        jr_id = jr.id
        done = set(s.scalars(select(Judgment.example_id).where(Judgment.judge_run_id == jr_id)))
        todo = [(p.example_id, p.id, _question(p), p.cleaned, p.reference) for p in preds.values()
                if p.example_id not in done]
    events.log(f"judging refusals of eval run #{eval_run_id} with {judge_name}: {len(todo)} answers to judge",
               judge=judge_name, eval_run_id=eval_run_id)
    for i, (item, verdict) in enumerate(_parallel(todo, lambda t: judge_refusal(judge, t[2], t[3]), concurrency), 1):
        ex_id, pred_id, _, _, expected = item
        harmful = expected == "refuse"
        value = safety_score(harmful, verdict.refused)
        with session_scope(session_factory) as s:
            s.add(Judgment(judge_run_id=jr_id, example_id=ex_id, order="single",
                           verdict=None if verdict.refused is None else ("refused" if verdict.refused else "answered"),
                           value=None if verdict.refused is None else float(verdict.refused), reason=verdict.reason,
                           raw=verdict.raw, parsed_by=verdict.parsed_by))
            if value is not None:
                tok = f"judge:{judge_name}"
                s.add_all([Score(prediction_id=pred_id, metric="safe_behaviour", value=value, tokenizer=tok),
                           Score(prediction_id=pred_id, metric="refused", value=float(bool(verdict.refused)),
                                 tokenizer=tok)])
        events.progress(i, len(todo), "judgments", judge=judge_name)
    with session_scope(session_factory) as s:
        rows = s.scalars(select(Judgment).where(Judgment.judge_run_id == jr_id)).all()
        summary = {"n": len(rows), "refused": sum(r.verdict == "refused" for r in rows),
                   "answered": sum(r.verdict == "answered" for r in rows),
                   "unparseable": sum(r.verdict is None for r in rows), "judge": judge_name}
        jr = s.get(JudgeRun, jr_id)
        jr.summary, jr.status, jr.finished_at = summary, "done", utcnow()
    return summary


# ------------------------------------------------------------------------------------------ pairwise


def judge_pairwise(session_factory: sessionmaker[Session], run_a: int, run_b: int, *, judge_name: str,
                   judge_digest: str, base_url: str, suite: Suite | str = "pairwise",
                   llm: BaseChatModel | None = None, events: StageEvents | None = None,
                   concurrency: int = 4) -> dict[str, Any]:
    """Judge run B (candidate) against run A (baseline) on their shared examples, both orders each; the
    summary counts B's wins, ties and losses, with the win rate and the length-controlled win rate."""
    from evals.judges import judge_pair, self_preference_warning, summarize_pairwise

    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    if suite.kind != "pairwise":
        raise JudgeRunError(f"suite {suite.name!r} is not a pairwise suite")
    events = events or null_events("evals")
    shash = suite_hash(suite)
    judge = _judge_llm(suite, judge_name, base_url, llm)
    with_ref = bool(suite.judge and suite.judge.reference)
    with session_scope(session_factory) as s:
        pa, pb = _predictions(s, run_a), _predictions(s, run_b)
        shared = [k for k in pa if k in pb]
        if not shared:
            raise JudgeRunError(f"eval runs #{run_a} and #{run_b} share no example ids",
                                "judge two eval runs of the same suite and examples")
        ea, eb = s.get(EvalRun, run_a), s.get(EvalRun, run_b)
        compared = [(ea.model.name, ea.model.digest, _base_of(s, ea.model_id)),
                    (eb.model.name, eb.model.digest, _base_of(s, eb.model_id))]
        jr = _open_judge_run(s, "pairwise", suite, shash, judge_name, judge_digest, run_a, run_b)
        jr_id = jr.id
        have: dict[str, set[str]] = {}
        for ex_id, order in s.execute(select(Judgment.example_id, Judgment.order)
                                      .where(Judgment.judge_run_id == jr_id)):
            have.setdefault(ex_id, set()).add(order)
        todo = [(k, _question(pa[k]), pa[k].cleaned, pb[k].cleaned, pa[k].reference) for k in shared
                if have.get(k) != {"ab", "ba"}]
    warning = self_preference_warning(judge_name, judge_digest, compared)
    if warning:
        events.log(f"warning: {warning}", judge=judge_name)
    events.log(f"pairwise: {judge_name} judges #{run_b} against #{run_a} on {len(shared)} examples "
               f"({len(todo)} to judge, both orders)", judge=judge_name)

    def one(t):  # noqa: ANN001, ANN202
        _, question, ans_a, ans_b, ref = t
        return judge_pair(judge, question, ans_a, ans_b, ref if with_ref and ref else None)

    for i, (item, pj) in enumerate(_parallel(todo, one, concurrency), 1):
        ex_id = item[0]
        with session_scope(session_factory) as s:
            s.execute(Judgment.__table__.delete().where(Judgment.judge_run_id == jr_id,
                                                        Judgment.example_id == ex_id))
            for v in pj.verdicts:
                # stored in terms of the eval runs: "a" = run A's answer won, whatever position it was shown in
                verdict = {"1": "a", "2": "b", "tie": "tie", None: None}[v.outcome]
                s.add(Judgment(judge_run_id=jr_id, example_id=ex_id, order=v.order, verdict=verdict,
                               reason=v.reason, raw=v.raw, parsed_by=v.parsed_by))
        events.progress(i, len(todo), "examples", judge=judge_name)
    from evals.judges import combine_orders

    with session_scope(session_factory) as s:
        by_ex: dict[str, dict[str, str | None]] = {}
        for j in s.scalars(select(Judgment).where(Judgment.judge_run_id == jr_id)):
            by_ex.setdefault(j.example_id, {})[j.order] = j.verdict
        flip = {"a": "2", "b": "1", "tie": "tie", None: None}  # from B's side: "1" = B won
        outcomes = [combine_orders(flip[by_ex[k].get("ab")], flip[by_ex[k].get("ba")]) for k in shared]
        lengths_b = [len(pb[k].cleaned) for k in shared]
        lengths_a = [len(pa[k].cleaned) for k in shared]
        summary = summarize_pairwise(outcomes, lengths_b, lengths_a)
        summary.update(judge=judge_name, warning=warning, baseline=compared[0][0], candidate=compared[1][0],
                       consistent=sum(1 for k in shared if by_ex[k].get("ab") is not None
                                      and by_ex[k].get("ab") == by_ex[k].get("ba")))
        jr = s.get(JudgeRun, jr_id)
        jr.summary, jr.status, jr.finished_at = summary, "done", utcnow()
    events.log(f"pairwise: {compared[1][0]} vs {compared[0][0]}: {summary['wins']} wins, {summary['ties']} ties, "
               f"{summary['losses']} losses, {summary['unparseable']} unparseable", judge=judge_name, **{
                   k: summary[k] for k in ("win_rate", "lc_win_rate")})
    return {**summary, "judge_run_id": jr_id}


# ------------------------------------------------------------------------------------------- grades


def grade_run(session_factory: sessionmaker[Session], eval_run_id: int, *, judge_name: str, judge_digest: str,
              base_url: str, suite: Suite | str = "grade", llm: BaseChatModel | None = None,
              events: StageEvents | None = None, concurrency: int = 4) -> dict[str, Any]:
    """G-Eval-style 1-5 grades of every answer of an eval run against the suite's rubric."""
    from evals.judges import grade_answer

    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    if suite.kind != "grade" or suite.judge is None or not suite.judge.rubric:
        raise JudgeRunError(f"suite {suite.name!r} is not a grade suite with a rubric")
    events = events or null_events("evals")
    shash = suite_hash(suite)
    judge = _judge_llm(suite, judge_name, base_url, llm)
    rubric, with_ref = suite.judge.rubric, suite.judge.reference
    with session_scope(session_factory) as s:
        preds = _predictions(s, eval_run_id)
        jr = _open_judge_run(s, "grade", suite, shash, judge_name, judge_digest, eval_run_id, None)
        jr_id = jr.id
        done = set(s.scalars(select(Judgment.example_id).where(Judgment.judge_run_id == jr_id)))
        todo = [(p.example_id, _question(p), p.cleaned, p.reference) for p in preds.values()
                if p.example_id not in done]
    for i, (item, g) in enumerate(_parallel(
            todo, lambda t: grade_answer(judge, t[1], t[2], rubric, t[3] if with_ref and t[3] else None),
            concurrency), 1):
        with session_scope(session_factory) as s:
            s.add(Judgment(judge_run_id=jr_id, example_id=item[0], order="single",
                           verdict=None if g.parsed is None else str(g.parsed), value=g.score, reason=g.reason,
                           raw=g.raw, parsed_by=g.parsed_by))
        events.progress(i, len(todo), "answers", judge=judge_name)
    with session_scope(session_factory) as s:
        rows = s.scalars(select(Judgment).where(Judgment.judge_run_id == jr_id)).all()
        scores = [r.value for r in rows if r.value is not None]
        summary = {"n": len(rows), "graded": len(scores), "unparseable": len(rows) - len(scores),
                   "mean_grade": sum(scores) / len(scores) if scores else None, "judge": judge_name}
        jr = s.get(JudgeRun, jr_id)
        jr.summary, jr.status, jr.finished_at = summary, "done", utcnow()
    return {**summary, "judge_run_id": jr_id}
