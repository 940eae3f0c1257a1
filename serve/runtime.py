"""The embedded Ollama-compatible runtime: the app, its middleware, and how it runs.

``create_app(store_dir)`` builds the Starlette app (Ollama's ``/api`` routes in :mod:`serve.api`, the
OpenAI-compatible ``/v1`` routes in :mod:`serve.openai_api`, models in runner processes scheduled by
:mod:`serve.scheduler`); :class:`EmbeddedRuntime` runs it with uvicorn on a background thread
(``with EmbeddedRuntime(store_dir=...) as rt: ollama.Client(rt.url)``); :func:`serve_forever` runs it in
the foreground for ``ollatune serve``.

Around every request: CORS as Ollama answers it (``OLLAMA_ORIGINS`` plus the local origins), a Host check
against DNS rebinding while bound to loopback, and - when ``OLLATUNE_API_KEY`` is set - a bearer token. A
request never takes the server down: errors become ``{"error": ...}`` answers, runner crashes become errors
for the requests on that runner.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hmac
import ipaddress
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serve.api import RUNTIME_VERSION, OllamaApi, error_response
from serve.errors import RuntimeStartError, ServeError
from serve.names import ApiError
from serve.openai_api import OpenAIApi, openai_error
from workspace.gguf_info import GGUFError
from serve.scheduler import SchedulerConfig
from workspace.settings import is_loopback

log = logging.getLogger("ollatune.serve.runtime")

__all__ = ["create_app", "EmbeddedRuntime", "serve_forever", "RUNTIME_VERSION", "ApiError", "port_is_free",
           "allowed_origins"]

_DEFAULT_ORIGIN_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0")
_OTHER_ORIGINS = ("app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*",
                  "chrome-extension://*", "moz-extension://*", "safari-web-extension://*")
_ALLOW_HEADERS = ("Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, "
                  "x-stainless-arch, x-stainless-async, x-stainless-custom-poll-interval, x-stainless-helper-method, "
                  "x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-poll-helper, "
                  "x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout")
_ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"


def allowed_origins() -> list[str]:
    """``OLLAMA_ORIGINS`` (comma-separated, ``*`` for any) plus the local origins Ollama always allows."""
    extra = [o.strip() for o in os.environ.get("OLLAMA_ORIGINS", "").split(",") if o.strip()]
    local = [f"{s}://{h}{p}" for h in _DEFAULT_ORIGIN_HOSTS for s in ("http", "https") for p in ("", ":*")]
    return extra + local + list(_OTHER_ORIGINS)


def _host_allowed(host_header: str) -> bool:
    """Ollama's allowed-hosts rule while bound to loopback: local names and addresses only."""
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.lower()
    if not host or host in ("localhost", socket.gethostname().lower()):
        return True
    if host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified or ip.is_link_local


class GuardMiddleware:
    """CORS, the loopback Host check and the optional bearer token, before any route runs."""

    def __init__(self, app: Any, api_key: str | None, loopback: bool) -> None:
        self.app = app
        self.api_key = api_key or None
        self.loopback = loopback
        self.origins = allowed_origins()

    def _origin_ok(self, origin: str) -> bool:
        return any(o == "*" or fnmatch.fnmatchcase(origin, o) or origin == o for o in self.origins)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.loopback and host and not _host_allowed(host):
            return await Response(status_code=403)(scope, receive, send)
        origin = headers.get("origin")
        cors = origin is not None and origin not in (f"http://{host}", f"https://{host}")
        if cors and not self._origin_ok(origin):
            return await Response(status_code=403)(scope, receive, send)
        if cors and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            return await Response(status_code=204, headers={
                "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": _ALLOW_METHODS,
                "Access-Control-Allow-Headers": _ALLOW_HEADERS, "Access-Control-Max-Age": "43200",
                "Vary": "Origin"})(scope, receive, send)
        if self.api_key:
            given = headers.get("authorization", "")
            token = given[7:].strip() if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), self.api_key.encode()):
                body = {"error": "unauthorized: this server needs an API key (header Authorization: Bearer "
                                 "<OLLATUNE_API_KEY>)"}
                return await JSONResponse(body, status_code=401)(scope, receive, send)
        if not cors:
            return await self.app(scope, receive, send)

        async def send_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + [
                    (b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]}
            await send(message)

        return await self.app(scope, receive, send_cors)


def _wrap(fn, openai: bool = False):  # noqa: ANN001, ANN202
    err = openai_error if openai else error_response

    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except ApiError as e:
            return err(e.status, e.message)
        except (ServeError, GGUFError) as e:
            return err(400, e.message)
        except Exception as e:  # noqa: BLE001 - never a bare 500 page: clients expect {"error": ...}
            log.exception("request failed")
            return err(500, f"{type(e).__name__}: {e}")

    return endpoint


