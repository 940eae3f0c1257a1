"""Merge a LoRA adapter into a 16-bit copy of its base model, tensor by tensor, shard by shard.

Loading the whole model to call PEFT's ``merge_and_unload`` costs the model in fp32 plus a copy of every
weight (57.6 GiB of host RAM measured for an 8B model): more than a WSL2 box sees. Merging needs none of
that. A LoRA layer adds ``scale * B @ A`` to one weight matrix, so each base tensor is read from its
safetensors shard, the update is added in fp32 where the adapter has one (on the GPU when there is one), the
result is rounded once to the output dtype, and written to the output shard, which is flushed to disk at
``max_shard_bytes``. Peak memory is one output shard plus one tensor, whatever the model's size.

The arithmetic is PEFT's on an fp32 model followed by the cast to 16 bits: ``W + (B @ A) * scale`` in fp32,
rounded once; the result is bit-identical to ``merge_and_unload`` on the fp32 model cast to bf16 (tested).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.errors import ExportError
from workspace.files import atomic_path, ensure_free_space, tree_bytes

DEFAULT_SHARD_BYTES = 1 << 30  # output shards of at most 1 GiB: the merge's own memory bound
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json", "added_tokens.json")


@dataclass
class MergeResult:
    merged_dir: Path
    dtype: str
    changed_tensors: int
    max_abs_change: float
    targeted_tensors: int = 0
    peak_tensor_bytes: int = 0
    shards: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoraPair:
    a: str  # adapter key of lora_A (r x in)
    b: str  # adapter key of lora_B (out x r)
    scale: float


def _adapter_config(adapter_dir: Path) -> dict[str, Any]:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.exists():
        raise ExportError(f"{adapter_dir} holds no adapter_config.json", "run the finetune stage first")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"{path}: a {cfg.get('peft_type')} adapter; only LoRA adapters can be merged here",
                          "train with LoRA (the recipes' default)")
    if cfg.get("use_dora"):
        raise ExportError(f"{path}: DoRA adapters are not merged by this exporter", "train with use_dora off")
    if cfg.get("bias", "none") != "none":
        raise ExportError(f"{path}: adapters that train biases (bias={cfg.get('bias')!r}) are not merged here",
                          "train with bias: none")
    return cfg


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rank_pattern / alpha_pattern: a key matches a module name by suffix or as a regex."""
    for key, value in (patterns or {}).items():
        if module == key or module.endswith("." + key) or re.fullmatch(key, module):
            return value
    return default


def _scale(cfg: dict[str, Any], module: str) -> float:
    r = _pattern_value(cfg.get("rank_pattern") or {}, module, cfg["r"])
    alpha = _pattern_value(cfg.get("alpha_pattern") or {}, module, cfg.get("lora_alpha", r))
    return alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r


def _adapter_file(adapter_dir: Path) -> Path:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (Path(adapter_dir) / name).exists():
            if name.endswith(".bin"):
                raise ExportError(f"{adapter_dir}/{name}: a pickled adapter", "save adapters as safetensors "
                                  "(save_pretrained's default)")
            return Path(adapter_dir) / name
    raise ExportError(f"{adapter_dir} holds no adapter_model.safetensors", "run the finetune stage first")


def lora_pairs(adapter_keys: list[str], cfg: dict[str, Any]) -> dict[str, LoraPair]:
    """Base weight name -> its LoRA pair. Adapter keys look like
    ``base_model.model.<module>.lora_A.weight``; the base weight is ``<module>.weight``."""
    pairs: dict[str, dict[str, str]] = {}
    other = []
    for key in adapter_keys:
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
        if m is None:
            other.append(key)
            continue
        pairs.setdefault(m.group(1), {})[m.group(2)] = key
    if other:
        raise ExportError(f"the adapter holds tensors that are not LoRA matrices ({', '.join(other[:3])}"
                          + (f" and {len(other) - 3} more" if len(other) > 3 else "") + ")",
                          "train without modules_to_save, or merge with PEFT by hand")
    out = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise ExportError(f"the adapter has lora_{''.join(ab)} but not both matrices for {module}",
                              "the adapter file is incomplete: train again")
        out[f"{module}.weight"] = LoraPair(ab["A"], ab["B"], _scale(cfg, module))
    return out


