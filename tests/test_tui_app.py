"""The TUI's runs, run and compare screens, driven through Textual's Pilot against a real store and a
real run folder."""

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
from workspace.settings import Settings
from workspace.store import (
    Artifact,
    EvalRun,
    Prediction,
    RegisteredModel,
    Score,
    TrainingRun,
    open_store,
    session_scope,
)


RUN_ID = "demo-ko-20260101-abc123"
EXAMPLES = [  # id, question, reference, vanilla output, tuned output, exact_match (v, t), char_f1 (v, t)
    ("ex-1", "대한민국의 수도는?", "서울", "부산", "서울", (0.0, 1.0), (0.2, 1.0)),
    ("ex-2", "이름을 조회하는 SQL은?", "SELECT name FROM t", "SELECT * FROM t", "SELECT [name] FROM t",
     (0.0, 0.0), (0.6, 0.6)),
]


def _event(stage: str, type: str, ts: float = 1.0, run: str = RUN_ID, **fields) -> str:  # noqa: A002
    return json.dumps({"ts": ts, "run": run, "stage": stage, "type": type, **fields}, ensure_ascii=False) + "\n"


def _populate_store(settings: Settings) -> None:
    factory = open_store(settings.db_path)
    with session_scope(factory) as s:
        run = TrainingRun(run_id=RUN_ID, base_model="smollm2-135m-instruct", backend="hf", chat_template="chatml",
                          config={"train": {"max_steps": 4}}, status="done", steps=4, final_loss=0.9)
        s.add(run)
        s.flush()
        gguf = Artifact(training_run_id=run.id, kind="gguf", quant="q4_k_m", path="/runs/x/tuned.gguf",
                        sha256="a" * 64, bytes=1000)
        s.add(gguf)
        s.flush()
        models = {
            "vanilla": RegisteredModel(name="ollatune/demo-ko-vanilla", host="embedded", digest="sha256:" + "1" * 64,
                                       role="vanilla", template_family="chatml"),
            "tuned": RegisteredModel(artifact_id=gguf.id, name="ollatune/demo-ko", host="embedded",
                                     digest="sha256:" + "2" * 64, role="tuned", template_family="chatml"),
        }
        for i, (role, model) in enumerate(models.items()):
            s.add(model)
            s.flush()
            eval_run = EvalRun(run_id=RUN_ID, suite="demo-ko", suite_hash="h" * 64, model_id=model.id,
                               params={"tokenizer": "chars"}, status="done")
            for ex_id, question, reference, out_v, out_t, em, f1 in EXAMPLES:
                output = (out_v, out_t)[i]
                prediction = Prediction(example_id=ex_id, reference=reference, raw=output + "<|im_end|>",
                                        cleaned=output,
                                        prompt=json.dumps([{"role": "user", "content": question}], ensure_ascii=False))
                prediction.scores = [Score(metric="exact_match", value=em[i]), Score(metric="char_f1", value=f1[i])]
                eval_run.predictions.append(prediction)
            s.add(eval_run)
        # An eval run that never finished does not count in the comparison.
        s.add(EvalRun(run_id=RUN_ID, suite="demo-ko", suite_hash="h" * 64, model_id=models["tuned"].id,
                      params={}, status="running"))


def _write_run_folders(settings: Settings) -> None:
    run_dir = settings.runs_dir / RUN_ID
    run_dir.mkdir(parents=True)
    lines = [_event("pipeline", "start", recipe="demo-ko"), _event("finetune", "start", max_steps=4)]
    for step, loss in enumerate([2.0, 1.5, 1.2, 0.9], start=1):
        lines.append(_event("finetune", "progress", done=step, total=4, unit="steps", eta_s=4 - step))
        lines.append(_event("finetune", "metric", step=step, loss=loss, lr=2e-4))
    lines.append(_event("finetune", "artifact", kind="adapter", path=str(run_dir / "adapter"), bytes=2**20))
    lines.append(_event("finetune", "done", steps=4))
    lines.append(_event("pipeline", "done"))
    # the job was killed in the middle of writing its next line
    (run_dir / "events.jsonl").write_text("".join(lines) + '{"ts": 2.0, "run": "' + RUN_ID + '", ',
                                          encoding="utf-8")
    crashed = settings.runs_dir / "crashed-run"
    crashed.mkdir()
    (crashed / "events.jsonl").write_text(
        _event("pipeline", "start", run="crashed-run", ts=0.5)
        + _event("finetune", "metric", run="crashed-run", step=1, loss=3.2)
        + _event("finetune", "error", run="crashed-run", message="CUDA out of memory", hint="lower batch_size"),
        encoding="utf-8")


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Settings:
    """A workspace with one evaluated run in the store and on disk, and one crashed run on disk only."""
    monkeypatch.setenv("OLLATUNE_HOME", str(tmp_path))
    settings = Settings(home=tmp_path).ensure()
    _populate_store(settings)
    _write_run_folders(settings)
    return settings


