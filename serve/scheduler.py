"""The scheduler, in the shape of Ollama's ``server/sched.go``: models run in runner processes of their own
(:mod:`serve.runner`), requests wait in one bounded queue, each runner decodes ``parallel`` sequences at
once, idle runners are unloaded when their keep-alive expires or when the least recently used one must make
room, and a runner that dies fails only the requests on it - the next request starts a fresh one.

Settings (environment, Ollama's names): ``OLLAMA_NUM_PARALLEL`` (sequences per runner, default 4 here;
Ollama's default is 1, but parallel decoding is what makes several clients fast on one machine),
``OLLAMA_MAX_QUEUE`` (512), ``OLLAMA_MAX_LOADED_MODELS`` (3), ``OLLAMA_KEEP_ALIVE`` (5m),
``OLLAMA_LOAD_TIMEOUT`` (5m).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve.names import ApiError
from serve.options import parse_keep_alive

log = logging.getLogger("ollatune.serve.scheduler")

__all__ = ["Scheduler", "SchedulerConfig", "RunnerProcess", "BUSY"]

BUSY = "server busy, please try again.  maximum pending requests exceeded"
CRASHED = "an error was encountered while running the model"


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class SchedulerConfig:
    num_parallel: int = field(default_factory=lambda: max(1, _env_int("OLLAMA_NUM_PARALLEL", 4)))
    max_queue: int = field(default_factory=lambda: max(1, _env_int("OLLAMA_MAX_QUEUE", 512)))
    max_loaded: int = field(default_factory=lambda: _env_int("OLLAMA_MAX_LOADED_MODELS", 0) or 3)
    keep_alive_s: float = field(default_factory=lambda: parse_keep_alive(os.environ.get("OLLAMA_KEEP_ALIVE", "5m"))
                                or 0.0)
    load_timeout_s: float = field(default_factory=lambda: parse_keep_alive(os.environ.get("OLLAMA_LOAD_TIMEOUT", "5m"))
                                  or 300.0)


class RunnerProcess:
    """One runner process and the requests in flight on it."""

    _ids = itertools.count(1)

    def __init__(self, key: str, name: str, config: dict, log_path: Path) -> None:
        self.key = key  # the model digest
        self.name = name
        self.config = config
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}
        self.inflight: dict[str, asyncio.Queue] = {}
        self.active = 0  # requests holding this runner
        self.last_used = time.monotonic()
        self.expires_at: float | None = None  # None: never (keep_alive < 0)
        self.dead: str | None = None
        self.reader: asyncio.Task | None = None
        self.loaded_at = 0.0

    @property
    def num_ctx(self) -> int:
        return int(self.info.get("n_ctx") or self.config.get("num_ctx") or 0)

    async def start(self, timeout: float) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "serve.runner", json.dumps(self.config), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=logf, env=env, limit=1 << 24)
        finally:
            logf.close()
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            await self.kill()
            raise ApiError(500, f"timed out waiting for the model {self.name} to load ({timeout:.0f} s; "
                                "OLLAMA_LOAD_TIMEOUT sets the limit)") from None
        try:
            first = json.loads(line) if line else {}
        except ValueError:
            first = {}
        if first.get("event") != "ready":
            await self.kill()
            why = first.get("message") or self.log_tail() or "the runner exited during start-up"
            raise ApiError(500, f"llama runner process has terminated: {why}")
        self.info = first
        self.loaded_at = time.time()
        self.reader = asyncio.create_task(self._read())

    def log_tail(self, n: int = 3) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
                     if ln.strip()]
        except OSError:
            return ""
        return " | ".join(lines[-n:])[-600:]

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                q = self.inflight.get(str(msg.get("id")))
                if q is not None:
                    q.put_nowait(msg)
        finally:
            rc = await self.proc.wait()
            self.dead = self.dead or (f"{CRASHED}: the runner exited with code {rc}"
                                      + (f" ({self.log_tail()})" if self.log_tail() else ""))
            for q in list(self.inflight.values()):
                q.put_nowait({"error": self.dead, "status": 500})

    def _send(self, msg: dict) -> None:
        if self.dead or self.proc is None or self.proc.stdin is None:
            raise ApiError(500, self.dead or f"{CRASHED}: the runner is not running")
        try:
            self.proc.stdin.write((json.dumps(msg, ensure_ascii=False) + "\n").encode("utf-8"))
        except (BrokenPipeError, ConnectionResetError, RuntimeError) as e:
            raise ApiError(500, f"{CRASHED}: {e}") from None

    def _open(self) -> tuple[str, asyncio.Queue]:
        rid = f"r{next(self._ids)}"
        q: asyncio.Queue = asyncio.Queue()
        self.inflight[rid] = q
        return rid, q

    async def call(self, msg: dict) -> dict:
        """One request with one answer (tokenize, embed)."""
        rid, q = self._open()
        try:
            self._send({**msg, "id": rid})
            reply = await q.get()
        finally:
            self.inflight.pop(rid, None)
        if "error" in reply:
            raise ApiError(int(reply.get("status", 500)), reply["error"])
        return reply

    async def generate(self, prompt: str, opts: dict, fmt: Any, logprobs: int | None = None) -> AsyncIterator[dict]:
        """Text pieces ``{"text"}`` then one ``{"done": True, ...}``; an error before the first piece raises
        ApiError, one later is the last item (``{"error"}``). Cancels the request when the consumer stops.

        ``logprobs``: None for none, else the number of alternatives (0..20) per token; pieces then carry
        ``"logprobs"`` entries (see :mod:`serve.runner`)."""
        rid, q = self._open()
        finished = False
        try:
            self._send({"op": "generate", "id": rid, "prompt": prompt, "opts": opts, "format": fmt,
                        "logprobs": logprobs})
            while True:
                msg = await q.get()
                if "error" in msg:
                    finished = True
                    raise ApiError(int(msg.get("status", 500)), msg["error"])
                yield msg
                if msg.get("done"):
                    finished = True
                    return
        finally:
            self.inflight.pop(rid, None)
            if not finished and not self.dead:
                try:
                    self._send({"op": "cancel", "id": rid})
                except ApiError:
                    pass

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            self._send({"op": "shutdown"})
        except ApiError:
            pass
        self.dead = self.dead or "the model was unloaded"
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            await self.proc.wait()


class Scheduler:
    def __init__(self, log_dir: Path, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.log_dir = Path(log_dir)
        self.runners: dict[str, RunnerProcess] = {}
        self.pending = 0
        self._locks: dict[str, asyncio.Lock] = {}
        self._idle = asyncio.Event()
        self._ticker: asyncio.Task | None = None

    # -- admission
    def admit(self) -> None:
        if self.pending >= self.config.max_queue:
            raise ApiError(503, BUSY)
        self.pending += 1

    def leave(self) -> None:
        self.pending = max(0, self.pending - 1)

    # -- runners
    async def acquire(self, rec: Any, num_ctx: int, embedding: bool = False) -> RunnerProcess:
        """A running runner for model ``rec`` with context ``num_ctx``, held until :meth:`release`."""
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._expire_loop())
        lock = self._locks.setdefault(rec.digest, asyncio.Lock())
        async with lock:
            r = self.runners.get(rec.digest)
            if r is not None and (r.dead or (r.num_ctx != num_ctx and not embedding)):
                while r.active and not r.dead:  # a reload waits for the requests on the old one (as Ollama)
                    await self._wait_idle()
                self.runners.pop(rec.digest, None)
                await r.stop()
                r = None
            if r is None:
                await self._make_room()
                parallel = 1 if embedding else self.config.num_parallel
                cfg = {"model_path": str(rec.model_path), "adapters": [str(a) for a in rec.adapters],
                       "num_ctx": num_ctx, "parallel": parallel}
                r = RunnerProcess(rec.digest, rec.name, cfg, self.log_dir / f"runner-{rec.digest[:12]}.log")
                await r.start(self.config.load_timeout_s)
                self.runners[rec.digest] = r
            r.active += 1
            r.last_used = time.monotonic()
            r.expires_at = None
            return r

    def release(self, r: RunnerProcess, keep_alive: Any = None) -> None:
        r.active = max(0, r.active - 1)
        r.last_used = time.monotonic()
        ka = parse_keep_alive(keep_alive)
        ka = self.config.keep_alive_s if ka is None else ka
        r.expires_at = None if ka < 0 else time.monotonic() + ka
        if r.dead and self.runners.get(r.key) is r:
            self.runners.pop(r.key, None)
        self._idle.set()
        if ka == 0 and r.active == 0:
            asyncio.create_task(self.unload(r.key, only_if_idle=True))

    async def _wait_idle(self) -> None:
        self._idle.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), 1.0)
        except asyncio.TimeoutError:
            pass

    async def _make_room(self) -> None:
        """Keep at most max_loaded runners: unload the least recently used idle ones (waiting for one to go
        idle when all are busy)."""
        while len(self.runners) >= self.config.max_loaded:
            idle = [r for r in self.runners.values() if r.active == 0]
            if not idle:
                await self._wait_idle()
                continue
            lru = min(idle, key=lambda r: r.last_used)
            self.runners.pop(lru.key, None)
            await lru.stop()

    async def unload(self, key: str, only_if_idle: bool = False) -> bool:
        r = self.runners.get(key)
        if r is None or (only_if_idle and r.active):
            return False
        self.runners.pop(key, None)
        await r.stop()
        return True

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for key, r in list(self.runners.items()):
                if r.dead and r.active == 0:
                    self.runners.pop(key, None)
                elif r.active == 0 and r.expires_at is not None and now >= r.expires_at:
                    await self.unload(key, only_if_idle=True)

    def loaded(self) -> list[RunnerProcess]:
        return [r for r in self.runners.values() if not r.dead]

    async def shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for key in list(self.runners):
            r = self.runners.pop(key)
            await r.stop()
