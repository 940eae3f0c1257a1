"""Jobs started from the TUI: child processes of the same CLI whose JSON events the screens render;
cancelling, resuming, failing, quitting with one running, reattaching."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from tests.tui_helpers import screen_text, wait_until, workspace  # noqa: F401 - workspace is a fixture
from tui.app import JobEvent, JobProgress, JobState, OllatuneApp, QuitScreen
from tui.jobs import pid_alive, read_current
from tui.render import fmt_value
from tui.screens.run import RunScreen, last_training_curve
from tui.widgets.event_log import EventLog
from tui.widgets.loss_plot import LossPlot, step_ticks
from tui.widgets.stage_progress import StageProgress


# Jobs: the app starts a child process and renders the JSON events it prints.

JOB_OK = """
import json, sys
def emit(**e):
    print(json.dumps({"ts": 1.0, "run": "job-run", **e}), flush=True)
emit(stage="pipeline", type="start", recipe=sys.argv[2] if len(sys.argv) > 2 else "?")
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


JOB_WAITS = """
import json, os, sys, time
def emit(**e):
    print(json.dumps({"ts": 1.0, "run": "job-run", **e}), flush=True)
emit(stage="finetune", type="start")
emit(stage="finetune", type="metric", step=1, loss=1.0)
go = os.path.join(os.path.dirname(os.path.abspath(__file__)), "go")
deadline = time.time() + 120
while not os.path.exists(go) and time.time() < deadline:  # until the test lets it finish
    time.sleep(0.05)
emit(stage="finetune", type="metric", step=2, loss=0.5)
emit(stage="finetune", type="done", steps=2)
"""

JOB_SKIPS = """
import json
def emit(**e):
    print(json.dumps({"ts": 2.0, "run": "demo-ko-x", **e}), flush=True)
emit(stage="pipeline", type="start")
emit(stage="finetune", type="start")
emit(stage="finetune", type="done", skipped=True)
emit(stage="pipeline", type="done")
"""


def _script(tmp_path, source: str) -> list[str]:  # noqa: ANN001
    path = tmp_path / "job.py"
    path.write_text(source, encoding="utf-8")
    return [sys.executable, str(path)]


def _notifications(app) -> list:  # noqa: ANN001
    return list(app._notifications)


async def _start_job(app, pilot, args=("pipeline", "demo-ko")):  # noqa: ANN001, ANN202
    await pilot.pause()
    job = app.start_job("demo-ko", list(args))
    assert job is not None
    await wait_until(pilot, lambda: isinstance(app.screen, RunScreen))
    return job


def test_job_events_drive_the_run_screen(workspace, tmp_path):
    messages = []

    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, JOB_OK))
        async with app.run_test(size=(140, 40), message_hook=messages.append) as pilot:
            job = await _start_job(app, pilot)
            assert job.command[-4:] == ["pipeline", "demo-ko", "--events", "jsonl"]
            await wait_until(pilot, lambda: not job.running)
            await pilot.pause()
            assert (job.state, job.returncode, job.run_id, job.label) == ("done", 0, "job-run", "demo-ko")
            screen = app.screen
            assert isinstance(screen, RunScreen) and screen.job is job and screen.run_id == "job-run"
            assert screen.query_one(LossPlot).losses == [1.0, 0.5, 0.25]
            stage = screen.query_one(StageProgress)
            assert (stage.stage, stage.state, stage.done, stage.total) == ("finetune", "done", 3, 3)
            log_text = "\n".join(line.text for line in screen.query_one(EventLog).lines)
            assert "a library printing to stdout" in log_text
            assert "exit code 0" in str(screen.query_one("#run-title").render())
            assert screen_text(app).splitlines()[0].endswith("j demo-ko done")
            assert any("finished" in n.message for n in _notifications(app))
            # the job's output went to its own folder, and nothing is left for a later TUI to reattach to
            assert job.stdout_path.is_file() and read_current(workspace.home) is None

    asyncio.run(scenario())
    kinds = [type(m).__name__ for m in messages]
    assert {"JobStarted", "JobEvent", "JobProgress", "JobFinished"} <= set(kinds)
    assert kinds.index("JobStarted") < kinds.index("JobFinished")


