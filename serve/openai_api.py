"""The OpenAI-compatible endpoints Ollama serves under ``/v1`` (its ``openai`` middleware), on the same
generation path as ``/api/chat`` and ``/api/generate``: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/models``, ``/v1/models/{model}``, ``/v1/embeddings``. Errors are OpenAI-shaped
(``{"error": {"message", "type", "param", "code"}}``); streams are server-sent events ending ``data: [DONE]``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from serve.api import OllamaApi, check_format, parse_tool_calls, read_body
from serve.names import ApiError
from serve.options import merge_options

__all__ = ["OpenAIApi", "openai_error"]


def openai_error(status: int, message: str) -> JSONResponse:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}},
                        status_code=status)


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode("utf-8")


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _content(value: Any) -> str:
    """OpenAI message content: a string or a list of parts ({"type": "text"} ones kept)."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        texts = []
        for part in value:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, dict) and part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url", "") if isinstance(part.get("image_url"), dict) else ""
                if url.startswith("http"):
                    raise ApiError(400, "image URLs are not currently supported, please use base64 encoded data "
                                        "instead")
                raise ApiError(400, "this model does not support image input")
        return "".join(texts)
    raise ApiError(400, "invalid message content")


def _options(data: dict) -> dict:
    """Ollama options from an OpenAI request (temperature and top_p default to 1.0 there, as in Ollama)."""
    opts: dict[str, Any] = {"temperature": data.get("temperature", 1.0), "top_p": data.get("top_p", 1.0)}
    for src, dst in (("max_tokens", "num_predict"), ("seed", "seed"), ("frequency_penalty", "frequency_penalty"),
                     ("presence_penalty", "presence_penalty")):
        if data.get(src) is not None:
            opts[dst] = data[src]
    stop = data.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise ApiError(400, f"invalid type for 'stop' field: {type(stop).__name__}")
        opts["stop"] = stop
    return opts


def _format(data: dict) -> Any:
    rf = data.get("response_format")
    if not isinstance(rf, dict):
        return None
    if rf.get("type") == "json_object":
        return "json"
    if rf.get("type") == "json_schema":
        schema = (rf.get("json_schema") or {}).get("schema")
        return check_format(schema) if schema else "json"
    return None


