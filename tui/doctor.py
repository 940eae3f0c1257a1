"""`ollatune doctor`: what this machine can do, each line ok / -- (optional or degraded) / !! (blocking).

After the component checks comes one line per pipeline stage saying whether it can run here and, when it
cannot, which package or service it lacks. Only what blocks every run is blocking (exit 1): a Python that
is too old, no way to train (torch, transformers, PEFT or TRL missing), a workspace that cannot be written,
a full disk. A GPU box without llama-cpp-python can still train: export and serve are reported unavailable
and doctor exits 0.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import sys
from collections.abc import Iterator

from workspace.settings import Settings

Check = tuple[str, str, str]  # name, ok|warn|fail, detail

# Import names a stage needs, with the distribution to install.
FINETUNE_NEEDS = {"torch": "torch", "transformers": "transformers", "peft": "peft", "trl": "trl",
                  "accelerate": "accelerate", "datasets": "datasets"}
CONVERT_NEEDS = {"convert_hf_to_gguf": "convert-hf-to-gguf", "gguf": "gguf", "sentencepiece": "sentencepiece"}
EVALS_NEEDS = {"langchain_core": "langchain-core", "langchain_ollama": "langchain-ollama", "kiwipiepy": "kiwipiepy",
               "rouge_score": "rouge-score", "sacrebleu": "sacrebleu"}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def has_module(name: str) -> bool:
    """True when ``name`` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing(needs: dict[str, str]) -> list[str]:
    return [dist for mod, dist in needs.items() if not has_module(mod)]


def run_checks(settings: Settings) -> Iterator[Check]:
    py = platform.python_version()
    yield ("python", "ok" if sys.version_info >= (3, 11) else "fail",
           f"{py} ({sys.executable})" + ("" if sys.version_info >= (3, 11) else ": ollatune needs Python 3.11+"))

    cuda = False
    if not has_module("torch"):
        yield ("torch", "fail", "not installed: run the README's install command")
    else:
        import torch

        yield ("torch", "ok", f"{_version('torch') or torch.__version__}, {torch.get_num_threads()} CPU threads")
        cuda = torch.cuda.is_available()
        if cuda:
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                yield (f"gpu {i}", "ok", f"{p.name}, {p.total_memory / 2**30:.1f} GiB VRAM, CUDA {torch.version.cuda}")
        else:
            yield ("cuda", "warn", "no CUDA GPU: training uses the hf backend (LoRA on CPU)")
        from finetune.backends import unsloth_unavailable

        why_not = unsloth_unavailable()
        if why_not is None:
            yield ("unsloth", "ok", f"{_version('unsloth')}: train.backend=auto trains with Unsloth "
                                    "(imported only in the training process)")
        else:
            yield ("unsloth", "warn", f"train.backend=auto uses hf: {why_not}")

    llama = has_module("llama_cpp")
    lv = _version("llama_cpp_python") or _version("llama-cpp-python")
    yield ("llama-cpp-python", "ok" if llama else "warn",
           lv if llama else "not installed: quantize, verify and the embedded runtime need it (pip install "
                            "llama-cpp-python)")
    conv = missing(CONVERT_NEEDS)
    yield ("gguf converter", "warn" if conv else "ok",
           f"missing {', '.join(conv)}" if conv else (_version("convert-hf-to-gguf") or "installed"))

    daemon = _ollama_check(settings, llama)
    yield daemon
    home = _workspace_check(settings)
    yield home
    if home[1] != "fail":
        free = shutil.disk_usage(settings.home).free / 2**30
        yield ("free disk", "ok" if free >= 5 else ("warn" if free >= 1 else "fail"),
               f"{free:.1f} GiB at {settings.home} (a 135M model run needs ~1 GiB; 8B models ~40 GiB)")
    yield from stage_checks(cuda, llama, daemon_ok=daemon[1] == "ok")


def stage_checks(cuda: bool, llama: bool, daemon_ok: bool) -> Iterator[Check]:
    """One line per stage: can it run on this machine, and if not, what does it lack."""
    yield ("stage data", "ok", "load, validate, split (always available)")
    ft = missing(FINETUNE_NEEDS)
    if ft:
        yield ("stage finetune", "fail", f"unavailable: {', '.join(ft)} not installed")
    else:
        yield ("stage finetune", "ok", "QLoRA on the GPU" if cuda else "LoRA on the CPU (hf backend)")
    export_missing = ft + missing(CONVERT_NEEDS) + ([] if llama else ["llama-cpp-python"])
    if export_missing:
        yield ("stage export", "warn", f"unavailable: {', '.join(dict.fromkeys(export_missing))} not installed "
                                       "(merge needs torch, conversion the converter, quantize/verify llama.cpp)")
    else:
        yield ("stage export", "ok", "merge, GGUF conversion, quantize, verify")
    client = [] if has_module("ollama") else ["ollama"]
    if client:
        yield ("stage serve", "warn", "unavailable: the ollama client package is not installed")
    elif daemon_ok:
        yield ("stage serve", "ok", "registers with the Ollama daemon")
    elif llama:
        yield ("stage serve", "ok", "registers with the embedded runtime (no daemon answers)")
    else:
        yield ("stage serve", "warn", "unavailable: no Ollama daemon answers and the embedded runtime needs "
                                      "llama-cpp-python")
    ev = missing(EVALS_NEEDS)
    if ev:
        yield ("stage evals", "warn", f"unavailable: {', '.join(ev)} not installed")
    elif not (daemon_ok or llama):
        yield ("stage evals", "warn", "unavailable: no Ollama to ask (no daemon, no llama-cpp-python)")
    else:
        yield ("stage evals", "ok", "suites through ChatOllama")


def _workspace_check(settings: Settings) -> Check:
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return ("workspace", "fail", f"{settings.home} cannot be created ({e.strerror}): set OLLATUNE_HOME")
    if not os.access(settings.home, os.W_OK):
        return ("workspace", "fail", f"{settings.home} is not writable: set OLLATUNE_HOME to a folder you own")
    return ("workspace", "ok", str(settings.home))


def _ollama_check(settings: Settings, llama: bool) -> Check:
    import httpx

    from workspace.settings import api_headers

    try:
        r = httpx.get(f"{settings.ollama_host}/api/version", timeout=2, headers=api_headers())
        r.raise_for_status()
        return ("ollama", "ok", f"version {r.json().get('version')} answers at {settings.ollama_host}")
    except (httpx.HTTPError, ValueError):
        if settings.embedded_runtime == "never":
            return ("ollama", "warn", f"nothing answers at {settings.ollama_host} and the embedded runtime is off "
                                      "(OLLATUNE_EMBEDDED_RUNTIME=never): serve and evals cannot run")
        if not llama:
            return ("ollama", "warn", f"nothing answers at {settings.ollama_host}, and the embedded runtime needs "
                                      "llama-cpp-python")
        return ("ollama", "warn", f"no daemon at {settings.ollama_host}; the embedded runtime (llama.cpp) "
                                  "will be started when needed (`ollatune serve` to run it yourself)")
