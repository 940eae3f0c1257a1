"""The event protocol: the contract between jobs and every UI.

Each event is one JSON object on one line::

    {"ts": 1732170000.1, "run": "demo-1a2b3c", "stage": "finetune", "type": "metric", "step": 5, "loss": 2.1}

``type`` is one of start, progress, metric, log, artifact, done, error. Events always go to
``<run dir>/events.jsonl`` and, with ``--events jsonl``, to stdout. Library code emits events and never
draws anything; the Rich CLI and the TUI render the same events.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

STAGES = ("data", "finetune", "export", "serve", "evals", "pipeline")
TYPES = ("start", "progress", "metric", "log", "artifact", "done", "error")

Stage = Literal["data", "finetune", "export", "serve", "evals", "pipeline"]
Listener = Callable[[dict[str, Any]], None]


class EventSink:
    """Writes events of one run to its ``events.jsonl``, optionally stdout, and to listeners."""

    def __init__(
        self,
        run: str,
        log_path: Path | None = None,
        *,
        stdout_jsonl: bool = False,
        listeners: list[Listener] | None = None,
    ) -> None:
        self.run = run
        self.log_path = Path(log_path) if log_path else None
        self.stdout_jsonl = stdout_jsonl
        self.listeners: list[Listener] = list(listeners or [])
        self._lock = threading.Lock()
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, stage: str, type: str, **fields: Any) -> dict[str, Any]:
        if type not in TYPES:
            raise ValueError(f"unknown event type {type!r}; expected one of {TYPES}")
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        event = {"ts": round(time.time(), 3), "run": self.run, "stage": stage, "type": type}
        event.update({k: v for k, v in fields.items() if v is not None})
        line = json.dumps(event, ensure_ascii=False, default=str)
        with self._lock:
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
            if self.stdout_jsonl:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        for listener in self.listeners:
            listener(event)
        return event

    def stage(self, stage: str) -> "StageEvents":
        return StageEvents(self, stage)

    def with_log(self, log_path: Path) -> "EventSink":
        """The same sink writing to another run's log (the pipeline moves into the run dir once known)."""
        return EventSink(self.run, log_path, stdout_jsonl=self.stdout_jsonl, listeners=self.listeners)


class StageEvents:
    """An event sink bound to one stage, with one helper per event type."""

    def __init__(self, sink: EventSink, stage: str) -> None:
        self.sink = sink
        self.name = stage

    def start(self, **fields: Any) -> dict:
        return self.sink.emit(self.name, "start", **fields)

    def progress(self, done: int, total: int | None, unit: str, eta_s: float | None = None, **fields: Any) -> dict:
        return self.sink.emit(self.name, "progress", done=done, total=total, unit=unit, eta_s=eta_s, **fields)

    def metric(self, step: int, **fields: Any) -> dict:
        return self.sink.emit(self.name, "metric", step=step, **fields)

    def log(self, message: str, level: str = "info", **fields: Any) -> dict:
        return self.sink.emit(self.name, "log", message=message, level=level, **fields)

    def artifact(self, kind: str, path: Path | str, sha256: str | None = None, bytes: int | None = None, **fields: Any) -> dict:
        return self.sink.emit(self.name, "artifact", kind=kind, path=str(path), sha256=sha256, bytes=bytes, **fields)

    def done(self, **fields: Any) -> dict:
        return self.sink.emit(self.name, "done", **fields)

    def error(self, message: str, hint: str | None = None, **fields: Any) -> dict:
        return self.sink.emit(self.name, "error", message=message, hint=hint, **fields)


class ProgressClock:
    """Computes ``eta_s`` for progress events from the rate so far."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.t0 = time.monotonic()

    def eta(self, done: int) -> float | None:
        if not self.total or done <= 0:
            return None
        elapsed = time.monotonic() - self.t0
        return round(elapsed / done * (self.total - done), 1)


def null_events(stage: str) -> StageEvents:
    """Events that go nowhere, for calling a stage function from a test or a notebook."""
    return EventSink("-", None).stage(stage)


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """Events of a log, skipping a torn last line (a job killed mid-write)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