def create_app(store_dir: Path, *, config: SchedulerConfig | None = None, api_key: str | None = None,
               loopback: bool = True) -> Any:
    """The Ollama-compatible app serving models stored under ``store_dir``."""
    api = OllamaApi(Path(store_dir), config)
    oa = OpenAIApi(api)
    routes = [
        Route("/", _wrap(api.root), methods=["GET", "HEAD"]),
        Route("/api/version", _wrap(api.version), methods=["GET"]),
        Route("/api/tags", _wrap(api.tags), methods=["GET"]),
        Route("/api/show", _wrap(api.show), methods=["POST"]),
        Route("/api/ps", _wrap(api.ps), methods=["GET"]),
        Route("/api/pull", _wrap(api.pull), methods=["POST"]),
        Route("/api/push", _wrap(api.push), methods=["POST"]),
        Route("/api/blobs/{digest}", _wrap(api.blob_head), methods=["HEAD"]),
        Route("/api/blobs/{digest}", _wrap(api.blob_post), methods=["POST"]),
        Route("/api/create", _wrap(api.create), methods=["POST"]),
        Route("/api/delete", _wrap(api.delete), methods=["DELETE"]),
        Route("/api/copy", _wrap(api.copy), methods=["POST"]),
        Route("/api/chat", _wrap(api.chat), methods=["POST"]),
        Route("/api/generate", _wrap(api.generate), methods=["POST"]),
        Route("/api/embed", _wrap(api.embed), methods=["POST"]),
        Route("/api/embeddings", _wrap(api.embeddings), methods=["POST"]),
        Route("/v1/chat/completions", _wrap(oa.chat_completions, True), methods=["POST"]),
        Route("/v1/completions", _wrap(oa.completions, True), methods=["POST"]),
        Route("/v1/models", _wrap(oa.models, True), methods=["GET"]),
        Route("/v1/models/{model:path}", _wrap(oa.model, True), methods=["GET"]),
        Route("/v1/embeddings", _wrap(oa.embeddings, True), methods=["POST"]),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(_app: Any):  # noqa: ANN202
        yield
        await api.scheduler.shutdown()  # every runner process goes with the server

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.api = api
    key = api_key if api_key is not None else os.environ.get("OLLATUNE_API_KEY")
    return GuardMiddleware(app, key, loopback)


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
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def port_is_free(host: str, port: int) -> bool:
    try:
        _bind(host, port).close()
        return True
    except RuntimeStartError:
        return False


def _uvicorn_config(app: Any, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=3,
                          limit_concurrency=4096, backlog=512)


class EmbeddedRuntime:
    """The runtime on a background uvicorn thread. ``port=0`` picks a free port; see :attr:`url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, store_dir: Path | None = None,
                 config: SchedulerConfig | None = None) -> None:
        if store_dir is None:
            from workspace.settings import get_settings

            store_dir = get_settings().ollama_dir
        self.host = host
        self.port = port
        self.store_dir = Path(store_dir)
        self.config = config
        self.app: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api(self) -> OllamaApi:
        return self.app.app.state.api

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 30.0) -> "EmbeddedRuntime":
        if self.running:
            return self
        import uvicorn

        self.app = create_app(self.store_dir, config=self.config, loopback=is_loopback(self.host))
        self._sock = _bind(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self.app, "warning"))
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
        """Stop serving; the shutdown handler stops every runner process."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._thread = None
        self._server = None
        self._sock = None

    def __enter__(self) -> "EmbeddedRuntime":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_forever(host: str = "127.0.0.1", port: int = 11434, store_dir: Path | None = None, *,
                  expose: bool = False) -> None:
    """Run the runtime in the foreground until interrupted (the ``ollatune serve`` verb). Any address but
    loopback needs ``expose`` (the CLI's ``--expose``)."""
    import uvicorn

    if store_dir is None:
        from workspace.settings import get_settings

        store_dir = get_settings().ollama_dir
    if not is_loopback(host) and not expose:
        raise RuntimeStartError(
            f"refusing to listen on {host}: only loopback is served unless asked",
            hint="pass --expose to listen on other addresses (and set OLLATUNE_API_KEY so clients need a token), "
                 "or use OLLAMA_HOST=127.0.0.1:<port>")
    sock = _bind(host, port)
    if not is_loopback(host):
        log.warning("the embedded runtime listens on %s: anyone who can reach this address can use it%s", host,
                    "" if os.environ.get("OLLATUNE_API_KEY") else " (set OLLATUNE_API_KEY to require a token)")
    app = create_app(Path(store_dir), loopback=is_loopback(host))
    try:
        uvicorn.Server(_uvicorn_config(app, "info")).run(sockets=[sock])
    finally:
        sock.close()
