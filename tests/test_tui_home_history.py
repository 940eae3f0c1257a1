"""The Home screen (environment, recent runs and models, the next step) and the History screen (runs and their
lineage), driven through Textual's Pilot against a real store and real run folders; the next-step function and
the lineage reader on their own; snapshots at 80x24 and 160x45 with fixed environment facts."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from tui.app import OllatuneApp
from tui.screens.compare import CompareScreen
from tui.screens.home import HomeScreen, HomeTable, Suggestion, suggest_next, train_estimate
from tui.screens.run import RunScreen
from tui.screens.runs import HistoryScreen, RunsTable, human_bytes, human_duration, lineage_renderable
from tui.screens import sources
from tui.screens.sources import (
    ArtifactInfo,
    EvalInfo,
    HomeState,
    Lineage,
    ModelInfo,
    environment_lines,
    load_home,
    load_lineage,
    load_models,
    measured_step_seconds,
    probe_environment,
)
from workspace.settings import Settings
from workspace.store import Dataset, RegisteredModel, TrainingRun, open_store, session_scope
from tests import tui_helpers
from tests.tui_helpers import RUN_ID, _cell_text, screen_text, wait_until

workspace = tui_helpers.workspace  # the fixture: one evaluated run in the store and on disk, one crashed run

HOST = "http://127.0.0.1:11434"
CPU_FACTS = [
    ("python", "ok", "3.11.9 (/usr/bin/python3)"),
    ("torch", "ok", "2.5.1, 2 CPU threads"),
    ("cuda", "warn", "no CUDA GPU: training uses the hf backend (LoRA on CPU)"),
    ("unsloth", "warn", "train.backend=auto uses hf: no CUDA GPU"),
    ("llama-cpp-python", "ok", "0.3.9"),
    ("gguf converter", "ok", "installed"),
    ("ollama", "warn", f"no daemon at {HOST}; the embedded runtime (llama.cpp) will be started when needed "
                       "(`ollatune serve` to run it yourself)"),
    ("workspace", "ok", "~/.ollatune"),
    ("free disk", "ok", "41.2 GiB at ~/.ollatune (a 135M model run needs ~1 GiB; 8B models ~40 GiB)"),
    ("stage data", "ok", "load, validate, split (always available)"),
    ("stage finetune", "ok", "LoRA on the CPU (hf backend)"),
    ("stage export", "ok", "merge, GGUF conversion, quantize, verify"),
    ("stage serve", "ok", "registers with the embedded runtime (no daemon answers)"),
    ("stage evals", "warn", "unavailable: kiwipiepy not installed"),
]
GPU_FACTS = [
    ("torch", "ok", "2.5.1, 16 CPU threads"),
    ("gpu 0", "ok", "NVIDIA H200, 139.8 GiB VRAM, CUDA 12.4"),
    ("unsloth", "ok", "2025.3.1: train.backend=auto trains with Unsloth (imported only in the training process)"),
    ("ollama", "ok", f"version 0.6.2 answers at {HOST}"),
]


def pane_text(screen: HistoryScreen, width: int = 100) -> str:
    """The lineage pane's text as a terminal of ``width`` columns shows it."""
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(lineage_renderable(screen.lineage))
    return console.export_text()


def fixed_probe(facts):  # noqa: ANN001, ANN201
    def probe(settings):  # noqa: ANN001, ANN202
        yield from facts

    return staticmethod(probe)


@pytest.fixture
def cpu_facts(monkeypatch):
    monkeypatch.setattr(HomeScreen, "PROBE", fixed_probe(CPU_FACTS))


def _app(settings: Settings, **kw) -> OllatuneApp:
    return OllatuneApp(settings.model_copy(update={"ollama_host": HOST}), reattach=False, **kw)


async def _home_ready(pilot) -> HomeScreen:  # noqa: ANN001
    screen = pilot.app.screen
    assert isinstance(screen, HomeScreen)
    await wait_until(pilot, lambda: screen.probe_done and screen.state is not None and screen.train is not None)
    await pilot.pause()
    return screen


async def _history_ready(pilot, run_id: str | None = RUN_ID) -> HistoryScreen:  # noqa: ANN001
    await pilot.app.switch_mode("history")
    screen = pilot.app.screen
    assert isinstance(screen, HistoryScreen)
    await wait_until(pilot, lambda: screen.runs and screen.lineage is not None
                     and (run_id is None or screen.lineage.run_id == run_id))
    await pilot.pause()
    return screen


