"""The first screen: what this machine can do (the doctor's checks), the workspace's recent runs and
registered models, and the next step of the loop, which enter takes.

The environment comes from :func:`tui.screens.sources.probe_environment` (the doctor, in a child process)
read in a thread worker; a screen built with ``probe=`` (or a subclass setting ``PROBE``) gets other facts,
which is how the tests make the screen deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.markup import escape as escape_rich
from rich.text import Text
from textual import work
from textual.worker import get_current_worker
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Static

from tui.screens.base import OllatuneScreen
from tui.screens.runs import RUN_COLUMNS, run_cells
from tui.widgets.tables import fill_table
from tui.screens.sources import (
    DEFAULT_RECIPE,
    DoctorCheck,
    HomeState,
    cpu_threads,
    environment_lines,
    kill_probes,
    load_home,
    on_gpu,
    probe_environment,
)
from workspace.settings import Settings

MODEL_COLUMNS = [("model", "name"), ("role", "role"), ("host", "host"), ("run", "run")]
ENV_MARK = {"ok": ("ok", "green"), "warn": ("--", "yellow"), "fail": ("!!", "red"), "pending": ("..", "dim")}

# Training time on a CPU without a measured run: forward and backward of SmolLM2-135M with LoRA on its seven
# projections, fp32, about 5.3 ms per token on 2 threads (8 x 128 tokens took 5.4 s a step, 4 x 128 2.7 s),
# and a row of the Korean sample is about 150 tokens under the model's chat template.
CPU_S_PER_TOKEN_2_THREADS = 5.3e-3
ROW_TOKENS = 150


@dataclass(frozen=True)
class Suggestion:
    """The next step: what to press (``text``), and what enter does: switch to ``mode`` or run the app's
    ``action``; neither when there is nothing to do but wait."""

    text: str
    mode: str | None = None
    action: str | None = None


def train_estimate(steps: int | None, rows_per_step: int, max_seq_len: int, *, base: str, gpu: bool,
                   threads: int | None, measured_s_per_step: float | None = None) -> str:
    """How long training a recipe takes here, in words: from an earlier run's seconds per step when there is
    one, else for a small model on the CPU from the per-token cost above; "" when there is nothing to go by."""
    if not steps:
        return ""
    where = "this GPU" if gpu else "this CPU"
    if measured_s_per_step is not None:
        return f"about {_minutes(steps * measured_s_per_step)} on {where}"
    if gpu:
        return f"{steps} steps on {where}"
    if "135m" not in base.lower():
        return f"{steps} steps; a large model is slow on a CPU"
    tokens = steps * rows_per_step * min(max_seq_len, ROW_TOKENS)
    seconds = tokens * CPU_S_PER_TOKEN_2_THREADS * 2 / max(threads or 2, 1)
    return f"about {_minutes(seconds)} on {where}"


def _minutes(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} min"


def suggest_next(state: HomeState | None, *, running_job: str | None = None, train_hint: str = "") -> Suggestion:
    """The next step of the loop for the newest run of the workspace: train, export, serve, evaluate, compare;
    or follow the job that is running, or look at what failed."""
    if running_job:
        return Suggestion(f"{running_job} is running: press j to watch it", action="show_job")
    if state is None:
        return Suggestion("reading the workspace…")
    run = state.latest
    hint = f" ({train_hint})" if train_hint else ""
    if run is None:
        return Suggestion(f"press 3 to train {DEFAULT_RECIPE}{hint}", mode="train")
    name = run.run_id
    if run.status == "running":
        return Suggestion(f"{name} is running outside this TUI: press 7 to follow it in History", mode="history")
    if run.status in ("failed", "stopped") or (run.failed and run.status != "done"):
        where = f" in {run.failed.split(':', 1)[0]}" if run.failed else ""
        text = f"{name} {run.status}{where}: press 3 to run it again (finished stages are skipped)"
        if run.hint:
            text += f"; {run.hint}"
        return Suggestion(text, mode="train")
    if not run.trained:
        return Suggestion(f"press 3 to train {run.recipe or DEFAULT_RECIPE}", mode="train")
    if not run.exported:
        return Suggestion(f"press 4 to export {name} to GGUF", mode="export")
    tuned = run.tuned_model
    if tuned is None:
        return Suggestion(f"press 5 to serve {name}'s GGUF (register it with Ollama)", mode="models")
    roles = run.evaluated_roles()
    if not {"tuned", "vanilla"} <= roles:
        return Suggestion(f"press 6 to evaluate {tuned.name} against the vanilla model", mode="evals")
    return Suggestion(f"press 6 to compare vanilla and tuned of {name}", mode="evals")


class EnvCheckMessage(Message):
    """One of the doctor's checks, or (``check`` None) the end of the probe."""

    def __init__(self, check: DoctorCheck | None) -> None:
        super().__init__()
        self.check = check


