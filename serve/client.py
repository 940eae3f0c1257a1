"""Talk to an Ollama (a daemon or the embedded runtime) through the official ``ollama`` client.

:func:`ensure_ollama` finds one (or starts the embedded runtime), :func:`register` writes the Modelfile
beside the GGUF and registers the model over HTTP (blob upload + ``/api/create``, which is what
``ollama create`` itself does), :func:`chat_once` asks one question.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from serve.chat_templates import TemplateSpec
from serve.errors import OllamaRequestError, OllamaUnavailable, ServeError
from workspace.events import StageEvents, null_events
from workspace.files import sha256_file, write_text_atomic

if TYPE_CHECKING:  # pragma: no cover
    import ollama

    from serve.runtime import EmbeddedRuntime
    from workspace.settings import Settings

__all__ = ["OllamaEndpoint", "RegisteredModelInfo", "ensure_ollama", "register", "chat_once", "probe_version", "ollama_endpoint",
           "model_digest"]

T = TypeVar("T")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class OllamaEndpoint:
    host: str
    embedded: bool
    runtime: "EmbeddedRuntime | None" = None

    def client(self, timeout: float | None = None) -> "ollama.Client":
        import ollama

        from workspace.settings import api_headers

        return ollama.Client(host=self.host, timeout=timeout, headers=api_headers())

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()

    def __enter__(self) -> "OllamaEndpoint":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class RegisteredModelInfo:
    name: str
    digest: str
    modelfile_path: Path
    host: str


def _unavailable(host: str, doing: str, err: Exception) -> OllamaUnavailable:
    return OllamaUnavailable(f"cannot reach Ollama at {host} while {doing}: {err}")


def _call(endpoint: OllamaEndpoint, doing: str, fn: Callable[[], T]) -> T:
    """Run a client call, turning connection failures and API errors into ServeErrors."""
    import httpx
    import ollama

    try:
        return fn()
    except (ConnectionError, httpx.TransportError) as e:
        raise _unavailable(endpoint.host, doing, e) from None
    except ollama.ResponseError as e:
        raise OllamaRequestError(f"Ollama at {endpoint.host} refused {doing} (HTTP {e.status_code}): {e.error}") from None


def probe_version(host: str, timeout: float = 2.0) -> str | None:
    """The version string if something answers ``GET /api/version`` at ``host`` like Ollama, else None."""
    import httpx

    from workspace.settings import api_headers

    try:
        r = httpx.get(f"{host.rstrip('/')}/api/version", timeout=timeout, headers=api_headers())
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    try:
        return str(r.json()["version"])
    except (ValueError, KeyError, TypeError):
        return None


def ensure_ollama(settings: "Settings | None" = None, events: StageEvents | None = None) -> OllamaEndpoint:
    """An Ollama to talk to: the one at ``settings.ollama_host`` if it answers, else the embedded runtime.

    The embedded runtime takes the host's port when that host is loopback and the port is free, otherwise
    a free loopback port. With ``OLLATUNE_EMBEDDED_RUNTIME=never`` a silent host raises OllamaUnavailable.
    """
    from workspace.settings import get_settings

    settings = settings or get_settings()
    events = events or null_events("serve")
    host = settings.ollama_host.rstrip("/")
    version = probe_version(host)
    if version is not None:
        events.log(f"using Ollama {version} at {host}", host=host, embedded=False)
        return OllamaEndpoint(host=host, embedded=False, runtime=None)
    if settings.embedded_runtime == "never":
        raise OllamaUnavailable(
            f"no Ollama answered at {host} (GET /api/version) and OLLATUNE_EMBEDDED_RUNTIME=never forbids the embedded runtime",
            hint="start Ollama (`ollama serve`) or the embedded runtime (`ollatune serve`), or set OLLAMA_HOST, then re-run",
        )
    from serve.runtime import EmbeddedRuntime, port_is_free

    parts = urlsplit(host)
    hostname = parts.hostname or "127.0.0.1"
    port = parts.port or 11434
    if hostname in _LOOPBACK and port_is_free("127.0.0.1" if hostname == "localhost" else hostname, port):
        rt = EmbeddedRuntime("127.0.0.1" if hostname == "localhost" else hostname, port, settings.ollama_dir)
    else:
        rt = EmbeddedRuntime("127.0.0.1", 0, settings.ollama_dir)
    rt.start()
    events.log(
        f"no Ollama daemon answered at {host}; started the embedded runtime at {rt.url} (models in {settings.ollama_dir})",
        host=rt.url, embedded=True,
    )
    return OllamaEndpoint(host=rt.url, embedded=True, runtime=rt)


def _full(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def register(
    endpoint: OllamaEndpoint,
    gguf_path: Path,
    name: str,
    spec: TemplateSpec,
    parameters: dict,
    events: StageEvents | None = None,
    header: str = "",
) -> RegisteredModelInfo:
    """Write ``Modelfile`` beside the GGUF, upload the GGUF as a blob, create the model, read its digest back."""
    from serve.modelfile import render_modelfile

    events = events or null_events("serve")
    gguf_path = Path(gguf_path).absolute()
    if not gguf_path.is_file():
        raise ServeError(f"GGUF file not found: {gguf_path}", hint="run `ollatune export` first or check the path")
    params = dict(parameters or {})
    stops: list[str] = []
    extra = params.pop("stop", None)
    for s in list(spec.stop) + ([extra] if isinstance(extra, str) else list(extra or [])):
        if s and s not in stops:
            stops.append(s)
    text = render_modelfile(f"./{gguf_path.name}", spec, {**params, "stop": stops}, header)
    modelfile_path = write_text_atomic(gguf_path.parent / "Modelfile", text)
    events.artifact("modelfile", modelfile_path, sha256=sha256_file(modelfile_path), bytes=modelfile_path.stat().st_size)

    client = endpoint.client()
    size = gguf_path.stat().st_size
    events.log(f"uploading {gguf_path.name} ({size / 2**20:.1f} MiB) to {endpoint.host}")
    events.progress(0, size, "bytes")
    digest = _call(endpoint, f"uploading {gguf_path.name}", lambda: client.create_blob(gguf_path))
    events.progress(size, size, "bytes")

    def create() -> None:
        for part in client.create(
            model=name,
            files={gguf_path.name: digest},
            template=spec.go_template,
            system=spec.system or None,
            parameters={**params, "stop": stops},
            stream=True,
        ):
            if part.status:
                events.log(f"create {name}: {part.status}")

    _call(endpoint, f"creating model {name}", create)
    listed = _call(endpoint, "listing models", client.list)
    want = _full(name)
    model_digest = next((m.digest for m in listed.models if m.model in (want, name)), None)
    if not model_digest:
        raise OllamaRequestError(
            f"model {want} was created at {endpoint.host} but does not appear in its model list",
            hint="check the Ollama server log, then re-run the registration",
        )
    events.artifact("ollama_model", want, sha256=model_digest, host=endpoint.host)
    return RegisteredModelInfo(name=want, digest=model_digest, modelfile_path=modelfile_path, host=endpoint.host)


def model_digest(endpoint: OllamaEndpoint, name: str) -> str | None:
    """The digest under which ``name`` is registered at the endpoint now, or None."""
    wanted = _full(name)
    listed = _call(endpoint, "listing models", endpoint.client().list)
    return next((m.digest for m in listed.models if m.model == wanted), None)


def chat_once(endpoint: OllamaEndpoint, name: str, prompt: str, options: dict | None = None) -> str:
    """Ask ``name`` one question (non-streaming) and return the answer text."""
    client = endpoint.client()
    resp = _call(
        endpoint,
        f"chatting with {name}",
        lambda: client.chat(model=name, messages=[{"role": "user", "content": prompt}], options=options or None, stream=False),
    )
    return resp.message.content or ""


@contextlib.contextmanager
def ollama_endpoint(settings: "Settings | None" = None, events: StageEvents | None = None) -> Iterator[OllamaEndpoint]:
    """``with ollama_endpoint() as ep:`` — :func:`ensure_ollama`, closing an embedded runtime afterwards."""
    ep = ensure_ollama(settings, events)
    try:
        yield ep
    finally:
        ep.close()
