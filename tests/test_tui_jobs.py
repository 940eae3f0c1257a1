"""Jobs started from the TUI: child processes of the same CLI whose JSON events the screens render;
cancelling, failing, quitting with one running, reattaching."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest

from tui.app import JobEvent, JobProgress, JobState, OllatuneApp
from tui.screens.compare import CompareScreen
from tui.screens.run import RunScreen
from tui.screens.runs import RunsScreen, RunsTable
from tui.screens.sources import EventTail, load_runs, summarize_events
from tui.widgets.event_log import EventLog
from tui.widgets.loss_plot import LossPlot
from tui.widgets.stage_progress import StageProgress
from tests.tui_helpers import (  # noqa: F401 - workspace is a fixture
    EXAMPLES,
    RUN_ID,
    _cell_text,
    wait_until,
    workspace,
)


# Jobs: the app starts a child process and renders the JSON events it prints.

JOB_OK = """
import json, sys
def emit(**e):
    print(json.dumps({"ts": 1.0, "run": "job-run", **e}), flush=True)
emit(stage="pipeline", type="start", recipe=sys.argv[1] if len(sys.argv) > 1 else "?")
emit(stage="finetune", type="start")
print("a library printing to stdout", flush=True)
for step, loss in ((1, 1.0), (2, 0.5), (3, 0.25)):
    emit(stage="finetune", type="progress", done=step, total=3, unit="steps", eta_s=3 - step)
    emit(stage="finetune", type="metric", step=step, loss=loss)
emit(stage="finetune", type="done", steps=3)
emit(stage="pipeline", type="done")
"""

JOB_ERROR = """
import json, sys
print(json.dumps({"ts": 1.0, "run": "job-run", "stage": "finetune", "type": "start"}), flush=True)
print(json.dumps({"ts": 1.1, "run": "job-run", "stage": "finetune", "type": "error",
                  "message": "CUDA out of memory [tried 2 GiB]", "hint": "lower train.batch_size"}), flush=True)
