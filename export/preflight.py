"""Before an export touches a weight: is the architecture one llama.cpp's converter knows, is there disk for
every file it will write, and how much host memory will each phase take. Everything is read from the
safetensors headers and config.json; nothing is loaded.

The memory figures are estimates calibrated on measured runs (bench/results/export_h200_8b.json: an 8B
model merged at 7.2 GiB peak RSS with 4.9 GB shards, converted at 5.3 GiB); they count the pages of the
shard being read, which the kernel can reclaim, so they are upper bounds rather than hard needs.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

from export.errors import ExportError

GIB = 2**30
# llama.cpp's typical sizes (bits per weight over the whole file) for a 7-8B model; small models with a
# large vocabulary come out somewhat larger (the token embeddings are kept at higher precision).
APPROX_BPW = {"q2_k": 3.0, "q3_k_m": 3.9, "q4_0": 4.6, "q4_1": 5.0, "q4_k_s": 4.6, "q4_k_m": 4.9, "q5_0": 5.6,
              "q5_k_s": 5.6, "q5_k_m": 5.7, "q6_k": 6.6, "q8_0": 8.5, "f16": 16.0, "bf16": 16.0,
              "iq1_s": 1.6, "iq1_m": 1.8, "iq2_xxs": 2.1, "iq2_xs": 2.3, "iq2_s": 2.5, "iq2_m": 2.7, "iq3_xxs": 3.1,
              "iq3_xs": 3.3, "iq3_s": 3.5, "iq3_m": 3.7, "iq4_nl": 4.5, "iq4_xs": 4.3}
WRITER_BUFFER = 1 << 30  # export.merge writes 1 GiB shards
RUNTIME_OVERHEAD = int(0.7 * GIB)  # the Python process with torch imported


@dataclass
class Weights:
    params: int
    bytes: int
    largest_shard: int
    largest_tensor: int  # elements
    dtypes: set[str] = field(default_factory=set)
    largest_layer_tensor: int = 0  # elements of the largest weight inside the layers (what LoRA targets)


def read_weights(hf_dir: Path) -> Weights:
    """Parameter count, bytes and the largest shard/tensor of a safetensors folder, from the headers."""
    files = sorted(Path(hf_dir).glob("*.safetensors"))
    if not files:
        raise ExportError(f"{hf_dir} holds no safetensors weights", "the model must be a Hugging Face folder "
                          "saved as safetensors (save_pretrained(..., safe_serialization=True))")
    params = size = largest_shard = largest_tensor = largest_layer = 0
    dtypes: set[str] = set()
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for d in meta["shape"]:
                count *= int(d)
            params += count
            largest_tensor = max(largest_tensor, count)
            if "embed" not in name and "lm_head" not in name:
                largest_layer = max(largest_layer, count)
            dtypes.add(meta["dtype"])
        fsize = f.stat().st_size
        size += fsize
        largest_shard = max(largest_shard, fsize)
    return Weights(params, size, largest_shard, largest_tensor, dtypes, largest_layer or largest_tensor)


def check_architecture(hf_dir: Path) -> str:
    """The architecture in config.json, refused in one line when llama.cpp's converter does not know it."""
    cfg_path = Path(hf_dir) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {cfg_path}: {e}", "the model must be a Hugging Face folder") from None
    archs = cfg.get("architectures") or []
    if not archs:
        raise ExportError(f"{cfg_path} names no architecture (\"architectures\" is missing)",
                          "save the model with transformers' save_pretrained, which writes it")
    arch = str(archs[0])
    known = converter_architectures()
    if known is None:  # an older converter layout: it will say so itself
        return arch
    if arch not in known:
        near = sorted(a for a in known if a.lower()[:5] == arch.lower()[:5])[:6]
        raise ExportError(f"llama.cpp's converter does not support the architecture {arch} ({cfg_path})",
                          "export works for the architectures llama.cpp converts (Llama, Qwen2, Gemma, Mistral, "
                          "Phi-3, EXAONE, Granite, ...)" + (f"; close names it knows: {', '.join(near)}" if near
                                                           else ""))
    return arch


@functools.lru_cache(maxsize=1)
def converter_architectures() -> frozenset[str] | None:
    """The architectures llama.cpp's converter registers (``conversion.TEXT_MODEL_MAP``), read from its source
    without importing it (the import pulls in torch and every model module: seconds on a cold start)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("conversion")
    if spec is None or not spec.origin:
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and isinstance(node.value, ast.Dict):
            return frozenset(k.value for k in node.value.keys if isinstance(k, ast.Constant))
    return None


def available_ram() -> int:
    """MemAvailable (what a new process can use without swapping), in bytes; a WSL2 box sees its own."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


