"""The TUI's History (runs), run and compare screens, driven through Textual's Pilot against a real store and a
real run folder."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest

from tui.app import JobEvent, JobProgress, JobState, OllatuneApp
from tui.screens.run import RunScreen
from tui.screens.runs import HistoryScreen, RunsTable
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


async def _open_history(app, pilot) -> HistoryScreen:  # noqa: ANN001
    """Switch to the History screen and wait until its runs are read."""
    await app.switch_mode("history")
    screen = app.screen
    assert isinstance(screen, HistoryScreen)
    await wait_until(pilot, lambda: screen.query_one(RunsTable).row_count > 0)
    await pilot.pause()
    return screen


def test_runs_table_lists_store_and_folder_runs(workspace):
    async def scenario() -> None:
        app = OllatuneApp(workspace, reattach=False)
        async with app.run_test(size=(140, 40)) as pilot:
            screen = await _open_history(app, pilot)
            table = screen.query_one(RunsTable)
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
        app = OllatuneApp(workspace, reattach=False)
        async with app.run_test(size=(140, 40)) as pilot:
            table = (await _open_history(app, pilot)).query_one(RunsTable)
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
            assert isinstance(app.screen, HistoryScreen)

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


