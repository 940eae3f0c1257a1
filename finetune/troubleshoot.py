"""Known training failures, caught and explained with the knob to turn.

| symptom                     | caught as                               | what to change                                  |
|-----------------------------|-----------------------------------------|-------------------------------------------------|
| CUDA out of memory          | torch.OutOfMemoryError in the worker    | batch_size down + grad_accum up, max_seq_len,   |
|                             |                                         | auto_tune, max_vram_gib, 4-bit, checkpointing   |
| NaN / inf loss              | a logged loss that is not finite        | lr down, warmup up, bf16 compute, max_grad_norm |
| loss that does not move     | first vs latest logged losses (warning) | lr up, check the answers are not masked/empty   |
| gated or missing base model | hub errors while resolving model.base   | accept the licence + log in, or a local folder  |
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from workspace.errors import OllatuneError


class TrainingProblem(OllatuneError, RuntimeError):
    """A training failure with a one-line cause and the concrete next step."""


def step_memory_knobs(recipe: Any) -> list[str]:
    """The two settings that lower the memory of one training step: a smaller micro-batch (with more
    accumulation, so the effective batch stays) and shorter sequences."""
    t, d = recipe.train, recipe.data
    knobs = []
    if t.batch_size > 1:
        half = max(1, t.batch_size // 2)
        knobs.append(f"train.batch_size={half} train.grad_accum={t.grad_accum * t.batch_size // half} "
                     "(same effective batch)")
    knobs.append(f"data.max_seq_len={max(64, d.max_seq_len // 2)} (now {d.max_seq_len}; "
                 "`ollatune data validate` shows the p95 length)")
    return knobs


def oom_problem(recipe: Any, detail: str = "") -> TrainingProblem:
    t = recipe.train
    knobs = step_memory_knobs(recipe)
    if not t.auto_tune:
        knobs.insert(1, "train.auto_tune=true (probes what fits before training)")
    else:
        cap = f"{t.max_vram_gib * 0.85:.0f}" if t.max_vram_gib else "<less than the GPU has free>"
        knobs.insert(1, f"train.max_vram_gib={cap} (auto-tune then chooses with more room to spare)")
    if not t.quant.load_in_4bit:
        knobs.append("train.quant.load_in_4bit=true")
    if t.gradient_checkpointing == "off":
        knobs.append("train.gradient_checkpointing=auto")
    where = f" ({detail})" if detail else ""
    return TrainingProblem(f"CUDA out of memory{where}",
                           "lower the memory per step: " + "; or ".join(knobs)
                           + "; and close other programs using the GPU (nvidia-smi lists them)")


def nan_loss_problem(step: int, loss: float, recipe: Any) -> TrainingProblem:
    t = recipe.train
    knobs = [f"train.lr={t.lr / 4:g} (now {t.lr:g})", f"train.warmup_steps={max(10, t.warmup_steps * 2)}"]
    if t.quant.compute_dtype == "fp16":
        knobs.append("train.quant.compute_dtype=bf16 (fp16 overflows more easily)")
    if t.max_grad_norm > 1.0:
        knobs.append("train.max_grad_norm=1.0")
    return TrainingProblem(f"the loss became {loss} at step {step}: training diverged",
                           "try " + ", ".join(knobs) + "; then `ollatune finetune run` again "
                           "(resume would continue from the diverged state)")


def flat_loss_hint(losses: list[float], recipe: Any) -> str | None:
    """A warning when the logged loss has not moved (or is exactly zero), else None."""
    if len(losses) < 6:
        return None
    first, last = mean(losses[:3]), mean(losses[-3:])
    if max(losses[-3:]) == 0.0:
        return ("the loss is 0: every label may be masked or the answers are empty; check the data with "
                "`ollatune data inspect` and the recipe's data.format/fields")
    if abs(first - last) < 0.02 * max(abs(first), 1e-6):
        t = recipe.train
        lr = (f"lower train.lr (now {t.lr:g}, try {t.lr / 100:g}): a step this large saturates the model"
              if t.lr >= 1e-2 else f"raise train.lr (now {t.lr:g}, try {t.lr * 5:g})")
        return (f"the loss has not moved ({first:.3f} -> {last:.3f} over {len(losses)} logged steps): "
                f"{lr}; check train.lora.target_modules match the model's layer names, and check the answers "
                "are not empty (`ollatune data inspect`)")
    return None


def hub_problem(ref: str, exc: BaseException) -> TrainingProblem:
    """Explain why a base model could not be had from the hub or its cache."""
    name = exc.__class__.__name__
    text = str(exc)
    if name == "GatedRepoError" or "gated" in text.lower() or "401" in text or "403" in text:
        return TrainingProblem(f"{ref} is a gated model: its licence must be accepted before download",
                               f"accept the licence on the model's hub page, run `hf auth login` (or set "
                               f"HF_TOKEN), download it once, then re-run; or point model.base at a local folder")
    if name in ("RepositoryNotFoundError", "RevisionNotFoundError") or "404" in text:
        return TrainingProblem(f"{ref} does not exist on the hub (or is private)",
                               "check the spelling of model.base (org/name), or point it at a local folder or "
                               ".gguf file")
    return TrainingProblem(f"could not get {ref} from the local Hugging Face cache or the hub ({name})",
                           "download it once where the hub is reachable (it is then read from the cache "
                           "offline), or point model.base at a local folder / .gguf file")


def diagnose(exc: BaseException, recipe: Any) -> TrainingProblem:
    """Turn an exception raised while training into a TrainingProblem with a hint."""
    if isinstance(exc, TrainingProblem):
        return exc
    name = exc.__class__.__name__
    text = str(exc)
    if name in ("OutOfMemoryError", "CUDAOutOfMemoryError") or "CUDA out of memory" in text:
        return oom_problem(recipe, text.splitlines()[0][:160] if text else "")
    if isinstance(exc, MemoryError):
        return TrainingProblem("the training process ran out of memory (RAM)",
                               "lower train.batch_size or data.max_seq_len, or close other programs")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return TrainingProblem("the disk is full while writing checkpoints",
                               "free space or set OLLATUNE_HOME to a larger disk, lower train.save_total_limit, "
                               "then `ollatune finetune resume RUN`")
    first = text.splitlines()[0] if text else name
    hint = getattr(exc, "hint", "") or "see <run>/finetune/worker.log for the full traceback"
    return TrainingProblem(f"{name}: {first}", hint)
