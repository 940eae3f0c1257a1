"""Typed recipes: YAML files with dotted command-line overrides (``train.max_steps=10``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workspace.errors import OllatuneError

RECIPES_DIR = Path(__file__).with_name("recipes")


class RecipeError(OllatuneError, ValueError):
    """A recipe that cannot be loaded: the file and field are in the message."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    base: str = Field("smollm2-135m-instruct", description="Alias, Hugging Face id, local HF folder or .gguf file.")
    system: str | None = Field(None, description="System prompt used in training, the Modelfile and evaluation.")


class DataSection(_Section):
    path: str = Field("builtin:ko_instructions", description="A shipped sample (ko-alpaca, ko-text2sql, ko-qa), "
                      "a .jsonl/.json/.csv/.parquet file, or hf:<dataset id>.")
    format: Literal["alpaca", "text2sql", "qa", "raft", "chat"] = "alpaca"
    fields: dict[str, str] = Field(default_factory=dict, description="Map format fields to your columns: "
                                   "{output: answer}.")
    eval_rows: int = Field(24, ge=0, description="Rows held out (from the end, after a seeded shuffle) for evaluation.")
    seed: int = 0
    max_seq_len: int = Field(512, ge=32)
    val_rows: int = Field(0, ge=0, description="Rows held out of training for the evaluation loss "
                          "(train.eval_steps); never the same rows as eval_rows.")
    databases: str | dict[str, str] | None = Field(
        None, description="Text-to-SQL: the SQLite file every row's SQL runs on, or {db_id: file}; the shipped "
        "sample's databases are always known. Gold SQL is checked on them, and evaluation runs on them.")


class LoraSection(_Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    use_rslora: bool = Field(False, description="Rank-stabilized LoRA: scale by alpha/sqrt(r) instead of alpha/r.")
    loftq: bool = Field(False, description="LoftQ initialisation (needs quant.load_in_4bit: false; the backend "
                        "quantizes while initialising).")


class QuantSection(_Section):
    load_in_4bit: bool = Field(True, description="QLoRA: 4-bit base weights on CUDA (ignored on CPU).")
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = Field(True, description="Quantize the quantization constants too (~0.4 bit/param saved).")
    compute_dtype: Literal["auto", "bf16", "fp16"] = Field("auto", description="auto: bf16 where the GPU has it.")


class TrainSection(_Section):
    backend: Literal["auto", "unsloth", "hf"] = Field(
        "auto", description="auto: unsloth on a CUDA GPU where it is installed, else hf (transformers + PEFT).")
    max_steps: int | None = Field(60, ge=1, description="Optimizer steps; null to train for `epochs` instead.")
    epochs: float | None = Field(None, gt=0, description="Passes over the training rows (used when max_steps is null).")
    batch_size: int = Field(8, ge=1, description="Micro-batch per step (rows per forward pass).")
    grad_accum: int = Field(1, ge=1)
    auto_tune: bool = Field(True, description="On CUDA: probe micro-batch x accumulation x gradient checkpointing "
                            "(same effective batch and rows per step) at the longest row before training and train "
                            "with the fastest that fits; cached per GPU, model, length, LoRA shape and quantization. "
                            "Ignored on CPU.")
    auto_tune_seconds: float = Field(60.0, gt=0, description="Time budget of the auto-tune probe.")
    max_vram_gib: float | None = Field(None, gt=0, description="Cap on this run's GPU memory (a GPU shared with a "
                                       "display or another job): auto-tune chooses under it and allocations "
                                       "beyond it fail.")
    lr: float = Field(1e-3, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_steps: int = Field(3, ge=0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
    optimizer: Literal["auto", "adamw_8bit", "paged_adamw_8bit", "adamw_torch"] = Field(
        "auto", description="auto: adamw_8bit on CUDA, adamw_torch on CPU.")
    gradient_checkpointing: Literal["auto", "unsloth", "on", "off"] = Field(
        "auto", description="auto: unsloth's offloaded checkpointing with unsloth, on with hf on CUDA, off on CPU.")
    packing: bool = Field(False, description="Pack several rows into one sequence (no attention across rows).")
    padding_free: bool | None = Field(None, description="Concatenate a batch without pad tokens; null: the "
                                      "backend decides (unsloth turns it on where it is faster).")
    logging_steps: int = Field(1, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="Evaluation-loss interval on data.val_rows rows.")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint interval (default: half of max_steps).")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept (older ones are deleted).")
    tensorboard: bool = Field(False, description="Also write TensorBoard logs to <run>/finetune/tensorboard.")
    seed: int = 42
    lora: LoraSection = Field(default_factory=LoraSection)
    quant: QuantSection = Field(default_factory=QuantSection)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "auto_micro_batch" in data:  # the earlier name of auto_tune
            data = dict(data)
            data["auto_tune"] = data.pop("auto_micro_batch")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "TrainSection":
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set train.max_steps or train.epochs")
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("set only one of train.max_steps and train.epochs (max_steps: null to use epochs)")
        if self.lora.loftq and self.quant.load_in_4bit:
            raise ValueError("lora.loftq initialises from full-precision weights: set train.quant.load_in_4bit=false")
        if self.packing and self.padding_free is False:
            raise ValueError("packing implies padding-free batches: drop train.padding_free=false")
        return self

    def total_steps(self, train_rows: int) -> int:
        """Optimizer steps for ``train_rows`` rows: max_steps, or epochs x steps per epoch."""
        if self.max_steps is not None:
            return self.max_steps
        per_epoch = max(1, math.ceil(train_rows / (self.batch_size * self.grad_accum)))
        return max(1, math.ceil(per_epoch * float(self.epochs or 1)))


class ExportSection(_Section):
    quant: str = Field("q4_k_m", pattern=r"^\s*[A-Za-z0-9_]+\s*(,\s*[A-Za-z0-9_]+\s*)*$",
                       description="llama.cpp file type(s): q4_0, q4_k_s, q4_k_m, q5_k_m, q6_k, q8_0, f16, bf16, ... "
                       "and the i-quants (iq4_xs, iq3_m, ...: made with an importance matrix over the training "
                       "text, llama.cpp's programs built once). Several separated by commas are all made and "
                       "measured; the first is registered.")
    probes: int = Field(8, ge=0, description="Held-out examples the quantized files are measured on (greedy "
                        "agreement with f16, perplexity, end of turn).")
    verify_tokens: int = Field(16, ge=0, description="Greedy tokens of each probe compared between the HF model and "
                               "the f16 GGUF (at least 90% of the probes must agree); 0 skips loading the HF model.")


class ServeSection(_Section):
    name: str | None = Field(None, description="Ollama name of the tuned model (null: ollatune/<recipe name>).")
    vanilla_name: str | None = Field(None, description="Ollama name of the base model (null: named after the "
                                     "base actually used, ollatune/<base>-vanilla).")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"temperature": 0.0, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1,
                                 "num_ctx": 2048, "num_predict": 256}
    )


