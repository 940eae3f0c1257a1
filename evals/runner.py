"""Run a suite against models, one model at a time, and record everything in the store.

For each model (in the order given: vanilla first, then tuned, so Ollama never swaps models back and
forth) and each example, in order:

1. render the prompt; cache key = sha256(model digest + rendered messages + parameters);
2. on a cache miss call the chain and store the answer in ``call_cache`` at once;
3. clean the answer, score it, store a ``Prediction`` (raw and cleaned) and one ``Score`` per metric.

Each example is its own transaction, so a crash or a lost connection keeps what was done, and a re-run
resumes: an unfinished eval run of the same model and suite is continued, and answers come from the
cache. A complete eval run of the same (model digest, suite hash) is reused as is.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from evals.chains import build_chain
from evals.cleaning import clean
from evals.metrics import score
from evals.suites import Example, Suite, load_examples, load_suite, suite_hash
from workspace.errors import OllatuneError
from workspace.events import ProgressClock, StageEvents, null_events
from workspace.store.engine import session_scope
from workspace.store.models import CallCache, EvalRun, Prediction, RegisteredModel, Score, utcnow


@dataclass(frozen=True)
class ModelUnderTest:
    model_id: int  # RegisteredModel.id
    name: str  # the Ollama model name, e.g. "ollatune/ko-smol:q4_k_m"
    digest: str  # the Ollama model digest: what the cache and the reuse check are keyed by
    role: str  # "vanilla" | "tuned" (any label; unique within one run)


class EvalResult(BaseModel):
    """The evals stage's result (and its stage marker)."""

    suite: str
    suite_hash: str
    eval_run_ids: dict[str, int]
    aggregates: dict[str, dict[str, float]]  # role -> metric -> mean over examples
    skipped: bool  # True when every model's complete eval run was reused (nothing ran)
    reused: list[str] = Field(default_factory=list)  # roles whose complete eval run was reused


class EvalConnectionError(OllatuneError, ConnectionError):
    """Ollama could not be reached (or stopped answering) during an eval run."""


class EvalModelError(OllatuneError, RuntimeError):
    """The model call failed for another reason (model not found, server error)."""


LlmFactory = Callable[[ModelUnderTest], BaseChatModel]