# ------------------------------------------------------------------------------ the next step, on its own


def _lineage(status="done", **kw) -> Lineage:  # noqa: ANN001
    return Lineage("demo-ko-0123456789", status, recipe="demo-ko", **kw)


GGUF = ArtifactInfo("gguf", "q4_k_m", 10**8, 4.9, "/x/tuned.gguf")
ADAPTER = ArtifactInfo("adapter", None, 10**6, None, "/x/adapter")
TUNED = ModelInfo("ollatune/demo-ko", "tuned", "embedded", "q4_k_m")
VANILLA = ModelInfo("ollatune/smollm2-vanilla", "vanilla", "embedded", "q4_k_m")


def _eval(role: str, status: str = "done") -> EvalInfo:
    return EvalInfo(1, "demo-ko", "m", role, status, None)


def _state(latest: Lineage | None) -> HomeState:
    return HomeState([], latest, [])


@pytest.mark.parametrize(("latest", "text", "mode"), [
    (None, "press 3 to train demo-ko (about 5 min on this CPU)", "train"),
    (_lineage("running"), "demo-ko-0123456789 is running outside this TUI: press 7 to follow it in History",
     "history"),
    (_lineage("failed", failed="finetune: CUDA out of memory", hint="lower train.batch_size"),
     "demo-ko-0123456789 failed in finetune: press 3 to run it again (finished stages are skipped); "
     "lower train.batch_size", "train"),
    (_lineage("stopped"), "demo-ko-0123456789 stopped: press 3 to run it again (finished stages are skipped)",
     "train"),
    (_lineage("done"), "press 3 to train demo-ko", "train"),  # stopped after the data stage
    (_lineage(artifacts=[ADAPTER], steps=48), "press 4 to export demo-ko-0123456789 to GGUF", "export"),
    (_lineage(artifacts=[ADAPTER, GGUF], steps=48),
     "press 5 to serve demo-ko-0123456789's GGUF (register it with Ollama)", "models"),
    (_lineage(artifacts=[ADAPTER, GGUF], models=[TUNED, VANILLA]),
     "press 6 to evaluate ollatune/demo-ko against the vanilla model", "evals"),
    (_lineage(artifacts=[ADAPTER, GGUF], models=[TUNED, VANILLA], evals=[_eval("vanilla"), _eval("tuned", "failed")]),
     "press 6 to evaluate ollatune/demo-ko against the vanilla model", "evals"),
    (_lineage(artifacts=[ADAPTER, GGUF], models=[TUNED, VANILLA], evals=[_eval("vanilla"), _eval("tuned")]),
     "press 6 to compare vanilla and tuned of demo-ko-0123456789", "evals"),
])
def test_next_step_for_each_workspace_state(latest, text, mode):
    s = suggest_next(_state(latest), train_hint="about 5 min on this CPU")
    assert s == Suggestion(text, mode=mode)


def test_next_step_while_a_job_runs_or_before_the_workspace_is_read():
    done = _lineage(artifacts=[ADAPTER, GGUF], models=[TUNED], evals=[_eval("vanilla"), _eval("tuned")])
    assert suggest_next(_state(done), running_job="train demo-ko") == Suggestion(
        "train demo-ko is running: press j to watch it", action="show_job")
    assert suggest_next(None) == Suggestion("reading the workspace…")
    assert suggest_next(_state(None)).text == "press 3 to train demo-ko"  # no estimate: none in the text


def test_train_estimate():
    # 48 steps x 8 rows x 150 tokens x 5.3 ms on 2 threads = 305 s
    assert train_estimate(48, 8, 448, base="smollm2-135m-instruct", gpu=False, threads=2) == "about 5 min on this CPU"
    assert train_estimate(48, 8, 448, base="smollm2-135m-instruct", gpu=False, threads=4) == "about 3 min on this CPU"
    assert train_estimate(48, 8, 64, base="smollm2-135m-instruct", gpu=False, threads=2) == "about 2 min on this CPU"
    assert train_estimate(48, 8, 448, base="x", gpu=True, threads=16, measured_s_per_step=0.5) == \
        "about 1 min on this GPU"
    assert train_estimate(60, 8, 448, base="x", gpu=False, threads=2, measured_s_per_step=30) == \
        "about 30 min on this CPU"
    assert train_estimate(48, 8, 448, base="x", gpu=True, threads=16) == "48 steps on this GPU"
    assert "slow on a CPU" in train_estimate(48, 8, 448, base="llama-3.1-8b", gpu=False, threads=2)
    assert train_estimate(None, 8, 448, base="x", gpu=False, threads=2) == ""


