"""Training backends behind one interface: ``run(job) -> BackendResult``.

``unsloth`` (Unsloth's 4-bit QLoRA kernels) runs on a CUDA GPU where it is installed; ``hf``
(transformers + PEFT + TRL SFTTrainer, bitsandbytes 4-bit on CUDA, plain LoRA on CPU) runs everywhere.
``auto`` picks Unsloth when it can run and says why when it cannot. Backends run inside the training
worker process (``finetune.worker``) and import their heavy libraries inside ``run``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.recipe import Recipe
from workspace.events import StageEvents

# Architectures Unsloth's FastLanguageModel patches (config.json model_type).
UNSLOTH_MODEL_TYPES = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "cohere", "granite",
    "exaone", "exaone4", "olmo2",
})


@dataclass
class TrainJob:
    recipe: Recipe
    base_dir: Path  # local HF folder of the base model
    train_rows: list[dict[str, Any]]  # conversational prompt/completion rows
    output_dir: Path  # checkpoints go to output_dir/checkpoints, the adapter to output_dir/adapter
    events: StageEvents
    val_rows: list[dict[str, Any]] = field(default_factory=list)  # evaluation-loss rows (same layout)
    model_id: str = ""  # the base model's reference and hash (part of the auto-tune cache key)
    autotune_cache: Path | None = None  # $OLLATUNE_HOME/cache/autotune.json


@dataclass
class BackendResult:
    adapter_dir: Path
    steps: int
    final_loss: float | None
    losses: list[float] = field(default_factory=list)
    chat_template: str = ""
    eos_token: str = ""
    train_seconds: float = 0.0
    micro_batch: int = 0
    grad_accum: int = 0
    memory: dict[str, Any] = field(default_factory=dict)
    checkpointing: str = ""  # off | on | unsloth
    auto_tune: dict[str, Any] = field(default_factory=dict)  # finetune.autotune.TuneResult.to_json()


@dataclass
class BackendChoice:
    name: str
    reason: str


def _model_type(base_dir: Path | None) -> str | None:
    if base_dir is None:
        return None
    try:
        return json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def unsloth_unavailable(base_dir: Path | None = None) -> str | None:
    """Why the Unsloth backend cannot run here (None when it can). Imports neither unsloth nor torch's CUDA
    runtime beyond asking whether a device exists."""
    if sys.platform == "darwin":
        return "Unsloth needs an NVIDIA GPU; this is macOS"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch (CPU build of torch, or no driver)"
    for pkg, pip in (("unsloth", "unsloth"), ("bitsandbytes", "bitsandbytes")):
        if importlib.util.find_spec(pkg) is None:
            return f"{pkg} is not installed (pip install {pip})"
    mtype = _model_type(base_dir)
    if mtype is not None and mtype not in UNSLOTH_MODEL_TYPES:
        return f"model type {mtype!r} is not one Unsloth's fast path covers"
    return None


def pick_backend(name: str, base_dir: Path | None = None) -> BackendChoice:
    if name == "hf":
        return BackendChoice("hf", "asked for in the recipe")
    why_not = unsloth_unavailable(base_dir)
    if name == "unsloth":
        if why_not:
            from finetune.troubleshoot import TrainingProblem

            raise TrainingProblem(f"train.backend=unsloth cannot run here: {why_not}",
                                  "use train.backend=auto or hf, or run on a machine with an NVIDIA GPU and "
                                  "`pip install unsloth`")
        return BackendChoice("unsloth", "asked for in the recipe")
    if why_not:
        return BackendChoice("hf", f"auto picked hf: {why_not}")
    return BackendChoice("unsloth", "auto picked unsloth: CUDA GPU and unsloth available")


def run_backend(job: TrainJob, backend: str) -> BackendResult:
    if backend == "hf":
        from finetune.backends.hf import run

        return run(job)
    if backend == "unsloth":
        from finetune.backends.unsloth import run

        return run(job)
    raise ValueError(f"unknown training backend {backend!r}")
