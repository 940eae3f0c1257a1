"""The Models screen: the models registered with the Ollama in use (a daemon, or the embedded runtime), the
Modelfile of the highlighted one with its template-parity result, and a streaming chat with it.

Where the models come from: whatever answers ``GET /api/version`` at ``OLLAMA_HOST`` (the embedded runtime
says so in its answer); when nothing answers, the embedded runtime's store on disk (``$OLLATUNE_HOME/ollama``)
is read directly, so its models and Modelfiles still show, and ``s`` starts the embedded runtime
(``ollatune serve``) as a child process of this screen, stopped when the TUI exits. The store's
``RegisteredModel`` rows add each model's role (vanilla / tuned), run and template family, and list the
models a run registered that the current host does not have.

Parity: a model a run registered passed the serve stage's check (its TEMPLATE renders every sample
conversation exactly as the tokenizer's chat template does; the stage refuses to register otherwise), which
the run's ``stages/serve.json`` records. When the model's GGUF is readable here, the registered TEMPLATE is
also checked against the chat template inside the GGUF, the way ``ollatune modelfile`` does.

Every read runs in a thread worker with a timeout; the chat streams in a thread worker that posts each
piece. Model text is shown as plain text, never read as markup.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static, TabbedContent, TabPane

from tui.widgets.tables import fill_table
from tui.screens.base import OllatuneScreen

if TYPE_CHECKING:
    from tui.app import JobState
    from workspace.settings import Settings

PROBE_TIMEOUT_S = 2.0  # GET /api/version
CALL_TIMEOUT_S = 8.0  # list / show
CHAT_READ_TIMEOUT_S = 300.0  # longest wait for the next piece of an answer (a model loading on a CPU)
RUNTIME_START_S = 60.0  # how long `ollatune serve` may take to answer
CHAT_OPTIONS = {"temperature": 0.0, "seed": 42}  # as `ollatune chat` asks by default
NO_VALUE = "-"


# ------------------------------------------------------------------------------------------ reading


@dataclass
class HostState:
    """Who answers at OLLAMA_HOST: ``daemon`` (Ollama), ``embedded`` (ollatune's runtime) or ``none``."""

    host: str
    kind: str
    version: str = ""
    error: str = ""  # why the list could not be read although something answered
    store_dir: Path | None = None  # the embedded runtime's store read from disk when nothing answers
    loopback: bool = True

    @property
    def reachable(self) -> bool:
        return self.kind in ("daemon", "embedded")

    def describe(self, count: int, owned: bool = False) -> Text:
        n = f"{count} model{'s' if count != 1 else ''}"
        if self.kind == "daemon":
            text = Text.assemble(("Ollama daemon at ", "bold"), (self.host, "bold"),
                                 f" (version {self.version or '?'}) - {n}")
        elif self.kind == "embedded":
            text = Text.assemble(("embedded runtime at ", "bold"), (self.host, "bold"),
                                 f"{' (started here)' if owned else ''} - {n}")
        else:
            text = Text.assemble(("no Ollama answers at ", "bold"), (self.host, "bold"), ". ")
            if self.store_dir is not None:
                text.append(f"Showing the embedded runtime's store on disk ({n}); chat needs a running runtime. ")
            if self.loopback:
                text.append("Next: press s to start the embedded runtime (ollatune serve), or run `ollama serve` "
                            "or `ollatune serve` in another terminal and press r.")
            else:
                text.append("Next: start Ollama on that machine, or set OLLAMA_HOST to a running one, then press r.")
        if self.error:
            text.append(f"\n{self.error}", style="bold")
        return text


@dataclass
class ModelRow:
    name: str
    listed: bool  # served by the host in use (or on disk in the embedded store)
    size: int | None = None
    quant: str = ""
    family: str = ""
    parameter_size: str = ""
    modified: datetime | None = None
    digest: str = ""
    role: str = ""
    run: str = ""
    template_family: str = ""
    store_host: str = ""  # where the store says the model was registered
    modelfile_path: str = ""

    def cells(self) -> tuple[Text, ...]:
        status = Text("here") if self.listed else Text("store only", style="dim")
        modified = self.modified.astimezone().strftime("%Y-%m-%d %H:%M") if self.modified else NO_VALUE
        return (Text(self.name), Text(self.role or NO_VALUE), status,
                Text(self.family or self.template_family or NO_VALUE), Text(self.quant or NO_VALUE),
                Text(_size(self.size), justify="right"), Text(modified), Text(self.run or NO_VALUE))


# the columns that matter most first: at 80 columns the last ones scroll into view
COLUMNS = (("model", "model"), ("role", "role"), ("at host", "status"), ("family", "family"), ("quant", "quant"),
           ("size", "size"), ("modified", "modified"), ("run", "run"))


def _size(n: int | None) -> str:
    if not n:
        return NO_VALUE
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _hex(digest: str | None) -> str:
    d = (digest or "").strip()
    return d.split(":", 1)[1] if d.startswith("sha256:") else d


def _full(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def _is_loopback(host: str) -> bool:
    from workspace.settings import is_loopback

    return is_loopback(urlsplit(host).hostname or "127.0.0.1")


def probe_host(host: str, timeout: float = PROBE_TIMEOUT_S) -> dict | None:
    """``/api/version``'s answer when something Ollama-like answers at ``host``, else None."""
    import httpx

    from workspace.settings import api_headers

    try:
        r = httpx.get(f"{host.rstrip('/')}/api/version", timeout=timeout, headers=api_headers())
        if r.status_code != 200:
            return None
        data = r.json()
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) and "version" in data else None


def make_client(host: str, read_timeout: float = CALL_TIMEOUT_S) -> Any:
    import httpx
    import ollama

    from workspace.settings import api_headers

    return ollama.Client(host=host, timeout=httpx.Timeout(read_timeout, connect=PROBE_TIMEOUT_S),
                         headers=api_headers())


def store_registrations(settings: Settings) -> list[dict]:
    """The store's RegisteredModel rows with their run, newest first; [] when there is no database yet."""
    if not settings.db_path.exists():
        return []
    from sqlalchemy import select

    from workspace.store import RegisteredModel, open_store, session_scope

    out = []
    with session_scope(open_store(settings.db_path)) as s:
        for m in s.scalars(select(RegisteredModel).order_by(RegisteredModel.id.desc())):
            run = m.artifact.training_run.run_id if m.artifact and m.artifact.training_run else ""
            created = m.created_at
            if created is not None and created.tzinfo is None:
                created = created.replace(tzinfo=timezone.utc)
            out.append({"name": _full(m.name), "host": m.host, "digest": _hex(m.digest), "role": m.role,
                        "family": m.template_family, "run": run, "created": created,
                        "modelfile": m.modelfile_path or ""})
    return out


def _embedded_store(settings: Settings) -> Path | None:
    root = settings.ollama_dir
    return root if (root / "manifests").is_dir() and (root / "blobs").is_dir() else None


def load_models(settings: Settings, host: str | None = None) -> tuple[HostState, list[ModelRow]]:
    """Who answers at the host, its models, and the store's registrations merged in."""
    host = (host or settings.ollama_host).rstrip("/")
    answer = probe_host(host)
    rows: list[ModelRow] = []
    if answer is not None:
        kind = "embedded" if answer.get("runtime") == "ollatune-embedded" else "daemon"
        state = HostState(host, kind, str(answer.get("version", "")))
        try:
            listed = make_client(host).list().models
        except Exception as e:  # noqa: BLE001 - shown on screen with the next step
            state.error = f"listing models failed: {_reason(e)}; press r to retry"
            listed = []
        for m in listed:
            d = m.details
            rows.append(ModelRow(name=m.model or "", listed=True, size=int(m.size or 0) or None,
                                 quant=(d.quantization_level if d else "") or "", family=(d.family if d else "") or "",
                                 parameter_size=(d.parameter_size if d else "") or "", modified=m.modified_at,
                                 digest=_hex(m.digest)))
    else:
        store_dir = _embedded_store(settings)
        state = HostState(host, "none", store_dir=store_dir, loopback=_is_loopback(host))
        if store_dir is not None:
            from serve.store import ModelStore

            store = ModelStore(store_dir)
            for name in store.names():
                try:
                    rec = store.get(name)
                except Exception:  # noqa: BLE001 - a broken manifest: list the others
                    continue
                d = rec.details
                rows.append(ModelRow(name=rec.name, listed=True, size=rec.size, quant=d["quantization_level"],
                                     family=d["family"], parameter_size=d["parameter_size"],
                                     modified=datetime.fromtimestamp(rec.modified_at, timezone.utc),
                                     digest=rec.digest))
    _merge_store(rows, store_registrations(settings))
    return state, rows


def _merge_store(rows: list[ModelRow], registrations: list[dict]) -> None:
    by_name: dict[str, list[dict]] = {}
    for reg in registrations:
        by_name.setdefault(reg["name"], []).append(reg)
    for row in rows:
        regs = by_name.pop(row.name, [])
        reg = next((r for r in regs if r["digest"] == row.digest), regs[0] if regs else None)
        if reg is not None:
            row.role, row.run, row.template_family = reg["role"], reg["run"], reg["family"]
            row.store_host, row.modelfile_path = reg["host"], reg["modelfile"]
    for name, regs in by_name.items():
        reg = regs[0]  # the newest registration of that name
        rows.append(ModelRow(name=name, listed=False, modified=reg["created"], digest=reg["digest"], role=reg["role"],
                             run=reg["run"], template_family=reg["family"], store_host=reg["host"],
                             modelfile_path=reg["modelfile"]))


def _reason(e: BaseException) -> str:
    from workspace.errors import error_message

    try:
        text = error_message(e)
    except Exception:  # noqa: BLE001
        text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# ------------------------------------------------------------------------------------ one model's details


@dataclass
class ModelDetails:
    name: str
    modelfile: str = ""
    template: str = ""
    system: str = ""
    stops: list[str] = field(default_factory=list)
    where: str = ""  # where the Modelfile was read
    parity: list[tuple[str, str]] = field(default_factory=list)  # (verdict: ok | fail | info, line)
    error: str = ""


def load_details(settings: Settings, state: HostState, row: ModelRow) -> ModelDetails:
    """The Modelfile (``show``), TEMPLATE, SYSTEM and stops of one model, and its parity results."""
    from serve.modelfile import parse_modelfile

    details = ModelDetails(row.name)
    gguf: Path | None = None
    relative_to: Path | None = None  # the folder a relative FROM is read from
    try:
        if row.listed and state.reachable:
            shown = make_client(state.host).show(row.name)
            details.modelfile, details.template = shown.modelfile or "", shown.template or ""
            details.where = f"ollama show {row.name} at {state.host}"
        elif row.listed and state.store_dir is not None:
            from serve.api import OllamaApi
            from serve.store import ModelStore

            rec = ModelStore(state.store_dir).get(row.name)
            details.modelfile, details.template = OllamaApi.modelfile(rec), rec.template
            details.where = f"the embedded runtime's store {state.store_dir}"
            gguf = rec.model_path
        elif row.modelfile_path and Path(row.modelfile_path).is_file():
            details.modelfile = Path(row.modelfile_path).read_text(encoding="utf-8")
            details.where = f"{row.modelfile_path} (written when it was registered at {row.store_host})"
            relative_to = Path(row.modelfile_path).parent
        else:
            details.error = (f"{row.name} is not registered at {state.host}"
                             + (f" (the store has it at {row.store_host})" if row.store_host else "")
                             + "; re-run its pipeline (3 Train) with this Ollama to register it here")
    except Exception as e:  # noqa: BLE001
        details.error = f"reading the Modelfile of {row.name} failed: {_reason(e)}; press r to retry"
    if details.modelfile:
        try:
            parsed = parse_modelfile(details.modelfile)
        except Exception as e:  # noqa: BLE001 - show the text anyway
            parsed = {}
            details.parity.append(("info", f"the Modelfile does not parse: {_reason(e)}"))
        details.template = details.template or parsed.get("template") or ""
        details.system = parsed.get("system") or ""
        details.stops = list((parsed.get("parameters") or {}).get("stop") or [])
        if gguf is None and parsed.get("from"):
            source = Path(parsed["from"])
            gguf = source if source.is_absolute() else (relative_to / source if relative_to else None)
    details.parity.extend(marker_parity(settings, row))
    if details.template:
        details.parity.append(gguf_parity(gguf, details.template, details.system, details.stops))
    return details


def marker_parity(settings: Settings, row: ModelRow) -> list[tuple[str, str]]:
    """What the serve stage of the runs that registered ``row`` recorded (their ``stages/serve.json``)."""
    runs_dir = settings.runs_dir
    if not runs_dir.is_dir():
        return []
    found = []
    for marker in sorted(runs_dir.glob("*/stages/serve.json")):
        try:
            result = json.loads(marker.read_text(encoding="utf-8")).get("result") or {}
        except (OSError, ValueError):
            continue
        for role, pub in result.items():
            if not isinstance(pub, dict) or _full(str(pub.get("name", ""))) != row.name:
                continue
            run = marker.parent.parent.name
            stops = ", ".join(pub.get("stop") or [])
            if not row.digest or _hex(pub.get("digest")) == row.digest:
                found.append(("ok", f"parity held at registration: run {run} (serve stage, {role}) proved this "
                                    f"TEMPLATE renders the tokenizer's chat template (family {pub.get('family')}, "
                                    f"stops {stops})"))
            else:
                found.append(("info", f"run {run} registered another version of this name (digest "
                                      f"{_hex(pub.get('digest'))[:12]}); its parity proof is not about this one"))
    return found


def gguf_parity(gguf: Path | None, template: str, system: str, stops: list[str]) -> tuple[str, str]:
    """Render the sample conversations with the registered TEMPLATE and with the chat template inside the
    model's GGUF (SYSTEM in front of both, as the model is prompted), like ``ollatune modelfile`` does."""
    if gguf is None or not gguf.is_file():
        return ("info", "TEMPLATE not compared with the GGUF's chat template: the model file is not on this "
                        "machine" + (f" ({gguf})" if gguf else ""))
    try:
        from serve.chat_templates import TemplateSpec, read_gguf_chat_info
        from serve.parity import check_parity

        info = read_gguf_chat_info(gguf)
        if not info.chat_template:
            return ("info", "TEMPLATE not compared: the GGUF carries no chat template")
        base = info.renderer()

        def render(messages: list[dict], add_generation_prompt: bool) -> str:
            if system and (not messages or messages[0].get("role") != "system"):
                messages = [{"role": "system", "content": system}, *messages]
            return base(messages, add_generation_prompt)

        report = check_parity(render, TemplateSpec("registered", template, list(stops), system or None),
                              bos_token=info.bos_token if info.add_bos else None)
    except Exception as e:  # noqa: BLE001
        return ("info", f"TEMPLATE not compared with the GGUF's chat template: {_reason(e)}")
    compared = [c for c in report.cases if c.skipped is None]
    if report.ok:
        return ("ok", f"parity holds: the TEMPLATE renders what the GGUF's chat template renders on "
                      f"{len(compared)} sample conversations")
    bad = report.first_failure()
    if bad is None:
        return ("info", "parity not checked: the GGUF's chat template refused every sample conversation")
    return ("fail", "parity fails: " + bad.summary(context=24))


# --------------------------------------------------------------------------------- the embedded runtime


class RuntimeProcess:
    """``ollatune serve`` as a child process, listening at OLLAMA_HOST, its output in a log file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log_path = settings.home / "logs" / "tui-runtime.log"
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = RUNTIME_START_S) -> str:
        """Start it and wait until it answers; the host it serves. Raises RuntimeError with the reason."""
        host = self.settings.ollama_host.rstrip("/")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OLLATUNE_HOME=str(self.settings.home), OLLAMA_HOST=host, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "serve"], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`ollatune serve` exited (code {self.proc.returncode}): "
                                   f"{self._tail() or 'no output'} (log: {self.log_path})")
            if probe_host(host, timeout=1.0) is not None:
                return host
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"`ollatune serve` did not answer at {host} within {timeout:.0f} s (log: {self.log_path})")

    def _tail(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self, grace: float = 5.0) -> None:
        """Ctrl-C (the runtime stops its runner processes), then kill after ``grace`` seconds."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --------------------------------------------------------------------------------------------- messages


class ModelsLoaded(Message):
    def __init__(self, state: HostState | None, rows: list[ModelRow], error: str = "") -> None:
        super().__init__()
        self.state = state
        self.rows = rows
        self.error = error


class DetailsLoaded(Message):
    def __init__(self, details: ModelDetails) -> None:
        super().__init__()
        self.details = details


class ChatChunk(Message):
    def __init__(self, stream: int, piece: str) -> None:
        super().__init__()
        self.stream = stream
        self.piece = piece


class ChatFinished(Message):
    def __init__(self, stream: int, answer: str | None, error: str = "") -> None:
        super().__init__()
        self.stream = stream
        self.answer = answer
        self.error = error


class RuntimeStarted(Message):
    def __init__(self, host: str | None, error: str = "") -> None:
        super().__init__()
        self.host = host
        self.error = error


class StreamStopped(Exception):
    """Raised inside a chat stream when the user stops it."""


class _StreamOut:
    """The ``out`` of :meth:`tui.chat.ChatSession.ask`: each piece becomes a message to the screen."""

    def __init__(self, screen: ModelsScreen, stream: int, stop: threading.Event) -> None:
        self.screen = screen
        self.stream = stream
        self.stop = stop
        self.ended = False

    def write(self, piece: str) -> None:
        if self.stop.is_set():
            raise StreamStopped()
        if piece and not self.ended:
            self.screen.post_message(ChatChunk(self.stream, piece))

    def flush(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------- widgets


class ModelsTable(DataTable):
    BINDINGS = [Binding("enter", "select_cursor", "Modelfile", show=False)]


class ChatInput(Input):
    BINDINGS = [Binding("escape", "leave", "Back")]

    def action_leave(self) -> None:
        self.screen.action_show_tab("list")  # type: ignore[attr-defined]


class ChatLog(VerticalScroll):
    """The conversation: one plain-text block per turn; the answer being streamed grows in place."""

    DEFAULT_CSS = """
    ChatLog { height: 1fr; border: round $boost; padding: 0 1; }
    ChatLog > .chat-user { color: $text; text-style: bold; margin-top: 1; }
    ChatLog > .chat-answer { color: $text; }
    ChatLog > .chat-note { color: $text-muted; }
    ChatLog > .chat-error { color: $error; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._answer: Static | None = None
        self._text = ""

    def clear(self) -> None:
        self._answer = None
        self._text = ""
        self.remove_children()

    def add(self, kind: str, text: str) -> Static:
        shown = Text(f"> {text}") if kind == "user" else Text(text)
        block = Static(shown, classes=f"chat-{kind}", markup=False)
        self.mount(block)
        self.scroll_end(animate=False)
        return block

    def start_answer(self) -> None:
        self._text = ""
        self._answer = self.add("answer", "...")

    def append(self, piece: str) -> None:
        if self._answer is None:
            self.start_answer()
        self._text += piece
        assert self._answer is not None
        self._answer.update(Text(self._text))
        self.scroll_end(animate=False)

    def end_answer(self, answer: str | None, note: str = "") -> None:
        if self._answer is not None and answer is not None:
            self._answer.update(Text(answer if answer.strip() else "(empty answer)"))
        elif self._answer is not None and not self._text:
            self._answer.remove()
        self._answer = None
        if note:
            self.add("note", note)

    @property
    def transcript(self) -> str:
        return "\n".join(str(w.content) for w in self.query(Static))


# ----------------------------------------------------------------------------------------------- screen


class ModelsScreen(OllatuneScreen):
    NAV = "models"
    HELP = (
        "[b]Models[/b]: the models registered with the Ollama at OLLAMA_HOST (a daemon, or ollatune's embedded "
        "runtime), with the role, run and template family the store recorded for them.\n"
        "[b]List[/b] (l): up/down highlights a model, enter opens its Modelfile. Models the store knows but the "
        "host does not have are marked [i]store only[/i].\n"
        "[b]Modelfile[/b] (m): what `ollama show` prints (TEMPLATE, SYSTEM, PARAMETER stop ...) and the parity "
        "result: whether the TEMPLATE renders prompts exactly as the model's own chat template does.\n"
        "[b]Chat[/b] (c): type a message and press enter; the answer streams in. esc stops an answer, ctrl+l "
        "clears the conversation.\n"
        "When nothing answers, s starts the embedded runtime (`ollatune serve`) for as long as the TUI runs."
    )
    BINDINGS = [
        Binding("l", "show_tab('list')", "List"),
        Binding("m", "show_tab('modelfile')", "Modelfile"),
        Binding("c", "show_tab('chat')", "Chat"),
        Binding("r", "reload", "Refresh"),
        Binding("s", "start_runtime", "Start runtime"),
        Binding("escape", "stop_stream", "Stop", priority=True),
        Binding("ctrl+l", "clear_chat", "Clear chat"),
    ]
    DEFAULT_CSS = """
    ModelsScreen TabbedContent { height: 1fr; }
    ModelsScreen TabPane { padding: 0; }
    ModelsScreen #models-source { height: auto; max-height: 5; padding: 0 1; }
    ModelsScreen #models-empty { height: auto; padding: 0 1; color: $text-muted; }
    ModelsScreen ModelsTable { height: 1fr; }
    ModelsScreen #modelfile-summary { height: auto; max-height: 8; padding: 0 1; background: $boost; }
    ModelsScreen #modelfile-scroll { height: 1fr; padding: 0 1; }
    ModelsScreen #chat-title { height: auto; max-height: 2; padding: 0 1; color: $text-muted; }
    ModelsScreen #chat-input { height: 3; }
    """

    def __init__(self, chat_options: dict | None = None) -> None:
        super().__init__()
        self.chat_options = dict(CHAT_OPTIONS if chat_options is None else chat_options)
        self.state: HostState | None = None
        self.rows: dict[str, ModelRow] = {}
        self.details: ModelDetails | None = None
        self.sessions: dict[str, Any] = {}  # model name -> tui.chat.ChatSession
        self.streaming: str | None = None  # the model whose answer is streaming
        self.chunks = 0  # pieces of the current (or last) answer
        self.runtime: RuntimeProcess | None = None
        self.starting_runtime = False
        self._stream_id = 0
        self._stop: threading.Event | None = None
        self._chat_model: str | None = None  # whose conversation the chat log shows
        self._details_key: str | None = None  # the model whose details were asked for last

    # layout

    def compose_body(self) -> Iterable[Widget]:
        with TabbedContent(initial="list", id="models-tabs"):
            with TabPane("List", id="list"):
                yield Static(Text("asking the Ollama at OLLAMA_HOST ..."), id="models-source")
                yield Static("", id="models-empty")
                yield ModelsTable(id="models-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Modelfile", id="modelfile"):
                yield Static(Text("highlight a model in the list"), id="modelfile-summary")
                with VerticalScroll(id="modelfile-scroll"):
                    yield Static("", id="modelfile-text", markup=False)
            with TabPane("Chat", id="chat"):
                with Vertical():
                    yield Static(Text("chat: highlight a model in the list"), id="chat-title")
                    yield ChatLog(id="chat-log")
                    yield ChatInput(placeholder="message (enter sends)", id="chat-input")

    def on_mount(self) -> None:
        fill_table(self.query_one(ModelsTable), COLUMNS, [])
        self.query_one("#models-empty", Static).display = False
        self.reload()

    def on_unmount(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self.runtime is not None:
            self.runtime.stop()

    def on_screen_resume(self) -> None:
        if self.state is not None:
            self.reload()

    def job_changed(self, job: JobState, event: dict[str, Any] | None) -> None:
        if event is None and job.state == "done":  # a pipeline may have registered models
            self.reload()

    # bindings

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start_runtime":
            state = self.state
            return bool(state is not None and state.kind == "none" and state.loopback and not self.starting_runtime
                        and not (self.runtime and self.runtime.running))
        if action == "stop_stream":
            return self.streaming is not None
        if action == "clear_chat":
            return self._active_tab() == "chat"
        return True

    def _active_tab(self) -> str:
        return self.query_one(TabbedContent).active

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab == "chat":
            self._show_conversation()
            self.query_one(ChatInput).focus()
        elif tab == "list":
            self.query_one(ModelsTable).focus()
        self.refresh_bindings()

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "chat":
            self._show_conversation()
        self.refresh_bindings()

    def action_reload(self) -> None:
        self.reload()

    # the list

    @work(thread=True, exclusive=True, group="models-list", exit_on_error=False, description="list models")
    def reload(self) -> None:
        settings = self.app.settings  # type: ignore[attr-defined]
        try:
            state, rows = load_models(settings)
        except Exception as e:  # noqa: BLE001 - a locked or broken store must not take the screen down
            self.post_message(ModelsLoaded(None, [], f"could not list the models: {_reason(e)} (database "
                                                     f"{settings.db_path}); press r to retry"))
            return
        self.post_message(ModelsLoaded(state, rows))

    def on_models_loaded(self, message: ModelsLoaded) -> None:
        source = self.query_one("#models-source", Static)
        if message.state is None:
            source.update(Text(message.error, style="bold"))
            return
        self.state = message.state
        owned = self.runtime is not None and self.runtime.running
        source.update(message.state.describe(sum(r.listed for r in message.rows), owned))
        table = self.query_one(ModelsTable)
        current = self.highlighted
        self.rows = {r.name: r for r in message.rows}
        fill_table(table, COLUMNS, [(row.name, row.cells()) for row in message.rows])
        empty = self.query_one("#models-empty", Static)
        empty.display = not message.rows
        empty.update("No models registered yet: a pipeline run (3 Train) registers a tuned and a vanilla model.")
        self._details_key = None  # read the highlighted model's details again
        if current in self.rows:
            table.move_cursor(row=table.get_row_index(current))
        target = self.highlighted
        if target is not None:
            self._load_details(target)
        self.refresh_bindings()
        self._update_chat_title()

    @property
    def highlighted(self) -> str | None:
        table = self.query_one(ModelsTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001 - no row under the cursor
            return None
        return str(key.value) if key.value is not None else None

    @on(DataTable.RowHighlighted, "#models-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._load_details(str(event.row_key.value))
        self._update_chat_title()

    @on(DataTable.RowSelected, "#models-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_show_tab("modelfile")

    # the Modelfile

    def _load_details(self, name: str) -> None:
        row, state = self.rows.get(name), self.state
        if row is None or state is None or name == self._details_key:
            return
        self._details_key = name
        if self.details is None or self.details.name != name:
            self.query_one("#modelfile-summary", Static).update(Text(f"{name}: reading its Modelfile ..."))
        self._read_details(state, row)

    @work(thread=True, exclusive=True, group="models-details", exit_on_error=False, description="show model")
    def _read_details(self, state: HostState, row: ModelRow) -> None:
        try:
            details = load_details(self.app.settings, state, row)  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001
            details = ModelDetails(row.name, error=f"reading {row.name} failed: {_reason(e)}")
        self.post_message(DetailsLoaded(details))

    def on_details_loaded(self, message: DetailsLoaded) -> None:
        d = message.details
        if d.name != self.highlighted:
            return
        self.details = d
        row = self.rows.get(d.name)
        summary = Text()
        summary.append(d.name, style="bold")
        if row is not None:
            facts = [f for f in (row.family or row.template_family, row.parameter_size, row.quant, row.role) if f]
            if facts:
                summary.append("  " + " · ".join(facts))
        if d.stops:
            summary.append("\nstops ", style="bold")
            summary.append("  ".join(json.dumps(s, ensure_ascii=False) for s in d.stops))
        if d.system:
            summary.append("\nsystem ", style="bold")
            summary.append(Text(d.system.replace("\n", " ")).plain)
        for verdict, line in d.parity:
            style = {"ok": "green", "fail": "bold red"}.get(verdict, "")
            summary.append("\n")
            summary.append(line, style=style)
        if d.error:
            summary.append("\n" + d.error, style="bold red")
        self.query_one("#modelfile-summary", Static).update(summary)
        body = d.modelfile or ""
        if d.where:
            body = f"# from {d.where}\n{body}"
        self.query_one("#modelfile-text", Static).update(Text(body))

    # the chat

    def _update_chat_title(self) -> None:
        name = self.streaming or self.highlighted
        title = self.query_one("#chat-title", Static)
        if name is None:
            title.update(Text("chat: highlight a model in the list (l)"))
            return
        row = self.rows.get(name)
        if self.state is None or not self.state.reachable:
            title.update(Text(f"chat with {name}: no Ollama answers; start one first (s, or `ollatune serve`)"))
        elif row is not None and not row.listed:
            title.update(Text(f"chat with {name}: not registered at {self.state.host}"))
        else:
            title.update(Text(f"chat with {name} at {self.state.host} - enter sends, esc stops, ctrl+l clears"))
        if self._active_tab() == "chat":
            self._show_conversation()

    def _show_conversation(self) -> None:
        """The chat log shows the highlighted model's conversation (the streaming one while it streams)."""
        name = self.streaming or self.highlighted
        if name is None or name == self._chat_model:
            return
        self._chat_model = name
        log = self.query_one(ChatLog)
        log.clear()
        session = self.sessions.get(name)
        for message in session.history if session else []:
            log.add("user" if message["role"] == "user" else "answer", message["content"])

    @on(Input.Submitted, "#chat-input")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.streaming is not None:
            self.notify("an answer is still streaming; press esc to stop it", severity="warning")
            return
        name, state = self.highlighted, self.state
        row = self.rows.get(name or "")
        if name is None or row is None:
            self.notify("no model to chat with: highlight one in the list (l)", severity="warning")
            return
        if state is None or not state.reachable:
            self.notify("no Ollama answers: press s to start the embedded runtime, or run `ollatune serve`",
                        severity="warning", markup=False)
            return
        if not row.listed:
            self.notify(f"{name} is not registered at {state.host}", severity="warning", markup=False)
            return
        event.input.value = ""
        self._show_conversation()
        session = self.sessions.get(name)
        if session is None:
            from tui.chat import ChatSession

            session = self.sessions[name] = ChatSession(name, None, dict(self.chat_options))  # type: ignore[arg-type]
        log = self.query_one(ChatLog)
        log.add("user", text)
        log.start_answer()
        self._stream_id += 1
        self._stop = threading.Event()
        self.streaming = name
        self.chunks = 0
        self.refresh_bindings()
        self._stream(session, state.host, text, self._stream_id, self._stop)

    @work(thread=True, exclusive=False, group="models-chat", exit_on_error=False, description="chat")
    def _stream(self, session: Any, host: str, text: str, stream: int, stop: threading.Event) -> None:
        out = _StreamOut(self, stream, stop)
        try:
            session.chat = make_client(host, CHAT_READ_TIMEOUT_S).chat
            answer = session.ask(text, out)
        except StreamStopped:
            self.post_message(ChatFinished(stream, None, "stopped"))
            return
        except Exception as e:  # noqa: BLE001 - shown in the chat with the next step
            self.post_message(ChatFinished(stream, None, f"the answer failed: {_reason(e)}"))
            return
        self.post_message(ChatFinished(stream, answer))

    def on_chat_chunk(self, message: ChatChunk) -> None:
        if message.stream != self._stream_id or self.streaming is None:
            return
        self.chunks += 1
        if self._chat_model == self.streaming:
            self.query_one(ChatLog).append(message.piece)

    def on_chat_finished(self, message: ChatFinished) -> None:
        if message.stream != self._stream_id:
            return
        self._finish(message.answer, message.error)

    def _finish(self, answer: str | None, error: str) -> None:
        log = self.query_one(ChatLog)
        if error == "stopped":
            log.end_answer(None, "(stopped; this exchange is not kept in the conversation)")
        elif error:
            log.end_answer(None)
            log.add("error", error)
        else:
            log.end_answer(answer)
        self.streaming = None
        self._stop = None
        self.refresh_bindings()
        self._update_chat_title()

    def action_stop_stream(self) -> None:
        if self.streaming is None or self._stop is None:
            return
        self._stop.set()  # the worker ends at its next piece; its messages are ignored from now on
        self._stream_id += 1
        self._finish(None, "stopped")

    def action_clear_chat(self) -> None:
        if self.streaming is not None:
            self.action_stop_stream()
        name = self._chat_model or self.highlighted
        if name is not None:
            self.sessions.pop(name, None)
        self.query_one(ChatLog).clear()
        self.query_one(ChatLog).add("note", "(conversation cleared)")

    # the embedded runtime

    def action_start_runtime(self) -> None:
        if not self.check_action("start_runtime", ()):
            return
        self.starting_runtime = True
        self.refresh_bindings()
        self.runtime = self.runtime or RuntimeProcess(self.app.settings)  # type: ignore[attr-defined]
        self.query_one("#models-source", Static).update(
            Text(f"starting the embedded runtime at {self.state.host if self.state else ''} (ollatune serve) ..."))
        self._start_runtime(self.runtime)

    @work(thread=True, exclusive=True, group="models-runtime", exit_on_error=False, description="start runtime")
    def _start_runtime(self, runtime: RuntimeProcess) -> None:
        try:
            host = runtime.start()
        except Exception as e:  # noqa: BLE001
            self.post_message(RuntimeStarted(None, str(e)))
            return
        self.post_message(RuntimeStarted(host))

    def on_runtime_started(self, message: RuntimeStarted) -> None:
        self.starting_runtime = False
        if message.error:
            self.notify(message.error, title="embedded runtime", severity="error", timeout=20, markup=False)
        else:
            self.notify(f"embedded runtime at {message.host}; it stops when the TUI exits", markup=False)
        self.reload()
