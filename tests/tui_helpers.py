"""A workspace for the TUI's tests: one evaluated run in the store and on disk, one crashed run on disk only;
and a Pilot helper that waits for a condition instead of sleeping."""

from __future__ import annotations

import json
import time

import pytest

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


def screen_text(app) -> str:  # noqa: ANN001
    """What the terminal shows now, as plain text lines (for asserting on what a user reads)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip).rstrip() for strip in strips)


async def settle(app, timeout: float = 60.0) -> None:  # noqa: ANN001
    """Wait until no worker of the app runs. A worker cancelled by a newer one of its exclusive group (a
    screen reloading twice) is not an error, only no longer waited for."""
    import asyncio

    from textual.worker import WorkerCancelled

    deadline = time.monotonic() + timeout
    while True:
        busy = [w for w in app.workers if not w.is_finished]
        if not busy:
            return
        assert time.monotonic() < deadline, f"workers still running: {busy}"
        try:
            await asyncio.wait_for(app.workers.wait_for_complete(busy), max(deadline - time.monotonic(), 0.1))
        except WorkerCancelled:
            pass
        except asyncio.TimeoutError:
            pass