def test_measured_step_seconds(tmp_path):
    settings = Settings(home=tmp_path).ensure()
    assert measured_step_seconds(settings, "demo-ko") is None
    for run_id, t0, rate in (("demo-ko-aaa", 100.0, 2.0), ("demo-ko-bbb", 500.0, 3.0), ("other-ccc", 900.0, 9.0)):
        folder = settings.runs_dir / run_id
        folder.mkdir()
        (folder / "events.jsonl").write_text("".join(
            json.dumps({"ts": t0 + rate * i, "run": run_id, "stage": "finetune", "type": "metric", "step": i + 1,
                        "loss": 1.0}) + "\n" for i in range(4)), encoding="utf-8")
    assert measured_step_seconds(settings, "demo-ko") == pytest.approx(3.0)  # the newest demo-ko run
    assert measured_step_seconds(settings, "other") == pytest.approx(9.0)


def test_environment_lines_from_the_doctors_checks():
    checks = {name: (status, detail) for name, status, detail in CPU_FACTS}
    lines = {line.label: line for line in environment_lines(checks, done=True, ollama_host=HOST)}
    assert list(lines) == ["gpu", "unsloth", "ollama", "workspace", "disk", "stages"]
    assert lines["gpu"].status == "warn" and "no CUDA GPU" in lines["gpu"].text
    assert lines["disk"].text == "41.2 GiB at ~/.ollatune"  # the doctor's advice in brackets left out
    assert lines["stages"].text == "data ok · finetune ok · export ok · serve ok · evals --"
    assert lines["stages"].status == "warn"
    gpu = {n: (s, d) for n, s, d in GPU_FACTS}
    lines = {line.label: line for line in environment_lines(gpu, done=False, ollama_host=HOST)}
    assert lines["gpu"] == lines["gpu"].__class__("gpu", "ok", "NVIDIA H200, 139.8 GiB VRAM, CUDA 12.4")
    assert lines["workspace"].status == "pending" and lines["workspace"].text == "checking…"
    pending = {line.label: line for line in environment_lines({}, done=False, ollama_host=HOST)}
    assert pending["ollama"].text == f"asking {HOST}…"
    assert all(line.status == "pending" for line in pending.values())
    no_torch = {"torch": ("fail", "not installed: run the README's install command")}
    lines = {line.label: line for line in environment_lines(no_torch, done=True)}
    assert lines["gpu"].status == "fail" and lines["unsloth"].text == "unavailable: torch is not installed"


def test_probe_runs_the_doctor_in_a_child_process(tmp_path):
    settings = Settings(home=tmp_path / "ws", ollama_host="http://127.0.0.1:9")  # nothing listens on port 9
    checks = {name: (status, detail) for name, status, detail in probe_environment(settings)}
    assert checks["python"][0] == "ok"
    assert checks["workspace"] == ("ok", str(tmp_path / "ws"))
    assert "http://127.0.0.1:9" in checks["ollama"][1] and checks["ollama"][0] == "warn"
    assert {"stage data", "stage finetune", "stage export", "stage serve", "stage evals"} <= set(checks)


def test_probe_that_cannot_run_says_what_to_do(tmp_path, monkeypatch):
    settings = Settings(home=tmp_path)
    monkeypatch.setattr(sources, "_PROBE_SCRIPT", "import sys; print('half', file=sys.stderr); sys.exit(3)")
    assert list(probe_environment(settings)) == [
        ("doctor", "fail", "the environment check failed (half); run `ollatune doctor` for details")]
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    [(name, status, detail)] = list(probe_environment(settings))
    assert (name, status) == ("doctor", "fail") and "could not start" in detail and "ollatune doctor" in detail


# ------------------------------------------------------------------------------ the store readers


