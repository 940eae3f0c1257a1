"""The finetune stage: ``train(recipe, data, ctx) -> TrainResult``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from finetune.backends import TrainJob, pick_backend, run_backend
from finetune.base_model import BaseModel, resolve_base_model
from finetune.prepare import PreparedData
from finetune.recipe import Recipe
from workspace.context import RunContext
from workspace.files import sha256_tree, tree_bytes, write_json_atomic
from workspace.store import Artifact, TrainingRun, session_scope


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path
    base: BaseModel
    backend: str
    steps: int
    final_loss: float | None
    first_loss: float | None
    training_run_id: int
    adapter_sha256: str
    train_seconds: float


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("ollatune", "torch", "transformers", "peft", "trl", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def train(recipe: Recipe, data: PreparedData, ctx: RunContext, base: BaseModel | None = None) -> TrainResult:
    events = ctx.events("finetune")
    backend = pick_backend(recipe.train.backend)
    events.start(backend=backend, base=recipe.model.base, max_steps=recipe.train.max_steps)
    if base is None:
        base = resolve_base_model(recipe.model.base, ctx.settings, log=events.log)
    rows = [json.loads(line) for line in data.train_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out_dir = ctx.run_dir / "finetune"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "run.json", {
        "recipe": recipe.model_dump(mode="json"), "base": {"ref": base.ref, "dir": str(base.hf_dir),
                                                            "sha256": base.source_sha256},
        "dataset_sha256": data.dataset_sha256, "versions": _versions(),
    })
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
        result = run_backend(TrainJob(recipe, base.hf_dir, rows, out_dir, events))
    except BaseException as e:
        with session_scope(ctx.store) as s:
            run = s.get(TrainingRun, run_pk)
            run.status = "failed"
        raise e
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
    events.done(steps=result.steps, final_loss=result.final_loss, first_loss=first, seconds=result.train_seconds)
    return TrainResult(ctx.run_dir, result.adapter_dir, base, backend, result.steps, result.final_loss, first,
                       run_pk, sha, result.train_seconds)