def test_a_failed_job_keeps_its_error_and_next_step_on_screen_until_dismissed(workspace, tmp_path):
    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, JOB_ERROR))
        async with app.run_test(size=(80, 24)) as pilot:
            job = await _start_job(app, pilot)
            await wait_until(pilot, lambda: not job.running)
            await pilot.pause()
            assert (job.state, job.returncode) == ("failed", 1)
            errors = [n for n in _notifications(app) if n.severity == "error"]
            assert len(errors) == 1 and "lower train.batch_size" in errors[0].message
            app.clear_notifications()  # the toast is gone: the screen still says what failed and what next
            await pilot.pause()
            text = screen_text(app)
            assert "CUDA out of memory [tried 2 GiB]" in text and "next: lower train.batch_size" in text
            stage = app.screen.query_one(StageProgress)
            assert stage.state == "failed" and stage.query_one("ProgressBar").total is not None  # not pulsing
            assert "failed before any loss" in app.screen.query_one(LossPlot).title_text
            await pilot.press("d")
            await pilot.pause()
            assert "CUDA out of memory" not in screen_text(app).split("─" * 20)[0]
            # still alive and usable: back to the screen it was started from, and a new job can start
            await pilot.press("escape")
            await pilot.pause()
            assert app.is_running and not isinstance(app.screen, RunScreen)
            assert app.start_job("again", ["pipeline", "demo-ko"]) is not None

    asyncio.run(scenario())


def test_job_dying_without_events_shows_exit_code_and_stderr(workspace, tmp_path):
    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, JOB_CRASH))
        async with app.run_test(size=(80, 24)) as pilot:
            job = await _start_job(app, pilot)
            await wait_until(pilot, lambda: not job.running)
            await pilot.pause()
            [error] = [n for n in _notifications(app) if n.severity == "error"]
            assert "exit code 3" in error.message and "Segmentation fault in libggml" in error.message
            log_text = "\n".join(line.text for line in app.screen.query_one(EventLog).lines)
            assert "Segmentation fault in libggml" in log_text  # the log keeps it after the panel is dismissed
            assert app.is_running

    asyncio.run(scenario())


def test_job_that_cannot_start_is_reported(workspace, tmp_path):
    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=[str(tmp_path / "no-such-program")])
        async with app.run_test() as pilot:
            job = await _start_job(app, pilot)
            await wait_until(pilot, lambda: not job.running)
            [error] = [n for n in _notifications(app) if n.severity == "error"]
            assert "no-such-program" in error.message
            assert job.state == "failed" and app.is_running

    asyncio.run(scenario())


def test_cancel_is_its_own_state_and_resume_runs_the_same_command(workspace, tmp_path):
    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, JOB_HANGS))
        async with app.run_test(size=(80, 24)) as pilot:
            job = await _start_job(app, pilot)
            await wait_until(pilot, lambda: job.events)  # the child is up and talking
            await pilot.press("x")
            await wait_until(pilot, lambda: not job.running)
            await pilot.pause()
            assert job.state == "cancelled" and job.returncode != 0
            assert job.process.returncode is not None
            assert any(n.severity == "warning" and "press R to resume" in n.message for n in _notifications(app))
            text = screen_text(app)
            assert "failed" not in text and "re-run the same command" not in text
            assert app.screen.query_one(StageProgress).state == "cancelled"
            await pilot.press("R")
            await wait_until(pilot, lambda: app.job is not job and app.job.running and app.job.events)
            assert app.job.args == job.args and app.job.label == job.label
            assert len([s for s in app.screen_stack if isinstance(s, RunScreen)]) == 1  # replaced, not stacked
            await pilot.press("x")
            await wait_until(pilot, lambda: not app.job.running)

    asyncio.run(scenario())


def test_quitting_with_a_job_running_asks_and_stop_stops_it(workspace, tmp_path):
    async def scenario() -> JobState:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, JOB_HANGS))
        async with app.run_test() as pilot:
            job = await _start_job(app, pilot)
            await wait_until(pilot, lambda: job.events)
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app.screen, QuitScreen) and job.running  # asked, nothing stopped yet
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, RunScreen) and job.running
            await pilot.press("q")
            await pilot.pause()
            await pilot.press("s")
            await wait_until(pilot, lambda: not app.is_running or not job.alive())
        return job

    job = asyncio.run(scenario())
    assert job.process is not None and job.process.returncode is not None  # no orphan left behind