def test_lineage_of_an_evaluated_run(workspace):
    factory = open_store(workspace.db_path)
    with session_scope(factory) as s:
        ds = Dataset(name="ko_instructions", path="builtin:ko_instructions", sha256="d" * 64, format="alpaca",
                     rows=261)
        s.add(ds)
        s.flush()
        run = s.query(TrainingRun).filter_by(run_id=RUN_ID).one()
        run.dataset_id = ds.id
        run.config = {"name": "demo-ko", "train": {"max_steps": 4}}
        run.started_at = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
        run.finished_at = datetime(2026, 1, 1, 9, 4, 30, tzinfo=timezone.utc)
    lin = load_lineage(workspace, RUN_ID)
    assert (lin.recipe, lin.base_model, lin.backend, lin.status) == ("demo-ko", "smollm2-135m-instruct", "hf", "done")
    assert lin.dataset == "ko_instructions (261 rows, sha256 dddddddddddd)"
    assert (lin.steps, lin.final_loss, lin.train_s) == (4, 0.9, 270.0)
    assert [(a.kind, a.quant, a.bytes) for a in lin.artifacts] == [("gguf", "q4_k_m", 1000)]
    assert [(m.name, m.role, m.quant) for m in lin.models] == [
        ("ollatune/demo-ko", "tuned", "q4_k_m"), ("ollatune/demo-ko-vanilla", "vanilla", None)]
    assert [(e.suite, e.role, e.status) for e in lin.evals] == [
        ("demo-ko", "vanilla", "done"), ("demo-ko", "tuned", "done"), ("demo-ko", "tuned", "running")]
    assert lin.evaluated_roles() == {"vanilla", "tuned"} and lin.trained and lin.exported
    assert lin.failed is None


def test_lineage_shows_the_batches_and_what_auto_tune_tried(workspace):
    """run.json as the finetune stage writes it after an auto-tuned run: the lineage pane names the batches,
    the reason and one line per candidate, the chosen one marked, within 80 columns."""
    import json

    from finetune.autotune import Candidate, Trial, TuneResult

    trials = [Trial(Candidate(8, 1, "off"), "fits", 66.8, 1.024, 15997.0),
              Trial(Candidate(4, 2, "off"), "fits", 36.6, 1.014, 16160.0),
              Trial(Candidate(2, 4, "unsloth"), "fits", 6.9, 1.524, 10754.0),
              Trial(Candidate(1, 8, "unsloth"), "untimed", note="probe budget of 60 s spent")]
    tuned = TuneResult(Candidate(4, 2, "off"), "fastest of 3 that fit under 128.6 GiB; 1.50x the recipe's 2 x 4",
                       trials, 128.6, 54.6, key="k", default=Candidate(2, 4, "unsloth"), speedup_vs_default=1.503)
    run_json = workspace.runs_dir / RUN_ID / "finetune" / "run.json"
    run_json.parent.mkdir(parents=True, exist_ok=True)
    run_json.write_text(json.dumps({"backend": "unsloth", "trained": {"steps": 4, "micro_batch": 4, "grad_accum": 2,
                                                                      "checkpointing": "off"},
                                    "auto_tune": tuned.to_json()}))
    lin = load_lineage(workspace, RUN_ID)
    assert lin.batches == "4 x 2, checkpointing off"
    assert lin.auto_tune[0].startswith("fastest of 3") and len(lin.auto_tune) == 5
    assert [line.startswith(">") for line in lin.auto_tune[1:]] == [False, True, False, False]
    from rich.console import Console

    console = Console(width=80, record=True, file=io.StringIO())
    console.print(lineage_renderable(lin))
    text = console.export_text()
    assert "4 x 2, checkpointing off" in text and "16,160 tok/s" in text and "untimed" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    # a run trained before auto-tune existed (no "trained" record) shows neither row
    run_json.write_text(json.dumps({"backend": "hf"}))
    assert load_lineage(workspace, RUN_ID).batches is None


def test_lineage_of_a_run_known_only_by_its_folder(workspace):
    lin = load_lineage(workspace, "crashed-run")
    assert (lin.status, lin.steps, lin.final_loss, lin.in_store) == ("failed", 1, 3.2, False)
    assert lin.failed == "finetune: CUDA out of memory" and lin.hint == "lower batch_size"
    assert lin.artifacts == [] and lin.models == [] and lin.evals == []
    with pytest.raises(LookupError, match="neither in"):
        load_lineage(workspace, "no-such-run")


def test_readers_never_create_a_database(tmp_path):
    settings = Settings(home=tmp_path / "empty").ensure()
    state = load_home(settings)
    assert (state.runs, state.latest, state.models, state.train_s_per_step) == ([], None, [], None)
    assert load_models(settings) == []
    assert not settings.db_path.exists()


