"""The Train and Export screens, driven through Textual's Pilot against a real workspace: the recipe form is
checked by the recipe model before any job starts, the jobs started are exactly the CLI's arguments, and the
quant report is read from an export marker in the pipeline's own format."""

from __future__ import annotations

import asyncio
import json
import sys

import yaml
from textual.widgets import DataTable, Input, OptionList, Select, SelectionList, Static

from export import ExportResult
from export.verify import QuantRow, VerifyReport
from finetune.recipe import load_recipe
from pipeline.markers import StageMarkers
from pipeline.run import ExportedModels, ExportInputs
from tui.app import OllatuneApp
from tui.screens.export import ExportScreen, read_export_report
from tui.screens.train import (
    TrainScreen,
    build_overrides,
    estimate_training,
    load_history,
    seconds_per_step,
    validate_form,
)
from tests import tui_helpers
from tests.tui_helpers import RUN_ID, _cell_text, screen_text, settle, wait_until

workspace = tui_helpers.workspace  # the fixture: one evaluated run in the store and on disk, one crashed run

PAST_RUN = "cpu-smoke-past"
JOB_OK = """import json, sys
print(json.dumps({"ts": 1.0, "run": "-", "stage": "pipeline", "type": "done", "args": sys.argv[1:]}), flush=True)
"""
JOB_FAILS = """import json, sys
print(json.dumps({"ts": 1.0, "run": "cpu-smoke-1", "stage": "finetune", "type": "error",
                  "message": "CUDA out of memory", "hint": "lower train.batch_size"}), flush=True)
sys.exit(1)
"""


def _job_script(tmp_path, source: str = JOB_OK) -> list[str]:  # noqa: ANN001
    path = tmp_path / "job.py"
    path.write_text(source, encoding="utf-8")
    return [sys.executable, str(path)]


def _past_run(settings) -> None:  # noqa: ANN001
    """A finished cpu-smoke training in the workspace: 2.5 s between its logged steps."""
    run_dir = settings.runs_dir / PAST_RUN
    run_dir.mkdir(parents=True)
    recipe = load_recipe("cpu-smoke").model_dump(mode="json")
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True, sort_keys=False), encoding="utf-8")
    events = [{"ts": 90.0, "run": PAST_RUN, "stage": "finetune", "type": "start"}]
    events += [{"ts": 100.0 + 2.5 * i, "run": PAST_RUN, "stage": "finetune", "type": "metric", "step": i + 1,
                "loss": 2.0 - 0.1 * i} for i in range(4)]
    events.append({"ts": 100.5, "run": PAST_RUN, "stage": "finetune", "type": "metric", "step": 2, "eval_loss": 1.9})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")


def _quant_row(quant: str, size: int, ppl: float, agreement: float, warnings: list[str]) -> dict:
    row = QuantRow(quant, None, size, size * 8 / 134_515_008, ppl, ppl - 6.5567, agreement, 7, 8, 8,  # type: ignore[arg-type]
                   list(warnings))
    return {"path": f"/runs/x/{quant}.gguf", "sha256": "b" * 64, **row.summary()}


def _write_export_marker(settings) -> None:  # noqa: ANN001
    """An adapter and an export marker for RUN_ID, written by the pipeline's own marker code and types."""
    run_dir = settings.runs_dir / RUN_ID
    (run_dir / "finetune" / "adapter").mkdir(parents=True, exist_ok=True)
    results = {}
    for label, hf_agreement in (("tuned", 1.0), ("vanilla", None)):
        f16 = VerifyReport(gguf=run_dir / f"export/{label}/{label}-f16.gguf", architecture="llama",
                           chat_template_matches=True, bos_id=1, eos_id=2, tokenization_matches=True,
                           agreement=hf_agreement, tokens=16 if hf_agreement else 0,
                           reference="cpu-float32" if hf_agreement else "",
                           reference_note="" if hf_agreement else "export.verify_tokens is 0")
        quants = {
            "q4_k_m": _quant_row("q4_k_m", 105_454_368, 7.0698, 0.375,
                                 ["greedy agreement with f16 is 0.38 (first 16 tokens, 8 probes): answers differ "
                                  "from the 16-bit model"] if label == "tuned" else []),
            "q8_0": _quant_row("q8_0", 144_811_296, 6.5812, 0.875, []),
        }
        results[label] = ExportResult(
            hf_dir=run_dir / f"export/{label}/hf", f16_gguf=run_dir / f"export/{label}/{label}-f16.gguf",
            gguf=run_dir / f"export/{label}/{label}-q4_k_m.gguf", quant="q4_k_m", sha256="b" * 64,
            bytes=105_454_368, artifact_id=1, verify={"f16": f16.summary(), **quants}, quants=quants)
    inputs = ExportInputs(export={"quant": "q4_k_m,q8_0"}, adapter="a" * 64, base="c" * 64)
    StageMarkers(run_dir).save("export", inputs, ExportedModels(**results), [])