class HomeLoaded(Message):
    def __init__(self, state: HomeState | None, train: dict[str, Any] | None, error: str | None = None) -> None:
        super().__init__()
        self.state = state
        self.train = train  # the default recipe's steps, rows per step, sequence length and base model
        self.error = error


class HomeTable(DataTable):
    """A summary table: not focusable, so enter always takes the suggested step."""

    can_focus = False


class HomeScreen(OllatuneScreen):
    NAV = "home"
    HELP = ("The environment this machine offers (the checks of [b]ollatune doctor[/b]), the workspace's recent "
            "runs and registered models, and the next step of the loop: [b]enter[/b] takes it. "
            "[b]r[/b] checks the environment and reads the workspace again.")
    # What the environment probe runs: settings -> the doctor's checks, one by one.
    PROBE: ClassVar[Callable[[Settings], Iterable[DoctorCheck]]] = staticmethod(probe_environment)

    BINDINGS = [
        Binding("enter", "take_suggestion", "Do next step"),
        Binding("r", "refresh", "Refresh"),
    ]
    DEFAULT_CSS = """
    HomeScreen #suggestion { height: auto; padding: 0 1; background: $boost; color: $text; }
    HomeScreen .home-title { height: 1; padding: 0 1; color: $text-muted; text-style: bold; }
    HomeScreen #env { height: auto; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    HomeScreen #home-runs { height: auto; max-height: 8; }
    HomeScreen #home-models { height: 1fr; min-height: 2; }
    """

    def __init__(self, probe: Callable[[Settings], Iterable[DoctorCheck]] | None = None) -> None:
        super().__init__()
        self.probe = probe or type(self).PROBE
        self.checks: dict[str, tuple[str, str]] = {}
        self.probe_done = False
        self.state: HomeState | None = None
        self.train: dict[str, Any] | None = None
        self.suggestion = suggest_next(None)
        self._error: str | None = None

    def compose_body(self) -> Iterable[Widget]:
        yield Static(id="suggestion")
        yield Static("environment", classes="home-title")
        yield Static(id="env")
        yield Static("recent runs", classes="home-title", id="runs-title")
        yield HomeTable(id="home-runs", cursor_type="none", zebra_stripes=True)
        yield Static("models", classes="home-title", id="models-title")
        yield HomeTable(id="home-models", cursor_type="none", zebra_stripes=True)

    def on_mount(self) -> None:
        super().on_mount()
        fill_table(self.query_one("#home-runs", HomeTable), RUN_COLUMNS, [])
        fill_table(self.query_one("#home-models", HomeTable), MODEL_COLUMNS, [])
        self._show_env()
        self._show_suggestion()
        self.action_refresh()

    def on_unmount(self) -> None:
        kill_probes()  # the app is closing: its exit would otherwise wait for the check to finish

    def on_screen_resume(self) -> None:
        self.load_workspace()

    # reading

    def action_refresh(self) -> None:
        kill_probes()  # the check still running is replaced, not left to run beside the new one
        self.checks, self.probe_done = {}, False
        self._show_env()
        self.probe_environment()
        self.load_workspace()

    @work(thread=True, exclusive=True, group="home-env", exit_on_error=False, description="check the environment")
    def probe_environment(self) -> None:
        worker = get_current_worker()
        try:
            for check in self.probe(self.app.settings):  # type: ignore[attr-defined]
                if worker.is_cancelled:
                    return
                self.post_message(EnvCheckMessage(tuple(check)))  # type: ignore[arg-type]
        except Exception as exc:  # the probe must not take the screen down
            self.post_message(EnvCheckMessage(("doctor", "fail", f"the environment check failed: {exc}; "
                                                                 "run `ollatune doctor` for details")))
        if not worker.is_cancelled:  # a replaced check must not end the new one's "pending" lines
            self.post_message(EnvCheckMessage(None))

    @work(thread=True, exclusive=True, group="home-workspace", exit_on_error=False, description="read the workspace")
    def load_workspace(self) -> None:
        settings: Settings = self.app.settings  # type: ignore[attr-defined]
        try:
            state = load_home(settings)
        except Exception as exc:  # a locked or broken store must not take the screen down
            self.post_message(HomeLoaded(None, None, f"could not read the workspace {settings.db_path}: {exc}; "
                                                     "check the file, or run `ollatune runs`"))
            return
        train = None
        try:
            from finetune.recipe import load_recipe

            rec = load_recipe(DEFAULT_RECIPE)
            train = {"steps": rec.train.max_steps, "rows": rec.train.batch_size * rec.train.grad_accum,
                     "max_seq_len": rec.data.max_seq_len, "base": rec.model.base}
        except Exception:  # the estimate is optional: the suggestion goes without it
            train = None
        self.post_message(HomeLoaded(state, train))

    def on_env_check_message(self, message: EnvCheckMessage) -> None:
        if message.check is None:
            self.probe_done = True
        else:
            name, status, detail = message.check
            self.checks[name] = (status, detail)
        self._show_env()
        self._show_suggestion()

    def on_home_loaded(self, message: HomeLoaded) -> None:
        if message.error:
            if message.error != self._error:
                self.notify(message.error, title="home", severity="error", markup=False)
            self._error = message.error
            return
        self._error = None
        changed = message.state != self.state
        self.state, self.train = message.state, message.train
        if changed:
            self._show_tables()
        self._show_suggestion()

    def job_changed(self, job, event) -> None:  # noqa: ANN001 - tui.jobs.JobState, an event dict or None
        if event is None:
            self._show_suggestion()
            if not job.running:
                self.load_workspace()

    # showing

    def train_hint(self) -> str:
        t = self.train
        if not t:
            return ""
        measured = self.state.train_s_per_step if self.state is not None else None
        if not self.probe_done and measured is None and not on_gpu(self.checks):
            return ""  # CPU or GPU is not known yet
        return train_estimate(t["steps"], t["rows"], t["max_seq_len"], base=t["base"], gpu=on_gpu(self.checks),
                              threads=cpu_threads(self.checks), measured_s_per_step=measured)

    def _show_suggestion(self) -> None:
        job = getattr(self.app, "job", None)
        running = job.label if job is not None and job.running else None
        self.suggestion = suggest_next(self.state, running_job=running, train_hint=self.train_hint())
        text = Text.assemble(("next ", "bold"), self.suggestion.text)  # the footer says enter takes it
        self.query_one("#suggestion", Static).update(text)

    def _show_env(self) -> None:
        host = getattr(self.app.settings, "ollama_host", "")  # type: ignore[attr-defined]
        text = Text(end="")
        for i, line in enumerate(environment_lines(self.checks, self.probe_done, host)):
            mark, style = ENV_MARK.get(line.status, ("  ", ""))
            if i:
                text.append("\n")
            text.append(f"{mark} ", style=style)
            text.append(f"{line.label:<11}", style="bold")
            text.append(line.text)
        self.query_one("#env", Static).update(text)

    def _show_tables(self) -> None:
        state = self.state
        if state is None:
            return
        runs = self.query_one("#home-runs", HomeTable)
        fill_table(runs, RUN_COLUMNS, [(r.run_id, run_cells(r)) for r in state.runs])
        self.query_one("#runs-title", Static).update(
            "recent runs" if state.runs else "recent runs: none yet (train one with 3)")
        runs.display = bool(state.runs)
        models = self.query_one("#home-models", HomeTable)
        fill_table(models, MODEL_COLUMNS, [
            (f"{m.name}@{m.host}", [escape_rich(m.name), escape_rich(m.role), escape_rich(m.host),
                                    escape_rich(m.run_id or "-")]) for m in state.models])
        self.query_one("#models-title", Static).update(
            "models" if state.models else "models: none registered yet")
        models.display = bool(state.models)

    # acting

    async def action_take_suggestion(self) -> None:
        s = self.suggestion
        if s.action:
            await self.app.run_action(s.action)
        elif s.mode:
            try:
                self.app.switch_mode(s.mode)
            except Exception as exc:  # an app without that screen
                self.notify(f"cannot open the {s.mode} screen: {exc}", severity="error", markup=False)
        else:
            self.notify(s.text, markup=False)


__all__ = ["HomeScreen", "Suggestion", "suggest_next", "train_estimate"]