def test_home_state_of_the_workspace(workspace):
    state = load_home(workspace)
    assert [r.run_id for r in state.runs] == [RUN_ID, "crashed-run"]
    assert state.latest is not None and state.latest.run_id == RUN_ID
    assert [(m.name, m.role, m.run_id) for m in state.models] == [
        ("ollatune/demo-ko", "tuned", RUN_ID), ("ollatune/demo-ko-vanilla", "vanilla", None)]
    assert suggest_next(state).text == f"press 6 to compare vanilla and tuned of {RUN_ID}"


def test_human_sizes_and_durations():
    assert [human_bytes(n) for n in (None, 1000, 2048, 5 * 2**20, 3 * 2**30)] == [
        "-", "1000 B", "2.0 KiB", "5.0 MiB", "3.0 GiB"]
    assert [human_duration(s) for s in (None, 4.4, 75, 3 * 3600 + 120)] == ["-", "4s", "1m 15s", "3h 02m"]


# ------------------------------------------------------------------------------ the Home screen


def test_home_shows_environment_runs_models_and_next_step(workspace, cpu_facts):
    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _home_ready(pilot)
            env = str(screen.query_one("#env").render())
            assert "no CUDA GPU" in env and "train.backend=auto uses hf" in env and "41.2 GiB" in env
            assert "evals --" in env
            runs = screen.query_one("#home-runs", HomeTable)
            assert [row.key.value for row in runs.ordered_rows] == [RUN_ID, "crashed-run"]
            assert _cell_text(runs.get_cell("crashed-run", "status")) == "failed"
            models = screen.query_one("#home-models", HomeTable)
            assert [_cell_text(models.get_cell(r.key, "name")) for r in models.ordered_rows] == [
                "ollatune/demo-ko", "ollatune/demo-ko-vanilla"]
            assert screen.suggestion == Suggestion(f"press 6 to compare vanilla and tuned of {RUN_ID}", mode="evals")
            assert "press 6 to compare" in str(screen.query_one("#suggestion").render())
            # readable at 80x24: every environment line on one line, both tables with rows of height
            text = screen_text(app)
            assert "-- ollama     no daemon at http://127.0.0.1:11434" in text
            assert runs.region.height >= 3 and models.region.height >= 3
            assert models.region.bottom <= 23
            await pilot.press("enter")
            await pilot.pause()
            assert app.current_mode == "evals"

    asyncio.run(scenario())


def test_home_at_80x24_with_many_runs_and_models(workspace, cpu_facts):
    for i in range(8):
        folder = workspace.runs_dir / f"demo-ko-old{i}"
        folder.mkdir()
        (folder / "events.jsonl").write_text(json.dumps({"ts": 10.0 + i, "run": folder.name, "stage": "pipeline",
                                                         "type": "done"}) + "\n", encoding="utf-8")
    with session_scope(open_store(workspace.db_path)) as s:
        for i in range(6):
            s.add(RegisteredModel(name=f"ollatune/extra-{i}", host="embedded", digest=f"sha256:{i:064d}",
                                  role="vanilla", template_family="chatml"))

    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _home_ready(pilot)
            runs = screen.query_one("#home-runs", HomeTable)
            models = screen.query_one("#home-models", HomeTable)
            assert runs.row_count == 5 and models.row_count == 5  # the few newest
            assert runs.region.height == 6  # every row of the five
            assert models.region.height >= 3 and models.region.bottom <= 23  # above the footer, rows showing
            assert "ollatune/extra-5" in screen_text(app)

    asyncio.run(scenario())


def test_home_on_an_empty_workspace_suggests_training(tmp_path, cpu_facts):
    settings = Settings(home=tmp_path / "ws").ensure()

    async def scenario() -> None:
        app = _app(settings)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _home_ready(pilot)
            assert screen.suggestion == Suggestion("press 3 to train demo-ko (about 5 min on this CPU)", mode="train")
            assert "none yet" in str(screen.query_one("#runs-title").render())
            assert not screen.query_one("#home-runs").display
            await pilot.press("enter")
            await pilot.pause()
            assert app.current_mode == "train"
        assert not settings.db_path.exists()

    asyncio.run(scenario())


