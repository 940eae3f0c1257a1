"""``run_pipeline(recipe, settings)``: data -> finetune -> export -> serve -> evals.

This layer owns run identity, stage markers and error events, and nothing else: every stage is one call
of its package's public function with typed inputs, whose typed result is what the stage's marker stores.

- Run identity: the recipe name plus a hash of what the adapter depends on (model, data, train sections).
  Changing an export, serve or evaluation setting keeps the run and re-runs only the stages it feeds.
- Stage inputs: each stage's key covers its own settings and the results it consumes (content hashes), so
  a stage is skipped exactly when its own inputs are unchanged, and a re-run after a failure resumes.
- Errors: a stage raises (:class:`workspace.errors.OllatuneError` with message and hint, or anything else);
  this layer writes the one ``error`` event, labelled with the stage that was running, and raises
  :class:`StageFailed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from export import ExportResult
from finetune.prepare import PreparedData
from finetune.recipe import Recipe
from pipeline.markers import StageMarkers, input_key
from serve.publishing import PublishResult
from workspace.context import RunContext
from workspace.errors import OllatuneError, error_hint, error_message
from workspace.files import sha256_file, sha256_json, write_text_atomic
from workspace.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from evals.report import Comparison
    from evals.runner import EvalResult
    from finetune.base_model import ResolvedBase
    from finetune.training import TrainResult
    from serve.client import OllamaEndpoint

STAGE_ORDER = ("data", "finetune", "export", "serve", "evals")


class StageFailed(OllatuneError):
    """A stage raised; its error event is written. ``stage`` names it, ``message`` is the whole message."""

    def __init__(self, stage: str, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.stage = stage


# ------------------------------------------------------------------------------------------- stage inputs


class _Inputs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataInputs(_Inputs):
    data: dict[str, Any]
    system: str | None
    source: str  # sha256 of the data file, or the source reference (hub ids)


class FinetuneInputs(_Inputs):
    model: dict[str, Any]
    train: dict[str, Any]
    data: str  # the data stage's input key (same rows, same split)
    base: str  # sha256 of the base model's source


class ExportInputs(_Inputs):
    export: dict[str, Any]
    adapter: str  # sha256 of the adapter folder
    base: str


class ServeInputs(_Inputs):
    host: str  # the daemon's URL, or the embedded runtime's store
    names: dict[str, str]  # role -> Ollama name
    parameters: dict[str, Any]
    system: str | None  # the system prompt the tuned model was trained with
    gguf: dict[str, str]  # role -> sha256 of the registered GGUF


class EvalsInputs(_Inputs):
    suite_hash: str  # covers the held-out examples, prompt, parameters and metrics
    models: dict[str, str]  # role -> model digest


# ------------------------------------------------------------------------------------------ stage results


class ExportedModels(BaseModel):
    """The export stage's marker: the tuned model and the base model through the same path."""

    tuned: ExportResult
    vanilla: ExportResult


class PublishedModels(BaseModel):
    """The serve stage's marker."""

    vanilla: PublishResult
    tuned: PublishResult

    def roles(self) -> dict[str, PublishResult]:
        return {"vanilla": self.vanilla, "tuned": self.tuned}


@dataclass
class PipelineResult:
    run_id: str
    run_dir: Path
    db_path: Path
    host: str = ""
    embedded: bool = False
    data: PreparedData | None = None
    trained: TrainResult | None = None
    exported: ExportedModels | None = None
    served: PublishedModels | None = None
    evaluated: EvalResult | None = None
    comparison: Comparison | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def tuned_gguf(self) -> Path | None:
        return self.exported.tuned.gguf if self.exported else None

    @property
    def vanilla_gguf(self) -> Path | None:
        return self.exported.vanilla.gguf if self.exported else None

    @property
    def modelfile(self) -> Path | None:
        return self.served.tuned.modelfile if self.served else None

    @property
    def models(self) -> dict[str, str]:
        return {role: r.name for role, r in self.served.roles().items()} if self.served else {}


# ------------------------------------------------------------------------------------------------ identity


def run_id_for(recipe: Recipe) -> str:
    """The run a recipe trains in: its name and a hash of what the adapter depends on."""
    identity = {"model": recipe.model.model_dump(mode="json"), "data": recipe.data.model_dump(mode="json"),
                "train": recipe.train.model_dump(mode="json")}
    return f"{recipe.name}-{sha256_json(identity)[:10]}"


