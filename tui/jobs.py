"""Jobs the TUI starts: child processes of the same CLI (``ollatune <verb> ... --events jsonl``).

A job's stdout and stderr go to files under ``$OLLATUNE_HOME/jobs/<id>/``, not to pipes, so a job the user
leaves running when quitting keeps running (nothing writes to a closed pipe), and the next TUI reattaches to
it from ``$OLLATUNE_HOME/jobs/current.json`` and replays its events. Plain data and files, no Textual.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STDERR_TAIL = 20  # stderr lines kept to explain a job that died without an error event
CURRENT = "current.json"


def cli_prefix() -> list[str]:
    """The command that runs this installation's CLI."""
    return [sys.executable, "-m", "tui.cli"]


def parse_event_line(line: bytes | str) -> dict[str, Any] | None:
    """One stdout line of a job as an event; text that is not an event becomes a log event."""
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text:
        return None
    try:
        event = json.loads(text)
    except ValueError:
        event = None
    if isinstance(event, dict) and "type" in event:
        return event
    # plain text: the event log's printer escapes it like every message
    return {"ts": round(time.time(), 3), "stage": "stdout", "type": "log", "level": "info", "message": text}


class LineTail:
    """The complete lines appended to a file since the last call. A torn last line (a writer mid-write,
    or killed mid-write) waits for its newline unless ``final``; a file that shrank (rewritten) is read
    again from the start; a missing or vanished file gives no lines."""

    def __init__(self, path: Path, limit: int = 8 * 2**20) -> None:
        self.path = Path(path)
        self.offset = 0
        self.limit = limit
        self._partial = b""

    def read(self, final: bool = False) -> list[bytes]:
        try:
            size = self.path.stat().st_size
            if size < self.offset:
                self.offset, self._partial = 0, b""
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return []
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = b"" if final else lines.pop()
        if len(self._partial) > self.limit:  # a line longer than any event: dropped, not buffered forever
            self._partial = b""
        return [line for line in lines if line.strip() and len(line) <= self.limit]


@dataclass
class JobState:
    """A job: what it runs, where its output goes, its events so far and its outcome."""

    label: str
    args: list[str]
    command: list[str]
    job_dir: Path | None = None
    state: str = "starting"  # starting | running | done | failed | cancelled
    pid: int | None = None
    run_id: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None  # the last error event
    returncode: int | None = None
    launch_error: str | None = None
    cancel_requested: bool = False
    attached: bool = False  # started by an earlier TUI: not our child, so no exit code
    detach: bool = False  # the user quit and left it running
    started: float = field(default_factory=time.time)
    start_mark: str | None = None  # the process's start time (/proc): tells it from a later one with its pid
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL))
    process: Any = field(default=None, repr=False)  # subprocess.Popen of a job this app started

    @property
    def recipe(self) -> str:  # the label; older callers name it by recipe
        return self.label

    @property
    def running(self) -> bool:
        return self.state in ("starting", "running")

    @property
    def stdout_path(self) -> Path | None:
        return None if self.job_dir is None else self.job_dir / "stdout.jsonl"

    @property
    def stderr_path(self) -> Path | None:
        return None if self.job_dir is None else self.job_dir / "stderr.log"

    def describe(self) -> str:
        if self.state == "running":
            return f"running (pid {self.pid}){', cancelling' if self.cancel_requested else ''}"
        if self.state == "starting":
            return "starting"
        if self.launch_error:
            return f"did not start: {self.launch_error}"
        code = "exit code unknown: started by an earlier session" if self.returncode is None else \
            f"exit code {self.returncode}"
        return f"{self.state} ({code})"

    def alive(self) -> bool:
        """Whether the job's process still runs (for a reattached job, which is not our child)."""
        if self.process is not None:
            return self.process.poll() is None
        if self.pid is None or not pid_alive(self.pid):
            return False
        # a reattached job: its pid may since belong to another process, which must never be signalled
        return self.start_mark is None or process_start(self.pid) in (None, self.start_mark)

    def signal(self, sig: int) -> None:
        """Signal the job's whole process group (it runs in a session of its own)."""
        if self.pid is None or not self.alive():
            return
        try:
            if hasattr(os, "killpg"):
                os.killpg(self.pid, sig)
            else:  # pragma: no cover - Windows
                os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def final_state(self) -> str:
        """done, failed or cancelled, from the exit code and the events."""
        if self.launch_error:
            return "failed"
        interrupted = self.error is not None and self.error.get("message") == "interrupted"
        clean = self.error is None and (self.returncode == 0 or (self.returncode is None and self._finished()))
        if clean:  # it finished before a cancel took effect
            return "done"
        if self.cancel_requested or (interrupted and self.attached):
            return "cancelled"
        return "failed"

    def _finished(self) -> bool:
        ends = [e for e in self.events if e.get("type") in ("done", "error")]
        if any(e.get("stage") == "pipeline" for e in self.events):
            return any(e.get("stage") == "pipeline" and e.get("type") == "done" for e in ends)
        return bool(ends) and ends[-1].get("type") == "done"

    def record(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if self.run_id is None and event.get("run") not in (None, "-"):
            self.run_id = str(event["run"])
        if event.get("type") == "error":
            self.error = event

    def failure_text(self) -> str:
        """What went wrong and the next step, from the error event or else the exit code and stderr."""
        if self.launch_error:
            return self.launch_error
        if self.error is not None:
            e = self.error
            text = f"{e.get('stage', '?')}: {e.get('message') or 'error'}"
            if e.get("hint"):
                text += f"\nnext: {e['hint']}"
            return text + (f"\n(exit code {self.returncode})" if self.returncode is not None else "")
        text = "exit code unknown" if self.returncode is None else f"exit code {self.returncode}"
        if self.returncode is not None and self.returncode < 0:
            try:
                text += f" (killed by {signal.Signals(-self.returncode).name}; out of memory?)"
            except ValueError:
                pass
        last = [line for line in self.stderr_tail if line.strip()][-3:]
        if last:
            text += "\n" + "\n".join(last)
        return text


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited: it only waits for its parent to collect it
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def process_start(pid: int) -> str | None:
    """When the process started (clock ticks since boot, from /proc); None where /proc is not there."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[19].decode()
    except (OSError, IndexError):
        return None


def jobs_dir(home: Path) -> Path:
    return Path(home) / "jobs"


def new_job_dir(home: Path) -> Path:
    base = jobs_dir(home)
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = base / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise OSError(f"could not make a job folder under {base}")


def write_current(home: Path, job: JobState) -> None:
    """Record the running job so that a later TUI can reattach to it (written atomically)."""
    record = {"label": job.label, "args": job.args, "command": job.command, "pid": job.pid,
              "start_mark": process_start(job.pid) if job.pid else None, "job_dir": str(job.job_dir),
              "started": job.started}
    path = jobs_dir(home) / CURRENT
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def clear_current(home: Path, job: JobState) -> None:
    path = jobs_dir(home) / CURRENT
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if record.get("pid") == job.pid:
        path.unlink(missing_ok=True)


def read_current(home: Path) -> JobState | None:
    """The job an earlier TUI left running (or that ended since): None when there is no readable record."""
    path = jobs_dir(home) / CURRENT
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        job = JobState(label=str(record["label"]), args=[str(a) for a in record["args"]],
                       command=[str(a) for a in record["command"]], job_dir=Path(record["job_dir"]),
                       pid=int(record["pid"]), attached=True, started=float(record.get("started") or 0),
                       start_mark=record.get("start_mark"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return job
