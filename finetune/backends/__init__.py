"""Training backends behind one interface: ``run(job) -> BackendResult``.

``hf`` (transformers + PEFT + TRL SFTTrainer) runs everywhere; it is what ``auto`` picks on a machine
without CUDA. Backends import their heavy libraries inside ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.recipe import Recipe
from workspace.events import StageEvents


@dataclass
class TrainJob:
    recipe: Recipe
    base_dir: Path  # local HF folder of the base model
    train_rows: list[dict[str, Any]]  # conversational prompt/completion rows
    output_dir: Path  # checkpoints go to output_dir/checkpoints, the adapter to output_dir/adapter
    events: StageEvents


@dataclass
class BackendResult:
    adapter_dir: Path
    steps: int
    final_loss: float | None
    losses: list[float] = field(default_factory=list)
    chat_template: str = ""
    eos_token: str = ""
    train_seconds: float = 0.0


def pick_backend(name: str) -> str:
    if name != "auto":
        return name
    return "hf"


def run_backend(job: TrainJob) -> BackendResult:
    backend = pick_backend(job.recipe.train.backend)
    if backend == "hf":
        from finetune.backends.hf import run

        return run(job)
    raise ValueError(f"unknown training backend {backend!r}")