def test_a_job_left_running_is_reattached_by_the_next_tui(workspace, tmp_path):
    script = tmp_path / "waits.py"
    script.write_text(JOB_WAITS, encoding="utf-8")

    async def first() -> JobState:
        app = OllatuneApp(workspace, job_command=[sys.executable, str(script)])
        async with app.run_test() as pilot:
            job = await _start_job(app, pilot)
            await wait_until(pilot, lambda: len(job.events) >= 2)
            await pilot.press("q")
            await pilot.pause()
            await pilot.press("l")
            await wait_until(pilot, lambda: not app.is_running)
        return job

    async def second(pid: int) -> JobState:
        app = OllatuneApp(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.job is not None and app.job.events)
            job = app.job
            assert job.attached and job.pid == pid and job.running
            assert job.events[0]["stage"] == "finetune"  # replayed from the start
            await pilot.pause()
            assert screen_text(app).splitlines()[0].endswith("j demo-ko running")
            await pilot.press("j")
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen))
            await wait_until(pilot, lambda: app.screen.query_one(LossPlot).losses == [1.0])
            (tmp_path / "go").touch()
            await wait_until(pilot, lambda: not job.running, timeout=30)
            assert app.screen.query_one(LossPlot).losses == [1.0, 0.5]
            assert job.state == "done"
        return job

    job = asyncio.run(first())
    try:
        assert job.detach and pid_alive(job.pid)  # it outlived the TUI
        assert read_current(workspace.home).pid == job.pid
        again = asyncio.run(second(job.pid))
        assert again.describe().startswith("done") and read_current(workspace.home) is None
    finally:
        if pid_alive(job.pid):
            os.killpg(job.pid, signal.SIGKILL)


def test_default_command_runs_the_real_cli_and_reports_its_error(workspace):
    """Without job_command the app runs `python -m tui.cli pipeline RECIPE --events jsonl`; an unknown
    recipe fails before any event, so the failure carries the CLI's stderr (what and what next)."""

    async def scenario() -> None:
        app = OllatuneApp(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            job = await _start_job(app, pilot, ("pipeline", "no-such-recipe"))
            await wait_until(pilot, lambda: not job.running, timeout=60)
            assert job.command[1:] == ["-m", "tui.cli", "pipeline", "no-such-recipe", "--events", "jsonl"]
            [error] = [n for n in _notifications(app) if n.severity == "error"]
            assert "exit code 1" in error.message
            assert "no recipe named 'no-such-recipe'" in error.message and "demo-ko" in error.message

    asyncio.run(scenario())


def test_a_fully_skipped_rerun_shows_the_earlier_curve(workspace, tmp_path):
    run_dir = workspace.runs_dir / "demo-ko-x"
    run_dir.mkdir(parents=True)
    earlier = [{"stage": "finetune", "type": "start"}]
    earlier += [{"stage": "finetune", "type": "metric", "step": i, "loss": 2.0 / i} for i in (1, 2, 3, 4)]
    earlier += [{"stage": "finetune", "type": "done", "steps": 4}]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in earlier), encoding="utf-8")

    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, JOB_SKIPS))
        async with app.run_test(size=(80, 24)) as pilot:
            job = await _start_job(app, pilot)
            await wait_until(pilot, lambda: not job.running)
            await pilot.pause()
            plot = app.screen.query_one(LossPlot)
            assert plot.steps == [1, 2, 3, 4] and plot.losses == [2.0, 1.0, 2.0 / 3, 0.5]
            assert "skipped" in plot.title_text

    asyncio.run(scenario())


def test_last_training_curve_takes_the_last_finished_training():
    log = [{"stage": "finetune", "type": "start"}, {"stage": "finetune", "type": "metric", "step": 1, "loss": 3.0},
           {"stage": "finetune", "type": "done"},
           {"stage": "finetune", "type": "start"}, {"stage": "finetune", "type": "metric", "step": 1, "loss": 2.0},
           {"stage": "finetune", "type": "metric", "step": 2, "loss": 1.0}, {"stage": "finetune", "type": "done"},
           {"stage": "finetune", "type": "start"}, {"stage": "finetune", "type": "done", "skipped": True}]
    assert [e["loss"] for e in last_training_curve(log)] == [2.0, 1.0]
    # a later training that did not finish did not make the adapter: the finished one did
    assert [e["loss"] for e in last_training_curve(log[:5])] == [3.0]
    assert [e["loss"] for e in last_training_curve(log[:2])] == [3.0]  # none finished: the one that started


