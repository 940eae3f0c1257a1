"""The ollatune terminal UI: home, data, train, export, models, evals and history screens over the whole loop.

Heavy work runs as jobs: child processes of the same CLI (``ollatune <verb> ... --events jsonl``) whose
stdout goes to a file the app follows (:mod:`tui.jobs`), so a job outlives a TUI the user quits with "leave it
running", and the next TUI reattaches to it. A job that crashes, runs out of memory or exits non-zero is shown
with its error and next step until dismissed; the TUI stays up. Nothing heavy (torch, transformers, llama_cpp)
is imported here or by the screens.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from typing import Any

from rich.markup import escape
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.command import CommandPalette, SearchIcon
from textual.containers import Vertical, VerticalScroll
from textual.keys import format_key
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Static
from textual.worker import Worker, WorkerState

from tui.jobs import (
    JobState,
    LineTail,
    clear_current,
    cli_prefix,
    new_job_dir,
    parse_event_line,
    read_current,
    write_current,
)
from tui.screens.base import NAV_ITEMS
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

POLL_S = 0.05  # how often a job's output file is read
# Cancel: SIGINT (the job writes an "interrupted" event; a CPU step may take a while to notice), then
# SIGTERM after ESCALATE_S, then SIGKILL after twice that.
ESCALATE_S = 10.0
QUIT_GRACE_S = 3.0

SCREENS_BY_MODE = {
    "home": ("tui.screens.home", "HomeScreen"),
    "data": ("tui.screens.data", "DataScreen"),
    "train": ("tui.screens.train", "TrainScreen"),
    "export": ("tui.screens.export", "ExportScreen"),
    "models": ("tui.screens.models", "ModelsScreen"),
    "evals": ("tui.screens.evals", "EvalsScreen"),
    "history": ("tui.screens.runs", "HistoryScreen"),
}

# Key names shown in the footer and the help as words: Textual's defaults include glyphs (a return symbol
# for enter) that Windows Terminal's default font lacks.
KEY_WORDS = {"enter": "enter", "escape": "esc", "backspace": "bksp", "delete": "del", "pageup": "pgup",
             "pagedown": "pgdn", "space": "space", "tab": "tab", "up": "up", "down": "down", "left": "left",
             "right": "right", "home": "home", "end": "end"}


def default_job_command(args: list[str]) -> list[str]:
    return [*cli_prefix(), *args, "--events", "jsonl"]


def _screen_factory(mode: str) -> Callable[[], Screen]:
    module, name = SCREENS_BY_MODE[mode]

    def make() -> Screen:
        return getattr(importlib.import_module(module), name)()

    return make


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


class QuitScreen(ModalScreen[str | None]):
    """Asked when quitting with a job running: stop it, leave it running, or stay."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop job, quit"),
        Binding("l", "choose('leave')", "Leave running, quit"),
        Binding("escape", "choose(None)", "Stay"),
    ]
    DEFAULT_CSS = """
    QuitScreen { align: center middle; }
    QuitScreen > Vertical { width: 60; max-width: 100%; height: auto; padding: 1 2; border: thick $warning;
                            background: $surface; }
    QuitScreen Static { width: 100%; margin-bottom: 1; }
    QuitScreen Button { width: 100%; margin-bottom: 1; }
    """

    def __init__(self, job: JobState) -> None:
        super().__init__()
        self.job = job

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]{escape(self.job.label)}[/b] is still running.\n"
                         "Leave it running and the next `ollatune tui` reattaches to it.", markup=True)
            yield Button("s  Stop the job, then quit", id="stop", variant="error", compact=True)
            yield Button("l  Leave it running, quit", id="leave", variant="primary", compact=True)
            yield Button("esc  Stay", id="stay", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss({"stop": "stop", "leave": "leave"}.get(event.button.id or ""))

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)