async def wait_until(pilot, condition, timeout: float = 20.0) -> None:  # noqa: ANN001
    """Let the app process messages until ``condition()`` holds (a job's child process runs meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await pilot.pause(0.05)


def _cell_text(cell) -> str:  # noqa: ANN001 - str (markup) or rich Text
    from rich.text import Text

    return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain


def test_runs_table_lists_store_and_folder_runs(workspace):
    async def scenario() -> None:
        app = OllatuneApp(workspace)
        async with app.run_test(size=(140, 40)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert isinstance(app.screen, RunsScreen)
            table = app.screen.query_one(RunsTable)
            keys = [row.key.value for row in table.ordered_rows]
            assert set(keys) == {RUN_ID, "crashed-run"}
            assert _cell_text(table.get_cell(RUN_ID, "status")) == "done"
            assert _cell_text(table.get_cell(RUN_ID, "steps")) == "4"
            assert _cell_text(table.get_cell(RUN_ID, "loss")) == "0.9000"
            assert _cell_text(table.get_cell(RUN_ID, "evals")) == "2"
            # A folder-only run: its status, steps and loss come from its events log.
            assert _cell_text(table.get_cell("crashed-run", "status")) == "failed"
            assert _cell_text(table.get_cell("crashed-run", "loss")) == "3.2000"
            assert _cell_text(table.get_cell("crashed-run", "evals")) == "0"

    asyncio.run(scenario())


def test_enter_opens_run_with_loss_curve_and_follows_the_log(workspace):
    async def scenario() -> None:
        app = OllatuneApp(workspace)
        async with app.run_test(size=(140, 40)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            table = app.screen.query_one(RunsTable)
            table.focus()
            table.move_cursor(row=table.get_row_index(RUN_ID))
            await pilot.press("enter")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, RunScreen) and screen.run_id == RUN_ID
            plot = screen.query_one(LossPlot)
            assert plot.steps == [1, 2, 3, 4]
            assert plot.losses == [2.0, 1.5, 1.2, 0.9]
            stage = screen.query_one(StageProgress)
            assert (stage.stage, stage.state, stage.done, stage.total) == ("finetune", "done", 4, 4)
            log_text = "\n".join(line.text for line in screen.query_one(EventLog).lines)
            assert "step 1" in log_text and "artifact" in log_text

            # The job goes on: the torn last line is completed and a new step arrives.
            log = workspace.runs_dir / RUN_ID / "events.jsonl"
            with open(log, "a", encoding="utf-8") as f:
                f.write('"stage": "finetune", "type": "metric", "step": 5, "loss": 0.7}\n')
                f.write(json.dumps({"ts": 3.0, "run": RUN_ID, "stage": "finetune", "type": "metric",
                                    "step": 6, "loss": 0.6}) + "\n")
            await wait_until(pilot, lambda: plot.steps[-1] == 6)
            assert plot.losses[-2:] == [0.7, 0.6]

            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, RunsScreen)

    asyncio.run(scenario())


def test_compare_screen_shows_metrics_and_examples(workspace):
    async def scenario() -> None:
        app = OllatuneApp(workspace)
        async with app.run_test(size=(160, 50)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            table = app.screen.query_one(RunsTable)
            table.move_cursor(row=table.get_row_index(RUN_ID))
            await pilot.press("c")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, CompareScreen)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert screen.error is None
            metrics = screen.query_one("#metrics")
            rows = {row.key.value: [_cell_text(c) for c in metrics.get_row(row.key)] for row in metrics.ordered_rows}
            # metric, vanilla, tuned, delta, winner, examples won (vanilla/tuned/tie)
            assert rows["exact_match"] == ["exact_match", "0.000", "0.500", "+0.500", "tuned", "0/1/1"]
            assert rows["char_f1"] == ["char_f1", "0.400", "0.800", "+0.400", "tuned", "0/1/1"]
            examples = screen.query_one("#examples")
            assert examples.row_count == 2
            first = [_cell_text(c) for c in examples.get_row("ex-1")]
            assert first[:5] == ["ex-1", "대한민국의 수도는?", "서울", "부산", "서울"]
            second = [_cell_text(c) for c in examples.get_row("ex-2")]
            assert second[4] == "SELECT [name] FROM t"  # model output shown as text, not read as markup
            assert "0.000 / 1.000" in first  # exact_match of ex-1, vanilla / tuned
            detail = str(screen.query_one("#example-detail").render())
            assert "대한민국의 수도는?" in detail

    asyncio.run(scenario())


def test_compare_without_evals_says_what_to_do(workspace):
    async def scenario() -> None:
        app = OllatuneApp(workspace)
        async with app.run_test() as pilot:
            app.push_screen(CompareScreen("crashed-run"))
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert "no finished evaluation" in (app.screen.error or "")
            assert app.is_running

    asyncio.run(scenario())


def test_event_tail_holds_back_a_torn_line(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_text('{"type": "start", "stage": "data"}\n{"type": "metric", "st', encoding="utf-8")
    tail = EventTail(log)
    assert [e["type"] for e in tail.read_new()] == ["start"]
    assert tail.read_new() == []
    with open(log, "a", encoding="utf-8") as f:
        f.write('ep": 1, "loss": 1.5, "note": "한국어"}\nnot json\n')
    assert tail.read_new() == [{"type": "metric", "step": 1, "loss": 1.5, "note": "한국어"}]


def test_summaries_of_runs(workspace):
    assert summarize_events([{"stage": "pipeline", "type": "start"}], stale=True).status == "stopped"
    assert summarize_events([{"stage": "finetune", "type": "done"}]).status == "done"
    runs = {r.run_id: r for r in load_runs(workspace)}
    assert runs[RUN_ID].in_store and runs[RUN_ID].evals == 2
    assert not runs["crashed-run"].in_store and runs["crashed-run"].status == "failed"


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
