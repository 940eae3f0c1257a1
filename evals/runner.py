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
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from evals.chains import build_chain
from evals.scoring import Scorer
from evals.suites import Example, Suite, SuiteError, load_examples, load_suite, suite_hash
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


def _call_model(chain: Any, messages: list[dict[str, str]]) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    out = chain.invoke({"messages": messages})
    if isinstance(out, str):  # a chain whose parser returns text only
        out = {"text": out}
    return out, round(time.perf_counter() - t0, 4)


def _call_error(e: BaseException, m: ModelUnderTest, ex: Example, position: int, total: int, stored: int,
                base_url: str) -> OllatuneError:
    where = f"{m.role} model {m.name}, example {ex.id} ({position}/{total}); {stored} stored"
    if _is_connection_error(e):
        return EvalConnectionError(
            f"cannot reach Ollama at {base_url} ({type(e).__name__}: {e}) while evaluating {where}",
            "start Ollama (`ollama serve`) or the embedded runtime (`ollatune serve`), check "
            "OLLAMA_HOST, then run the same command again: stored answers are reused from the cache",
        )
    status = getattr(e, "status_code", None)
    hint = (
        f"the model is not registered at {base_url}: register it first (`ollatune serve`/`ollama list`)"
        if status == 404
        else None
    )
    return EvalModelError(f"model call failed ({type(e).__name__}: {e}) while evaluating {where}", hint)


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
    concurrency: int,
    scorer: Scorer,
) -> None:
    """Ask ``m`` every example not yet stored, ``concurrency`` calls at a time (the runtime's parallel slots
    decode them in one batch; greedy answers do not depend on it), and store predictions in example order.
    Each answer goes to the call cache from the worker the moment it arrives, so an interrupted run never
    asks for it again."""
    params = suite.params.model_dump(mode="json")
    with session_scope(session_factory) as s:
        stored = set(s.scalars(select(Prediction.example_id).where(Prediction.eval_run_id == eval_run_id)))
    todo = [ex for ex in examples if ex.id not in stored]
    total = len(examples)
    done = total - len(todo)
    clock = ProgressClock(len(todo))
    events.log(
        f"{m.role}: evaluating {m.name} on {total} examples"
        + (f" (resuming: {done} already stored)" if done else "")
        + (f", {concurrency} at a time" if concurrency > 1 and len(todo) > 1 else ""),
        role=m.role,
        model=m.name,
        eval_run_id=eval_run_id,
    )
    chain_box: list[Any] = []
    chain_lock = threading.Lock()

    def chain() -> Any:
        with chain_lock:
            if not chain_box:
                chain_box.append(build_chain(suite, m.name, base_url, llm=llm_factory(m) if llm_factory else None))
            return chain_box[0]

    def answer(ex: Example) -> tuple[dict[str, Any], float | None, bool]:
        key = cache_key(m.digest, ex.messages, params)
        with session_scope(session_factory) as s:
            hit = s.get(CallCache, key)
            if hit is not None:
                return {"text": hit.response, **(hit.meta or {})}, None, True
        out, latency = _call_model(chain(), ex.messages)
        out["text"] = str(out.get("text", ""))
        meta = {k: out.get(k) for k in ("tokens", "prompt_tokens", "done_reason") if out.get(k) is not None}
        with session_scope(session_factory) as s:
            if s.get(CallCache, key) is None:
                s.add(CallCache(key=key, model_digest=m.digest, response=out["text"], meta=meta or None))
        return out, latency, False

    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="eval")
    try:
        futures = [pool.submit(answer, ex) for ex in todo]
        for i, (ex, fut) in enumerate(zip(todo, futures), start=1):
            try:
                out, latency, cached = fut.result()
            except Exception as e:
                for f in futures[i:]:
                    f.cancel()
                raise _call_error(e, m, ex, done + i, total, done + i - 1, base_url) from e
            scored = scorer.score(ex, out["text"])
            with session_scope(session_factory) as s:
                s.add(
                    Prediction(
                        eval_run_id=eval_run_id,
                        example_id=ex.id,
                        prompt=json.dumps(ex.messages, ensure_ascii=False),
                        reference=ex.reference,
                        raw=out["text"],
                        cleaned=scored.cleaned,
                        latency_s=latency,
                        cached=cached,
                        tokens=out.get("tokens"),
                        prompt_tokens=out.get("prompt_tokens"),
                        details=scored.details,
                        scores=[Score(metric=k, value=float(v), tokenizer=scored.tokenizers.get(k))
                                for k, v in scored.values.items()],
                    )
                )
            events.progress(done + i, total, "examples", clock.eta(i), role=m.role, model=m.name, cached=cached)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run(
    suite: Suite | str,
    models: list[ModelUnderTest],
    *,
    base_url: str,
    session_factory: sessionmaker[Session],
    events: StageEvents | None = None,
    run_id: str | None = None,
    llm_factory: LlmFactory | None = None,
    concurrency: int = 4,
    judge: ModelUnderTest | None = None,
) -> EvalResult:
    """Evaluate ``models`` (in order) on ``suite`` and store predictions and scores.

    ``suite`` is a Suite or a suite file/shipped name. ``llm_factory(model)`` replaces ChatOllama (tests).
    ``concurrency`` calls are in flight at a time, one model at a time. A suite judged per answer (ko-safety)
    needs ``judge``: it runs after every model has answered, so the server never swaps models back and forth.
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

    if suite.kind != "generate":
        raise SuiteError(f"suite {suite.name!r} is a {suite.kind} suite: it judges eval runs",
                         f"use `ollatune eval {suite.kind}` with the eval runs to judge")
    if suite.judge is not None and suite.judge.kind == "refusal" and judge is None:
        raise SuiteError(f"suite {suite.name!r} is judged: name the judge model", "add --judge NAME (any Ollama "
                         "model; not one of the models under test)")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    examples = load_examples(suite)
    shash = suite_hash(suite)
    scorer = Scorer(suite)
    run_params = {
        **suite.params.model_dump(mode="json"),
        "tokenizer": suite.tokenizer,
        "metrics": list(suite.metrics),
        "examples": len(examples),
        "dataset": str(suite.dataset.path) if suite.dataset else None,
        "base_url": base_url,
        "schema_only": scorer.schema_only(),
        "concurrency": concurrency,
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
                concurrency=concurrency,
                scorer=scorer,
            )
        except BaseException:
            _finish_run(session_factory, eval_run_id, "failed")  # the caller reports the error
            raise
        _finish_run(session_factory, eval_run_id, "done")
        aggs[m.role] = aggregate(session_factory, eval_run_id)
        events.log(f"{m.role}: {m.name}: {_fmt(aggs[m.role])}", role=m.role, eval_run_id=eval_run_id, aggregates=aggs[m.role])

    if suite.judge is not None and suite.judge.kind == "refusal" and judge is not None:
        from evals.judging import judge_refusals

        for m in models:  # after every model answered: the judge is loaded once, nothing swaps back
            summary = judge_refusals(session_factory, suite, ids[m.role], judge_name=judge.name,
                                     judge_digest=judge.digest, base_url=base_url,
                                     llm=llm_factory(judge) if llm_factory else None, events=events,
                                     concurrency=concurrency)
            aggs[m.role] = aggregate(session_factory, ids[m.role])
            events.log(f"{m.role}: judged by {judge.name}: {summary['refused']} refused, {summary['answered']} "
                       f"answered, {summary['unparseable']} unreadable; {_fmt(aggs[m.role])}", role=m.role)

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


# ------------------------------------------------------------------------------ predictions made elsewhere


class PredictionsError(OllatuneError, ValueError):
    """A predictions file that cannot be scored: the file and line are in the message; nothing was stored."""

    default_hint = "fix the file at the line named and run the same command again (nothing was stored)"


_TEXT_KEYS = ("prediction", "text", "output", "answer")


def read_predictions(path: Path, examples: list[Example]) -> dict[str, str]:
    """example id -> prediction text from a JSONL file of ``{"id": ..., "prediction": ...}`` rows (``text``,
    ``output`` or ``answer`` also name the text). Every problem is found before anything is stored: bad
    JSON, a row without id or text, an id the suite does not have, a duplicate id, a missing example."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"predictions file {path} does not exist", "pass a JSONL file of {id, prediction} rows")
    known = {ex.id for ex in examples}
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise PredictionsError(f"{path}:{lineno}: not UTF-8 text") from None
            except json.JSONDecodeError as e:
                raise PredictionsError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise PredictionsError(f"{path}:{lineno}: expected an object with id and prediction")
            if row.get("id") in (None, ""):
                raise PredictionsError(f"{path}:{lineno}: missing field 'id'")
            ex_id = str(row["id"])
            key = next((k for k in _TEXT_KEYS if k in row), None)
            if key is None or not isinstance(row[key], str):
                raise PredictionsError(f"{path}:{lineno}: missing text field (one of {', '.join(_TEXT_KEYS)}) for "
                                       f"id {ex_id!r}")
            if ex_id not in known:
                raise PredictionsError(f"{path}:{lineno}: id {ex_id!r} is not an example of this suite",
                                       "check that the predictions were made on the same dataset (--set "
                                       "dataset.path=...)")
            if ex_id in out:
                raise PredictionsError(f"{path}:{lineno}: duplicate id {ex_id!r} (first at line {first_line[ex_id]})")
            out[ex_id] = row[key]
            first_line[ex_id] = lineno
    missing = [ex.id for ex in examples if ex.id not in out]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise PredictionsError(f"{path}: no prediction for {len(missing)} of {len(examples)} examples: {shown}",
                               "add them, or score a subset with --set limit=N")
    return out


