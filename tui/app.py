"""The ollatune terminal UI: runs, a run's live loss curve and events, vanilla vs tuned.

Jobs run as child processes (``ollatune pipeline RECIPE --events jsonl``); an async worker reads their
stdout JSON lines and posts typed messages that the screens render. A job that crashes, runs out of
memory or exits non-zero is reported in a notification; the TUI stays up. Nothing heavy (torch,
transformers, llama_cpp) is imported here or by the screens.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape
from textual import work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tui.screens.recipe import DEFAULT_RECIPE, RecipePrompt
from tui.screens.run import RunScreen
from tui.screens.runs import RunsScreen
from workspace.settings import Settings

__all__ = [
    "JobEvent",
    "JobFinished",
    "JobProgress",
    "JobStarted",
    "JobState",
    "OllatuneApp",
    "default_job_command",
    "parse_event_line",
    "run_app",
]

LINE_LIMIT = 8 * 2**20  # longest stdout line read from a job; longer ones are skipped
STDERR_TAIL = 20  # stderr lines kept to explain a job that died without an error event
# Cancel: SIGINT (the job writes an "interrupted" event; a CPU step may take a while to notice), then
# SIGTERM after ESCALATE_S, then SIGKILL after twice that.
ESCALATE_S = 10.0
QUIT_GRACE_S = 3.0


def default_job_command(recipe: str) -> list[str]:
    return [sys.executable, "-m", "tui.cli", "pipeline", recipe, "--events", "jsonl"]


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
    return {"ts": round(time.time(), 3), "stage": "stdout", "type": "log", "level": "info", "message": escape(text)}


@dataclass
class JobState:
    """A job started from the TUI: its command, child process, events so far and outcome."""

    recipe: str
    command: list[str]
    state: str = "starting"  # starting | running | done | failed | cancelled
    pid: int | None = None
    run_id: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None  # the last error event
    returncode: int | None = None
    launch_error: str | None = None
    cancel_requested: bool = False
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL))
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.state in ("starting", "running")

    def describe(self) -> str:
        if self.state == "running":
            return f"running (pid {self.pid}){', cancelling' if self.cancel_requested else ''}"
        if self.state == "starting":
            return "starting"
        if self.launch_error:
            return f"did not start: {self.launch_error}"
        return f"{self.state} (exit code {self.returncode})"

    def signal(self, sig: int) -> None:
        """Signal the child's whole process group (it runs in a session of its own)."""
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        try:
            if hasattr(os, "killpg"):
                os.killpg(proc.pid, sig)
            else:  # pragma: no cover - Windows
                proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass


class JobStarted(Message):
    def __init__(self, job: JobState) -> None:
        super().__init__()
        self.job = job


class JobEvent(Message):
    """One event of the running job (any type but progress)."""

    def __init__(self, job: JobState, event: dict[str, Any]) -> None:
        super().__init__()
        self.job = job
        self.event = event


class JobProgress(Message):
    """A progress event; a newer one of the same stage replaces it while it waits in the queue."""

    def __init__(self, job: JobState, event: dict[str, Any]) -> None:
        super().__init__()
        self.job = job
        self.event = event

    def can_replace(self, message: Message) -> bool:
        return (isinstance(message, JobProgress) and message.job is self.job
                and message.event.get("stage") == self.event.get("stage"))


class JobFinished(Message):
    def __init__(self, job: JobState, returncode: int | None, launch_error: str | None = None) -> None:
        super().__init__()
        self.job = job
        self.returncode = returncode
        self.launch_error = launch_error