def cache_key(model_digest: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    body = json.dumps(
        {"digest": model_digest, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _is_connection_error(exc: BaseException) -> bool:
    # The ollama client turns httpx.ConnectError into the builtin ConnectionError; timeouts and dropped
    # connections surface as httpx transport errors.
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx comes with langchain-ollama
        return False
    return isinstance(exc, httpx.TransportError)


def _completed_run(session_factory: sessionmaker[Session], digest: str, shash: str) -> int | None:
    with session_scope(session_factory) as s:
        return s.scalars(
            select(EvalRun.id)
            .join(RegisteredModel, EvalRun.model_id == RegisteredModel.id)
            .where(RegisteredModel.digest == digest, EvalRun.suite_hash == shash, EvalRun.status == "done")
            .order_by(EvalRun.id.desc())
            .limit(1)
        ).first()


def _open_run(
    session_factory: sessionmaker[Session], suite: Suite, shash: str, m: ModelUnderTest, params: dict, run_id: str | None
) -> tuple[int, int]:
    """An eval run to write into: the newest unfinished one for this model and suite, else a new one.
    Returns (eval run id, predictions already stored)."""
    with session_scope(session_factory) as s:
        er = s.scalars(
            select(EvalRun)
            .where(EvalRun.model_id == m.model_id, EvalRun.suite_hash == shash, EvalRun.status != "done")
            .order_by(EvalRun.id.desc())
            .limit(1)
        ).first()
        if er is None:
            er = EvalRun(run_id=run_id, suite=suite.name, suite_hash=shash, model_id=m.model_id, params=params)
            s.add(er)
        er.status = "running"
        er.finished_at = None
        if run_id:
            er.run_id = run_id
        s.flush()
        stored = s.scalar(select(func.count(Prediction.id)).where(Prediction.eval_run_id == er.id)) or 0
        return er.id, stored


def _finish_run(session_factory: sessionmaker[Session], eval_run_id: int, status: str) -> None:
    with session_scope(session_factory) as s:
        er = s.get(EvalRun, eval_run_id)
        if er is not None:
            er.status = status
            er.finished_at = utcnow()


def aggregate(session_factory: sessionmaker[Session], eval_run_id: int) -> dict[str, float]:
    """Mean of each metric over the eval run's predictions, in the suite's metric order."""
    with session_scope(session_factory) as s:
        er = s.get(EvalRun, eval_run_id)
        order = list((er.params or {}).get("metrics", [])) if er is not None else []
        rows = s.execute(
            select(Score.metric, func.avg(Score.value))
            .join(Prediction, Score.prediction_id == Prediction.id)
            .where(Prediction.eval_run_id == eval_run_id)
            .group_by(Score.metric)
        ).all()
    values = {metric: float(value) for metric, value in rows}
    rank = {m: i for i, m in enumerate(order)}
    return {m: values[m] for m in sorted(values, key=lambda m: (rank.get(m, len(rank)), m))}


def _fmt(aggs: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in aggs.items())


def _evaluate_model(
    suite: Suite,
    examples: list[Example],
    m: ModelUnderTest,
    eval_run_id: int,
    *,
    base_url: str,
    session_factory: sessionmaker[Session],
    events: StageEvents,
    llm_factory: LlmFactory | None,
) -> None:
    params = suite.params.model_dump(mode="json")
    with session_scope(session_factory) as s:
        stored = set(s.scalars(select(Prediction.example_id).where(Prediction.eval_run_id == eval_run_id)))
    todo = [ex for ex in examples if ex.id not in stored]
    total = len(examples)
    done = total - len(todo)
    clock = ProgressClock(len(todo))
    chain = None
    events.log(
        f"{m.role}: evaluating {m.name} on {total} examples"
        + (f" (resuming: {done} already stored)" if done else ""),
        role=m.role,
        model=m.name,
        eval_run_id=eval_run_id,
    )
    for i, ex in enumerate(todo, start=1):
        messages = ex.messages
        key = cache_key(m.digest, messages, params)
        with session_scope(session_factory) as s:
            hit = s.get(CallCache, key)
            raw = hit.response if hit is not None else None
        cached = raw is not None
        latency: float | None = None
        if raw is None:
            if chain is None:
                chain = build_chain(suite, m.name, base_url, llm=llm_factory(m) if llm_factory else None)
            t0 = time.perf_counter()
            try:
                raw = chain.invoke({"messages": messages})
            except Exception as e:
                where = f"{m.role} model {m.name}, example {ex.id} ({done + i}/{total}); {done + i - 1} stored"
                if _is_connection_error(e):
                    raise EvalConnectionError(
                        f"cannot reach Ollama at {base_url} ({type(e).__name__}: {e}) while evaluating {where}",
                        "start Ollama (`ollama serve`) or the embedded runtime (`ollatune serve`), check "
                        "OLLAMA_HOST, then run the same command again: stored answers are reused from the cache",
                    ) from e
                status = getattr(e, "status_code", None)
                hint = (
                    f"the model is not registered at {base_url}: register it first (`ollatune serve`/`ollama list`)"
                    if status == 404
                    else None
                )
                raise EvalModelError(f"model call failed ({type(e).__name__}: {e}) while evaluating {where}", hint) from e
            latency = round(time.perf_counter() - t0, 4)
            raw = str(raw)
            # The answer goes to the cache before anything else can fail.
            with session_scope(session_factory) as s:
                if s.get(CallCache, key) is None:
                    s.add(CallCache(key=key, model_digest=m.digest, response=raw))
        cleaned = clean(raw, suite.params.stop)
        values = score(cleaned, ex.reference, suite.metrics, suite.tokenizer)
        with session_scope(session_factory) as s:
            s.add(
                Prediction(
                    eval_run_id=eval_run_id,
                    example_id=ex.id,
                    prompt=json.dumps(messages, ensure_ascii=False),
                    reference=ex.reference,
                    raw=raw,
                    cleaned=cleaned,
                    latency_s=latency,
                    cached=cached,
                    scores=[Score(metric=k, value=float(v)) for k, v in values.items()],
                )
            )
        events.progress(done + i, total, "examples", clock.eta(i), role=m.role, model=m.name, cached=cached)


def run(
    suite: Suite | str,
    models: list[ModelUnderTest],
    *,
    base_url: str,
    session_factory: sessionmaker[Session],
    events: StageEvents | None = None,
    run_id: str | None = None,
    llm_factory: LlmFactory | None = None,
) -> EvalResult:
    """Evaluate ``models`` (in order) on ``suite`` and store predictions and scores.

    ``suite`` is a Suite or a suite file/shipped name. ``llm_factory(model)`` replaces ChatOllama (tests).
    Raises EvalConnectionError when Ollama cannot be reached; what was stored stays, and calling ``run``
    again resumes.
    """
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    events = events or null_events("evals")
    if not models:
        raise ValueError("no models to evaluate")
    roles = [m.role for m in models]
    if len(set(roles)) != len(roles):
        raise ValueError(f"each model needs its own role; got {roles}")

    examples = load_examples(suite)
    shash = suite_hash(suite)
    run_params = {
        **suite.params.model_dump(mode="json"),
        "tokenizer": suite.tokenizer,
        "metrics": list(suite.metrics),
        "examples": len(examples),
        "dataset": str(suite.dataset.path),
        "base_url": base_url,
    }
    events.start(
        suite=suite.name,
        suite_hash=shash,
        examples=len(examples),
        tokenizer=suite.tokenizer,
        models=[{"role": m.role, "name": m.name, "digest": m.digest} for m in models],
    )

    ids: dict[str, int] = {}
    aggs: dict[str, dict[str, float]] = {}
    reused: list[str] = []
    for m in models:
        existing = _completed_run(session_factory, m.digest, shash)
        if existing is not None:
            ids[m.role] = existing
            aggs[m.role] = aggregate(session_factory, existing)
            reused.append(m.role)
            events.log(
                f"{m.role}: {m.name} already has a complete eval run #{existing} for this suite; reusing it",
                role=m.role,
                model=m.name,
                eval_run_id=existing,
                skipped=True,
            )
            continue
        eval_run_id, _ = _open_run(
            session_factory, suite, shash, m, {**run_params, "model": m.name, "role": m.role}, run_id
        )
        ids[m.role] = eval_run_id
        try:
            _evaluate_model(
                suite,
                examples,
                m,
                eval_run_id,
                base_url=base_url,
                session_factory=session_factory,
                events=events,
                llm_factory=llm_factory,
            )
        except BaseException:
            _finish_run(session_factory, eval_run_id, "failed")  # the caller reports the error
            raise
        _finish_run(session_factory, eval_run_id, "done")
        aggs[m.role] = aggregate(session_factory, eval_run_id)
        events.log(f"{m.role}: {m.name}: {_fmt(aggs[m.role])}", role=m.role, eval_run_id=eval_run_id, aggregates=aggs[m.role])

    result = EvalResult(suite=suite.name, suite_hash=shash, eval_run_ids=ids, aggregates=aggs,
                        skipped=len(reused) == len(models), reused=reused)
    events.done(
        suite=suite.name,
        suite_hash=shash,
        eval_run_ids=ids,
        aggregates=aggs,
        skipped=result.skipped,
        reused=reused,
        tokenizer=suite.tokenizer,
    )
    return result
