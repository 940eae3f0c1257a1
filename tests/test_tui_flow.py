"""The CPU loop driven entirely through the TUI at 80x24, the way a user does it with the keyboard: train a
few steps of SmolLM2 on the Train screen, export it on the Export screen, register it in the embedded
runtime and evaluate it (the Train screen again, now up to the evals stage), then open the vanilla-vs-tuned
comparison from History. Every job is a real ``python -m tui.cli ...`` child process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from textual.widgets import DataTable, OptionList

from tests.tui_helpers import _cell_text, screen_text, settle, wait_until
from tui.app import OllatuneApp
from tui.screens.compare import CompareScreen, ExamplesTable, MetricsTable
from tui.screens.export import ExportScreen
from tui.screens.run import RunScreen
from tui.screens.runs import HistoryScreen
from tui.screens.train import TrainScreen
from tui.widgets.loss_plot import LossPlot
from tui.widgets.stage_progress import StageProgress
from workspace.settings import Settings

pytestmark = pytest.mark.slow

STEPS = 2
SERVE_NAME = "ollatune/tui-flow"
# what the form has a field for (its id: the recipe key with - for . and _), and the text typed into it
FORM = {"f-train-batch-size": "4", "f-data-max-seq-len": "192", "f-train-max-steps": str(STEPS)}
MORE_SET = f"eval.limit=3 eval.num_predict=24 export.verify_tokens=4 export.probes=2 serve.name={SERVE_NAME}"
STAGES = ("data", "finetune", "export", "serve", "evals")  # the order of the "stop after" choices
JOB_TIMEOUT = 900.0


async def _tab_to(pilot, widget_id: str, limit: int = 60) -> None:  # noqa: ANN001
    """Press tab until the widget with this id has the focus (as a keyboard user reaches a field)."""
    for _ in range(limit):
        focused = pilot.app.focused
        if focused is not None and focused.id == widget_id:
            return
        await pilot.press("tab")
    raise AssertionError(f"tab never reached #{widget_id} (focus is on {pilot.app.focused!r})")


async def _type_into(pilot, widget_id: str, text: str) -> None:  # noqa: ANN001
    """Reach an input with tab, clear it (ctrl+u deletes everything left of the cursor) and type."""
    await _tab_to(pilot, widget_id)
    await pilot.press("end", "ctrl+u", *text)
    assert pilot.app.focused.value == text


async def _choose_stop_after(pilot, screen: TrainScreen, stage: str) -> None:  # noqa: ANN001
    """Open the "stop after" list with enter, walk to the stage with the arrows, take it with enter."""
    await _tab_to(pilot, "f-until")
    steps = STAGES.index(stage) - STAGES.index(screen.until)
    await pilot.press("enter", *(["down"] * steps if steps > 0 else ["up"] * -steps), "enter")
    await pilot.pause()
    assert screen.until == stage


async def _wait_job(pilot, started: float) -> None:  # noqa: ANN001
    app = pilot.app
    await wait_until(pilot, lambda: app.job is not None and not app.job.running,
                     timeout=max(60.0, JOB_TIMEOUT - (time.monotonic() - started)))
    await pilot.pause()
    assert app.job.state == "done", app.job.failure_text()


async def _cursor_to(pilot, table: DataTable, wanted, limit: int = 50) -> None:  # noqa: ANN001
    """Move a table's cursor down with the arrow key until ``wanted()`` holds."""
    for _ in range(limit):
        if wanted():
            return
        assert table.cursor_row < table.row_count - 1, "the row is not in the table"
        await pilot.press("down")
        await pilot.pause()
    raise AssertionError("the row was not reached")


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group: a job runs in a session of its own, and the embedded
    runtime's model runners it starts stay in that group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_bytes().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _stage_events(job, run_id: str) -> list[dict]:  # noqa: ANN001
    return [e for e in job.events if e.get("run") == run_id]


