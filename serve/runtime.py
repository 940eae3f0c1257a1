"""The embedded Ollama-compatible runtime: Ollama's HTTP API subset on llama-cpp-python.

``create_app(store_dir)`` builds the Starlette app; :class:`EmbeddedRuntime` runs it with uvicorn in a
background thread (``with EmbeddedRuntime(store_dir=...) as rt: ollama.Client(rt.url)``);
:func:`serve_forever` runs it in the foreground for ``ollatune serve``.

Storage under ``store_dir`` mirrors Ollama's: ``blobs/sha256-<hex>`` holds the GGUF and one small blob per
layer (template, system, params, messages, config); ``manifests/<name>/<tag>.json`` lists the layers; the
model digest is the sha256 of the manifest bytes.

Behaviour follows Ollama's API (docs/api.md): NDJSON streaming by default, ``stream: false`` for one JSON
object, errors as ``{"error": "..."}`` with 400/404/500, one model loaded at a time (swapped on demand),
generation serialised by a lock, chat prompts rendered from the stored Go TEMPLATE with the model's SYSTEM
prepended when the chat has none, stop strings applied and removed from the output.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from serve.errors import RuntimeStartError, ServeError

log = logging.getLogger("ollatune.serve.runtime")

__all__ = ["create_app", "EmbeddedRuntime", "serve_forever", "ModelStore", "RUNTIME_VERSION", "ApiError"]

# The Ollama API level this runtime emulates (create with files/from, blobs, chat, generate, ps).
RUNTIME_VERSION = "0.9.0"

MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

# Ollama's defaults for sampling options
DEFAULT_OPTIONS: dict[str, Any] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "repeat_penalty": 1.1,
    "repeat_last_n": 64,
    "num_ctx": 4096,
    "num_predict": -1,
    "seed": -1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}
DEFAULT_KEEP_ALIVE_S = 300.0

_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
               12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
               19: "IQ2_XXS", 20: "IQ2_XS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 28: "IQ4_XS", 32: "BF16"}

_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat()


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).astimezone().isoformat()


def _not_found(name: str) -> ApiError:
    return ApiError(404, f'model "{name}" not found, try pulling it first')


def parse_name(name: str) -> tuple[str, str]:
    """``ns/model:tag`` -> (``ns/model``, ``tag``); tag defaults to ``latest``. Raises ApiError(400)."""
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "model is required")
    name = name.strip()
    base, tag = name, "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        base, tag = name.rsplit(":", 1)
    parts = base.split("/")
    if len(parts) > 3 or not all(_NAME_PART.match(p) for p in parts) or not _TAG.match(tag):
        raise ApiError(400, f"invalid model name {name!r}")
    return base.lower(), tag.lower()


def full_name(name: str) -> str:
    base, tag = parse_name(name)
    return f"{base}:{tag}"


def normalize_digest(digest: str) -> str:
    """``sha256:<hex>`` or ``sha256-<hex>`` -> ``<hex>``; ApiError(400) otherwise."""
    m = _DIGEST.match(digest or "")
    if not m:
        raise ApiError(400, f"invalid digest format {digest!r}: expected sha256:<64 hex digits>")
    return m.group(1)


# ---------------------------------------------------------------------------------------------- storage


@dataclass
class ModelRecord:
    name: str  # name:tag
    digest: str  # sha256 hex of the manifest bytes
    manifest: dict
    modified_at: float
    model_path: Path
    size: int
    template: str
    system: str
    params: dict
    messages: list[dict]
    adapters: list[Path]
    config: dict
    license: list[str] = field(default_factory=list)

    @property
    def details(self) -> dict:
        c = self.config
        return {
            "parent_model": c.get("parent_model", ""),
            "format": c.get("model_format", "gguf"),
            "family": c.get("model_family", ""),
            "families": c.get("model_families") or ([c["model_family"]] if c.get("model_family") else None),
            "parameter_size": c.get("model_type", ""),
            "quantization_level": c.get("file_type", ""),
        }


class ModelStore:
    """Blobs and manifests under one folder, laid out like Ollama's."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.manifests.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    # blobs
    def blob_path(self, digest: str) -> Path:
        return self.blobs / f"sha256-{normalize_digest(digest)}"

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        hexd = hashlib.sha256(data).hexdigest()
        p = self.blobs / f"sha256-{hexd}"
        if not p.exists():
            tmp = self.blobs / f".partial-{uuid.uuid4().hex}"
            tmp.write_bytes(data)
            os.replace(tmp, p)
        return hexd, len(data)

    def get_json_blob(self, digest: str) -> Any:
        return json.loads(self.blob_path(digest).read_text(encoding="utf-8"))

    # manifests
    def manifest_path(self, name: str) -> Path:
        base, tag = parse_name(name)
        return self.manifests.joinpath(*base.split("/")) / f"{tag}.json"

    def names(self) -> list[str]:
        out = []
        for p in sorted(self.manifests.rglob("*.json")):
            rel = p.relative_to(self.manifests)
            out.append("/".join(rel.parts[:-1]) + ":" + p.stem)
        return out

    def get(self, name: str) -> ModelRecord:
        path = self.manifest_path(name)
        if not path.is_file():
            raise _not_found(name)
        raw = path.read_bytes()
        try:
            manifest = json.loads(raw)
        except json.JSONDecodeError:
            raise ApiError(500, f"manifest of {name} at {path} is corrupt; delete the model and create it again") from None
        rec: dict[str, Any] = {"template": "", "system": "", "params": {}, "messages": [], "adapters": [], "license": []}
        model_path = None
        size = 0
        for layer in manifest.get("layers", []):
            size += int(layer.get("size", 0))
            mt, dg = layer.get("mediaType"), layer.get("digest", "")
            bp = self.blob_path(dg)
            if not bp.is_file():
                raise ApiError(500, f"blob {dg} of model {name} is missing from {self.blobs}; create the model again")
            if mt == MEDIA_MODEL:
                model_path = bp
            elif mt == MEDIA_ADAPTER:
                rec["adapters"].append(bp)
            elif mt == MEDIA_TEMPLATE:
                rec["template"] = bp.read_text(encoding="utf-8")
            elif mt == MEDIA_SYSTEM:
                rec["system"] = bp.read_text(encoding="utf-8")
            elif mt == MEDIA_PARAMS:
                rec["params"] = json.loads(bp.read_text(encoding="utf-8"))
            elif mt == MEDIA_MESSAGES:
                rec["messages"] = json.loads(bp.read_text(encoding="utf-8"))
            elif mt == MEDIA_LICENSE:
                rec["license"].append(bp.read_text(encoding="utf-8"))
        if model_path is None:
            raise ApiError(500, f"model {name} has no model layer; create it again")
        cfg = manifest.get("config") or {}
        config = self.get_json_blob(cfg["digest"]) if cfg.get("digest") and self.has_blob(cfg["digest"]) else {}
        return ModelRecord(
            name=full_name(name), digest=hashlib.sha256(raw).hexdigest(), manifest=manifest,
            modified_at=path.stat().st_mtime, model_path=model_path, size=size, config=config, **rec,
        )

    def write_manifest(self, name: str, layers: list[dict], config: dict) -> str:
        cfg_hex, cfg_size = self.put_bytes(json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": f"sha256:{cfg_hex}", "size": cfg_size},
            "layers": layers,
        }
        data = json.dumps(manifest, indent=None, separators=(",", ":")).encode()
        path = self.manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return hashlib.sha256(data).hexdigest()

    def delete(self, name: str) -> None:
        with self._lock:
            rec = self.get(name)
            path = self.manifest_path(name)
            path.unlink()
            # prune empty folders and the layers no other manifest uses (as Ollama does)
            d = path.parent
            while d != self.manifests and not any(d.iterdir()):
                d.rmdir()
                d = d.parent
            used: set[str] = set()
            for other in self.names():
                try:
                    m = json.loads(self.manifest_path(other).read_bytes())
                except (OSError, json.JSONDecodeError):
                    continue
                used.update(normalize_digest(l["digest"]) for l in m.get("layers", []))
                if m.get("config", {}).get("digest"):
                    used.add(normalize_digest(m["config"]["digest"]))
            mine = [l["digest"] for l in rec.manifest.get("layers", [])]
            if rec.manifest.get("config", {}).get("digest"):
                mine.append(rec.manifest["config"]["digest"])
            for dg in mine:
                if normalize_digest(dg) not in used:
                    self.blob_path(dg).unlink(missing_ok=True)

    def copy(self, source: str, destination: str) -> None:
        with self._lock:
            src = self.manifest_path(source)
            if not src.is_file():
                raise _not_found(source)
            dst = self.manifest_path(destination)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.partial")
            tmp.write_bytes(src.read_bytes())
            os.replace(tmp, dst)