def test_home_does_not_wait_for_a_slow_probe(workspace, monkeypatch):
    release = threading.Event()

    def slow(settings):  # noqa: ANN001, ANN202 - an Ollama host that takes its time to answer
        yield ("torch", "ok", "2.5.1, 2 CPU threads")
        release.wait(20)
        yield ("ollama", "warn", f"nothing answers at {HOST}")

    monkeypatch.setattr(HomeScreen, "PROBE", staticmethod(slow))

    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            await wait_until(pilot, lambda: screen.state is not None and "torch" in screen.checks)
            await pilot.pause()
            # the workspace is shown and the keys answer while the probe waits for the host
            assert screen.query_one("#home-runs", HomeTable).row_count == 2
            assert f"asking {HOST}…" in str(screen.query_one("#env").render())
            assert not screen.probe_done
            await pilot.press("7")
            await pilot.pause()
            assert app.current_mode == "history"
            await pilot.press("1")
            release.set()
            await wait_until(pilot, lambda: screen.probe_done)
            await pilot.pause()
            assert f"nothing answers at {HOST}" in str(screen.query_one("#env").render())

    asyncio.run(scenario())


def test_home_shows_a_failing_probe(workspace, monkeypatch):
    def broken(settings):  # noqa: ANN001, ANN202
        yield ("torch", "ok", "2.5.1, 2 CPU threads")
        raise RuntimeError("doctor crashed")

    monkeypatch.setattr(HomeScreen, "PROBE", staticmethod(broken))

    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(160, 45)) as pilot:
            screen = await _home_ready(pilot)
            env = str(screen.query_one("#env").render())
            assert "the environment check failed: doctor crashed; run `ollatune doctor`" in env
            assert app.is_running

    asyncio.run(scenario())


def test_home_refresh_reads_again(workspace, cpu_facts):
    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _home_ready(pilot)
            with session_scope(open_store(workspace.db_path)) as s:
                s.add(RegisteredModel(name="ollatune/extra", host="embedded", digest="sha256:" + "3" * 64,
                                      role="vanilla", template_family="chatml"))
            await pilot.press("r")
            models = screen.query_one("#home-models", HomeTable)
            await wait_until(pilot, lambda: models.row_count == 3 and screen.probe_done)
            assert _cell_text(models.get_cell(models.ordered_rows[0].key, "name")) == "ollatune/extra"

    asyncio.run(scenario())


def test_home_follows_a_job_and_enter_opens_its_view(workspace, cpu_facts, tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import json, sys, time\n"
                      "print(json.dumps({'ts': 1.0, 'run': 'job-run', 'stage': 'pipeline', 'type': 'start'}),"
                      " flush=True)\n"
                      "try:\n    time.sleep(30)\nexcept KeyboardInterrupt:\n    sys.exit(130)\n", encoding="utf-8")

    async def scenario() -> None:
        app = _app(workspace, job_command=[sys.executable, str(script)])
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _home_ready(pilot)
            job = app.start_job("train demo-ko", ["pipeline", "demo-ko"], view=False)
            assert job is not None
            await wait_until(pilot, lambda: job.state == "running")
            await pilot.pause()
            assert screen.suggestion == Suggestion("train demo-ko is running: press j to watch it",
                                                   action="show_job")
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen))
            app.action_cancel_job()
            await wait_until(pilot, lambda: not job.running)
            await pilot.pause()
            assert screen.suggestion.mode == "evals"  # back to the workspace's next step

    asyncio.run(scenario())


# ------------------------------------------------------------------------------ the History screen


def test_history_lists_runs_with_the_lineage_of_the_highlighted_one(workspace, cpu_facts):
    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _history_ready(pilot)
            table = screen.query_one(RunsTable)
            assert [row.key.value for row in table.ordered_rows] == [RUN_ID, "crashed-run"]
            assert [_cell_text(c) for c in table.get_row(RUN_ID)][1:5] == ["done", "4", "0.9000", "2"]
            pane = pane_text(screen)
            for fact in ("recipe    demo-ko", "base      smollm2-135m-instruct", "backend   hf",
                         "gguf q4_k_m 1000 B", "ollatune/demo-ko  tuned q4_k_m  embedded",
                         "#1 demo-ko  vanilla  done", "tuned  running"):
                assert fact in pane, fact
            assert "recipe    demo-ko" in screen_text(app)  # on screen, not only in the widget
            # 80x24: the table keeps rows of height under the lineage pane
            lineage = screen.query_one("#lineage")
            assert table.region.height >= 5 and lineage.region.height >= 4
            assert lineage.region.y >= table.region.bottom and lineage.region.bottom <= 23

            table.focus()
            await pilot.press("down")
            await wait_until(pilot, lambda: screen.lineage is not None and screen.lineage.run_id == "crashed-run")
            await pilot.pause()
            pane = pane_text(screen)
            assert "finetune: CUDA out of memory" in pane and "lower batch_size" in pane
            assert "failed" in pane

    asyncio.run(scenario())