class TrainApp(OllatuneApp):
    DEFAULT_MODE = "train"


class ExportApp(OllatuneApp):
    DEFAULT_MODE = "export"


async def _ready(pilot) -> None:  # noqa: ANN001
    await settle(pilot.app)
    await pilot.pause()
    await settle(pilot.app)
    await pilot.pause()


def _pick_recipe(screen: TrainScreen, name: str) -> None:
    listing = screen.query_one("#recipe-list", OptionList)
    listing.highlighted = listing.get_option_index(name)


# ------------------------------------------------------------------------------------------ the pure parts


def test_overrides_only_for_changed_fields_and_values_stay_yaml_strings():
    initial = {"train.lr": "0.002", "train.max_steps": "4", "train.epochs": "", "data.path": "builtin:ko"}
    values = dict(initial, **{"train.max_steps": "", "train.epochs": "2", "data.path": "my data: v2.jsonl"})
    assert build_overrides(initial, values) == ['data.path="my data: v2.jsonl"', "train.max_steps=null",
                                                "train.epochs=2"]
    result = validate_form("cpu-smoke", build_overrides(initial, values))
    assert result.recipe is not None and result.recipe.data.path == "my data: v2.jsonl"
    assert result.recipe.train.epochs == 2 and result.recipe.train.max_steps is None


def test_validation_puts_every_pydantic_error_under_its_field():
    result = validate_form("cpu-smoke", ["train.lr=0", "train.lora.dropout=1.5", "train.batch_size=two"])
    assert result.recipe is None
    assert result.field_errors["train.lr"] == "Input should be greater than 0"
    assert result.field_errors["train.lora.dropout"] == "Input should be less than 1"
    assert "valid integer" in result.field_errors["train.batch_size"]
    both = validate_form("cpu-smoke", ["train.epochs=2"])  # max_steps is still 4
    assert "set only one of train.max_steps" in both.field_errors["train.max_steps"]


def test_estimate_from_past_runs_or_unknown(workspace):
    _past_run(workspace)
    assert seconds_per_step([{"stage": "finetune", "type": "metric", "step": 1, "loss": 1, "ts": 0}]) is None
    history = load_history(workspace)
    assert [(p.run_id, p.s_per_step, p.steps) for p in history] == [(PAST_RUN, 2.5, 4)]
    smoke = estimate_training(load_recipe("cpu-smoke"), history)
    assert smoke.seconds == 10.0 and "4 steps x 2.50 s/step" in smoke.detail and PAST_RUN in smoke.detail
    longer = estimate_training(load_recipe("cpu-smoke", ["train.max_steps=100"]), history)
    assert longer.seconds == 250.0 and longer.short == "train ~4m 10s"
    other_batch = estimate_training(load_recipe("cpu-smoke", ["train.batch_size=8"]), history)
    assert other_batch.seconds is None and other_batch.short == "time unknown"


def test_export_report_reads_the_marker(workspace):
    _write_export_marker(workspace)
    report = read_export_report(RUN_ID, workspace.runs_dir / RUN_ID)
    assert [(q.model, q.quant, q.registered, q.status) for q in report.lines] == [
        ("tuned", "q4_k_m", True, "warning"), ("tuned", "q8_0", False, "ok"),
        ("vanilla", "q4_k_m", True, "ok"), ("vanilla", "q8_0", False, "ok")]
    assert round(report.lines[0].mib, 1) == 100.6 and report.lines[0].eot == "7/8"
    assert "on 100% of the probes (first 16 tokens)" in report.checks["tuned"]
    assert "not compared with the HF model: export.verify_tokens is 0" in report.checks["vanilla"]
    assert read_export_report("crashed-run", workspace.runs_dir / "crashed-run") is None