class HelpScreen(ModalScreen[None]):
    """`?` / F1: what the screen is for, and every key it and the app answer to."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("question_mark", "close", "Close", show=False),
                Binding("q", "close", "Close", show=False)]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; max-width: 100%; height: 90%; border: thick $primary;
                                  background: $surface; padding: 0 1; }
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(self.text, id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)


class Palette(CommandPalette):
    """The command palette, with a search sign the default Windows Terminal font has."""

    def on_mount(self) -> None:
        for icon in self.query(SearchIcon):
            icon.icon = ">"


class OllatuneApp(App[None]):
    """``job_command`` replaces the CLI prefix of every job (tests run a small script instead)."""

    TITLE = "ollatune"
    MODES = {mode: _screen_factory(mode) for mode in SCREENS_BY_MODE}
    DEFAULT_MODE = "home"
    COMMAND_PALETTE_DISPLAY = "^p"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("f1", "help", "Help", show=False),
        Binding("x", "cancel_job", "Cancel job"),  # in every footer while a job runs (check_action)
        Binding("R", "resume_job", "Resume job", show=False),
        Binding("j", "show_job", "Job", show=False),
        Binding("ctrl+t", "toggle_dark", "Light/dark", show=False),
        *[Binding(key, f"switch_mode('{mode}')", label, show=False) for mode, key, label in NAV_ITEMS],
    ]

    def __init__(self, settings: Settings, job_command: list[str] | None = None, *, reattach: bool = True) -> None:
        super().__init__()
        self.settings = settings
        self.job_command = list(job_command) if job_command else None
        self.job: JobState | None = None
        self.reattach = reattach
        # The dataset chosen on the Data screen, which the Train screen's form starts from:
        # {"source": path or sample name, "task": data format, "eval_rows": ..., "max_seq_len": ...}.
        self.selected_data: dict[str, Any] | None = None
        self._job_listeners: list[Callable[[JobState, dict[str, Any] | None], None]] = []
        self.sub_title = str(settings.home)

    def on_mount(self) -> None:
        # Everything imported and built at start-up lives as long as the app: moved out of the collector's
        # view, a full collection takes ~25 ms instead of ~75 ms, the worst pause of the event loop while
        # a job streams events (bench/tui_bench.py).
        self.call_after_refresh(gc.freeze)
        if self.reattach:
            self._reattach()

    # the screens

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_job":
            return self.job is not None and self.job.running
        return True

    def get_key_display(self, binding: Binding) -> str:
        if binding.key_display:
            return binding.key_display
        modifiers, key = binding.parse_key()
        key = KEY_WORDS.get(key) or format_key(key)
        if "ctrl" in modifiers:
            modifiers.remove("ctrl")
            key = f"^{key}"
        return "+".join([*modifiers, key])

    def action_command_palette(self) -> None:
        if self.use_command_palette and not CommandPalette.is_open(self):
            self.push_screen(Palette(id="--command-palette"))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        seen: set[str] = set()

        def command(title: str, help_text: str, callback: Callable[[], Any]) -> Iterable[SystemCommand]:
            if title not in seen:
                seen.add(title)
                yield SystemCommand(title, help_text, callback)

        for mode, key, label in NAV_ITEMS:
            yield from command(f"Go to {label}", f"the {label} screen (key {key})",
                               lambda mode=mode: self.switch_mode(mode))
        # every binding the screen shows, so each action has a palette command
        for key, active in screen.active_bindings.items():
            b = active.binding
            if not b.description or not active.enabled or b.action.startswith("switch_mode"):
                continue
            node = active.node
            yield from command(b.description, f"key {self.get_key_display(b)}",
                               lambda node=node, action=b.action: self.call_later(node.run_action, action))
        yield from command("Help", "what this screen does and its keys (key ?)", self.action_help)
        if self.job is not None:
            if self.job.running:
                yield from command("Cancel job", f"stop {self.job.label} (key x)", self.action_cancel_job)
            else:
                yield from command("Resume job", f"run {self.job.label} again; finished stages are skipped (key R)",
                                   self.action_resume_job)
            yield from command("Show job", f"the live view of {self.job.label} (key j)", self.action_show_job)
        yield from command("Light/dark theme", "switch between the light and the dark theme (ctrl+t)",
                           self.action_toggle_dark)
        for cmd in super().get_system_commands(screen):
            yield from command(cmd.title, cmd.help, cmd.callback)

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.help_text(self.screen)))

    def help_text(self, screen: Screen) -> str:
        labels = {mode: label for mode, _, label in NAV_ITEMS}
        title = getattr(screen, "TITLE_TEXT", "") or labels.get(getattr(screen, "NAV", ""), "") or type(screen).__name__
        lines = [f"[b]{escape(title)}[/b]"]
        text = getattr(screen, "HELP", "")
        if text:
            lines += [text, ""]
        lines.append("[b]Keys on this screen[/b]")
        for key, active in screen.active_bindings.items():
            b = active.binding
            if b.description and not b.action.startswith("switch_mode"):
                lines.append(f"  {escape(self.get_key_display(b)):<8} {escape(b.description)}")
        lines += ["", "[b]Everywhere[/b]"]
        lines += [f"  {key:<8} {label}" for _, key, label in NAV_ITEMS]
        lines += ["  x        cancel the running job", "  R        resume: run the last job again (finished"
                  " stages are skipped, training continues from its checkpoint)",
                  "  j        the running job's live view", "  ^p       command palette (every action)",
                  "  ^t       light / dark theme", "  ?  F1    this help", "  q        quit (asks first when a job runs)",
                  "", "The mouse works too: click a tab in the top line, a row, a button."]
        return "\n".join(lines)

    # starting, following and cancelling a job

    def add_job_listener(self, listener: Callable[[JobState, dict[str, Any] | None], None]) -> None:
        if listener not in self._job_listeners:
            self._job_listeners.append(listener)

    def remove_job_listener(self, listener: Callable[[JobState, dict[str, Any] | None], None]) -> None:
        if listener in self._job_listeners:
            self._job_listeners.remove(listener)

    def _tell(self, job: JobState, event: dict[str, Any] | None) -> None:
        if event is None:  # a change of state: the footers' "x Cancel job" comes or goes
            self.refresh_bindings()
        for listener in list(self._job_listeners):
            try:
                listener(job, event)
            except Exception as exc:  # a screen's bug must not stop the job's events reaching the others
                self.log.error(f"job listener {listener!r}: {exc!r}")

    def start_job(self, label: str, args: list[str], *, view: bool = True) -> JobState | None:
        """Run ``ollatune <args> --events jsonl`` as a child process; its live view opens unless ``view`` is
        False. None, with a notification, when a job is already running."""
        if self.job is not None and self.job.running:
            self.notify(f"{self.job.label} is {self.job.describe()}; press x to cancel it first",
                        severity="warning", markup=False)
            return None
        prefix = self.job_command or cli_prefix()
        job = JobState(label=label, args=list(args), command=[*prefix, *args, "--events", "jsonl"])
        self.job = job
        if view:
            self.show_job_view(job)
        self._tell(job, None)
        self._run_job(job)
        return job

    def show_job_view(self, job: JobState) -> None:
        from tui.screens.run import RunScreen

        stack = self.screen_stack
        for index, screen in enumerate(stack):
            if isinstance(screen, RunScreen) and screen.job is job:  # its view is open: back to it
                for _ in range(len(stack) - 1 - index):
                    self.pop_screen()
                return
        run_dir = self.settings.runs_dir / job.run_id if job.run_id else None
        view = RunScreen(job.run_id, run_dir, job=job)
        if isinstance(self.screen, RunScreen):
            self.switch_screen(view)  # a second live view replaces the first instead of stacking
        else:
            self.push_screen(view)

    @work(exclusive=True, group="job", exit_on_error=False, description="job")
    async def _run_job(self, job: JobState) -> None:
        env = dict(os.environ, OLLATUNE_HOME=str(self.settings.home), PYTHONUNBUFFERED="1")
        try:
            job.job_dir = new_job_dir(self.settings.home)
            with open(job.stdout_path, "wb") as out, open(job.stderr_path, "wb") as err:  # type: ignore[arg-type]
                # Not asyncio's subprocess: its transport kills the child when the event loop closes, and a
                # job the user leaves running must outlive this app.
                proc = subprocess.Popen(job.command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                        start_new_session=True)
        except OSError as exc:
            self.post_message(JobFinished(job, None, f"{job.command[0]}: {exc}"))
            return
        job.process = proc
        job.pid = proc.pid
        try:
            write_current(self.settings.home, job)
        except OSError as exc:
            self.log.warning(f"could not record the job for reattaching: {exc}")
        self.post_message(JobStarted(job))

        async def wait() -> None:
            while proc.poll() is None:
                await asyncio.sleep(POLL_S)

        try:
            await self._follow(job, wait)
        finally:
            if proc.poll() is None and not job.detach:  # the app is closing: leave no orphan
                job.signal(signal.SIGKILL)
                proc.wait()
        self.post_message(JobFinished(job, proc.returncode))

    @work(exclusive=True, group="job", exit_on_error=False, description="reattached job")
    async def _follow_attached(self, job: JobState) -> None:
        self.post_message(JobStarted(job))

        async def wait() -> None:
            while job.alive():
                await asyncio.sleep(0.2)

        await self._follow(job, wait)
        self.post_message(JobFinished(job, None))

    async def _follow(self, job: JobState, wait: Callable[[], Any]) -> None:
        """Read the job's stdout file (events) and stderr (its tail) until the process ends."""
        out, err = LineTail(job.stdout_path), LineTail(job.stderr_path)  # type: ignore[arg-type]
        ended = asyncio.ensure_future(wait())
        try:
            while True:
                done = ended.done()
                for line in out.read(final=done):
                    event = parse_event_line(line)
                    if event is not None:
                        cls = JobProgress if event.get("type") == "progress" else JobEvent
                        self.post_message(cls(job, event))
                for line in err.read(final=done):
                    # keep what a progress bar redrawing with carriage returns showed last
                    job.stderr_tail.append(line.decode("utf-8", errors="replace").rstrip().rsplit("\r", 1)[-1])
                if done:
                    return
                await asyncio.wait([ended], timeout=POLL_S)
        finally:
            if not ended.done():
                ended.cancel()

    def _reattach(self) -> None:
        job = read_current(self.settings.home)
        if job is None or job.stdout_path is None or not job.stdout_path.exists():
            return
        self.job = job
        if job.alive():
            job.state = "running"
            self.notify(f"reattached to {job.label} (pid {job.pid}), left running by an earlier session",
                        title="job", markup=False)
        self._follow_attached(job)

    def on_job_started(self, message: JobStarted) -> None:
        job = message.job
        job.state = "running"
        self._tell(job, None)

    def on_job_event(self, message: JobEvent) -> None:
        message.job.record(message.event)
        self._tell(message.job, message.event)

    def on_job_progress(self, message: JobProgress) -> None:
        message.job.record(message.event)
        self._tell(message.job, message.event)

    def on_job_finished(self, message: JobFinished) -> None:
        job = message.job
        job.returncode = message.returncode
        job.launch_error = message.launch_error
        job.state = job.final_state()
        clear_current(self.settings.home, job)
        if job.state == "cancelled":
            self.notify(f"{job.label}: cancelled; press R to resume it", title="job cancelled", severity="warning",
                        markup=False)
        elif job.state == "done":
            self.notify(f"{job.label}: finished" + (f" ({job.run_id})" if job.run_id else ""), title="job done",
                        markup=False)
        elif message.launch_error:
            self.notify(message.launch_error, title="job did not start", severity="error", timeout=20, markup=False)
        else:
            self.notify(job.failure_text(), title="job failed", severity="error", timeout=30, markup=False)
        self._tell(job, None)

    def action_cancel_job(self) -> None:
        job = self.job
        if job is None or not job.running:
            self.notify("no job is running", severity="warning")
            return
        job.cancel_requested = True
        job.signal(signal.SIGINT)  # the pipeline writes an "interrupted" event and exits
        self.set_timer(ESCALATE_S, lambda: job.signal(signal.SIGTERM) if job.running else None)
        self.set_timer(2 * ESCALATE_S, lambda: job.signal(signal.SIGKILL) if job.running else None)
        self.notify(f"cancelling {job.label} (pid {job.pid})", severity="warning", markup=False)
        self._tell(job, None)

    def action_resume_job(self) -> None:
        """Run the last job's command again: stages with outputs are skipped, training resumes from its
        last checkpoint."""
        job = self.job
        if job is None:
            self.notify("no job to resume in this workspace", severity="warning")
            return
        if job.running:
            self.notify(f"{job.label} is still running", severity="warning", markup=False)
            return
        self.start_job(job.label, job.args)

    def action_show_job(self) -> None:
        from tui.screens.run import RunScreen

        if self.job is None:
            self.notify("no job yet; start one from the Train screen (3)", severity="warning")
            return
        if isinstance(self.screen, RunScreen) and self.screen.job is self.job:
            return
        self.show_job_view(self.job)

    async def action_quit(self) -> None:
        job = self.job
        if job is not None and job.running:
            self.push_screen(QuitScreen(job), self._quit_chosen)
            return
        self.exit()

    async def _quit_chosen(self, choice: str | None) -> None:
        job = self.job
        if choice is None:
            return
        if job is not None and job.running:
            if choice == "leave":
                job.detach = True
            else:
                await self.stop_job(job)
        self.exit()

    async def stop_job(self, job: JobState) -> None:
        """SIGINT, then SIGKILL after QUIT_GRACE_S; returns once the process is gone."""
        job.cancel_requested = True
        job.signal(signal.SIGINT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + QUIT_GRACE_S
        while job.alive() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if job.alive():
            job.signal(signal.SIGKILL)
        while job.alive():
            await asyncio.sleep(0.05)

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
                self._tell(job, None)


def run_app(settings: Settings) -> None:
    app = OllatuneApp(settings)
    app.run()
    job = app.job
    if job is not None and job.detach and job.alive():
        print(f"{job.label} left running (pid {job.pid}); its output: {job.job_dir}; "
              "`ollatune tui` reattaches to it", file=sys.stderr)
