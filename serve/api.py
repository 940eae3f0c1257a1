"""Ollama's HTTP API (``/api/...``) over the model store and the scheduler.

Behaviour follows Ollama's server (``server/routes.go``): NDJSON streaming by default (``stream: false``
for one object; a string ``"false"`` is refused as Go's decoder refuses it), errors as ``{"error": ...}``
with Ollama's status codes, an error before the first piece as an HTTP error and one after it in-band.
Everything a request asks for is checked before it reaches llama.cpp: option types and ranges, the model's
capabilities (tools, thinking, insert, vision, embedding-only models), the template's execution budget,
adapters at create time. Chat prompts longer than the context drop their oldest messages (system messages
and the last message stay), as Ollama's ``chatPrompt`` does.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from serve.errors import ServeError
from serve.names import ApiError, normalize_digest, parse_name
from serve.options import merge_options, parse_keep_alive, request_bool, request_logprobs
from serve.scheduler import RunnerProcess, Scheduler, SchedulerConfig
from serve.store import ModelRecord, ModelStore

log = logging.getLogger("ollatune.serve.api")

__all__ = ["OllamaApi", "RUNTIME_VERSION", "iso_now"]

# The Ollama API level this runtime emulates.
RUNTIME_VERSION = "0.9.0"
THINK_LEVELS = ("high", "medium", "low", "max")
OFFLINE = ("ollatune's embedded runtime is offline: it reaches no model registry. Create the model from a local "
           "GGUF instead (`ollatune pipeline`, or POST /api/create with files)")


def iso_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat()


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).astimezone().isoformat()


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request, kind: str, required: bool = True) -> dict:
    """The JSON object of a request. Invalid UTF-8 inside is replaced (as Go's decoder does); an empty body
    or one that is not a JSON object is a 400 naming the problem."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiError(400, "missing request body")
        return {}
    try:
        data = json.loads(raw.decode("utf-8", "replace"))
    except json.JSONDecodeError as e:
        raise ApiError(400, f"invalid JSON in request body: {e.msg} (line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"json: cannot unmarshal {type(data).__name__} into Go value of type api.{kind}")
    return data


def _line(item: dict) -> bytes:
    return (json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8")


def _format_parameters(params: dict) -> str:
    lines = []
    for k in sorted(params):
        for x in params[k] if isinstance(params[k], list) else [params[k]]:
            shown = json.dumps(x, ensure_ascii=False) if isinstance(x, str) else (str(x).lower() if isinstance(x, bool) else str(x))
            lines.append(f"{k:<30} {shown}")
    return "\n".join(lines)


def check_format(fmt: Any) -> Any:
    """``format``: "json", a JSON schema object, or nothing; a schema the grammar builder refuses is a 400."""
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return fmt
    if not isinstance(fmt, dict):
        raise ApiError(400, f"invalid format {fmt!r}: use \"json\" or a JSON schema object")
    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        json_schema_to_gbnf(json.dumps(fmt))
    except ImportError:  # pragma: no cover - llama-cpp-python is a dependency of the runtime
        pass
    except Exception as e:  # noqa: BLE001 - the converter raises on anything it cannot express
        raise ApiError(400, f"invalid JSON schema in format: {e}") from None
    return fmt


def check_think(value: Any, rec: ModelRecord, requested: str) -> bool | str:
    """``think``: true/false or a level; asking a model without thinking to think is a 400, as in Ollama."""
    if value is None or value is False:
        return False
    if value is not True and value not in THINK_LEVELS:
        raise ApiError(400, f'invalid think value: {json.dumps(value)} (must be "high", "medium", "low", "max", '
                            "true, or false)")
    if "thinking" not in rec.capabilities():
        raise ApiError(400, f'"{requested}" does not support thinking')
    return value


class _ThinkSplit:
    """Text of a thinking model split at ``</think>``: what comes before is its thinking."""

    def __init__(self) -> None:
        self.thinking = True
        self.buf = ""

    def feed(self, text: str) -> tuple[str, str]:
        if not self.thinking:
            return "", text
        self.buf += text
        if "</think>" in self.buf:
            think, rest = self.buf.split("</think>", 1)
            self.thinking, self.buf = False, ""
            return think.replace("<think>", "").lstrip("\n"), rest.lstrip("\n")
        safe = self.buf[: max(0, len(self.buf) - len("</think>"))]
        self.buf = self.buf[len(safe):]
        return safe.replace("<think>", ""), ""


def parse_tool_calls(text: str) -> list[dict] | None:
    """Tool calls written by the model: a JSON object (or list) with ``name`` and ``arguments``/``parameters``,
    bare or inside ``<tool_call>...</tool_call>`` tags (Hermes/Qwen layout). None when the text is an answer."""
    import re

    chunks = re.findall(r"<tool_call>\s*(.*?)\s*</tool_call>", text, flags=re.S) or [text.strip()]
    calls = []
    for chunk in chunks:
        try:
            obj = json.loads(chunk)
        except (ValueError, TypeError):
            return None
        for item in obj if isinstance(obj, list) else [obj]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                return None
            args = item.get("arguments", item.get("parameters", {}))
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    return None
            if not isinstance(args, dict):
                return None
            calls.append({"function": {"name": item["name"], "arguments": args}})
    return calls or None


class Generation:
    """One generation on a runner: the first piece is awaited before answering (so errors before any output
    are HTTP errors), the rest streams; the runner is released and the request cancelled when the client
    goes away, whichever way the response ends."""

    def __init__(self, api: "OllamaApi", runner: RunnerProcess, pieces: AsyncIterator[dict], keep_alive: Any,
                 load_s: float, t0: float) -> None:
        self.api, self.runner, self.pieces = api, runner, pieces
        self.keep_alive, self.load_s, self.t0 = keep_alive, load_s, t0
        self.first: dict | None = None
        self.closed = False

    async def open(self) -> "Generation":
        try:
            self.first = await self.pieces.__anext__()
        except BaseException:
            await self.close()
            raise
        return self

    async def items(self) -> AsyncIterator[dict]:
        """Every piece, the final one with Ollama's timing fields; an error after output is the last item."""
        try:
            msg = self.first
            while msg is not None:
                if msg.get("done"):
                    total = time.perf_counter() - self.t0
                    yield {**msg, "total_duration": int(total * 1e9), "load_duration": int(self.load_s * 1e9)}
                    return
                yield msg
                try:
                    msg = await self.pieces.__anext__()
                except StopAsyncIteration:
                    return
                except ApiError as e:
                    yield {"error": e.message}
                    return
        finally:
            await self.close()

    async def collect(self, request: Request) -> list[dict]:
        """Every item, for a non-streaming answer; stops when the client goes away; an error is a 500."""
        async def work() -> list[dict]:
            return [item async for item in self.items()]

        try:
            items = await until_disconnect(request, work)
        finally:
            await self.close()
        errors = [i for i in items if "error" in i]
        if errors:
            raise ApiError(500, errors[0]["error"])
        return items

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.pieces.aclose()
        finally:
            self.api.scheduler.release(self.runner, self.keep_alive)
            self.api.scheduler.leave()


async def until_disconnect(request: Request, work: Callable[[], Any]) -> Any:
    """Run ``work()`` (a coroutine function) but stop it when the client disconnects: a non-streaming client
    that gives up must not keep the model generating."""
    task = asyncio.ensure_future(work())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise ApiError(499, "request canceled")
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - its error no longer has a reader
                pass


class OllamaApi:
    def __init__(self, store_dir: Path, config: SchedulerConfig | None = None) -> None:
        self.store = ModelStore(Path(store_dir))
        self.scheduler = Scheduler(Path(store_dir) / "logs", config)

    # ------------------------------------------------------------------------------------------ basics
    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": RUNTIME_VERSION, "runtime": "ollatune-embedded"})

    def record(self, data: dict, missing: str = "model is required") -> ModelRecord:
        name = data.get("model") or data.get("name")
        if not name:
            raise ApiError(400, missing)
        if not isinstance(name, str):
            raise ApiError(400, "invalid model name")
        return self.store.get(name)

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
        rec = self.record(await read_body(request, "ShowRequest"))
        return JSONResponse({
            "license": "\n".join(rec.license), "modelfile": self.modelfile(rec),
            "parameters": _format_parameters(rec.params), "template": rec.template, "system": rec.system,
            "details": rec.details, "model_info": rec.model_info, "modified_at": _iso(rec.modified_at),
            "capabilities": rec.capabilities(), "messages": rec.messages or None,
        })

    @staticmethod
    def modelfile(rec: ModelRecord) -> str:
        from serve.chat_templates import TemplateSpec
        from serve.modelfile import render_modelfile

        params = dict(rec.params)
        stops = params.pop("stop", []) or []
        spec = TemplateSpec("stored", rec.template or "{{ .Prompt }}", list(stops), rec.system or None)
        try:
            return render_modelfile(str(rec.model_path), spec, params, f'Modelfile of {rec.name}, as "ollama show" '
                                    f"prints it\nTo build a new Modelfile based on this, replace FROM with: FROM "
                                    f"{rec.name}", adapters=[str(a) for a in rec.adapters], messages=rec.messages,
                                    require_stop=False)
        except ServeError as e:  # a stored value a Modelfile cannot quote: still show the model
            return f"# {e.message}\nFROM {rec.model_path}\n"

    async def ps(self, request: Request) -> Response:
        models = []
        for r in self.scheduler.loaded():
            try:
                rec = self.store.get(r.name)
            except ApiError:
                continue
            if r.expires_at is None:
                exp = time.time() + 10 * 365 * 86400 if r.active == 0 else time.time() + self.scheduler.config.keep_alive_s
            else:
                exp = time.time() + max(0.0, r.expires_at - time.monotonic())
            models.append({"name": rec.name, "model": rec.name, "size": rec.size, "digest": rec.digest,
                           "details": rec.details, "expires_at": _iso(exp), "size_vram": 0,
                           "context_length": r.num_ctx})
        return JSONResponse({"models": models})

    async def pull(self, request: Request) -> Response:
        data = await read_body(request, "PullRequest")
        name = data.get("model") or data.get("name")
        parse_name(name)
        message = f"pull model manifest: {OFFLINE}"
        if request_bool(data, "stream", True, "PullRequest"):
            return StreamingResponse(iter([_line({"status": "pulling manifest"}), _line({"error": message})]),
                                     media_type="application/x-ndjson")
        return error_response(500, message)

    async def push(self, request: Request) -> Response:
        data = await read_body(request, "PushRequest")
        parse_name(data.get("model") or data.get("name"))
        return error_response(500, f"push model manifest: {OFFLINE.split('. ')[0]}")

    # -------------------------------------------------------------------------------------------- blobs
    async def blob_head(self, request: Request) -> Response:
        return Response(status_code=200 if self.store.has_blob(request.path_params["digest"]) else 404)

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

    # ---------------------------------------------------------------------------- create / delete / copy
    async def create(self, request: Request) -> Response:
        from serve.creating import CreatePlan

        data = await read_body(request, "CreateRequest")
        plan = CreatePlan.from_request(self.store, data)  # everything checked before anything is written
        stream = request_bool(data, "stream", True, "CreateRequest")
        old = self.store.digest_of(plan.name)

        async def finish() -> None:
            if old:
                await self.scheduler.unload(old, only_if_idle=True)

        if stream:
            async def gen() -> AsyncIterator[bytes]:
                for step in plan.steps():
                    yield _line(step)
                    await asyncio.sleep(0)
                await finish()

            return StreamingResponse(gen(), media_type="application/x-ndjson")
        steps = list(plan.steps())
        await finish()
        errors = [s for s in steps if "error" in s]
        return error_response(400, errors[0]["error"]) if errors else JSONResponse(steps[-1])

    async def delete(self, request: Request) -> Response:
        data = await read_body(request, "DeleteRequest")
        name = data.get("model") or data.get("name")
        digest = self.store.digest_of(name)
        if digest is None:
            raise ApiError(404, f"model '{name}' not found")
        await self.scheduler.unload(digest)
        self.store.delete(name)
        return Response(status_code=200)

    async def copy(self, request: Request) -> Response:
        data = await read_body(request, "CopyRequest")
        src, dst = data.get("source"), data.get("destination")
        if not src or not dst:
            raise ApiError(400, "source and destination are required")
        parse_name(dst)
        self.store.copy(src, dst)
        return Response(status_code=200)

    # -------------------------------------------------------------------------------------- generation
    def chat_prompt(self, rec: ModelRecord, messages: list[dict], tools: Any = None, think: Any = False) -> str:
        from serve.gotemplate import render_ollama
        from serve.parity import ollama_chat_messages

        msgs = ollama_chat_messages(list(rec.messages or []) + list(messages), rec.system)
        try:
            return render_ollama(rec.template or "{{ .Prompt }}", msgs, tools=tools, think=bool(think))
        except ServeError as e:
            raise ApiError(400, f"template error for model {rec.name}: {e.message}") from None

    async def fit_chat(self, runner: RunnerProcess, rec: ModelRecord, messages: list[dict], num_ctx: int,
                       truncate: bool, tools: Any, think: Any) -> str:
        """The chat prompt; when it is longer than the context, the oldest messages are dropped (system
        messages and the last message stay), as Ollama does, unless ``truncate`` is false."""
        prompt = self.chat_prompt(rec, messages, tools, think)
        if not truncate or len(messages) <= 1:
            return prompt
        if (await runner.call({"op": "tokenize", "text": prompt}))["tokens"] < num_ctx:
            return prompt
        for start in range(1, len(messages)):
            kept = [m for m in messages[:start] if m.get("role") == "system"] + messages[start:]
            prompt = self.chat_prompt(rec, kept, tools, think)
            if (await runner.call({"op": "tokenize", "text": prompt}))["tokens"] < num_ctx:
                return prompt
        return prompt  # the last message alone is still too long: the runner answers 400

    async def start(self, rec: ModelRecord, opts: dict, keep_alive: Any, make_prompt, fmt: Any,  # noqa: ANN001
                    logprobs: int | None = None) -> Generation:
        """Admission, a runner, the prompt, the first piece. ``logprobs``: alternatives per token (0..20)
        when the request asked for log-probabilities, else None."""
        t0 = time.perf_counter()
        self.scheduler.admit()
        try:
            runner = await self.scheduler.acquire(rec, opts["num_ctx"])
        except BaseException:
            self.scheduler.leave()
            raise
        load_s = time.perf_counter() - t0
        try:
            prompt = await make_prompt(runner)
        except BaseException:
            self.scheduler.release(runner, keep_alive)
            self.scheduler.leave()
            raise
        pieces = runner.generate(prompt, opts, fmt, logprobs)
        return await Generation(self, runner, pieces, keep_alive, load_s, t0).open()

    async def load_only(self, rec: ModelRecord, opts: dict, keep_alive: Any) -> dict:
        t0 = time.perf_counter()
        ka = parse_keep_alive(keep_alive)
        if ka == 0:
            await self.scheduler.unload(rec.digest)
            return {"done": True, "done_reason": "unload", "total_duration": int((time.perf_counter() - t0) * 1e9)}
        runner = await self.scheduler.acquire(rec, opts["num_ctx"])
        self.scheduler.release(runner, keep_alive)
        total = int((time.perf_counter() - t0) * 1e9)
        return {"done": True, "done_reason": "load", "total_duration": total, "load_duration": total}

    @staticmethod
    def refuse_images(rec: ModelRecord, data: dict, messages: list[dict] | None = None) -> None:
        images = bool(data.get("images")) or any(m.get("images") for m in messages or [])
        if images:
            raise ApiError(400, f"{rec.name} does not support vision")

    async def respond(self, request: Request, gen: Generation, base: dict, stream: bool,
                      wrap: Callable[[str, str], dict], tools: bool = False) -> Response:
        """Stream the pieces as NDJSON, or join them into one object; ``wrap(text, thinking)`` puts text where
        the endpoint keeps it. With tools the answer is read whole, so a tool call is returned as one.
        Log-probabilities stay with the piece they came with; a joined answer carries all of them."""
        think = _ThinkSplit() if "thinking" in base.pop("_caps", []) and base.pop("_think", False) else None

        def shaped(item: dict) -> dict:
            if "error" in item:
                return item
            text = item.get("text", "")
            thinking = ""
            if think is not None and text:
                thinking, text = think.feed(text)
            if item.get("done"):
                fields = {k: v for k, v in item.items() if k not in ("id", "done", "text")}
                return {**base, "created_at": iso_now(), **wrap(text, thinking), "done": True, **fields}
            logprobs = {"logprobs": item["logprobs"]} if "logprobs" in item else {}
            return {**base, "created_at": iso_now(), **wrap(text, thinking), "done": False, **logprobs}

        if stream and not tools:
            async def gen_lines() -> AsyncIterator[bytes]:
                async for item in gen.items():
                    yield _line(shaped(item))

            return StreamingResponse(gen_lines(), media_type="application/x-ndjson")

        items = await gen.collect(request)
        text = "".join(i.get("text", "") for i in items)
        final = shaped({**items[-1], "text": ""})
        thinking = ""
        if think is not None and "</think>" in text:
            thinking, text = _split_think(text)
        body = {**final, **wrap(text, thinking)}
        if any("logprobs" in i for i in items):
            body["logprobs"] = [entry for i in items for entry in i.get("logprobs") or []]
        if tools:
            calls = parse_tool_calls(text)
            if calls and "message" in body:
                body["message"] = {**body["message"], "content": "", "tool_calls": calls}
            if stream:
                async def once() -> AsyncIterator[bytes]:
                    yield _line(body)

                return StreamingResponse(once(), media_type="application/x-ndjson")
        return JSONResponse(body)

    async def chat(self, request: Request) -> Response:
        data = await read_body(request, "ChatRequest")
        logprobs = request_logprobs(data, "ChatRequest")
        rec = self.record(data)
        requested = data.get("model") or data.get("name")
        stream = request_bool(data, "stream", True, "ChatRequest")
        truncate = request_bool(data, "truncate", True, "ChatRequest")
        messages = data.get("messages") or []
        if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                     and isinstance(m.get("content", ""), (str, type(None)))
                                                     for m in messages):
            raise ApiError(400, "messages must be a list of {role, content} objects with text content")
        caps = rec.capabilities()
        if "completion" not in caps:
            raise ApiError(400, f'"{requested}" does not support chat')
        tools = data.get("tools") or None
        if tools and "tools" not in caps:
            raise ApiError(400, f"{rec.name} does not support tools")
        think = check_think(data.get("think"), rec, requested)
        self.refuse_images(rec, data, messages)
        keep_alive = data.get("keep_alive")
        parse_keep_alive(keep_alive)
        opts = merge_options(rec.params, data.get("options"), rec.context_length, "ChatRequest")
        fmt = check_format(data.get("format"))
        base = {"model": requested, "_caps": caps, "_think": bool(think)}
        if not messages:
            res = await self.load_only(rec, opts, keep_alive)
            return JSONResponse({"model": requested, "created_at": iso_now(),
                                 "message": {"role": "assistant", "content": ""}, **res})

        async def prompt(runner: RunnerProcess) -> str:
            return await self.fit_chat(runner, rec, messages, opts["num_ctx"], truncate, tools, think)

        gen = await self.start(rec, opts, keep_alive, prompt, fmt, logprobs)

        def wrap(text: str, thinking: str) -> dict:
            msg = {"role": "assistant", "content": text}
            if thinking:
                msg["thinking"] = thinking
            return {"message": msg}

        return await self.respond(request, gen, base, stream, wrap, tools=bool(tools))

    async def generate(self, request: Request) -> Response:
        data = await read_body(request, "GenerateRequest")
        logprobs = request_logprobs(data, "GenerateRequest")
        rec = self.record(data, missing=f"model '{data.get('model') or ''}' not found")
        requested = data.get("model") or data.get("name")
        stream = request_bool(data, "stream", True, "GenerateRequest")
        raw = request_bool(data, "raw", False, "GenerateRequest")
        caps = rec.capabilities()
        if "completion" not in caps:
            raise ApiError(400, f'"{requested}" does not support generate')
        suffix = data.get("suffix") or ""
        if suffix and "insert" not in caps:
            raise ApiError(400, f"{rec.name} does not support insert")
        think = check_think(data.get("think"), rec, requested)
        self.refuse_images(rec, data)
        keep_alive = data.get("keep_alive")
        parse_keep_alive(keep_alive)
        opts = merge_options(rec.params, data.get("options"), rec.context_length, "GenerateRequest")
        fmt = check_format(data.get("format"))
        text = data.get("prompt") or ""
        if not isinstance(text, str):
            raise ApiError(400, "json: cannot unmarshal value into Go struct field GenerateRequest.prompt of type string")
        if not text and not suffix:
            res = await self.load_only(rec, opts, keep_alive)
            return JSONResponse({"model": requested, "created_at": iso_now(), "response": "", **res})

        async def prompt(runner: RunnerProcess) -> str:
            if raw:
                return text
            from serve.gotemplate import GoTemplate, render_ollama

            system = data.get("system") or rec.system
            template = data.get("template") or rec.template or "{{ .Prompt }}"
            try:
                if suffix:
                    return GoTemplate(template).render({"System": system, "Prompt": text, "Suffix": suffix,
                                                        "Response": ""})
                msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
                return render_ollama(template, msgs, think=bool(think))
            except ServeError as e:
                raise ApiError(400, f"template error: {e.message}") from None

        gen = await self.start(rec, opts, keep_alive, prompt, fmt, logprobs)

        def wrap(piece: str, thinking: str) -> dict:
            return {"response": piece, **({"thinking": thinking} if thinking else {})}

        return await self.respond(request, gen, {"model": requested, "_caps": caps, "_think": bool(think)},
                                  stream, wrap)

    # -------------------------------------------------------------------------------------- embeddings
    async def embed_texts(self, rec: ModelRecord, inputs: list[str], truncate: bool, options: Any,
                          keep_alive: Any) -> tuple[list[list[float]], int, float]:
        opts = merge_options(rec.params, options, rec.context_length, "EmbedRequest")
        t0 = time.perf_counter()
        self.scheduler.admit()
        try:
            runner = await self.scheduler.acquire(rec, opts["num_ctx"], embedding=True)
            load_s = time.perf_counter() - t0
            try:
                reply = await runner.call({"op": "embed", "inputs": inputs, "truncate": truncate})
            finally:
                self.scheduler.release(runner, keep_alive)
        finally:
            self.scheduler.leave()
        return reply["embeddings"], int(reply.get("prompt_eval_count", 0)), load_s

    async def embed(self, request: Request) -> Response:
        data = await read_body(request, "EmbedRequest")
        name = data.get("model")
        if not name:
            raise ApiError(404, "model '' not found")
        rec = self.store.get(name)
        raw = data.get("input")
        if raw is None or raw == "" or raw == []:
            inputs: list[str] = []
        elif isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            inputs = raw
        else:
            raise ApiError(400, "invalid input type")
        truncate = request_bool(data, "truncate", True, "EmbedRequest")
        dims = data.get("dimensions")
        if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
            raise ApiError(400, "dimensions must be a positive integer")
        parse_keep_alive(data.get("keep_alive"))
        t0 = time.perf_counter()
        if not inputs:
            return JSONResponse({"model": name, "embeddings": []})
        vecs, count, load_s = await self.embed_texts(rec, inputs, truncate, data.get("options"),
                                                     data.get("keep_alive"))
        if dims:
            import math

            cut = [v[:dims] for v in vecs]
            vecs = [[x / (math.sqrt(sum(y * y for y in v)) or 1.0) for x in v] for v in cut]
        return JSONResponse({"model": name, "embeddings": vecs, "total_duration": int((time.perf_counter() - t0) * 1e9),
                             "load_duration": int(load_s * 1e9), "prompt_eval_count": count})

    async def embeddings(self, request: Request) -> Response:
        data = await read_body(request, "EmbeddingRequest")
        rec = self.record(data)
        prompt = data.get("prompt") or ""
        if not isinstance(prompt, str):
            raise ApiError(400, "json: cannot unmarshal value into Go struct field EmbeddingRequest.prompt of type string")
        if not prompt:
            return JSONResponse({"embedding": []})
        vecs, _, _ = await self.embed_texts(rec, [prompt], True, data.get("options"), data.get("keep_alive"))
        return JSONResponse({"embedding": vecs[0]})


def _split_think(text: str) -> tuple[str, str]:
    think, rest = text.split("</think>", 1)
    return think.replace("<think>", "").strip("\n"), rest.lstrip("\n")