def tuned_name(recipe: Recipe) -> str:
    return recipe.serve.name or f"ollatune/{recipe.name.lower()}"


def vanilla_name(recipe: Recipe, base: ResolvedBase) -> str:
    return recipe.serve.vanilla_name or f"ollatune/{base.slug()}-vanilla"


# -------------------------------------------------------------------------------------------------- runner


def run_pipeline(recipe: Recipe, settings: Settings, *, stdout_jsonl: bool = False, listeners=None,  # noqa: ANN001
                 until: str = "evals") -> PipelineResult:
    """Run the stages of ``recipe`` up to ``until``; raises StageFailed (error event written) on failure."""
    if until not in STAGE_ORDER:
        raise OllatuneError(f"--until {until!r} is not a stage", f"use one of {', '.join(STAGE_ORDER)}")
    ctx = RunContext.create(run_id_for(recipe), settings, stdout_jsonl=stdout_jsonl, listeners=listeners)
    runner = _Runner(recipe, ctx, STAGE_ORDER.index(until))
    try:
        return runner.run()
    except KeyboardInterrupt:
        ctx.events(runner.stage).error("interrupted", hint="re-run the same command to resume")
        raise
    except Exception as exc:
        message, hint = error_message(exc), error_hint(exc)
        ctx.events(runner.stage).error(message, hint=hint, exception=exc.__class__.__name__)
        raise StageFailed(runner.stage, message, hint) from exc