class OpenAIApi:
    def __init__(self, api: OllamaApi) -> None:
        self.api = api

    def _usage(self, final: dict) -> dict:
        p, c = int(final.get("prompt_eval_count", 0)), int(final.get("eval_count", 0))
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    async def chat_completions(self, request: Request) -> Response:
        api = self.api
        data = await read_body(request, "ChatCompletionRequest")
        rec = api.record(data)
        model = data.get("model")
        raw_msgs = data.get("messages")
        if not isinstance(raw_msgs, list) or not raw_msgs:
            raise ApiError(400, "[] is too short - 'messages'")
        messages = []
        for m in raw_msgs:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise ApiError(400, "invalid message: each needs a role")
            messages.append({"role": m["role"], "content": _content(m.get("content"))})
        caps = rec.capabilities()
        if "completion" not in caps:
            raise ApiError(400, f'"{model}" does not support chat')
        tools = data.get("tools") or None
        if tools and "tools" not in caps:
            raise ApiError(400, f"{rec.name} does not support tools")
        stream = bool(data.get("stream", False))
        opts = merge_options(rec.params, _options(data), rec.context_length, "ChatCompletionRequest")
        fmt = _format(data)

        async def prompt(runner) -> str:  # noqa: ANN001
            return await api.fit_chat(runner, rec, messages, opts["num_ctx"], True, tools, False)

        gen = await api.start(rec, opts, None, prompt, fmt)
        cid, created = f"chatcmpl-{random.randint(0, 998)}", int(time.time())
        head = {"id": cid, "created": created, "model": model, "system_fingerprint": "fp_ollama"}
        if stream:
            include_usage = bool((data.get("stream_options") or {}).get("include_usage"))

            async def events() -> AsyncIterator[bytes]:
                first = True
                async for item in gen.items():
                    if "error" in item:
                        yield _sse({"error": {"message": item["error"], "type": "api_error", "param": None,
                                              "code": None}})
                        break
                    if item.get("done"):
                        yield _sse({**head, "object": "chat.completion.chunk",
                                    "choices": [{"index": 0, "delta": {}, "finish_reason": _finish(item.get("done_reason"))}]})
                        if include_usage:
                            yield _sse({**head, "object": "chat.completion.chunk", "choices": [],
                                        "usage": self._usage(item)})
                        break
                    delta = {"role": "assistant", "content": item.get("text", "")} if first else \
                        {"content": item.get("text", "")}
                    first = False
                    yield _sse({**head, "object": "chat.completion.chunk",
                                "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        items = await gen.collect(request)
        text = "".join(i.get("text", "") for i in items)
        final = items[-1]
        message: dict[str, Any] = {"role": "assistant", "content": text}
        reason = _finish(final.get("done_reason"))
        if tools:
            calls = parse_tool_calls(text)
            if calls:
                message = {"role": "assistant", "content": "", "tool_calls": [
                    {"id": f"call_{i}", "index": i, "type": "function",
                     "function": {"name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"])}}
                    for i, c in enumerate(calls)]}
                reason = "tool_calls"
        return JSONResponse({**head, "object": "chat.completion",
                             "choices": [{"index": 0, "message": message, "finish_reason": reason}],
                             "usage": self._usage(final)})

    async def completions(self, request: Request) -> Response:
        api = self.api
        data = await read_body(request, "CompletionRequest")
        rec = api.record(data)
        model = data.get("model")
        prompt_text = data.get("prompt", "")
        if isinstance(prompt_text, list) and len(prompt_text) == 1 and isinstance(prompt_text[0], str):
            prompt_text = prompt_text[0]
        if not isinstance(prompt_text, str):
            raise ApiError(400, "invalid type for 'prompt' field: only a string is supported")
        if data.get("suffix") and "insert" not in rec.capabilities():
            raise ApiError(400, f"{rec.name} does not support insert")
        stream = bool(data.get("stream", False))
        opts = merge_options(rec.params, _options(data), rec.context_length, "CompletionRequest")

        async def prompt(runner) -> str:  # noqa: ANN001
            from serve.gotemplate import render_ollama

            msgs = ([{"role": "system", "content": rec.system}] if rec.system else []) + \
                [{"role": "user", "content": prompt_text}]
            try:
                return render_ollama(rec.template or "{{ .Prompt }}", msgs)
            except Exception as e:  # noqa: BLE001 - a stored template that does not render
                raise ApiError(400, f"template error: {e}") from None

        gen = await api.start(rec, opts, None, prompt, None)
        cid, created = f"cmpl-{random.randint(0, 998)}", int(time.time())
        head = {"id": cid, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": "fp_ollama"}
        if stream:
            async def events() -> AsyncIterator[bytes]:
                async for item in gen.items():
                    if "error" in item:
                        yield _sse({"error": {"message": item["error"], "type": "api_error", "param": None,
                                              "code": None}})
                        break
                    reason = _finish(item.get("done_reason")) if item.get("done") else None
                    yield _sse({**head, "choices": [{"text": item.get("text", ""), "index": 0,
                                                     "finish_reason": reason}]})
                    if item.get("done"):
                        break
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        items = await gen.collect(request)
        final = items[-1]
        return JSONResponse({**head, "choices": [{"text": "".join(i.get("text", "") for i in items), "index": 0,
                                                  "finish_reason": _finish(final.get("done_reason"))}],
                             "usage": self._usage(final)})

    async def models(self, request: Request) -> Response:
        data = []
        for n in self.api.store.names():
            try:
                rec = self.api.store.get(n)
            except ApiError:
                continue
            owner = rec.name.split("/", 1)[0] if "/" in rec.name else "library"
            data.append({"id": rec.name, "object": "model", "created": int(rec.modified_at), "owned_by": owner})
        return JSONResponse({"object": "list", "data": data or None})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        rec = self.api.store.get(name)
        owner = rec.name.split("/", 1)[0] if "/" in rec.name else "library"
        return JSONResponse({"id": name, "object": "model", "created": int(rec.modified_at), "owned_by": owner})

    async def embeddings(self, request: Request) -> Response:
        import base64
        import struct

        data = await read_body(request, "EmbedRequest")
        rec = self.api.record(data)
        raw = data.get("input")
        if raw == "":
            raw = [""]
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
            inputs = raw
        else:
            raise ApiError(400, "invalid input")
        encoding = data.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise ApiError(400, f"Invalid value for 'encoding_format' = {encoding}. Supported values: ['float', 'base64'].")
        vecs, count, _ = await self.api.embed_texts(rec, inputs, True, None, None)
        out = []
        for i, v in enumerate(vecs):
            emb: Any = v if encoding == "float" else base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
            out.append({"object": "embedding", "embedding": emb, "index": i})
        return JSONResponse({"object": "list", "data": out, "model": data.get("model"),
                             "usage": {"prompt_tokens": count, "total_tokens": count}})
