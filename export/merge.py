"""Merge a LoRA adapter into a 16-bit copy of its base model, and prove the merge changed something."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export.errors import ExportError
from workspace.files import atomic_path, ensure_free_space, tree_bytes


@dataclass
class MergeResult:
    merged_dir: Path
    dtype: str
    changed_tensors: int
    max_abs_change: float


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str = "bfloat16") -> MergeResult:
    """Load the base in full precision (never a 4-bit base: merging into quantized weights loses the
    update), apply the adapter, merge, and save the result as 16-bit safetensors."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workspace.quiet import quiet_libraries

    quiet_libraries()

    if not (Path(adapter_dir) / "adapter_config.json").exists():
        raise ExportError(f"{adapter_dir} holds no adapter_config.json", "run the finetune stage first")
    ensure_free_space(out_dir.parent, 2 * tree_bytes(base_dir) + (64 << 20), "the merged model")
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    before = {k: v.detach().clone() for k, v in base.state_dict().items() if k.endswith(".weight")}
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    merged = model.merge_and_unload()
    changed, max_change = 0, 0.0
    for k, v in merged.state_dict().items():
        if k in before and before[k].shape == v.shape:
            diff = (v.detach() - before[k]).abs().max().item()
            if diff > 0:
                changed += 1
                max_change = max(max_change, diff)
    if changed == 0:
        raise ExportError(f"merging {adapter_dir} into {base_dir} changed no weight",
                          "the adapter still equals its initialisation (every LoRA B matrix is zero): train more "
                          "steps (with train.warmup_steps > 0 the first step's learning rate is 0) or check the "
                          "run's loss")
    merged = merged.to(getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    with atomic_path(out_dir) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    return MergeResult(out_dir, dtype, changed, max_change)