def gguf_summary(path: Path) -> dict:
    """Config fields (family, size, quantization) and scalar metadata of a GGUF file."""
    try:
        import gguf
    except ImportError:  # pragma: no cover - gguf is a dependency
        return {"model_format": "gguf", "model_info": {}}
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as e:  # noqa: BLE001
        raise ApiError(400, f"{path.name} is not a valid GGUF file: {e}") from None
    info: dict[str, Any] = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or not f.types or not f.data:
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            continue
        part = f.parts[f.data[0]]
        if t == gguf.GGUFValueType.STRING:
            if key == "tokenizer.chat_template":
                continue
            info[key] = bytes(part).decode("utf-8", "replace")
        else:
            v = part.tolist()[0]
            info[key] = v
    n_params = 0
    for t in reader.tensors:
        c = 1
        for d in t.shape:
            c *= int(d)
        n_params += c
    info["general.parameter_count"] = n_params
    arch = info.get("general.architecture", "")
    if n_params >= 1e9:
        size = f"{n_params / 1e9:.1f}B"
    elif n_params >= 1e6:
        size = f"{n_params / 1e6:.0f}M"
    else:
        size = str(n_params)
    return {
        "model_format": "gguf",
        "model_family": arch,
        "model_families": [arch] if arch else None,
        "model_type": info.get("general.size_label") or size,
        "file_type": _FILE_TYPES.get(info.get("general.file_type"), str(info.get("general.file_type", ""))),
        "model_info": info,
    }