class EvalSection(_Section):
    suite: str = Field("auto", description="A shipped suite name or a suite YAML; auto: the shipped suite that "
                       "scores the recipe's task.")
    limit: int | None = Field(None, ge=1)
    num_predict: int = Field(96, ge=1)
    num_ctx: int | None = Field(None, ge=256, description="Context window of evaluation calls (null: "
                                "serve.parameters.num_ctx, else the suite's).")
    seed: int = 42
    concurrency: int = Field(4, ge=1, le=64, description="Evaluation calls in flight at a time.")


class Recipe(_Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    export: ExportSection = Field(default_factory=ExportSection)
    serve: ServeSection = Field(default_factory=ServeSection)
    eval: EvalSection = Field(default_factory=EvalSection)


def shipped_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def resolve_recipe_path(ref: str) -> Path:
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise RecipeError(f"recipe file {p} does not exist", "pass a path to a YAML recipe or a shipped name; "
                              f"shipped: {', '.join(shipped_recipes())}")
        return p
    recipes = shipped_recipes()
    if ref in recipes:
        return recipes[ref]
    raise RecipeError(f"no recipe named {ref!r}", f"shipped recipes: {', '.join(recipes)}; or pass a YAML path")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML scalars/lists."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} is not KEY=VALUE", "example: train.max_steps=10")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {key!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return data


def load_recipe(ref: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = resolve_recipe_path(str(ref))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: invalid YAML: {e}", "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections")
    data = apply_overrides(data, overrides or [])
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise RecipeError(f"{path}: field {where}: {first['msg']}",
                          f"{len(e.errors())} problem(s); see the recipe reference in README.md") from None