class _Runner:
    def __init__(self, recipe: Recipe, ctx: RunContext, stop_after: int) -> None:
        self.recipe = recipe
        self.ctx = ctx
        self.stop_after = stop_after
        self.markers = StageMarkers(ctx.run_dir)
        self.result = PipelineResult(ctx.run_id, ctx.run_dir, ctx.settings.db_path)
        self.stage = "pipeline"  # the stage running now: errors are labelled with it

    def _skip(self, stage: str, inputs: BaseModel, result_type: type) -> Any:
        found = self.markers.load(stage, inputs, result_type)
        if found is not None:
            self.ctx.events(stage).done(skipped=True)
            self.result.skipped.append(stage)
        return found

    def _enter(self, stage: str) -> None:
        self.stage = stage

    def run(self) -> PipelineResult:
        import yaml

        recipe, ctx = self.recipe, self.ctx
        write_text_atomic(ctx.run_dir / "recipe.yaml",
                          yaml.safe_dump(recipe.model_dump(mode="json"), allow_unicode=True, sort_keys=False))
        pipe = ctx.events("pipeline")
        pipe.start(recipe=recipe.name, run_dir=str(ctx.run_dir))
        r = self.result
        data_inputs = self._data()
        if self.stop_after >= 4:
            self.check_evals()
        if self.stop_after >= 1:
            base = self._finetune(data_inputs)
            if self.stop_after >= 2:
                self._export(base)
                if self.stop_after >= 3:
                    from serve import ensure_ollama

                    self._enter("serve")
                    endpoint = ensure_ollama(ctx.settings, ctx.events("serve"))
                    try:
                        r.host, r.embedded = endpoint.host, endpoint.embedded
                        self._serve(endpoint, base)
                        if self.stop_after >= 4:
                            self._evals(endpoint)
                    finally:
                        endpoint.close()
        self.stage = "pipeline"
        pipe.done(run_dir=str(r.run_dir), skipped_stages=",".join(r.skipped) or None)
        return r

    # -- data
    def _data(self) -> DataInputs:
        from finetune.prepare import prepare_data, resolve_data_path

        self._enter("data")
        recipe = self.recipe
        data_path = resolve_data_path(recipe.data.path)
        inputs = DataInputs(data=recipe.data.model_dump(mode="json"), system=recipe.model.system,
                            source=sha256_file(data_path) if data_path.is_file() else str(data_path))
        prepared = self._skip("data", inputs, PreparedData)
        if prepared is None:
            prepared = prepare_data(recipe, self.ctx)
            self.markers.save("data", inputs, prepared, prepared.paths())
        self.result.data = prepared
        return inputs

    # -- finetune
    def _finetune(self, data_inputs: DataInputs) -> ResolvedBase:
        from finetune.base_model import resolve_base_model
        from finetune.training import TrainResult, preflight, train

        self._enter("finetune")
        recipe, ctx = self.recipe, self.ctx
        preflight(recipe)
        if self.stop_after >= 2:
            from export.gguf_convert import parse_quants

            self._enter("export")
            parse_quants(recipe.export.quant)  # a typo in export.quant is found before training, not after
            self._enter("finetune")
        base = resolve_base_model(recipe.model.base, ctx.settings, log=ctx.events("finetune").log)
        inputs = FinetuneInputs(model=recipe.model.model_dump(mode="json"), train=recipe.train.model_dump(mode="json"),
                                data=input_key(data_inputs), base=base.source_sha256)
        trained = self._skip("finetune", inputs, TrainResult)
        if trained is None:
            trained = train(recipe, self.result.data, ctx, base=base)
            self.markers.save("finetune", inputs, trained, [trained.adapter_dir])
        self.result.trained = trained
        return base

    # -- export: the tuned model, and the base model through the same path (same quantization)
    def _export(self, base: ResolvedBase) -> None:
        from export import ExportSource, to_gguf

        self._enter("export")
        recipe, trained = self.recipe, self.result.trained
        inputs = ExportInputs(export=recipe.export.model_dump(mode="json"), adapter=trained.adapter_sha256,
                              base=base.source_sha256)
        exported = self._skip("export", inputs, ExportedModels)
        if exported is None:
            from workspace.heldout import read_eval_examples

            held = read_eval_examples(self.result.data.heldout_path)[: recipe.export.probes]
            probes = [(ex.chat(), ex.reference) for ex in held]
            opts = {"quant": recipe.export.quant, "verify_tokens": recipe.export.verify_tokens, "probes": probes,
                    "calibration": self._calibration_texts()}
            tuned = to_gguf(ExportSource(base_dir=base.hf_dir, adapter_dir=trained.adapter_dir,
                                         training_run_id=trained.training_run_id, label="tuned"), self.ctx, **opts)
            vanilla = to_gguf(ExportSource(base_dir=base.hf_dir, label="vanilla"), self.ctx, **opts)
            exported = ExportedModels(tuned=tuned, vanilla=vanilla)
            self.markers.save("export", inputs, exported, [tuned.gguf, vanilla.gguf])
        self.result.exported = exported

    def _calibration_texts(self, limit: int = 512) -> list[str] | None:
        """The training rows' text, for the importance matrix of i-quants (read only when one is asked for)."""
        from export.gguf_convert import needs_imatrix, parse_quants

        if not any(needs_imatrix(q) for q in parse_quants(self.recipe.export.quant)):
            return None
        import json

        texts = []
        for line in self.result.data.train_path.read_text(encoding="utf-8").splitlines()[:limit]:
            if line.strip():
                row = json.loads(line)
                texts.append("\n".join(m.get("content", "") for m in [*row.get("prompt", []),
                                                                       *row.get("completion", [])]))
        return texts

    # -- serve
    def _serve(self, endpoint: OllamaEndpoint, base: ResolvedBase) -> None:
        from serve import PublishRequest, model_digest, publish
        from serve.publishing import registry_host

        recipe, ctx, exported = self.recipe, self.ctx, self.result.exported
        events = ctx.events("serve")
        names = {"vanilla": vanilla_name(recipe, base), "tuned": tuned_name(recipe)}
        inputs = ServeInputs(host=registry_host(endpoint, ctx), names=names, parameters=dict(recipe.serve.parameters),
                             system=recipe.model.system,
                             gguf={"vanilla": exported.vanilla.sha256, "tuned": exported.tuned.sha256})
        served = self._skip("serve", inputs, PublishedModels)
        if served is not None and all(model_digest(endpoint, p.name) == p.digest for p in served.roles().values()):
            self.result.served = served
            return
        if served is not None:  # the marker is there but the Ollama we talk to lost the models: register again
            self.result.skipped.remove("serve")
            events.log("registered models are missing from this Ollama; registering again")
        events.start(host=endpoint.host, embedded=endpoint.embedded)
        requests = {
            # the base model as its own tokenizer prompts it; the tuned one with the system prompt it was
            # trained with (None: the template's own default, as in training)
            "vanilla": PublishRequest(role="vanilla", name=names["vanilla"], gguf=exported.vanilla.gguf,
                                      hf_dir=exported.vanilla.hf_dir, parameters=dict(recipe.serve.parameters),
                                      artifact_id=exported.vanilla.artifact_id,
                                      header=f"ollatune run {ctx.run_id} (vanilla: {base.ref})"),
            "tuned": PublishRequest(role="tuned", name=names["tuned"], gguf=exported.tuned.gguf,
                                    hf_dir=exported.tuned.hf_dir, system=recipe.model.system,
                                    parameters=dict(recipe.serve.parameters), artifact_id=exported.tuned.artifact_id,
                                    header=f"ollatune run {ctx.run_id} (tuned from {base.ref})"),
        }
        published = {role: publish(req, endpoint, ctx) for role, req in requests.items()}
        served = PublishedModels(**published)
        events.done(**{f"{role}_model": p.name for role, p in served.roles().items()})
        self.markers.save("serve", inputs, served, [served.tuned.modelfile, served.vanilla.modelfile])
        self.result.served = served

    # -- evals
    def eval_suite(self) -> Any:
        """The suite this recipe is evaluated with, over the run's held-out examples, asked exactly as trained
        (no suite prompt around the training messages), on the recipe's databases and context window."""
        import evals

        recipe, data = self.recipe, self.result.data
        suite_ref = recipe.eval.suite if recipe.eval.suite != "auto" else evals.suite_for_task(data.task)
        num_ctx = recipe.eval.num_ctx or recipe.serve.parameters.get("num_ctx")
        overrides: dict[str, Any] = {
            "dataset": {"path": str(data.heldout_path), "format": "examples"},
            "prompt": {"system": None, "user": "{question}", "few_shot": [], "chain_of_thought": False},
            "params": {"num_predict": recipe.eval.num_predict, "seed": recipe.eval.seed,
                       **({"num_ctx": int(num_ctx)} if num_ctx else {})},
        }
        if data.task == "text2sql":
            from workspace.samples import known_databases

            dbs = known_databases(recipe.data.databases, self.ctx.settings.home / "databases")
            overrides["dataset.databases"] = {k: str(v) for k, v in dbs.items()}
        if recipe.eval.limit:
            overrides["limit"] = recipe.eval.limit
        suite = evals.load_suite(suite_ref, overrides)
        examples = evals.load_examples(suite)  # a suite of another task than the held-out rows is refused here
        if suite.judge is not None:
            raise evals.SuiteError(f"suite {suite.name!r} needs a judge model; the pipeline evaluates without one",
                                   "set eval.suite to an unjudged suite, and judge afterwards with `ollatune eval run "
                                   f"{suite.name} --model ... --judge ...`")
        if suite.task == "text2sql":
            from evals.suites import database_for, databases

            dbs = databases(suite)
            for ex in examples:
                database_for(dbs, ex)  # every held-out question has its database (or none at all: DDL only)
        return suite

    def check_evals(self) -> None:
        """Before training: the evaluation can run on this recipe's data (suite, task, databases)."""
        self._enter("evals")
        self.eval_suite()

    def _evals(self, endpoint: OllamaEndpoint) -> None:
        import evals
        from evals.report import compare
        from evals.runner import EvalResult

        self._enter("evals")
        ctx, served = self.ctx, self.result.served
        suite = self.eval_suite()
        models = [evals.ModelUnderTest(model_id=p.model_id, name=p.name, digest=p.digest, role=role)
                  for role, p in served.roles().items()]
        inputs = EvalsInputs(suite_hash=evals.suite_hash(suite), models={m.role: m.digest for m in models})
        done = self._skip("evals", inputs, EvalResult)
        if done is None:
            done = evals.run(suite, models, base_url=endpoint.host, session_factory=ctx.store,
                             events=ctx.events("evals"), run_id=ctx.run_id, concurrency=self.recipe.eval.concurrency)
            self.markers.save("evals", inputs, done, [])
        self.result.evaluated = done
        self.result.comparison = compare(ctx.store, dict(done.eval_run_ids))