class OllatuneApp(App[None]):
    """``job_command`` replaces the pipeline command line (tests run a small script instead)."""

    TITLE = "ollatune"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("p", "pipeline", "Run pipeline"),
        Binding("x", "cancel_job", "Cancel job"),
        Binding("j", "show_job", "Job"),
    ]

    def __init__(self, settings: Settings, job_command: list[str] | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.job_command = list(job_command) if job_command else None
        self.job: JobState | None = None
        self.sub_title = str(settings.home)

    def get_default_screen(self) -> Screen:
        return RunsScreen()

    # starting, following and cancelling a job

    def action_pipeline(self) -> None:
        if self.job is not None and self.job.running:
            self.notify(f"a job is running ({self.job.describe()}); press x to cancel it", severity="warning",
                        markup=False)
            return
        self.push_screen(RecipePrompt(DEFAULT_RECIPE), self._recipe_chosen)

    def _recipe_chosen(self, recipe: str | None) -> None:
        if recipe:
            self.start_job(recipe)

    def start_job(self, recipe: str) -> JobState:
        command = list(self.job_command) if self.job_command else default_job_command(recipe)
        job = self.job = JobState(recipe=recipe, command=command)
        self.push_screen(RunScreen(None, job=job))
        self._run_job(job)
        return job

    @work(exclusive=True, group="job", exit_on_error=False, description="pipeline job")
    async def _run_job(self, job: JobState) -> None:
        env = dict(os.environ, OLLATUNE_HOME=str(self.settings.home), PYTHONUNBUFFERED="1")
        try:
            proc = await asyncio.create_subprocess_exec(
                *job.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True, limit=LINE_LIMIT,
            )
        except OSError as exc:
            self.post_message(JobFinished(job, None, f"{job.command[0]}: {exc}"))
            return
        job.process = proc
        self.post_message(JobStarted(job))
        drain = asyncio.create_task(_keep_tail(proc.stderr, job.stderr_tail))
        try:
            assert proc.stdout is not None
            while True:
                try:
                    line = await proc.stdout.readline()
                except ValueError:  # a line longer than LINE_LIMIT: asyncio dropped it
                    continue
                if not line:
                    break
                event = parse_event_line(line)
                if event is not None:
                    cls = JobProgress if event.get("type") == "progress" else JobEvent
                    self.post_message(cls(job, event))
            returncode = await proc.wait()
            await drain
        finally:
            if proc.returncode is None:  # the worker was cancelled (app exit): leave no orphan
                job.signal(signal.SIGKILL)
            drain.cancel()
        self.post_message(JobFinished(job, returncode))

    def on_job_started(self, message: JobStarted) -> None:
        job = message.job
        job.state = "running"
        job.pid = job.process.pid if job.process else None
        self._sync_job_screen(job)

    def on_job_event(self, message: JobEvent) -> None:
        self._record(message.job, message.event)

    def on_job_progress(self, message: JobProgress) -> None:
        self._record(message.job, message.event)

    def _record(self, job: JobState, event: dict[str, Any]) -> None:
        job.events.append(event)
        if job.run_id is None and event.get("run") not in (None, "-"):
            job.run_id = str(event["run"])
        if event.get("type") == "error":
            job.error = event
        self._sync_job_screen(job)

    def on_job_finished(self, message: JobFinished) -> None:
        job = message.job
        job.returncode = message.returncode
        job.launch_error = message.launch_error
        if message.launch_error:
            job.state = "failed"
            self.notify(message.launch_error, title="job did not start", severity="error", timeout=20,
                        markup=False)
        elif job.cancel_requested:
            job.state = "cancelled"
            self.notify(f"{job.recipe}: cancelled (exit code {job.returncode})", title="job cancelled",
                        severity="warning", markup=False)
        elif job.returncode == 0 and job.error is None:
            job.state = "done"
            self.notify(f"{job.recipe}: finished" + (f" ({job.run_id})" if job.run_id else ""), title="job done",
                        markup=False)
        else:
            job.state = "failed"
            self.notify(self._failure_text(job), title="job failed", severity="error", timeout=30, markup=False)
        self._sync_job_screen(job)
        for screen in self.screen_stack:
            if isinstance(screen, RunsScreen):
                screen.reload()

    @staticmethod
    def _failure_text(job: JobState) -> str:
        if job.error is not None:
            e = job.error
            text = f"{e.get('stage', '?')}: {e.get('message') or 'error'}"
            if e.get("hint"):
                text += f"\nnext: {e['hint']}"
            return text + f"\n(exit code {job.returncode})"
        text = f"exit code {job.returncode}"
        if job.returncode is not None and job.returncode < 0:
            try:
                text += f" (killed by {signal.Signals(-job.returncode).name}; out of memory?)"
            except ValueError:
                pass
        last = [line for line in job.stderr_tail if line.strip()][-3:]
        if last:
            text += "\n" + "\n".join(last)
        return text

    def _sync_job_screen(self, job: JobState) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, RunScreen) and screen.job is job and screen.is_mounted:
                screen.sync_job()

    def action_cancel_job(self) -> None:
        job = self.job
        if job is None or not job.running:
            self.notify("no job is running", severity="warning")
            return
        job.cancel_requested = True
        job.signal(signal.SIGINT)  # the pipeline writes an "interrupted" event and exits
        self.set_timer(ESCALATE_S, lambda: job.signal(signal.SIGTERM) if job.running else None)
        self.set_timer(2 * ESCALATE_S, lambda: job.signal(signal.SIGKILL) if job.running else None)
        self.notify(f"cancelling {job.recipe} (pid {job.pid})", severity="warning", markup=False)
        self._sync_job_screen(job)

    def action_show_job(self) -> None:
        if self.job is None:
            self.notify("no job started in this session; press p to start one", severity="warning")
            return
        if isinstance(self.screen, RunScreen) and self.screen.job is self.job:
            return
        self.push_screen(RunScreen(self.job.run_id, job=self.job))

    async def action_quit(self) -> None:
        job = self.job
        if job is not None and job.running and job.process is not None:
            job.signal(signal.SIGINT)
            try:
                await asyncio.wait_for(job.process.wait(), QUIT_GRACE_S)
            except (asyncio.TimeoutError, TimeoutError):
                job.signal(signal.SIGKILL)
        self.exit()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Workers run with exit_on_error=False: their errors land here instead of ending the app.
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.notify(f"{event.worker.description or event.worker.name}: {error!r}", title="internal error",
                        severity="error", timeout=30, markup=False)
            job = self.job
            if event.worker.group == "job" and job is not None and job.running:
                job.signal(signal.SIGKILL)
                job.state = "failed"
                self._sync_job_screen(job)


async def _keep_tail(stream: asyncio.StreamReader | None, tail: deque[str]) -> None:
    if stream is None:
        return
    while True:
        try:
            line = await stream.readline()
        except ValueError:
            continue
        if not line:
            return
        # keep what a progress bar redrawing with carriage returns showed last
        tail.append(line.decode("utf-8", errors="replace").rstrip().rsplit("\r", 1)[-1])


def run_app(settings: Settings) -> None:
    OllatuneApp(settings).run()