@dataclass
class Plan:
    architecture: str
    params: int
    disk_needed: int
    disk_free: int
    ram_available: int
    phases: dict[str, int]  # estimated peak host RAM per phase, bytes
    reference: str  # where the HF reference for the f16 check runs: "cuda-float32", "cpu-float32", ... or ""
    reference_note: str = ""

    def summary(self) -> str:
        ph = ", ".join(f"{k} {v / GIB:.1f}" for k, v in self.phases.items())
        ref = (f"HF reference on {self.reference}" if self.reference else
               f"no HF reference ({self.reference_note})")
        return (f"{self.architecture}, {self.params / 1e9:.2f}B parameters: needs about "
                f"{self.disk_needed / GIB:.1f} GiB of disk ({self.disk_free / GIB:.1f} free); peak host RAM per "
                f"phase about {ph} GiB ({self.ram_available / GIB:.1f} available); {ref}")

    def as_dict(self) -> dict:
        return {"architecture": self.architecture, "params": self.params, "disk_needed": self.disk_needed,
                "disk_free": self.disk_free, "ram_available": self.ram_available,
                "phases": dict(self.phases), "reference": self.reference, "reference_note": self.reference_note}


def _cuda_free() -> int:
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[0])
    except Exception:  # noqa: BLE001 - no usable GPU is not an error here
        pass
    return 0


def plan_export(base_dir: Path, out_dir: Path, quants: list[str], *, merge: bool, reference: bool = True,
                ram: int | None = None, cuda_free: int | None = None, disk_free: int | None = None) -> Plan:
    """Check the architecture and the disk (raises ExportError when the files cannot fit), estimate the
    memory of each phase and choose where the HF reference model may run within it."""
    arch = check_architecture(base_dir)
    w = read_weights(base_dir)
    p16 = 2 * w.params
    disk = (p16 if merge else 0) + p16 + sum(int(w.params * APPROX_BPW.get(q, 16.0) / 8) for q in quants if q != "f16")
    disk += max(p16, 64 << 20)  # a file being written sits under a temporary name beside the others
    out_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir).free if disk_free is None else disk_free
    ram = available_ram() if ram is None else ram
    phases: dict[str, int] = {}
    if merge:
        # the shard being read, three float32 copies of the largest targeted weight (base, update, sum) and
        # the output buffer
        phases["merge"] = (w.largest_shard + 3 * 4 * (w.largest_layer_tensor or w.largest_tensor) + WRITER_BUFFER
                           + RUNTIME_OVERHEAD)
    phases["convert"] = w.largest_shard + RUNTIME_OVERHEAD
    phases["quantize"] = min(p16, w.largest_shard) + RUNTIME_OVERHEAD // 2
    where, note = "", ""
    if reference:
        gpu = _cuda_free() if cuda_free is None else cuda_free
        margin = 1.15
        if gpu and 4 * w.params * margin < gpu:
            where = "cuda-float32"
        elif gpu and 2 * w.params * margin < gpu:
            where = "cuda-bfloat16"
        elif 4 * w.params * margin + RUNTIME_OVERHEAD < 0.8 * ram:
            where = "cpu-float32"
        else:
            note = (f"the model needs {4 * w.params / GIB:.1f} GiB in float32 and {ram / GIB:.1f} GiB are "
                    f"available: the f16 file is checked by template, special tokens and tokenization, and "
                    f"is itself the reference for the quantizations")
        if where.startswith("cpu"):
            phases["reference"] = 4 * w.params + RUNTIME_OVERHEAD
        elif where:
            phases["reference"] = RUNTIME_OVERHEAD + w.largest_tensor * 4
    plan = Plan(arch, w.params, disk, free, ram, phases, where, note)
    if disk > free:
        raise ExportError(f"the export needs about {disk / GIB:.1f} GiB of disk in {out_dir} and "
                          f"{free / GIB:.1f} GiB are free", "free space, export fewer quantizations, or set "
                          "OLLATUNE_HOME to a larger disk; nothing was written")
    worst = max(v for k, v in phases.items() if k != "reference")
    if worst > ram:
        raise ExportError(f"the export needs about {worst / GIB:.1f} GiB of host RAM at its peak and "
                          f"{ram / GIB:.1f} GiB are available", "close other programs, or raise the WSL2 memory "
                          "limit (memory= in %UserProfile%\\.wslconfig); nothing was written")
    return plan