# ---------------------------------------------------------------------------------------------- engine


def _merge_options(params: dict, options: dict | None) -> dict:
    opts = dict(DEFAULT_OPTIONS)
    opts["stop"] = []
    for src in (params or {}, options or {}):
        for k, v in src.items():
            if v is None:
                continue
            if k == "stop":
                opts["stop"] = [v] if isinstance(v, str) else list(v)
            else:
                opts[k] = v
    return opts


class _Loaded:
    def __init__(self, rec: ModelRecord, llm: Any, num_ctx: int, load_s: float) -> None:
        self.rec = rec
        self.llm = llm
        self.num_ctx = num_ctx
        self.load_s = load_s
        self.expires_at = time.time() + DEFAULT_KEEP_ALIVE_S


def _keep_alive_seconds(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(v))
    if not m:
        raise ApiError(400, f"invalid keep_alive {v!r}: use seconds or a duration such as 5m")
    n = float(m.group(1))
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def n_threads() -> int:
    """CPU threads llama.cpp decodes with."""
    return max(1, min(8, os.cpu_count() or 1))


class Engine:
    """One llama.cpp model in memory at a time; generation serialised by a lock."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.loaded: _Loaded | None = None

    def _expire(self) -> None:
        if self.loaded and self.loaded.expires_at >= 0 and time.time() > self.loaded.expires_at:
            self.unload()

    def unload(self) -> None:
        if self.loaded is not None:
            try:
                self.loaded.llm.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
            self.loaded = None

    def load(self, rec: ModelRecord, num_ctx: int) -> float:
        """Make ``rec`` the loaded model; returns seconds spent loading (0 when already loaded)."""
        self._expire()
        if self.loaded and self.loaded.rec.digest == rec.digest and self.loaded.num_ctx == num_ctx \
                and self.loaded.rec.model_path == rec.model_path:
            return 0.0
        self.unload()
        t0 = time.perf_counter()
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ApiError(500, f"llama-cpp-python is not installed ({e}); install ollatune's dependencies") from None
        kwargs: dict[str, Any] = dict(
            model_path=str(rec.model_path), n_ctx=int(num_ctx), verbose=False, n_threads=n_threads(),
        )
        if rec.adapters:
            kwargs["lora_path"] = str(rec.adapters[0])
        try:
            llm = Llama(**kwargs)
        except Exception as e:  # noqa: BLE001 - llama.cpp raises ValueError/RuntimeError
            raise ApiError(500, f"failed to load model {rec.name} from {rec.model_path}: {e}") from None
        dt = time.perf_counter() - t0
        self.loaded = _Loaded(rec, llm, int(num_ctx), dt)
        return dt

    def tokenize(self, prompt: str) -> list[int]:
        assert self.loaded is not None
        llm = self.loaded.llm
        toks = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        bos = llm.token_bos()
        # never a doubled BOS: the prompt may already start with the BOS text
        while len(toks) >= 2 and toks[0] == bos and toks[1] == bos:
            toks = toks[1:]
        return toks

    def generate(self, rec: ModelRecord, prompt: str, opts: dict, fmt: Any, keep_alive: Any) -> Iterator[dict]:
        """Yields {"text": piece} chunks, then one final dict with stats (``done``)."""
        t_start = time.perf_counter()
        with self.lock:
            num_ctx = int(opts.get("num_ctx") or DEFAULT_OPTIONS["num_ctx"])
            load_s = self.load(rec, num_ctx)
            assert self.loaded is not None
            ka = _keep_alive_seconds(keep_alive)
            llm = self.loaded.llm
            tokens = self.tokenize(prompt)
            if len(tokens) >= num_ctx:
                raise ApiError(400, f"prompt is {len(tokens)} tokens, more than the context window num_ctx={num_ctx}; "
                                    f"shorten the prompt or raise num_ctx")
            num_predict = int(opts.get("num_predict", -1))
            max_tokens = num_predict if num_predict > 0 else num_ctx - len(tokens)
            if num_predict == 0:
                max_tokens = 0
            seed = int(opts.get("seed", -1))
            temperature = float(opts.get("temperature", 0.8))
            grammar = None
            if fmt:
                from llama_cpp import LlamaGrammar

                schema = json.dumps(fmt) if isinstance(fmt, dict) else '{"type": "object"}'
                if not isinstance(fmt, dict) and fmt != "json":
                    raise ApiError(400, f"invalid format {fmt!r}: use \"json\" or a JSON schema object")
                grammar = LlamaGrammar.from_json_schema(schema, verbose=False)
            stops = [s for s in opts.get("stop") or [] if s]
            t_prompt = time.perf_counter()
            pieces = 0
            text_out = []
            finish = "stop"
            if max_tokens > 0:
                # Every request evaluates its whole prompt: reusing the KV cache of a shared prefix from the
                # previous request changes the numerics (batched vs incremental prompt evaluation), so greedy
                # output would depend on what was asked before. Evaluation results must not.
                llm.reset()
                it = llm.create_completion(
                    prompt=tokens,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    top_p=float(opts.get("top_p", 0.9)),
                    top_k=int(opts.get("top_k", 40)),
                    min_p=float(opts.get("min_p", 0.0)),
                    repeat_penalty=float(opts.get("repeat_penalty", 1.1)),
                    presence_penalty=float(opts.get("presence_penalty", 0.0)),
                    frequency_penalty=float(opts.get("frequency_penalty", 0.0)),
                    seed=seed if seed >= 0 else int.from_bytes(os.urandom(4), "little"),
                    stop=stops or None,
                    stream=True,
                    grammar=grammar,
                )
                first = None
                for chunk in it:
                    choice = chunk["choices"][0]
                    piece = choice.get("text") or ""
                    if first is None:
                        first = time.perf_counter()
                    if piece:
                        pieces += 1
                        text_out.append(piece)
                        yield {"text": piece}
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
            else:
                finish = "length"
            t_end = time.perf_counter()
            n_eval = len(llm.tokenize("".join(text_out).encode("utf-8"), add_bos=False, special=True)) if text_out else 0
            if finish == "stop" and n_eval:
                n_eval += 1  # the end-of-turn token (or stop string) that ended generation
            if ka is not None:
                if ka == 0:
                    self.unload()
                elif self.loaded:
                    self.loaded.expires_at = time.time() + ka if ka > 0 else -1
            elif self.loaded:
                self.loaded.expires_at = time.time() + DEFAULT_KEEP_ALIVE_S
            yield {
                "done": True,
                "done_reason": "length" if finish == "length" else "stop",
                "total_duration": int((t_end - t_start) * 1e9),
                "load_duration": int(load_s * 1e9),
                "prompt_eval_count": len(tokens),
                "prompt_eval_duration": int(((first or t_end) - t_prompt) * 1e9),
                "eval_count": n_eval,
                "eval_duration": int((t_end - (first or t_end)) * 1e9),
                "_prompt_tokens": tokens,
            }

    def load_only(self, rec: ModelRecord, opts: dict, keep_alive: Any) -> dict:
        t0 = time.perf_counter()
        with self.lock:
            ka = _keep_alive_seconds(keep_alive)
            if ka == 0:
                if self.loaded and self.loaded.rec.digest == rec.digest:
                    self.unload()
                return {"done": True, "done_reason": "unload", "total_duration": int((time.perf_counter() - t0) * 1e9)}
            load_s = self.load(rec, int(opts.get("num_ctx") or DEFAULT_OPTIONS["num_ctx"]))
            if self.loaded:
                self.loaded.expires_at = time.time() + (ka if ka is not None else DEFAULT_KEEP_ALIVE_S) if (ka is None or ka > 0) else -1
            return {"done": True, "done_reason": "load", "total_duration": int((time.perf_counter() - t0) * 1e9),
                    "load_duration": int(load_s * 1e9)}


# ------------------------------------------------------------------------------------------------ app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request) -> dict:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ApiError(400, f"invalid JSON in request body: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def _model_field(data: dict) -> str:
    name = data.get("model") or data.get("name")
    if not name:
        raise ApiError(400, "model is required")
    return name


_END = object()


def _line(item: dict) -> bytes:
    return (json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8")


async def _ndjson(items: Iterator[dict]) -> Response:
    """Stream ``items`` as NDJSON. The first item is computed before answering, so errors that happen
    before any output (unknown option, prompt too long, model fails to load) are HTTP errors; later ones
    are sent in-band as ``{"error": ...}`` like Ollama does. The iterator is always closed (it holds the
    generation lock), also when the client goes away mid-stream."""
    try:
        first = await run_in_threadpool(next, items, _END)
    except BaseException:
        await run_in_threadpool(getattr(items, "close", lambda: None))
        raise

    async def gen():
        try:
            item = first
            while item is not _END:
                if "error" in item and len(item) == 1:
                    yield _line(item)
                    return
                yield _line(item)
                try:
                    item = await run_in_threadpool(next, items, _END)
                except ApiError as e:
                    yield _line({"error": e.message})
                    return
                except ServeError as e:
                    yield _line({"error": e.message})
                    return
                except Exception as e:  # noqa: BLE001 - the stream has started: report in-band
                    log.exception("streaming request failed")
                    yield _line({"error": f"{type(e).__name__}: {e}"})
                    return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                await run_in_threadpool(close)

    return StreamingResponse(gen(), media_type="application/x-ndjson")

async def _respond(gen: Iterator[dict], base: dict, stream: bool, wrap: Callable[[str], dict]) -> Response:
    """Stream the engine's pieces as NDJSON, or join them into one response; ``wrap`` puts text where
    the endpoint keeps it (``message.content`` for chat, ``response`` for generate)."""
    texts: list[str] = []

    def chunks() -> Iterator[dict]:
        try:
            for part in gen:
                if "text" in part:
                    texts.append(part["text"])
                    yield {**base, "created_at": _now_iso(), **wrap(part["text"]), "done": False}
                else:
                    part.pop("_prompt_tokens", None)
                    yield {**base, "created_at": _now_iso(), **wrap(""), **part}
        finally:
            gen.close()

    if stream:
        return await _ndjson(chunks())
    parts = await run_in_threadpool(lambda: list(chunks()))
    return JSONResponse({**parts[-1], **wrap("".join(texts))})



def _format_parameters(params: dict) -> str:
    lines = []
    for k in sorted(params):
        v = params[k]
        vals = v if isinstance(v, list) else [v]
        for x in vals:
            shown = json.dumps(x, ensure_ascii=False) if isinstance(x, str) else (str(x).lower() if isinstance(x, bool) else str(x))
            lines.append(f"{k:<30} {shown}")
    return "\n".join(lines)


def _show_modelfile(rec: ModelRecord) -> str:
    out = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {rec.name}",
        "",
        f"FROM {rec.model_path}",
    ]
    for a in rec.adapters:
        out.append(f"ADAPTER {a}")
    if rec.template:
        out.append(f'TEMPLATE """{rec.template}"""')
    if rec.system:
        out.append(f'SYSTEM """{rec.system}"""')
    for k in sorted(rec.params):
        v = rec.params[k]
        for x in (v if isinstance(v, list) else [v]):
            out.append(f"PARAMETER {k} {json.dumps(x, ensure_ascii=False) if isinstance(x, str) else x}")
    for m in rec.messages:
        out.append(f"MESSAGE {m.get('role')} {json.dumps(m.get('content', ''), ensure_ascii=False)}")
    return "\n".join(out) + "\n"


class _Api:
    def __init__(self, store_dir: Path) -> None:
        self.store = ModelStore(store_dir)
        self.engine = Engine(self.store)

    # -- basic
    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": RUNTIME_VERSION, "runtime": "ollatune-embedded"})

    async def tags(self, request: Request) -> Response:
        models = []
        for n in self.store.names():
            try:
                rec = self.store.get(n)
            except ApiError:
                continue
            models.append({"name": rec.name, "model": rec.name, "modified_at": _iso(rec.modified_at),
                           "size": rec.size, "digest": rec.digest, "details": rec.details})
        models.sort(key=lambda m: m["modified_at"], reverse=True)
        return JSONResponse({"models": models})

    async def show(self, request: Request) -> Response:
        data = await _body(request)
        rec = self.store.get(_model_field(data))
        caps = ["completion"]
        if ".Tools" in rec.template:
            caps.append("tools")
        return JSONResponse({
            "license": "\n".join(rec.license),
            "modelfile": _show_modelfile(rec),
            "parameters": _format_parameters(rec.params),
            "template": rec.template,
            "system": rec.system,
            "details": rec.details,
            "model_info": rec.config.get("model_info", {}),
            "modified_at": _iso(rec.modified_at),
            "capabilities": caps,
            "messages": rec.messages or None,
        })

    async def ps(self, request: Request) -> Response:
        self.engine._expire()
        models = []
        ld = self.engine.loaded
        if ld is not None:
            exp = ld.expires_at if ld.expires_at >= 0 else time.time() + 10 * 365 * 86400
            models.append({"name": ld.rec.name, "model": ld.rec.name, "size": ld.rec.size, "digest": ld.rec.digest,
                           "details": ld.rec.details, "expires_at": _iso(exp), "size_vram": 0,
                           "context_length": ld.num_ctx})
        return JSONResponse({"models": models})

    # -- blobs
    async def blob_head(self, request: Request) -> Response:
        digest = request.path_params["digest"]
        return Response(status_code=200 if self.store.has_blob(digest) else 404)

    async def blob_post(self, request: Request) -> Response:
        digest = request.path_params["digest"]
        hexd = normalize_digest(digest)
        final = self.store.blob_path(digest)
        if final.is_file():
            return Response(status_code=200)
        tmp = self.store.blobs / f".partial-{uuid.uuid4().hex}"
        h = hashlib.sha256()
        try:
            with open(tmp, "wb") as f:
                async for chunk in request.stream():
                    h.update(chunk)
                    f.write(chunk)
            got = h.hexdigest()
            if got != hexd:
                raise ApiError(400, f"digest mismatch, expected sha256:{hexd}, got sha256:{got}")
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return Response(status_code=201)

    # -- create / delete / copy
    async def create(self, request: Request) -> Response:
        data = await _body(request)
        name = _model_field(data)
        parse_name(name)
        stream = data.get("stream", True)
        files = data.get("files") or {}
        adapters = data.get("adapters") or {}
        if not isinstance(files, dict) or not isinstance(adapters, dict):
            raise ApiError(400, "files and adapters must map file names to sha256 digests")
        for fn, dg in list(files.items()) + list(adapters.items()):
            if not self.store.has_blob(dg):
                raise ApiError(400, f"blob {dg} for file {fn!r} not found: upload it first with POST /api/blobs/{dg}")
        base: ModelRecord | None = None
        if data.get("from"):
            try:
                base = self.store.get(data["from"])
            except ApiError:
                raise ApiError(400, f'base model "{data["from"]}" not found: create it first or give files instead of from') from None
        ggufs = [(fn, dg) for fn, dg in files.items() if fn.lower().endswith(".gguf")]
        if not ggufs and base is None:
            if files:
                raise ApiError(400, f"no .gguf file among files {sorted(files)}: ollatune's runtime serves GGUF models only")
            raise ApiError(400, "neither 'from' nor 'files' given: nothing to create the model from")
        if len(ggufs) > 1:
            raise ApiError(400, f"more than one .gguf file given ({[f for f, _ in ggufs]}); give exactly one")
        work = lambda: list(self._create_steps(name, data, base, ggufs, adapters))  # noqa: E731
        if stream:
            return await _ndjson(self._create_steps(name, data, base, ggufs, adapters))
        steps = await run_in_threadpool(work)
        errors = [s for s in steps if "error" in s]
        if errors:
            return _error(400, errors[0]["error"])
        return JSONResponse(steps[-1])

    def _create_steps(self, name: str, data: dict, base: ModelRecord | None, ggufs: list, adapters: dict) -> Iterator[dict]:
        from serve.gotemplate import parse as parse_go

        layers: list[dict] = []
        config: dict = dict(base.config) if base else {}
        if ggufs:
            fn, dg = ggufs[0]
            hexd = normalize_digest(dg)
            path = self.store.blob_path(dg)
            yield {"status": f"using existing layer sha256:{hexd}"}
            yield {"status": "parsing GGUF"}
            config = gguf_summary(path)
            layers.append({"mediaType": MEDIA_MODEL, "digest": f"sha256:{hexd}", "size": path.stat().st_size})
        else:
            assert base is not None
            for l in base.manifest["layers"]:
                if l["mediaType"] in (MEDIA_MODEL,):
                    layers.append(dict(l))
            config["parent_model"] = base.name
        for fn, dg in adapters.items():
            layers.append({"mediaType": MEDIA_ADAPTER, "digest": f"sha256:{normalize_digest(dg)}",
                           "size": self.store.blob_path(dg).stat().st_size})
        if not adapters and base is not None:
            layers += [dict(l) for l in base.manifest["layers"] if l["mediaType"] == MEDIA_ADAPTER]

        template = data.get("template")
        params = dict(base.params) if base else {}
        if template is None and base is not None:
            template = base.template
        if template is None and ggufs:
            template, detected_stop = self._template_from_gguf(self.store.blob_path(ggufs[0][1]))
            if detected_stop and "stop" not in params and "stop" not in (data.get("parameters") or {}):
                params["stop"] = detected_stop
            yield {"status": f"using chat template from the GGUF metadata ({'detected' if detected_stop else 'raw prompt'})"}
        if template:
            try:
                parse_go(template)
            except ServeError as e:
                yield {"error": f"template error: {e.message}"}
                return
            yield self._layer(layers, MEDIA_TEMPLATE, template.encode("utf-8"))
        system = data.get("system")
        if system is None and base is not None:
            system = base.system
        if system:
            yield self._layer(layers, MEDIA_SYSTEM, system.encode("utf-8"))
        from serve.modelfile import coerce_parameter

        for k, v in (data.get("parameters") or {}).items():
            if k == "stop":
                params["stop"] = [v] if isinstance(v, str) else list(v)
            else:
                params[k] = coerce_parameter(k, v) if isinstance(v, str) else v
        if params:
            yield self._layer(layers, MEDIA_PARAMS, json.dumps(params, sort_keys=True).encode())
        messages = data.get("messages")
        if messages is None and base is not None:
            messages = base.messages
        if messages:
            yield self._layer(layers, MEDIA_MESSAGES, json.dumps(messages, ensure_ascii=False).encode())
        lic = data.get("license")
        if lic:
            for text in [lic] if isinstance(lic, str) else lic:
                yield self._layer(layers, MEDIA_LICENSE, text.encode("utf-8"))
        yield {"status": "writing manifest"}
        self.store.write_manifest(name, layers, config)
        if self.engine.loaded and self.engine.loaded.rec.name == full_name(name):
            with self.engine.lock:
                self.engine.unload()
        yield {"status": "success"}

    def _layer(self, layers: list[dict], media: str, data: bytes) -> dict:
        hexd, size = self.store.put_bytes(data)
        layers.append({"mediaType": media, "digest": f"sha256:{hexd}", "size": size})
        return {"status": f"creating new layer sha256:{hexd}"}

    def _template_from_gguf(self, path: Path) -> tuple[str, list[str] | None]:
        from serve.chat_templates import spec_from_gguf

        try:
            spec = spec_from_gguf(path)
        except ServeError:
            return "{{ .Prompt }}", None
        return spec.go_template, spec.stop

    async def delete(self, request: Request) -> Response:
        data = await _body(request)
        name = _model_field(data)
        with self.engine.lock:
            if self.engine.loaded and self.engine.loaded.rec.name == full_name(name):
                self.engine.unload()
        self.store.delete(name)
        return Response(status_code=200)

    async def copy(self, request: Request) -> Response:
        data = await _body(request)
        src, dst = data.get("source"), data.get("destination")
        if not src or not dst:
            raise ApiError(400, "source and destination are required")
        parse_name(dst)
        self.store.copy(src, dst)
        return Response(status_code=200)

    # -- inference
    def _chat_prompt(self, rec: ModelRecord, messages: list[dict], tools: Any) -> str:
        from serve.gotemplate import render_ollama
        from serve.parity import ollama_chat_messages

        msgs = list(rec.messages or []) + list(messages)
        msgs = ollama_chat_messages(msgs, rec.system)
        try:
            return render_ollama(rec.template or "{{ .Prompt }}", msgs, tools=tools)
        except ServeError as e:
            raise ApiError(500, f"template error for model {rec.name}: {e.message}") from None

    async def chat(self, request: Request) -> Response:
        data = await _body(request)
        rec = self.store.get(_model_field(data))
        messages = data.get("messages") or []
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise ApiError(400, "messages must be a list of {role, content} objects")
        opts = _merge_options(rec.params, data.get("options"))
        stream = data.get("stream", True)
        base = {"model": data.get("model")}
        if not messages:
            res = await run_in_threadpool(self.engine.load_only, rec, opts, data.get("keep_alive"))
            out = {**base, "created_at": _now_iso(), "message": {"role": "assistant", "content": ""}, **res}
            return JSONResponse(out)
        prompt = self._chat_prompt(rec, messages, data.get("tools"))
        gen = self.engine.generate(rec, prompt, opts, data.get("format"), data.get("keep_alive"))

        return await _respond(gen, base, stream, lambda text: {"message": {"role": "assistant", "content": text}})

    async def generate(self, request: Request) -> Response:
        data = await _body(request)
        rec = self.store.get(_model_field(data))
        opts = _merge_options(rec.params, data.get("options"))
        stream = data.get("stream", True)
        prompt = data.get("prompt") or ""
        base = {"model": data.get("model")}
        if not prompt and not data.get("suffix"):
            res = await run_in_threadpool(self.engine.load_only, rec, opts, data.get("keep_alive"))
            return JSONResponse({**base, "created_at": _now_iso(), "response": "", **res})
        if data.get("raw"):
            text = prompt
        else:
            from serve.gotemplate import render_ollama

            msgs: list[dict] = []
            system = data.get("system") or rec.system
            if system:
                msgs.append({"role": "system", "content": system})
            msgs.append({"role": "user", "content": prompt})
            try:
                text = render_ollama(data.get("template") or rec.template or "{{ .Prompt }}", msgs)
            except ServeError as e:
                raise ApiError(400, f"template error: {e.message}") from None
        gen = self.engine.generate(rec, text, opts, data.get("format"), data.get("keep_alive"))

        return await _respond(gen, base, stream, lambda text: {"response": text})


def _wrap(fn):
    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except ApiError as e:
            return _error(e.status, e.message)
        except ServeError as e:
            return _error(400, e.message)
        except Exception as e:  # noqa: BLE001 - never a bare 500 page: clients expect {"error": ...}
            log.exception("request failed")
            return _error(500, f"{type(e).__name__}: {e}")

    return endpoint


def create_app(store_dir: Path) -> Starlette:
    """The Ollama-compatible Starlette app serving models stored under ``store_dir``."""
    api = _Api(Path(store_dir))
    routes = [
        Route("/", _wrap(api.root), methods=["GET", "HEAD"]),
        Route("/api/version", _wrap(api.version), methods=["GET"]),
        Route("/api/tags", _wrap(api.tags), methods=["GET"]),
        Route("/api/show", _wrap(api.show), methods=["POST"]),
        Route("/api/ps", _wrap(api.ps), methods=["GET"]),
        Route("/api/blobs/{digest}", _wrap(api.blob_head), methods=["HEAD"]),
        Route("/api/blobs/{digest}", _wrap(api.blob_post), methods=["POST"]),
        Route("/api/create", _wrap(api.create), methods=["POST"]),
        Route("/api/delete", _wrap(api.delete), methods=["DELETE"]),
        Route("/api/copy", _wrap(api.copy), methods=["POST"]),
        Route("/api/chat", _wrap(api.chat), methods=["POST"]),
        Route("/api/generate", _wrap(api.generate), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.api = api
    return app


# ------------------------------------------------------------------------------------------- servers


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise RuntimeStartError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def port_is_free(host: str, port: int) -> bool:
    try:
        _bind(host, port).close()
        return True
    except RuntimeStartError:
        return False


class EmbeddedRuntime:
    """The runtime on a background uvicorn thread. ``port=0`` picks a free port; see :attr:`url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, store_dir: Path | None = None) -> None:
        if store_dir is None:
            from workspace.settings import get_settings

            store_dir = get_settings().ollama_dir
        self.host = host
        self.port = port
        self.store_dir = Path(store_dir)
        self.app: Starlette | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 30.0) -> "EmbeddedRuntime":
        if self.running:
            return self
        import uvicorn

        self.app = create_app(self.store_dir)
        self._sock = _bind(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"ollatune-runtime-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeStartError(f"the embedded runtime at {self.url} exited during start-up")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeStartError(f"the embedded runtime at {self.url} did not start within {timeout:.0f} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        if self.app is not None:
            api = self.app.state.api
            with api.engine.lock:
                api.engine.unload()
        self._thread = None
        self._server = None
        self._sock = None

    def __enter__(self) -> "EmbeddedRuntime":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_forever(host: str = "127.0.0.1", port: int = 11434, store_dir: Path | None = None) -> None:
    """Run the runtime in the foreground until interrupted (the ``ollatune serve`` verb)."""
    import uvicorn

    if store_dir is None:
        from workspace.settings import get_settings

        store_dir = get_settings().ollama_dir
    sock = _bind(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the embedded runtime listens on %s: anyone who can reach this address can use it", host)
    config = uvicorn.Config(create_app(Path(store_dir)), log_level="info", lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