def test_cpu_loop_through_the_tui(session_home, smollm2_base, tmp_path):  # noqa: ARG001 - converts the base
    # A workspace of its own (the e2e tests expect theirs to hold a single demo-ko run, whatever the test
    # order) whose models folder is the shared one, where smollm2_base converted the base once per session.
    home = tmp_path / "workspace"
    home.mkdir()
    (home / "models").symlink_to(Settings(home=session_home).models_dir, target_is_directory=True)
    settings = Settings(home=home).ensure()
    app = OllatuneApp(settings)
    shown: list[tuple[str, str]] = []  # (severity, message) of every notification, kept after the toast is gone
    notify = app.notify

    def recording_notify(message, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        shown.append((kwargs.get("severity", "information"), str(message)))
        return notify(message, *args, **kwargs)

    app.notify = recording_notify  # type: ignore[method-assign]
    jobs: list = []  # every job the screens started
    app.add_job_listener(lambda job, _event: None if any(j is job for j in jobs) else jobs.append(job))
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            try:
                # 1. Train screen: demo-ko, a tiny budget, up to the finetune stage.
                await pilot.press("3")
                await wait_until(pilot, lambda: isinstance(app.screen, TrainScreen) and app.screen.recipe)
                train = app.screen
                await settle(app)
                assert isinstance(app.focused, OptionList) and app.focused.id == "recipe-list"
                await pilot.press("home")  # the first recipe, then down to demo-ko
                await pilot.pause()
                assert train.recipe != "demo-ko"
                await pilot.press("down")
                await pilot.pause()
                assert train.recipe == "demo-ko"
                for widget_id, text in FORM.items():
                    await _type_into(pilot, widget_id, text)
                await _choose_stop_after(pilot, train, "finetune")
                await _type_into(pilot, "f-extra", MORE_SET)
                await pilot.press("enter")  # on to the next control: the Start button
                assert app.focused is not None and app.focused.id == "start"
                assert train.validation is not None and train.validation.recipe is not None, train.validation
                await pilot.press("s")
                await pilot.pause()
                job = app.job
                assert job is not None and job.args[:2] == ["pipeline", "demo-ko"]
                assert job.args[-2:] == ["--until", "finetune"]
                assert {"train.max_steps=2", "train.batch_size=4", "data.max_seq_len=192",
                        f"serve.name={SERVE_NAME}"} <= set(job.args)
                assert isinstance(app.screen, RunScreen)  # the job's live view opened
                started = time.monotonic()
                await _wait_job(pilot, started)
                timings["train"] = time.monotonic() - started
                run_id = job.run_id
                assert run_id and run_id.startswith("demo-ko-")
                view = app.screen
                assert isinstance(view, RunScreen) and view.job is job
                plot = view.query_one(LossPlot)
                assert len(plot.losses) == STEPS and plot.steps == list(range(1, STEPS + 1))
                stage = view.query_one(StageProgress)
                assert (stage.stage, stage.state) == ("finetune", "done")
                assert any("finetune" in line and "done" in line for line in screen_text(app).splitlines())
                await pilot.press("escape")  # back to the form
                assert app.screen is train

                # 2. Export screen: the run is listed; export its default type (q4_k_m).
                await pilot.press("4")
                await wait_until(pilot, lambda: isinstance(app.screen, ExportScreen) and app.screen.runs)
                export = app.screen
                await settle(app)
                runs_table = export.query_one("#export-run-table", DataTable)
                assert run_id in [r.run_id for r in export.runs]
                assert app.focused is runs_table
                await _cursor_to(pilot, runs_table, lambda: export.selected == run_id)
                assert export.quants() == ["q4_k_m"]
                await pilot.press("s")
                await pilot.pause()
                job = app.job
                assert job.args == ["export", run_id, "--quant", "q4_k_m"]
                started = time.monotonic()
                await _wait_job(pilot, started)
                timings["export"] = time.monotonic() - started
                await pilot.press("escape")  # from the live view to the report
                assert app.screen is export
                await wait_until(pilot, lambda: export.report is not None and export.report.run_id == run_id)
                await settle(app)
                await pilot.pause()
                table = export.query_one("#quant-table", DataTable)
                rows = [[_cell_text(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
                assert ["tuned", "q4_k_m*"] in [r[:2] for r in rows], rows  # * marks the registered type
                assert any(r[:2] == ["vanilla", "q4_k_m*"] for r in rows), rows

                # 3. Register and evaluate: the same form, now up to the evals stage (the done stages are skipped).
                await pilot.press("3")
                await wait_until(pilot, lambda: app.screen is train)
                await _choose_stop_after(pilot, train, "evals")
                await pilot.press("s")
                await pilot.pause()
                job = app.job
                assert job.args[-2:] == ["--until", "evals"]
                started = time.monotonic()
                await _wait_job(pilot, started)
                timings["serve+evals"] = time.monotonic() - started
                assert job.run_id == run_id  # the same form values: the same run
                events = _stage_events(job, run_id)
                skipped = {e["stage"] for e in events if e.get("type") == "done" and e.get("skipped")}
                assert skipped == {"data", "finetune", "export"}
                assert {e["stage"] for e in events if e.get("type") == "done" and not e.get("skipped")} >= {
                    "serve", "evals"}
                from workspace.store import EvalRun, RegisteredModel, open_store, session_scope

                with session_scope(open_store(settings.db_path)) as s:
                    evaluated = s.scalars(select(EvalRun).where(EvalRun.run_id == run_id)).all()
                    models = {r.model.role: (r.model.name, r.model.host, r.status, len(r.predictions))
                              for r in evaluated}
                    registered = s.scalars(select(RegisteredModel).where(
                        RegisteredModel.name.like(f"{SERVE_NAME}%"))).all()
                    assert registered and all(m.role == "tuned" for m in registered)
                assert set(models) == {"vanilla", "tuned"}, models
                assert models["tuned"][0].startswith(SERVE_NAME)
                for name, host, status, predictions in models.values():
                    assert host.startswith("embedded"), (name, host)
                    assert status == "done" and predictions == 3

                # 4. History: the run's vanilla-vs-tuned comparison.
                await pilot.press("7")
                await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.runs)
                history = app.screen
                await settle(app)
                runs_table = history.query_one("#runs", DataTable)
                assert app.focused is runs_table
                await _cursor_to(pilot, runs_table,
                                 lambda: getattr(history.selected_run(), "run_id", None) == run_id)
                await pilot.press("c")
                await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen))
                compare = app.screen
                await wait_until(pilot, lambda: compare.comparison is not None or compare.error is not None,
                                 timeout=60)
                await settle(app)
                await pilot.pause()
                assert compare.error is None, compare.error
                assert compare.run_id == run_id
                c = compare.comparison
                assert (c.baseline, c.candidate) == ("vanilla", "tuned")
                metrics = compare.query_one(MetricsTable)
                assert metrics.row_count == len(c.metrics) >= 1
                assert {"mean:vanilla", "mean:tuned", "delta"} <= {k.value for k in metrics.columns}
                examples = compare.query_one(ExamplesTable)
                assert examples.row_count == len(compare.shown) == 3
                text = screen_text(app)
                assert "vanilla" in text and "tuned" in text and c.metrics[0].metric in text
                await pilot.press("escape")
                assert app.screen is history
            finally:
                job = app.job
                if job is not None and job.running:  # a failed assertion mid-job: leave no training behind
                    await app.stop_job(job)

    asyncio.run(scenario())
    timings["total"] = time.monotonic() - t0
    print("tui flow timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    assert [j.label for j in jobs] == ["demo-ko", f"export {jobs[0].run_id}", "demo-ko"] and app.job is jobs[-1]
    assert not any(j.alive() for j in jobs)
    if Path("/proc").is_dir():  # nothing a job started (the embedded runtime's model runners) outlives it
        deadline = time.monotonic() + 10
        while any(_group_members(j.pid) for j in jobs) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for j in jobs for pid in _group_members(j.pid)]
    errors = [message for severity, message in shown if severity == "error"]
    assert not errors, errors
