"""The CLI's live view of training, rendered into a string console from synthetic events."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from rich.console import Console

from tests.conftest import REPO
from tui.live import TrainingLiveView, format_duration, make_listener, sparkline
from tui.render import EventPrinter

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _console(terminal: bool = True) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, width=110, highlight=False, soft_wrap=True)


def _text(console: Console) -> str:
    return ANSI.sub("", console.file.getvalue())


def _last_frame(text: str) -> str:
    """The last frame of the live display (left on screen), spaces squashed."""
    frame = text[text.rindex("╭"):text.rindex("╯") + 1]
    return re.sub(r" +", " ", frame)


def ev(stage: str, type: str, **fields) -> dict:
    return {"ts": 1.0, "run": "demo-1a2b3c", "stage": stage, "type": type, **fields}


def _training(steps: int = 20, total: int = 40, gpu: bool = True) -> list[dict]:
    events = [
        ev("data", "start", path="ko.jsonl"),
        ev("data", "done", rows=100),
        ev("finetune", "log", message="base model cached"),
        ev("finetune", "start", backend="hf", base="tiny-base", max_steps=total),
    ]
    for i in range(1, steps + 1):
        events.append(ev("finetune", "progress", done=i, total=total, unit="steps", eta_s=float(5 * (total - i))))
        metric = {"step": i, "total_steps": total, "epoch": i / total, "loss": round(3.0 - 0.05 * i, 4),
                  "lr": 2e-4, "grad_norm": 0.75, "tokens_per_s": 1530.0, "eta_s": float(5 * (total - i))}
        if gpu:
            metric.update(gpu_reserved_gib=6.25, gpu_peak_gib=5.5)
        events.append(ev("finetune", "metric", **metric))
    return events


@pytest.fixture(autouse=True)
def _live_on(monkeypatch):
    monkeypatch.delenv("OLLATUNE_NO_LIVE", raising=False)


def test_live_view_shows_steps_metrics_eta_gpu_and_sparkline():
    console = _console()
    view = make_listener(console)
    assert isinstance(view, TrainingLiveView) and view.live_enabled
    for e in _training():
        view(e)
    assert view.running
    view(ev("finetune", "metric", step=20, eval_loss=2.125))  # eval-only: the train loss stays shown
    view(ev("finetune", "log", message="checkpoint saved", level="warning"))
    view(ev("finetune", "artifact", kind="adapter", path="/runs/x/adapter", bytes=2**21))
    view(ev("finetune", "done", steps=40, final_loss=1.0, first_loss=2.95))
    view.close()
    assert not view.running
    text = _text(console)
    final = _last_frame(text)
    assert "20/40 steps" in final and "50%" in final
    assert "step 20/40" in final
    assert "loss 2.0000" in final
    assert "eval loss 2.1250" in final
    assert "eta 1:40" in final  # 5 s x 20 steps left
    assert "gpu reserved 6.25 GiB" in final and "gpu peak 5.50 GiB" in final
    assert "lr 2.00e-04" in final and "grad norm 0.750" in final and "tokens/s 1,530" in final
    assert "epoch 0.50" in final
    spark = re.search(r"loss ([▁▂▃▄▅▆▇█]+) 2\.9500 → 2\.0000", final)
    assert spark and len(spark.group(1)) == 20
    assert spark.group(1)[0] == "█" and spark.group(1)[-1] == "▁"  # a falling loss
    # every other event is still a printed line, above the display or after it
    assert "base model cached" in text and "checkpoint saved" in text
    assert "artifact adapter: /runs/x/adapter (2.0 MiB)" in text
    assert "data done rows=100" in re.sub(r"\s+", " ", text)
    assert text.index("checkpoint saved") < text.rindex("╭")
    assert text.rindex("╯") < text.index("done steps=40")
    # metric and progress events of the finetune stage are not printed as lines while live
    assert "step 20  loss" not in text and "/40 steps, eta" not in text


def test_live_view_without_gpu_fields_or_eta_and_with_an_error():
    console = _console()
    view = make_listener(console)
    view(ev("finetune", "start", backend="hf", base="tiny-base"))
    for i in range(1, 4):
        view(ev("finetune", "metric", step=i, loss=2.0 + i))
    view(ev("finetune", "error", message="CUDA out of memory", hint="lower train.batch_size"))
    assert not view.running
    view.close()
    text = _text(console)
    final = _last_frame(text)
    assert "3 steps" in final and "gpu reserved –" in final and "gpu peak –" in final
    assert "loss 5.0000" in final and "3.0000 → 5.0000" in final
    assert "error CUDA out of memory" in text and "next: lower train.batch_size" in text
    assert text.rindex("╯") < text.index("error CUDA out of memory")


def test_close_after_a_job_raises_leaves_no_live_display():
    console = _console()
    view = make_listener(console)

    def job() -> None:
        for e in _training(steps=3):
            view(e)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        try:
            job()
        finally:
            view.close()
    assert not view.running
    assert console._live_stack == []  # noqa: SLF001 - rich's own record of active live displays
    view.close()  # idempotent
    text = _text(console)
    assert "3/40 steps" in _last_frame(text)
    assert text.rstrip().endswith("╯")
    assert "\x1b[?25h" in console.file.getvalue()  # the cursor is shown again


def _printed(events: list[dict], printer) -> str:  # noqa: ANN001
    for e in events:
        printer(e)
    return printer.console.file.getvalue()


@pytest.mark.parametrize("how", ["not-a-terminal", "env"])
def test_plain_output_equals_event_printer(how, monkeypatch):
    events = [*_training(steps=12), ev("finetune", "log", message="saved", level="warning"),
              ev("finetune", "done", steps=12, final_loss=2.4), ev("export", "start"),
              ev("export", "error", message="no llama.cpp", hint="install it")]
    terminal = how == "env"
    if how == "env":
        monkeypatch.setenv("OLLATUNE_NO_LIVE", "1")
    view = make_listener(_console(terminal))
    assert not view.live_enabled
    got = _printed(events, view)
    view.close()
    expected = _printed(events, EventPrinter(_console(terminal)))
    assert got == expected
    plain = ANSI.sub("", got)
    assert "step 10  loss 2.5" in plain and "step 11" not in plain  # metric lines throttled as before
    assert "8/40 steps, eta 160s" in plain
    assert "\x1b[2K" not in got and "╭" not in got  # no live display drawn


def test_elapsed_and_eta_move_between_events(monkeypatch):
    import tui.live as live

    now = [1000.0]
    monkeypatch.setattr(live, "time", SimpleNamespace(monotonic=lambda: now[0]))
    view = TrainingLiveView(_console(), live=True)
    view(ev("finetune", "start", max_steps=10))
    view(ev("finetune", "progress", done=4, total=10, unit="steps", eta_s=90.0))
    now[0] += 30
    console = Console(file=io.StringIO(), width=110)
    console.print(view.render())
    frame = console.file.getvalue()
    view.close()
    assert "elapsed 0:30" in frame and "eta 1:00" in frame and "4/10 steps" in frame


def test_helpers():
    assert sparkline([1.0, 2.0, 3.0]) == "▁▅█"
    assert sparkline([2.0, 2.0]) == "▅▅"
    assert sparkline([float("nan"), 1.0, 0.0]) == "█▁"
    assert len(sparkline([float(i) for i in range(200)])) == 60
    assert format_duration(100) == "1:40" and format_duration(3725) == "1:02:05" and format_duration(None) == "–"


def test_importing_the_live_view_is_cheap():
    script = "import tui.live, sys, json\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "rich.live" in modules
    assert not modules & {"torch", "transformers", "textual", "finetune"}
