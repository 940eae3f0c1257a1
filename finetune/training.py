"""The finetune stage: ``train(recipe, data, ctx) -> TrainResult``."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from finetune.backends import pick_backend
from finetune.base_model import ResolvedBase, resolve_base_model
from finetune.prepare import PreparedData
from finetune.recipe import Recipe
from finetune.troubleshoot import TrainingProblem
from finetune.worker import run_worker
from workspace.context import RunContext
from workspace.files import sha256_tree, tree_bytes, write_json_atomic
from workspace.store import Artifact, TrainingRun, session_scope


class TrainResult(BaseModel):
    """The finetune stage's result (and its stage marker)."""

    adapter_dir: Path
    adapter_sha256: str
    base: ResolvedBase
    backend: str
    steps: int
    final_loss: float | None = None
    first_loss: float | None = None
    training_run_id: int
    train_seconds: float = 0.0
    micro_batch: int = 0
    grad_accum: int = 0
    memory: dict[str, Any] = {}
    checkpointing: str = ""
    auto_tune: dict[str, Any] = {}


def _versions() -> dict[str, str]:
    from finetune.backends.common import package_versions

    return package_versions(("ollatune", "torch", "transformers", "peft", "trl", "datasets", "accelerate",
                             "bitsandbytes", "unsloth", "unsloth_zoo"))


def preflight(recipe: Recipe) -> None:
    """Problems a recipe can be refused for before any data or model is touched."""
    import importlib.util

    from finetune.troubleshoot import TrainingProblem

    if recipe.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise TrainingProblem("train.tensorboard=true but the tensorboard package is not installed",
                              "pip install tensorboard (or the project's [tensorboard] extra), or set "
                              "train.tensorboard=false")


def check_lengths(recipe: Recipe, data: PreparedData, base: ResolvedBase, events: Any) -> int:
    """Measure the training rows under the model's chat template before any training; refuse a run that
    would train nothing, warn when many rows are cut. Returns the number of rows that train."""
    import json

    from transformers import AutoTokenizer

    from finetune.lengths import check, ensure_chat_template, measure
    from workspace.quiet import quiet_libraries

    quiet_libraries()
    tokenizer = AutoTokenizer.from_pretrained(str(base.hf_dir))
    eos_appended = ensure_chat_template(tokenizer)
    rows = [json.loads(line) for line in data.train_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    report = measure(tokenizer, rows, recipe.data.max_seq_len, eos_appended=eos_appended)
    events.log(f"token lengths: {report.summary()}")
    check(report, warn=lambda message: events.log(message, "warning"))
    return report.trainable


def train(recipe: Recipe, data: PreparedData, ctx: RunContext, base: ResolvedBase | None = None) -> TrainResult:
    """Train the adapter of ``recipe`` on ``data`` in a worker process; the result records where it is."""
    events = ctx.events("finetune")
    preflight(recipe)
    if base is None:
        base = resolve_base_model(recipe.model.base, ctx.settings, log=events.log)
    choice = pick_backend(recipe.train.backend, base.hf_dir)
    trainable = check_lengths(recipe, data, base, events)
    total_steps = recipe.train.total_steps(trainable)
    events.start(backend=choice.name, base=recipe.model.base, max_steps=total_steps, total_steps=total_steps)
    events.log(f"backend {choice.name}: {choice.reason}")
    out_dir = ctx.run_dir / "finetune"
    out_dir.mkdir(parents=True, exist_ok=True)
    run_info = {
        "recipe": recipe.model_dump(mode="json"), "base": {"ref": base.ref, "dir": str(base.hf_dir),
                                                            "sha256": base.source_sha256},
        "backend": choice.name, "backend_reason": choice.reason, "total_steps": total_steps,
        "dataset_sha256": data.dataset_sha256, "train_rows": data.train_rows, "val_rows": data.val_rows,
        "versions": _versions(),
    }
    write_json_atomic(out_dir / "run.json", run_info)
    backend = choice.name
    with session_scope(ctx.store) as s:
        run = s.query(TrainingRun).filter_by(run_id=ctx.run_id).one_or_none()
        if run is None:
            run = TrainingRun(run_id=ctx.run_id)
            s.add(run)
        run.dataset_id = data.dataset_id
        run.base_model = base.ref
        run.backend = backend
        run.chat_template = "tokenizer"
        run.config = recipe.model_dump(mode="json")
        run.status = "running"
        s.flush()
        run_pk = run.id
    try:
        result = run_worker({
            "run": ctx.run_id, "backend": backend, "recipe": recipe.model_dump(mode="json"),
            "base_dir": str(base.hf_dir), "train_path": str(data.train_path),
            "val_path": str(data.val_path) if data.val_path else None, "output_dir": str(out_dir),
            "model_id": f"{base.ref}@{base.source_sha256}",
            "autotune_cache": str(ctx.settings.home / "cache" / "autotune.json"),
        }, out_dir, events)
    except BaseException as e:
        with session_scope(ctx.store) as s:
            run = s.get(TrainingRun, run_pk)
            run.status = "failed"
        raise e
    if result.steps == 0:
        with session_scope(ctx.store) as s:
            s.get(TrainingRun, run_pk).status = "failed"
        raise TrainingProblem(f"training ran no optimizer step on {trainable} rows (see {out_dir / 'worker.log'})",
                              "check that the rows keep answer tokens within data.max_seq_len "
                              "(`ollatune data validate FILE --model BASE`) and that train.max_steps/epochs > 0")
    # what the run trained with: the batches, the checkpointing and, when auto-tune chose them, its table
    write_json_atomic(out_dir / "run.json", {**run_info, "trained": {
        "steps": result.steps, "micro_batch": result.micro_batch, "grad_accum": result.grad_accum,
        "checkpointing": result.checkpointing, "memory": result.memory}, "auto_tune": result.auto_tune or None})
    sha = sha256_tree(result.adapter_dir)
    size = tree_bytes(result.adapter_dir)
    with session_scope(ctx.store) as s:
        run = s.get(TrainingRun, run_pk)
        run.status = "done"
        run.steps = result.steps
        run.final_loss = result.final_loss
        run.finished_at = datetime.now(timezone.utc)
        s.add(Artifact(training_run_id=run_pk, kind="adapter", path=str(result.adapter_dir), sha256=sha, bytes=size))
    events.artifact("adapter", result.adapter_dir, sha256=sha, bytes=size)
    first = result.losses[0] if result.losses else None
    events.done(steps=result.steps, final_loss=result.final_loss, first_loss=first, seconds=result.train_seconds,
                backend=backend, micro_batch=result.micro_batch, grad_accum=result.grad_accum, memory=result.memory,
                checkpointing=result.checkpointing, auto_tune=_tune_summary(result.auto_tune))
    return TrainResult(adapter_dir=result.adapter_dir, adapter_sha256=sha, base=base, backend=backend,
                       steps=result.steps, final_loss=result.final_loss, first_loss=first, training_run_id=run_pk,
                       train_seconds=result.train_seconds, micro_batch=result.micro_batch,
                       grad_accum=result.grad_accum, memory=result.memory, checkpointing=result.checkpointing,
                       auto_tune=result.auto_tune)


def _tune_summary(tuned: dict[str, Any]) -> dict[str, Any] | None:
    """Auto-tune's choice for the done event (the whole table is in run.json and auto_tune.json)."""
    if not tuned:
        return None
    return {k: tuned.get(k) for k in ("chosen", "reason", "cached", "speedup_vs_default", "limit_gib", "probe_seconds")}