def score_predictions(
    suite: Suite | str,
    path: Path,
    *,
    label: str,
    session_factory: sessionmaker[Session],
    events: StageEvents | None = None,
) -> EvalResult:
    """Score a predictions file with the suite's metrics and store it as an eval run (source "score") of a
    model named ``label``; no model is called. All or nothing: one transaction."""
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    if suite.kind != "generate":
        raise SuiteError(f"suite {suite.name!r} is a {suite.kind} suite: it scores no predictions")
    if suite.judge is not None:
        raise SuiteError(f"suite {suite.name!r} needs a judge model; predictions files are scored without one",
                         "use `ollatune eval run` for judged suites")
    events = events or null_events("evals")
    examples = load_examples(suite)
    texts = read_predictions(Path(path), examples)
    shash = suite_hash(suite)
    digest = "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    scorer = Scorer(suite)
    events.start(suite=suite.name, suite_hash=shash, examples=len(examples), predictions=str(path))
    scored = scorer.score_batch(examples, [texts[ex.id] for ex in examples])
    params = {**suite.params.model_dump(mode="json"), "tokenizer": suite.tokenizer, "metrics": list(suite.metrics),
              "examples": len(examples), "dataset": str(suite.dataset.path) if suite.dataset else None,
              "predictions": str(Path(path).resolve()), "schema_only": scorer.schema_only()}
    with session_scope(session_factory) as s:
        host = f"predictions:{Path(path).resolve()}"
        model = s.scalars(select(RegisteredModel).where(RegisteredModel.name == label, RegisteredModel.host == host,
                                                        RegisteredModel.digest == digest)).first()
        if model is None:
            model = RegisteredModel(name=label, host=host, digest=digest, role="external", template_family="unknown")
            s.add(model)
            s.flush()
        er = EvalRun(suite=suite.name, suite_hash=shash, model_id=model.id, params={**params, "model": label,
                     "role": label}, status="done", source="score", finished_at=utcnow())
        s.add(er)
        s.flush()
        for ex, sc in zip(examples, scored):
            s.add(Prediction(eval_run_id=er.id, example_id=ex.id, prompt=json.dumps(ex.messages, ensure_ascii=False),
                             reference=ex.reference, raw=texts[ex.id], cleaned=sc.cleaned, cached=False,
                             details=sc.details,
                             scores=[Score(metric=k, value=float(v), tokenizer=sc.tokenizers.get(k))
                                     for k, v in sc.values.items()]))
        eval_run_id = er.id
    aggs = {label: aggregate(session_factory, eval_run_id)}
    events.done(suite=suite.name, eval_run_ids={label: eval_run_id}, aggregates=aggs)
    return EvalResult(suite=suite.name, suite_hash=shash, eval_run_ids={label: eval_run_id}, aggregates=aggs,
                      skipped=False)