def _base_shards(base_dir: Path) -> list[Path]:
    base_dir = Path(base_dir)
    index = base_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [base_dir / name for name in dict.fromkeys(weight_map.values())]
    single = base_dir / "model.safetensors"
    if single.exists():
        return [single]
    raise ExportError(f"{base_dir} holds no safetensors weights (model.safetensors or an index)",
                      "the base must be a Hugging Face folder saved as safetensors")


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _ShardWriter:
    """Tensors in, safetensors shards of at most ``limit`` bytes out, plus the index."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder, self.limit = folder, limit
        self.buf: dict[str, Any] = {}
        self.size = 0
        self.files: list[list[str]] = []
        self.total = 0

    def add(self, name: str, tensor: Any) -> None:
        n = tensor.numel() * tensor.element_size()
        if self.buf and self.size + n > self.limit:
            self.flush()
        self.buf[name] = tensor
        self.size += n
        self.total += n

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.buf:
            return
        name = f"model-{len(self.files) + 1:05d}.safetensors"
        save_file(self.buf, str(self.folder / name), metadata={"format": "pt"})
        self.files.append([name, *self.buf])
        self.buf, self.size = {}, 0

    def finish(self) -> list[str]:
        self.flush()
        count = len(self.files)
        names = []
        weight_map = {}
        for i, (name, *keys) in enumerate(self.files, start=1):
            final = f"model-{i:05d}-of-{count:05d}.safetensors" if count > 1 else "model.safetensors"
            (self.folder / name).rename(self.folder / final)
            names.append(final)
            weight_map.update({k: final for k in keys})
        if count > 1:
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(
                {"metadata": {"total_size": self.total}, "weight_map": weight_map}, indent=1), encoding="utf-8")
        return names


def _merged_tensors(base_dir: Path, adapter_dir: Path, pairs: dict[str, LoraPair], dtype: Any,
                    stats: dict[str, Any], fan_in_fan_out: bool = False) -> Iterator[tuple[str, Any]]:
    import torch
    from safetensors import safe_open

    device = _device()
    seen: set[str] = set()
    with safe_open(str(_adapter_file(adapter_dir)), framework="pt", device="cpu") as adapter:
        for shard in _base_shards(base_dir):
            with safe_open(str(shard), framework="pt", device="cpu") as f:
                for name in f.keys():
                    w = f.get_tensor(name)
                    pair = pairs.get(name)
                    if pair is None:
                        yield name, w if not w.is_floating_point() else w.to(dtype)
                        continue
                    seen.add(name)
                    a = adapter.get_tensor(pair.a).to(device, torch.float32)
                    b = adapter.get_tensor(pair.b).to(device, torch.float32)
                    want = (a.shape[1], b.shape[0]) if fan_in_fan_out else (b.shape[0], a.shape[1])
                    if a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0] or want != tuple(w.shape):
                        raise ExportError(
                            f"the adapter does not fit this base: {name} is {tuple(w.shape)} but its LoRA update "
                            f"is {tuple(b.shape[:1])}x{tuple(a.shape[1:])} (rank {a.shape[0]})",
                            "merge the adapter into the base it was trained on (the recipe's model.base)")
                    w32 = w.to(device, torch.float32)
                    delta = b @ a
                    if fan_in_fan_out:  # Conv1D-style layers store the weight transposed
                        delta = delta.T
                    merged = (w32 + delta * pair.scale).to(dtype)
                    base16 = w32.to(dtype)
                    change = (merged.float() - base16.float()).abs().max().item()
                    if change > 0:
                        stats["changed"] += 1
                        stats["max_change"] = max(stats["max_change"], change)
                    stats["peak"] = max(stats["peak"], w32.numel() * 4)
                    del w32, base16, a, b
                    yield name, merged.cpu()
    missing = sorted(set(pairs) - seen)
    if missing:
        raise ExportError(f"the adapter targets {len(missing)} weight(s) this base does not have "
                          f"(first: {missing[0]})",
                          "merge the adapter into the base it was trained on (the recipe's model.base)")


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str = "bfloat16",
                  max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> MergeResult:
    """Merge ``adapter_dir`` (LoRA, safetensors) into the base at ``base_dir`` (safetensors, any dtype; never
    a 4-bit base: merging into quantized weights loses the update) and write ``out_dir`` (16-bit shards,
    config, tokenizer). The result is written under a temporary name and renamed into place."""
    import torch

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    cfg = _adapter_config(adapter_dir)
    config_path = base_dir / "config.json"
    if not config_path.exists():
        raise ExportError(f"{base_dir} holds no config.json", "the base must be a Hugging Face model folder")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("quantization_config"):
        raise ExportError(f"{base_dir} is a quantized checkpoint ({config['quantization_config'].get('quant_method')})",
                          "merge into the 16-bit base model: the recipe's model.base, not its 4-bit copy")
    from safetensors import safe_open

    with safe_open(str(_adapter_file(adapter_dir)), framework="pt", device="cpu") as f:
        pairs = lora_pairs(list(f.keys()), cfg)
    ensure_free_space(out_dir.parent, tree_bytes(base_dir) + (64 << 20), "the merged model")
    target = getattr(torch, dtype)
    stats: dict[str, Any] = {"changed": 0, "max_change": 0.0, "peak": 0}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        writer = _ShardWriter(tmp, max_shard_bytes)
        for name, tensor in _merged_tensors(base_dir, adapter_dir, pairs, target, stats,
                                            bool(cfg.get("fan_in_fan_out"))):
            writer.add(name, tensor)
        shards = writer.finish()
        if stats["changed"] == 0:
            raise ExportError(f"merging {adapter_dir} into {base_dir} changed no weight",
                              "the adapter still equals its initialisation (every LoRA B matrix is zero): train "
                              "more steps (with train.warmup_steps > 0 the first step's learning rate is 0) or "
                              "check the run's loss")
        config["torch_dtype"] = dtype
        if "dtype" in config:  # transformers 5 writes this name
            config["dtype"] = dtype
        (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        for name in ("generation_config.json",):
            if (base_dir / name).exists():
                shutil.copy2(base_dir / name, tmp / name)
        source = adapter_dir if any((adapter_dir / n).exists() for n in _TOKENIZER_FILES) else base_dir
        for name in _TOKENIZER_FILES:  # the tokenizer training saved (its chat template included)
            if (source / name).exists():
                shutil.copy2(source / name, tmp / name)
    return MergeResult(out_dir, dtype, stats["changed"], stats["max_change"], len(pairs), stats["peak"], shards)
