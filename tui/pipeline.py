"""``ollatune pipeline RECIPE``: data -> finetune -> export -> serve -> evals, skipping every stage whose
outputs already exist for identical inputs (content hashes), so a re-run after a failure resumes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.recipe import Recipe
from workspace.context import RunContext
from workspace.files import sha256_file, sha256_json
from workspace.settings import Settings

STAGE_ORDER = ("data", "finetune", "export", "serve", "evals")


@dataclass
class PipelineResult:
    run_id: str
    run_dir: Path
    db_path: Path
    host: str = ""
    embedded: bool = False
    tuned_gguf: Path | None = None
    vanilla_gguf: Path | None = None
    modelfile: Path | None = None
    models: dict[str, str] = field(default_factory=dict)  # role -> Ollama name
    comparison: Any = None
    skipped: list[str] = field(default_factory=list)


def run_id_for(recipe: Recipe) -> str:
    return f"{recipe.name}-{sha256_json(recipe.model_dump(mode='json'))[:10]}"


def _skip(ctx: RunContext, stage: str, inputs: Any, result: PipelineResult) -> dict | None:
    outputs = ctx.completed(stage, inputs)
    if outputs is not None:
        ctx.events(stage).done(skipped=True, **{k: v for k, v in outputs.items() if not isinstance(v, (dict, list))})
        result.skipped.append(stage)
    return outputs


class StageFailed(RuntimeError):
    """A stage raised; the error event is already written. Carries the stage and the hint."""

    def __init__(self, stage: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.hint = hint


def error_hint(exc: BaseException) -> str:
    hint = getattr(exc, "hint", "") or ""
    if not hint and isinstance(exc, MemoryError):
        hint = "not enough memory: lower train.batch_size or data.max_seq_len"
    if not hint and isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        hint = "the disk is full: free space or set OLLATUNE_HOME to a larger disk, then re-run"
    return hint or "fix the cause and re-run the same command: finished stages are skipped"


def run_pipeline(recipe: Recipe, settings: Settings, *, stdout_jsonl: bool = False, listeners=None,  # noqa: ANN001
                 until: str = "evals") -> PipelineResult:
    if until not in STAGE_ORDER:
        raise ValueError(f"--until must be one of {', '.join(STAGE_ORDER)}")
    run_id = run_id_for(recipe)
    ctx = RunContext.create(run_id, settings, stdout_jsonl=stdout_jsonl, listeners=listeners)
    tracker = {"stage": "pipeline"}
    seen = ctx.sink.listeners

    def track(event: dict) -> None:
        if event["type"] == "start" and event["stage"] != "pipeline":
            tracker["stage"] = event["stage"]

    seen.insert(0, track)
    try:
        return _run(recipe, settings, ctx, STAGE_ORDER.index(until))
    except KeyboardInterrupt:
        ctx.events(tracker["stage"]).error("interrupted", hint="re-run the same command to resume")
        raise
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        hint = error_hint(exc)
        ctx.events(tracker["stage"]).error(message, hint=hint, exception=exc.__class__.__name__)
        raise StageFailed(tracker["stage"], message, hint) from exc


def _run(recipe: Recipe, settings: Settings, ctx: RunContext, stop_after: int) -> PipelineResult:
    from finetune.base_model import resolve_base_model
    from finetune.prepare import prepare_data, resolve_data_path

    run_id = ctx.run_id
    from workspace.files import write_text_atomic

    import yaml

    write_text_atomic(ctx.run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), allow_unicode=True,
                                                                    sort_keys=False))
    result = PipelineResult(run_id, ctx.run_dir, settings.db_path)
    pipe = ctx.events("pipeline")
    pipe.start(recipe=recipe.name, run_dir=str(ctx.run_dir))

    # data
    data_path = resolve_data_path(recipe.data.path)
    data_inputs = {"data": recipe.data.model_dump(), "system": recipe.model.system,
                   "sha256": sha256_file(data_path) if data_path.is_file() else str(data_path)}
    prepared = _skip(ctx, "data", data_inputs, result)
    if prepared is None:
        p = prepare_data(recipe, ctx)
        prepared = {"dataset_id": p.dataset_id, "sha256": p.dataset_sha256, "train_path": str(p.train_path),
                    "heldout_path": str(p.heldout_path), "train_rows": p.train_rows, "heldout_rows": p.heldout_rows,
                    "val_path": str(p.val_path) if p.val_path else None, "val_rows": p.val_rows}
        ctx.mark_complete("data", data_inputs, prepared, [p.train_path, p.heldout_path])
    if stop_after < 1:
        return _finish(pipe, result)

    from finetune.train import preflight

    preflight(recipe)
    base = resolve_base_model(recipe.model.base, settings, log=ctx.events("finetune").log)

    # finetune
    ft_inputs = {"model": recipe.model.model_dump(), "train": recipe.train.model_dump(), "data": prepared["sha256"],
                 "split": data_inputs, "base": base.source_sha256}
    trained = _skip(ctx, "finetune", ft_inputs, result)
    if trained is None:
        from finetune.prepare import PreparedData
        from finetune.train import train

        pd = PreparedData(data_path, prepared["sha256"], prepared["dataset_id"], Path(prepared["train_path"]),
                          Path(prepared["heldout_path"]), prepared["train_rows"], prepared["heldout_rows"],
                          Path(prepared["val_path"]) if prepared.get("val_path") else None, prepared.get("val_rows", 0))
        tr = train(recipe, pd, ctx, base=base)
        trained = {"adapter_dir": str(tr.adapter_dir), "adapter_sha256": tr.adapter_sha256, "steps": tr.steps,
                   "final_loss": tr.final_loss, "first_loss": tr.first_loss, "training_run_id": tr.training_run_id}
        ctx.mark_complete("finetune", ft_inputs, trained, [tr.adapter_dir])
    if stop_after < 2:
        return _finish(pipe, result)

    # export: the tuned model, and the base model through the same path so both get the same quantization
    from export import ExportSource, to_gguf

    ex_inputs = {"export": recipe.export.model_dump(), "adapter": trained["adapter_sha256"], "base": base.source_sha256}
    exported = _skip(ctx, "export", ex_inputs, result)
    if exported is None:
        tuned = to_gguf(ExportSource(base.hf_dir, Path(trained["adapter_dir"]), trained["training_run_id"], "tuned"),
                        ctx, quant=recipe.export.quant, verify_tokens=recipe.export.verify_tokens)
        vanilla = to_gguf(ExportSource(base.hf_dir, None, None, "vanilla"), ctx, quant=recipe.export.quant,
                          verify_tokens=recipe.export.verify_tokens)
        exported = {"tuned_gguf": str(tuned.gguf), "tuned_sha256": tuned.sha256, "tuned_hf": str(tuned.hf_dir),
                    "tuned_artifact": tuned.artifact_id, "vanilla_gguf": str(vanilla.gguf),
                    "vanilla_sha256": vanilla.sha256, "vanilla_hf": str(vanilla.hf_dir),
                    "vanilla_artifact": vanilla.artifact_id}
        ctx.mark_complete("export", ex_inputs, exported, [tuned.gguf, vanilla.gguf])
    result.tuned_gguf = Path(exported["tuned_gguf"])
    result.vanilla_gguf = Path(exported["vanilla_gguf"])
    if stop_after < 3:
        return _finish(pipe, result)

    # serve: an Ollama (daemon or embedded) must answer for serve and evals
    from serve import ensure_ollama

    endpoint = ensure_ollama(settings, ctx.events("serve"))
    try:
        result.host, result.embedded = endpoint.host, endpoint.embedded
        served = _serve_stage(recipe, ctx, endpoint, exported, result)
        result.modelfile = Path(served["tuned"]["modelfile"])
        result.models = {role: served[role]["name"] for role in ("vanilla", "tuned")}
        if stop_after < 4:
            return _finish(pipe, result)
        _evals_stage(recipe, ctx, endpoint, prepared, served, result)
    finally:
        endpoint.close()
    return _finish(pipe, result)


def _finish(pipe, result: PipelineResult) -> PipelineResult:  # noqa: ANN001
    pipe.done(run_dir=str(result.run_dir), skipped_stages=",".join(result.skipped) or None)
    return result


def _serve_stage(recipe: Recipe, ctx: RunContext, endpoint, exported: dict, result: PipelineResult) -> dict:  # noqa: ANN001
    from sqlalchemy import select
    from transformers import AutoTokenizer

    import serve
    from workspace.store import RegisteredModel, session_scope

    events = ctx.events("serve")
    targets = {
        "vanilla": (recipe.serve.vanilla_name, exported["vanilla_gguf"], exported["vanilla_sha256"],
                    exported["vanilla_hf"], exported["vanilla_artifact"]),
        "tuned": (recipe.serve.name, exported["tuned_gguf"], exported["tuned_sha256"], exported["tuned_hf"],
                  exported["tuned_artifact"]),
    }
    # An embedded runtime keeps its models in the workspace whatever port it got; a daemon is its URL.
    host_key = f"embedded:{ctx.settings.ollama_dir}" if endpoint.embedded else endpoint.host
    sv_inputs = {"host": host_key, "serve": recipe.serve.model_dump(), "system": recipe.model.system,
                 "gguf": {r: t[2] for r, t in targets.items()}}
    served = _skip(ctx, "serve", sv_inputs, result)
    if served is not None and all(_model_digest(endpoint.host, served[r]["name"]) == served[r]["digest"]
                                  for r in targets):
        return served
    if served is not None:  # the marker is there but the Ollama we talk to lost the models: register again
        result.skipped.remove("serve")
        events.log("registered models are missing from this Ollama; registering again")
    events.start(host=endpoint.host, embedded=endpoint.embedded)
    served = {}
    for role, (name, gguf, _sha, hf_dir, artifact_id) in targets.items():
        tok = AutoTokenizer.from_pretrained(hf_dir)

        def render_jinja(messages, add_generation_prompt, tok=tok):  # noqa: ANN001
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

        spec = serve.detect_template(render_jinja)
        if recipe.model.system and role == "tuned":
            spec = dataclasses.replace(spec, system=recipe.model.system)
        serve.require_parity(render_jinja, spec)
        events.log(f"{role}: chat template family {spec.family}, stops {spec.stop}; template parity holds")
        params = dict(recipe.serve.parameters)
        info = serve.register(endpoint, Path(gguf), name, spec, params, events,
                              header=f"ollatune run {ctx.run_id} ({role})")
        with session_scope(ctx.store) as s:
            existing = s.scalar(select(RegisteredModel).where(
                RegisteredModel.name == info.name, RegisteredModel.host == host_key,
                RegisteredModel.digest == info.digest))
            if existing is None:
                existing = RegisteredModel(artifact_id=artifact_id, name=info.name, host=host_key,
                                           digest=info.digest, role=role, template_family=spec.family,
                                           modelfile_path=str(info.modelfile_path))
                s.add(existing)
                s.flush()
            model_id = existing.id
        served[role] = {"name": info.name, "digest": info.digest, "modelfile": str(info.modelfile_path),
                        "model_id": model_id, "family": spec.family}
    events.done(**{f"{r}_model": v["name"] for r, v in served.items()})
    ctx.mark_complete("serve", sv_inputs, served, [served["tuned"]["modelfile"]])
    return served


def _model_digest(host: str, name: str) -> str | None:
    """The digest under which ``name`` is registered at ``host`` now, or None."""
    import ollama

    wanted = name if ":" in name else f"{name}:latest"
    for m in ollama.Client(host=host).list().models:
        if m.model == wanted:
            return m.digest
    return None


def _evals_stage(recipe: Recipe, ctx: RunContext, endpoint, prepared: dict, served: dict,  # noqa: ANN001
                 result: PipelineResult) -> None:
    import evals
    from evals.report import compare
    from evals.suites import load_suite

    overrides: dict[str, Any] = {"dataset": {"path": prepared["heldout_path"], "format": "alpaca"}}
    overrides["params"] = {"num_predict": recipe.eval.num_predict, "seed": recipe.eval.seed}
    if recipe.eval.limit:
        overrides["limit"] = recipe.eval.limit
    if recipe.model.system:
        overrides["prompt"] = {"system": recipe.model.system}
    suite = load_suite(recipe.eval.suite, overrides)
    models = [evals.ModelUnderTest(model_id=served[r]["model_id"], name=served[r]["name"],
                                   digest=served[r]["digest"], role=r) for r in ("vanilla", "tuned")]
    ev_inputs = {"suite": evals.suite_hash(suite), "models": {r: served[r]["digest"] for r in served}}
    done = _skip(ctx, "evals", ev_inputs, result)
    if done is not None:
        ids = {k: int(v) for k, v in done["eval_run_ids"].items()}
    else:
        res = evals.run(suite, models, base_url=endpoint.host, session_factory=ctx.store, events=ctx.events("evals"),
                        run_id=ctx.run_id)
        ids = dict(res.eval_run_ids)
        ctx.mark_complete("evals", ev_inputs, {"eval_run_ids": ids}, [])
    result.comparison = compare(ctx.store, ids)
