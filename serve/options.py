"""Model options as Ollama types and bounds them, checked before anything reaches llama.cpp.

Options come from three places, later ones winning: Ollama's defaults, the model's Modelfile PARAMETERs and
the request's ``options``. Each known option has a type: a value of another type is refused with Ollama's
message (``option "temperature" must be of type float32``); unknown options are ignored, ``null`` skips.
``num_ctx`` is bounded to [4, the model's training context]; ``num_predict`` < 0 means "until the context
is full", 0 generates nothing.
"""

from __future__ import annotations

import math
from typing import Any

from serve.names import ApiError

__all__ = ["DEFAULT_OPTIONS", "merge_options", "check_type", "parse_keep_alive", "request_bool", "request_logprobs"]

DEFAULT_OPTIONS: dict[str, Any] = {
    "temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.1,
    "repeat_last_n": 64, "num_ctx": 4096, "num_predict": -1, "seed": -1, "presence_penalty": 0.0,
    "frequency_penalty": 0.0, "stop": [],
}

INT_OPTIONS = frozenset({"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch",
                         "num_gpu", "main_gpu", "num_thread", "mirostat"})
FLOAT_OPTIONS = frozenset({"temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
                           "frequency_penalty", "tfs_z", "mirostat_tau", "mirostat_eta"})
BOOL_OPTIONS = frozenset({"penalize_newline", "numa", "use_mmap", "use_mlock", "low_vram", "f16_kv", "vocab_only"})
MIN_CTX = 4


def check_type(name: str, value: Any) -> Any:
    """``value`` as the type of option ``name`` (ints from floats are truncated, as Ollama does)."""
    if name in INT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ApiError(400, f'option "{name}" must be of type integer')
        return int(value)
    if name in FLOAT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ApiError(400, f'option "{name}" must be of type float32')
        return float(value)
    if name in BOOL_OPTIONS:
        if not isinstance(value, bool):
            raise ApiError(400, f'option "{name}" must be of type boolean')
        return value
    if name == "stop":
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise ApiError(400, 'option "stop" must be of type array')
        if not all(isinstance(s, str) for s in value):
            raise ApiError(400, 'option "stop" must be of an array of strings')
        return [s for s in value if s]
    return value


def merge_options(params: dict | None, options: Any, n_ctx_train: int | None = None,
                  field: str = "GenerateRequest") -> dict:
    """Defaults, then the model's parameters, then the request's options, each checked and bounded."""
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, f"json: cannot unmarshal {_go_type(options)} into Go struct field {field}.options of "
                            "type map[string]interface {}")
    opts = dict(DEFAULT_OPTIONS)
    for src in (params or {}, options or {}):
        for k, v in src.items():
            if v is None:
                continue
            opts[k] = check_type(k, v)
    ctx = max(MIN_CTX, int(opts["num_ctx"]))
    if n_ctx_train:
        ctx = min(ctx, int(n_ctx_train))
    opts["num_ctx"] = ctx
    if opts["top_k"] < 0:
        opts["top_k"] = 0
    return opts


def _go_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def request_bool(data: dict, key: str, default: bool, field: str) -> bool:
    """A boolean request field (``stream``, ``raw``, ``truncate``): a string "false" is refused as Go's JSON
    decoder refuses it, never read as true."""
    v = data.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ApiError(400, f"json: cannot unmarshal {_go_type(v)} into Go struct field {field}.{key} of type bool")
    return v


MAX_TOP_LOGPROBS = 20


def request_logprobs(data: dict, field: str) -> int | None:
    """``logprobs`` / ``top_logprobs`` of a chat or generate request: None when no log-probabilities are
    asked for, else how many alternatives each token reports (0..20). ``top_logprobs`` is checked even
    without ``logprobs`` (Ollama checks it first thing) but only ``logprobs: true`` turns them on."""
    top = data.get("top_logprobs")
    if top is None:
        top = 0
    elif isinstance(top, bool) or not isinstance(top, int):
        raise ApiError(400, f"json: cannot unmarshal {_go_type(top)} into Go struct field {field}.top_logprobs "
                            "of type int")
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise ApiError(400, f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    return top if request_bool(data, "logprobs", False, field) else None


def parse_keep_alive(v: Any) -> float | None:
    """Seconds from a keep_alive value: a number of seconds or a Go duration string ("5m", "1h30m", "-1").
    None when unset; negative keeps the model loaded for good; 0 unloads it after the request."""
    if v is None:
        return None
    if isinstance(v, bool):
        raise ApiError(400, "Unsupported type: 'bool'")
    if isinstance(v, (int, float)):
        return float(v)
    if not isinstance(v, str):
        raise ApiError(400, f"Unsupported type: '{_go_type(v)}'")
    import re

    text = v.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        if float(text) < 0:
            return -1.0
        raise ApiError(400, f'time: missing unit in duration "{text}"')
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", body)
    if not parts or "".join(n + u for n, u in parts) != body:
        raise ApiError(400, f'time: invalid duration "{text}"')
    return sign * sum(float(n) * units[u] for n, u in parts)