# ------------------------------------------------------------------------------------------ the Train screen


def test_train_bad_learning_rate_is_shown_and_starts_nothing(workspace, tmp_path):
    async def scenario() -> None:
        app = TrainApp(workspace, job_command=_job_script(tmp_path), reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(pilot)
            screen = app.screen
            assert isinstance(screen, TrainScreen) and screen.recipe == "demo-ko"
            error = screen.query_one("#e-train-lr", Static)
            assert not error.display
            screen.query_one("#f-train-lr", Input).value = "0"
            await pilot.pause()
            assert error.display and str(error.render()) == "Input should be greater than 0"
            assert screen.query_one("#f-train-lr", Input).has_class("-invalid")
            assert "1 problem(s) to fix" in str(screen.query_one("#recipe-info", Static).render())
            screen.query_one("#recipe-list", OptionList).focus()
            await pilot.press("s")
            await pilot.click("#start")
            await pilot.pause()
            assert app.job is None
            assert isinstance(app.screen, TrainScreen)
            # fixed, the error goes away
            screen.query_one("#f-train-lr", Input).value = "0.0005"
            await pilot.pause()
            assert not error.display
            assert "training time unknown" in str(screen.query_one("#recipe-info", Static).render())

    asyncio.run(scenario())


def test_train_good_form_starts_the_pipeline_with_its_overrides(workspace, tmp_path):
    async def scenario() -> None:
        _past_run(workspace)
        app = TrainApp(workspace, job_command=_job_script(tmp_path), reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(pilot)
            screen = app.screen
            listing = screen.query_one("#recipe-list", OptionList)
            prompt = listing.get_option("cpu-smoke").prompt
            assert "train ~10s" in prompt.plain and "check an install" in prompt.plain
            _pick_recipe(screen, "cpu-smoke")
            await pilot.pause()
            assert screen.recipe == "cpu-smoke"
            assert screen.query_one("#f-train-lora-r", Input).value == "8"
            assert "4 steps x 2.50 s/step" in str(screen.query_one("#recipe-info", Static).render())
            screen.query_one("#f-train-lr", Input).value = "0.001"
            screen.query_one("#f-train-max-steps", Input).value = "20"
            screen.query_one("#f-train-backend", Select).value = "hf"  # unchanged: no override
            screen.query_one("#f-until", Select).value = "finetune"
            await pilot.pause()
            assert "training ~50s: 20 steps" in str(screen.query_one("#recipe-info", Static).render())
            listing.focus()
            await pilot.press("s")
            await wait_until(pilot, lambda: app.job is not None and not app.job.running)
            assert app.job.label == "cpu-smoke"
            assert app.job.args == ["pipeline", "cpu-smoke", "--set", "train.lr=0.001", "--set",
                                    "train.max_steps=20", "--until", "finetune"]
            assert app.job.state == "done"
            # the job's end reloads the estimates; the form keeps what the user typed
            await _ready(pilot)
            assert screen.query_one("#f-train-lr", Input).value == "0.001"
            assert screen.overrides() == ["train.lr=0.001", "train.max_steps=20"]

    asyncio.run(scenario())


def test_train_shows_the_failed_job_with_its_next_step(workspace, tmp_path):
    async def scenario() -> None:
        app = TrainApp(workspace, job_command=_job_script(tmp_path, JOB_FAILS), reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(pilot)
            screen = app.screen
            assert "no job yet" in str(screen.query_one("#train-job").render())
            await pilot.click("#start")
            await wait_until(pilot, lambda: app.job is not None and not app.job.running)
            await pilot.pause()
            shown = str(screen.query_one("#train-job").render())
            assert "job demo-ko failed  run cpu-smoke-1" in shown
            assert "finetune: CUDA out of memory" in shown and "next: lower train.batch_size" in shown

    asyncio.run(scenario())


def test_train_prefills_the_data_chosen_on_the_data_screen(workspace, tmp_path):
    async def scenario() -> None:
        app = TrainApp(workspace, job_command=_job_script(tmp_path), reattach=False)
        app.selected_data = {"source": "builtin:ko-text2sql", "task": "text2sql", "eval_rows": 12}
        async with app.run_test(size=(160, 45)) as pilot:
            await _ready(pilot)
            screen = app.screen
            assert screen.query_one("#f-data-path", Input).value == "builtin:ko-text2sql"
            assert screen.query_one("#f-data-format", Select).value == "text2sql"
            assert screen.query_one("#f-data-eval-rows", Input).value == "12"
            assert "data from the Data screen" in str(screen.query_one("#recipe-info", Static).render())
            # another choice on the Data screen replaces the data fields only
            screen.query_one("#f-train-lr", Input).value = "0.01"
            app.switch_mode("export")
            await _ready(pilot)
            app.selected_data = {"source": "/data/ko.jsonl", "task": "alpaca"}
            app.switch_mode("train")
            await _ready(pilot)
            assert app.screen is screen
            assert screen.query_one("#f-data-path", Input).value == "/data/ko.jsonl"
            assert screen.query_one("#f-data-format", Select).value == "alpaca"
            assert screen.query_one("#f-train-lr", Input).value == "0.01"
            app.selected_data = {"source": "builtin:ko-text2sql", "task": "text2sql", "eval_rows": 12}
            screen.query_one("#f-train-lr", Input).value = "0.002"
            app.switch_mode("export")
            await _ready(pilot)
            app.switch_mode("train")
            await _ready(pilot)
            # epochs instead of steps
            screen.query_one("#f-train-max-steps", Input).value = ""
            screen.query_one("#f-train-epochs", Input).value = "1.5"
            await pilot.pause()
            await pilot.click("#start")
            await wait_until(pilot, lambda: app.job is not None and not app.job.running)
            assert app.job.args == ["pipeline", "demo-ko", "--set", "data.path=builtin:ko-text2sql", "--set",
                                    "data.format=text2sql", "--set", "data.eval_rows=12", "--set",
                                    "train.max_steps=null", "--set", "train.epochs=1.5", "--until", "evals"]

    asyncio.run(scenario())


def test_train_form_scrolls_at_80x24_with_start_in_view(workspace, tmp_path):
    async def scenario() -> None:
        app = TrainApp(workspace, job_command=_job_script(tmp_path), reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(pilot)
            screen = app.screen
            start = screen.query_one("#start")
            assert start.region.height == 1 and start.region.bottom <= 23
            until = screen.query_one("#f-until")
            until.focus()
            await pilot.pause()
            assert screen.query_one("#train-form").region.contains_region(until.region)
            text = screen_text(app)
            assert "Start" in text and "s Start" in text

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------ the Export screen


def test_export_lists_trained_runs_and_starts_the_export(workspace, tmp_path):
    async def scenario() -> None:
        app = ExportApp(workspace, job_command=_job_script(tmp_path), reattach=False)
        _write_export_marker(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(pilot)
            screen = app.screen
            assert isinstance(screen, ExportScreen)
            runs = screen.query_one("#export-run-table", DataTable)
            assert [row.key.value for row in runs.ordered_rows] == [RUN_ID]  # crashed-run has no adapter
            assert _cell_text(runs.get_cell(RUN_ID, "exported")) == "q4_k_m,q8_0"
            quants = screen.query_one("#quant-list", SelectionList)
            assert quants.selected == ["q4_k_m"]
            quants.select("q8_0")
            quants.select("iq4_xs")
            await pilot.pause()
            assert "--quant q4_k_m,q8_0,iq4_xs (registers q4_k_m)" in str(screen.query_one("#export-job").render())
            runs.focus()
            await pilot.press("s")
            await wait_until(pilot, lambda: app.job is not None and not app.job.running)
            assert app.job.label == f"export {RUN_ID}"
            assert app.job.args == ["export", RUN_ID, "--quant", "q4_k_m,q8_0,iq4_xs"]

    asyncio.run(scenario())


def test_export_without_quants_starts_nothing(workspace, tmp_path):
    async def scenario() -> None:
        app = ExportApp(workspace, job_command=_job_script(tmp_path), reattach=False)
        _write_export_marker(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(pilot)
            screen = app.screen
            screen.query_one("#quant-list", SelectionList).deselect_all()
            await pilot.pause()
            screen.query_one("#export-run-table").focus()
            await pilot.press("s")
            await pilot.pause()
            assert app.job is None
            assert "no type ticked" in str(screen.query_one("#export-job").render())

    asyncio.run(scenario())


def test_export_quant_table_renders_the_marker_and_reloads_after_a_job(workspace, tmp_path):
    async def scenario() -> None:
        (workspace.runs_dir / RUN_ID / "finetune" / "adapter").mkdir(parents=True)
        app = ExportApp(workspace, job_command=_job_script(tmp_path), reattach=False)
        async with app.run_test(size=(160, 45)) as pilot:
            await _ready(pilot)
            screen = app.screen
            table = screen.query_one("#quant-table", DataTable)
            assert table.row_count == 0 and not table.display
            assert "not exported yet" in str(screen.query_one("#report-title").render())
            _write_export_marker(workspace)  # the export job writes it; its end reloads the screen
            screen.query_one("#export-run-table").focus()
            await pilot.press("s")
            await wait_until(pilot, lambda: app.job is not None and not app.job.running)
            assert app.screen is not screen  # the job's live view is on top: the job's end reloaded it
            await wait_until(pilot, lambda: table.row_count == 4)
            first = [_cell_text(c) for c in table.get_row_at(0)]
            assert first == ["tuned", "q4_k_m*", "100.6", "6.27", "7.070", "+0.513", "0.38", "7/8", "warning"]
            notes = str(screen.query_one("#report-notes").render())
            assert "warning tuned q4_k_m: greedy agreement with f16 is 0.38" in notes
            assert ("tuned tuned-f16.gguf: greedy tokens equal to the HF model (cpu-float32) on 100% of the probes "
                    "(first 16 tokens)") in notes
            assert f"from runs/{RUN_ID}/stages/export.json" in notes

    asyncio.run(scenario())


def test_export_broken_marker_shows_the_file_and_next_step(workspace, tmp_path):
    async def scenario() -> None:
        run_dir = workspace.runs_dir / RUN_ID
        (run_dir / "finetune" / "adapter").mkdir(parents=True)
        (run_dir / "stages").mkdir()
        (run_dir / "stages" / "export.json").write_text('{"result": {"tuned": {}}}', encoding="utf-8")
        app = ExportApp(workspace, job_command=_job_script(tmp_path), reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(pilot)
            error = app.screen.query_one("#report-error", Static)
            assert error.display
            assert "export.json: field result.tuned.quants missing: export again (s)" in str(error.render())

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------ snapshots


def _snapshot_workspace(workspace) -> None:  # noqa: ANN001
    _past_run(workspace)
    _write_export_marker(workspace)


def test_snapshot_train_80x24(workspace, snap_compare):
    _snapshot_workspace(workspace)
    assert snap_compare(TrainApp(workspace, reattach=False), terminal_size=(80, 24), run_before=_ready)


def test_snapshot_train_160x45(workspace, snap_compare):
    _snapshot_workspace(workspace)

    async def bad_lr(pilot) -> None:  # noqa: ANN001
        await _ready(pilot)
        _pick_recipe(pilot.app.screen, "cpu-smoke")
        await pilot.pause()
        pilot.app.screen.query_one("#f-train-lr", Input).value = "-1"
        await pilot.pause()

    assert snap_compare(TrainApp(workspace, reattach=False), terminal_size=(160, 45), run_before=bad_lr)


def test_snapshot_export_80x24(workspace, snap_compare):
    _snapshot_workspace(workspace)
    assert snap_compare(ExportApp(workspace, reattach=False), terminal_size=(80, 24), run_before=_ready)


def test_snapshot_export_160x45(workspace, snap_compare):
    _snapshot_workspace(workspace)
    assert snap_compare(ExportApp(workspace, reattach=False), terminal_size=(160, 45), run_before=_ready)