print("error finetune: CUDA out of memory", file=sys.stderr)
sys.exit(1)
"""

JOB_CRASH = """
import sys
print("Traceback (most recent call last):", file=sys.stderr)
print("Segmentation fault in libggml", file=sys.stderr)
sys.exit(3)
"""

JOB_HANGS = """
import json, time
print(json.dumps({"ts": 1.0, "run": "job-run", "stage": "finetune", "type": "start"}), flush=True)
time.sleep(60)
"""


def _script(tmp_path, source: str) -> list[str]:  # noqa: ANN001
    path = tmp_path / "job.py"
    path.write_text(source, encoding="utf-8")
    return [sys.executable, str(path), "demo-ko"]


def _notifications(app) -> list:  # noqa: ANN001
    return list(app._notifications)


async def _start_job(app, pilot) -> None:  # noqa: ANN001
    await pilot.press("p")
    await pilot.pause()
    assert app.screen.query_one("#recipe").value == "demo-ko"
    await pilot.press("enter")
    await wait_until(pilot, lambda: app.job is not None)


def test_job_events_drive_the_run_screen(workspace, tmp_path):
    messages = []

    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, JOB_OK))
        async with app.run_test(size=(140, 40), message_hook=messages.append) as pilot:
            await _start_job(app, pilot)
            await wait_until(pilot, lambda: not app.job.running)
            await app.workers.wait_for_complete()
            await pilot.pause()
            job = app.job
            assert (job.state, job.returncode, job.run_id, job.recipe) == ("done", 0, "job-run", "demo-ko")
            screen = app.screen
            assert isinstance(screen, RunScreen) and screen.job is job and screen.run_id == "job-run"
            assert screen.query_one(LossPlot).losses == [1.0, 0.5, 0.25]
            stage = screen.query_one(StageProgress)
            assert (stage.stage, stage.state, stage.done, stage.total) == ("finetune", "done", 3, 3)
            log_text = "\n".join(line.text for line in screen.query_one(EventLog).lines)
            assert "a library printing to stdout" in log_text
            assert "exit code 0" in str(screen.query_one("#run-title").render())
            assert any("finished" in n.message for n in _notifications(app))

    asyncio.run(scenario())
    kinds = [type(m).__name__ for m in messages]
    assert {"JobStarted", "JobEvent", "JobProgress", "JobFinished"} <= set(kinds)
    assert kinds.index("JobStarted") < kinds.index("JobFinished")


def test_failed_job_notifies_its_error_and_the_app_stays_up(workspace, tmp_path):
    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, JOB_ERROR))
        async with app.run_test(size=(140, 40)) as pilot:
            await _start_job(app, pilot)
            await wait_until(pilot, lambda: not app.job.running)
            await pilot.pause()
            assert (app.job.state, app.job.returncode) == ("failed", 1)
            errors = [n for n in _notifications(app) if n.severity == "error"]
            assert len(errors) == 1
            assert "CUDA out of memory [tried 2 GiB]" in errors[0].message
            assert "lower train.batch_size" in errors[0].message
            assert app.screen.query_one(StageProgress).state == "failed"
            # still alive and usable: back to the runs, and a new job can be started
            await pilot.press("escape")
            await pilot.pause()
            assert app.is_running and isinstance(app.screen, RunsScreen)
            await pilot.press("p")
            await pilot.pause()
            assert app.screen.query_one("#recipe") is not None

    asyncio.run(scenario())


def test_job_dying_without_events_shows_exit_code_and_stderr(workspace, tmp_path):
    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, JOB_CRASH))
        async with app.run_test() as pilot:
            await _start_job(app, pilot)
            await wait_until(pilot, lambda: not app.job.running)
            await pilot.pause()
            [error] = [n for n in _notifications(app) if n.severity == "error"]
            assert "exit code 3" in error.message and "Segmentation fault in libggml" in error.message
            assert app.is_running

    asyncio.run(scenario())


def test_job_that_cannot_start_is_reported(workspace, tmp_path):
    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=[str(tmp_path / "no-such-program")])
        async with app.run_test() as pilot:
            await _start_job(app, pilot)
            await wait_until(pilot, lambda: not app.job.running)
            [error] = [n for n in _notifications(app) if n.severity == "error"]
            assert "no-such-program" in error.message
            assert app.job.state == "failed" and app.is_running

    asyncio.run(scenario())


def test_cancel_terminates_the_child(workspace, tmp_path):
    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, JOB_HANGS))
        async with app.run_test() as pilot:
            await _start_job(app, pilot)
            await wait_until(pilot, lambda: app.job.events)  # the child is up and talking
            await pilot.press("x")
            await wait_until(pilot, lambda: not app.job.running)
            assert app.job.state == "cancelled" and app.job.returncode != 0
            assert app.job.process.returncode is not None
            assert any(n.severity == "warning" and "cancelled" in n.message for n in _notifications(app))

    asyncio.run(scenario())


def test_recipe_prompt_can_be_cancelled(workspace):
    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=[sys.executable, "-c", "pass"])
        async with app.run_test() as pilot:
            await pilot.press("p")
            await pilot.pause()
            await pilot.press("escape")
            await pilot.pause()
            assert app.job is None and isinstance(app.screen, RunsScreen)

    asyncio.run(scenario())


def test_default_command_runs_the_real_cli_and_reports_its_error(workspace):
    """Without job_command the app runs `python -m tui.cli pipeline RECIPE --events jsonl`; an unknown
    recipe fails before any event, so the notification carries the CLI's stderr (what and what next)."""

    async def scenario() -> None:
        app = OllatuneApp(workspace)
        async with app.run_test() as pilot:
            await pilot.press("p")
            await pilot.pause()
            app.screen.query_one("#recipe").value = ""
            await pilot.press(*"no-such-recipe", "enter")
            await wait_until(pilot, lambda: app.job is not None and not app.job.running, timeout=60)
            assert app.job.command[-4:] == ["pipeline", "no-such-recipe", "--events", "jsonl"]
            [error] = [n for n in _notifications(app) if n.severity == "error"]
            assert "exit code 1" in error.message
            assert "no recipe named 'no-such-recipe'" in error.message and "demo-ko" in error.message

    asyncio.run(scenario())


def test_progress_messages_of_one_stage_coalesce():
    job = JobState(recipe="demo-ko", command=["true"])
    older = JobProgress(job, {"stage": "finetune", "type": "progress", "done": 1, "total": 9})
    newer = JobProgress(job, {"stage": "finetune", "type": "progress", "done": 2, "total": 9})
    assert older.can_replace(newer)
    assert not older.can_replace(JobProgress(job, {"stage": "export", "type": "progress", "done": 1}))
    assert not older.can_replace(JobEvent(job, {"stage": "finetune", "type": "metric", "step": 2}))
    assert not older.can_replace(JobProgress(JobState("other", ["true"]), dict(newer.event)))


def test_loss_plot_skips_values_it_cannot_draw():
    plot = LossPlot()
    assert plot.add_metric({"step": 1, "loss": 1.25, "eval_loss": 1.5})
    assert not plot.add_metric({"step": 2, "loss": float("nan")})
    assert not plot.add_metric({"loss": 1.0})
    assert (plot.steps, plot.losses, plot.eval_losses) == ([1], [1.25], [1.5])


def test_quitting_stops_a_running_job(workspace, tmp_path):
    async def scenario() -> JobState:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, JOB_HANGS))
        async with app.run_test() as pilot:
            await _start_job(app, pilot)
            await wait_until(pilot, lambda: app.job.events)
            await pilot.press("q")
        return app.job

    job = asyncio.run(scenario())
    assert job.process is not None and job.process.returncode is not None  # no orphan left behind