def test_progress_messages_of_one_stage_coalesce():
    job = JobState("demo-ko", ["pipeline"], ["true"])
    older = JobProgress(job, {"stage": "finetune", "type": "progress", "done": 1, "total": 9})
    newer = JobProgress(job, {"stage": "finetune", "type": "progress", "done": 2, "total": 9})
    assert older.can_replace(newer)
    assert not older.can_replace(JobProgress(job, {"stage": "export", "type": "progress", "done": 1}))
    assert not older.can_replace(JobEvent(job, {"stage": "finetune", "type": "metric", "step": 2}))
    assert not older.can_replace(JobProgress(JobState("other", [], ["true"]), dict(newer.event)))


def test_loss_plot_skips_values_it_cannot_draw():
    plot = LossPlot()
    assert plot.add_metric({"step": 1, "loss": 1.25, "eval_loss": 1.5})
    assert not plot.add_metric({"step": 2, "loss": float("nan")})
    assert not plot.add_metric({"loss": 1.0})
    assert (plot.steps, plot.losses, plot.eval_losses) == ([1], [1.25], [1.5])


def test_step_ticks_are_whole_steps():
    assert step_ticks([1, 2, 3]) == [1, 2, 3]
    assert step_ticks([]) == []
    ticks = step_ticks(list(range(1, 101)))
    assert ticks[0] == 1 and ticks[-1] == 100 and len(ticks) <= 7
    assert all(isinstance(t, int) for t in ticks) and ticks == sorted(set(ticks))


def test_event_fields_are_rounded_and_summarised():
    assert fmt_value(0.000123456789) == "0.0001235"
    assert fmt_value(1234.56789) == "1235"
    assert fmt_value({"lr": 2e-4, "nested": {"a": 1}}) == "{lr=0.0002}"
    assert fmt_value([1, 2.123456]) == "1, 2.123"
    assert fmt_value([{"a": 1}]) == "[1 items]"
    assert len(fmt_value("x" * 200)) == 60


def test_a_reattach_record_whose_pid_now_belongs_to_another_process_is_not_signalled(workspace, tmp_path):
    from tui.jobs import process_start, write_current

    other = __import__("subprocess").Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                                           start_new_session=True)
    try:
        job_dir = tmp_path / "job"
        job_dir.mkdir()
        (job_dir / "stdout.jsonl").write_text("", encoding="utf-8")
        job = JobState("demo-ko", ["pipeline"], ["x"], job_dir=job_dir, pid=other.pid)
        (workspace.home / "jobs").mkdir(exist_ok=True)
        write_current(workspace.home, job)
        record = read_current(workspace.home)
        assert record.start_mark == process_start(other.pid) and record.alive()
        record.start_mark = "1"  # as if the recorded job had ended and its pid been given to this process
        assert not record.alive()
        record.signal(signal.SIGKILL)
        assert other.poll() is None  # untouched
    finally:
        other.kill()
        other.wait()


def test_a_job_that_finished_before_its_cancel_took_effect_is_done():
    job = JobState("demo-ko", ["pipeline"], ["x"])
    job.cancel_requested, job.returncode = True, 0
    assert job.final_state() == "done"
    job.returncode = -2
    assert job.final_state() == "cancelled"
    job.cancel_requested, job.returncode = False, 1
    assert job.final_state() == "failed"


def test_j_goes_back_to_the_open_live_view_instead_of_stacking_another(workspace, tmp_path):
    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, JOB_HANGS), reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            job = await _start_job(app, pilot)
            await wait_until(pilot, lambda: job.events)
            view = app.screen
            await pilot.press("c")  # the comparison on top of the live view
            await wait_until(pilot, lambda: app.screen is not view)
            await pilot.press("j")
            await wait_until(pilot, lambda: app.screen is view)
            assert len([s for s in app.screen_stack if isinstance(s, RunScreen)]) == 1
            await pilot.press("x")
            await wait_until(pilot, lambda: not job.running)

    asyncio.run(scenario())


def test_stdout_text_with_brackets_reaches_the_log_as_written(workspace, tmp_path):
    source = 'print("loading [weights] 50%", flush=True)\n'

    async def scenario() -> None:
        app = OllatuneApp(workspace, job_command=_script(tmp_path, source), reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            job = await _start_job(app, pilot)
            await wait_until(pilot, lambda: not job.running)
            await pilot.pause()
            log_text = "\n".join(line.text for line in app.screen.query_one(EventLog).lines)
            assert "loading [weights] 50%" in log_text and "\\[" not in log_text

    asyncio.run(scenario())