def test_history_enter_opens_the_run_and_c_its_comparison(workspace, cpu_facts):
    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(160, 45)) as pilot:
            screen = await _history_ready(pilot)
            table = screen.query_one(RunsTable)
            table.focus()
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, RunScreen) and app.screen.run_id == RUN_ID
            assert app.screen.run_dir == workspace.runs_dir / RUN_ID
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is screen
            await pilot.press("c")
            await pilot.pause()
            assert isinstance(app.screen, CompareScreen) and app.screen.run_id == RUN_ID

    asyncio.run(scenario())


def test_history_is_side_by_side_when_wide(workspace, cpu_facts):
    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(160, 45)) as pilot:
            screen = await _history_ready(pilot)
            table, lineage = screen.query_one(RunsTable), screen.query_one("#lineage")
            assert screen.has_class("-wide")
            assert lineage.region.x >= table.region.right and lineage.region.height >= 30
            await pilot.resize_terminal(80, 24)
            await pilot.pause()
            assert not screen.has_class("-wide") and lineage.region.y >= table.region.bottom

    asyncio.run(scenario())


def test_history_of_an_empty_workspace(tmp_path, cpu_facts):
    settings = Settings(home=tmp_path / "ws").ensure()

    async def scenario() -> None:
        app = _app(settings)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.switch_mode("history")
            screen = app.screen
            hint = screen.query_one("#runs-hint")
            await wait_until(pilot, lambda: "no runs" in str(hint.render()))
            assert "press 3 to train" in str(hint.render())
            await pilot.press("c")
            await pilot.pause()
            assert app.screen is screen  # nothing to compare: a warning, no screen
        assert not settings.db_path.exists()

    asyncio.run(scenario())


def test_history_shows_an_unreadable_store(tmp_path, cpu_facts):
    settings = Settings(home=tmp_path / "ws").ensure()
    settings.db_path.write_text("not a database", encoding="utf-8")

    async def scenario() -> None:
        app = _app(settings)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.switch_mode("history")
            screen = app.screen
            await wait_until(pilot, lambda: screen._last_error is not None)
            assert "could not read runs" in screen._last_error
            assert app.is_running

    asyncio.run(scenario())


# ------------------------------------------------------------------------------ snapshots

@pytest.fixture
def snap_workspace(workspace, monkeypatch):
    """The test workspace with fixed times, read in UTC, and fixed environment facts. No path of the workspace
    is on screen (the environment's workspace line comes from the facts), so its folder may vary."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    with session_scope(open_store(workspace.db_path)) as s:
        run = s.query(TrainingRun).filter_by(run_id=RUN_ID).one()
        run.config = {"name": "demo-ko"}
        run.started_at = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
        run.finished_at = datetime(2026, 1, 1, 9, 4, 30, tzinfo=timezone.utc)
        for i, m in enumerate(s.query(RegisteredModel).order_by(RegisteredModel.id)):
            m.created_at = datetime(2026, 1, 1, 9, 10 + i, tzinfo=timezone.utc)
    monkeypatch.setattr(HomeScreen, "PROBE", fixed_probe(CPU_FACTS))
    yield workspace
    monkeypatch.undo()
    time.tzset()


def _before(mode: str):  # noqa: ANN202
    async def run_before(pilot) -> None:  # noqa: ANN001
        if mode == "home":
            await _home_ready(pilot)
        else:
            await _history_ready(pilot)
        await wait_until(pilot, lambda: not any(w.is_running for w in pilot.app.workers))
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
def test_snapshot_home(snap_workspace, snap_compare, size):
    assert snap_compare(_app(snap_workspace), terminal_size=size, run_before=_before("home"))


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
def test_snapshot_history(snap_workspace, snap_compare, size):
    assert snap_compare(_app(snap_workspace), terminal_size=size, run_before=_before("history"))
