"""The TUI benchmark (bench/tui_bench.py) with tiny durations: its stream has the pipeline's event shapes,
its measurements come back complete, finite and positive, and its CLI writes the JSON record. The
targets themselves are the benchmark's business, not these tests'."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from workspace.events import STAGES, TYPES

ROOT = Path(__file__).resolve().parent.parent


def _load_bench():
    spec = importlib.util.spec_from_file_location("tui_bench", ROOT / "bench" / "tui_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["tui_bench"] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_stream_has_the_pipeline_shapes():
    events = bench.stream_events(50, 20)
    assert len(events) == 1000
    assert all(e["type"] in TYPES and e["stage"] in STAGES and e["run"] == bench.RUN_ID for e in events)
    metrics = [e for e in events if e["type"] == "metric"]
    losses = [e for e in metrics if "loss" in e]
    evals = [e for e in metrics if "eval_loss" in e]
    assert len(losses) > 400 and len(evals) >= 20
    assert all({"step", "total_steps", "lr", "tokens_per_s", "grad_norm", "epoch"} <= e.keys() for e in losses)
    assert [e["step"] for e in losses] == list(range(1, len(losses) + 1))
    progress = [e for e in events if e["type"] == "progress" and e["stage"] == "finetune"]
    assert progress[-1]["done"] == progress[-1]["total"]
    assert any(e["type"] == "log" and len(e["message"]) > 300 for e in events)  # the long line
    assert (events[0]["stage"], events[0]["type"]) == ("pipeline", "start")
    assert (events[-1]["stage"], events[-1]["type"]) == ("pipeline", "done")
    assert bench.stream_events(50, 20) == events  # the parent counts what the child writes


def test_emit_paces_the_stream(capfd):
    bench.emit_main(["--rate", "40", "--seconds", "0.5", "pipeline", "demo-ko", "--events", "jsonl"])
    lines = capfd.readouterr().out.splitlines()
    events = [json.loads(line) for line in lines]
    assert [{k: v for k, v in e.items() if k != "ts"} for e in events] == bench.stream_events(40, 0.5)
    span = events[-1]["ts"] - events[0]["ts"]
    assert span == pytest.approx((len(events) - 1) / 40, abs=0.15)


def test_summary_ms():
    s = bench.summary_ms([0.001, 0.002, 0.003, 0.004, 0.1])
    assert s == {"n": 5, "p50": 3.0, "p95": 100.0, "p99": 100.0, "max": 100.0, "mean": 22.0}
    assert bench.summary_ms([]) == {"n": 0}


@pytest.mark.timeout(180)
def test_cli_measures_and_writes_the_record(tmp_path, capsys):
    out = tmp_path / "tui.json"
    bench.main(["--seconds", "1.5", "--rate", "30", "--idle-seconds", "0.3", "--runs", "1", "--no-warmup",
                "--modes", "terminal", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "event-loop lag" in printed and "start-up to first paint" in printed
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["machine"]["cores"] >= 1 and record["machine"]["textual"]
    assert record["timestamp"] and len(record["load_before"]) == 3

    jobs = {k: v for k, v in record["lag"].items() if k.startswith("job")}
    idles = {k: v for k, v in record["lag"].items() if k.startswith("idle")}
    assert list(jobs) == ["job 30 ev/s, terminal"] and list(idles) == ["idle, terminal"]
    for r in idles.values():
        assert r["screen"] == "HomeScreen"
        assert r["lag_ms"]["n"] > 5 and _finite_positive(r["lag_ms"]["max"])
    emitted = len(bench.stream_events(30, 1.5))
    for r in jobs.values():
        assert r["job"]["state"] == "done", r["job"]
        ev = r["events"]
        assert ev["emitted"] == emitted and ev["all_but_progress_recorded"]
        assert ev["recorded"] == ev["shown_by_live_view"] == emitted - ev["progress_coalesced"]
        assert r["plot"]["all_losses"] and r["plot"]["losses"] == r["plot"]["losses_expected"] > 0
        assert r["plot"]["all_eval_losses"]
        lag = r["lag_ms"]
        assert lag["n"] > 5
        assert all(math.isfinite(lag[k]) and lag[k] >= 0 for k in ("p50", "p95", "p99", "max", "mean"))
        assert _finite_positive(lag["max"])
        frame = r["parts"]["frame"]
        assert frame["cpu_ms"]["n"] > 0 and _finite_positive(frame["cpu_ms"]["mean"])
        assert _finite_positive(r["parts"]["feed"]["wall_ms"]["max"])
        assert _finite_positive(r["event_to_view_latency_ms"]["p50"])
        assert _finite_positive(r["cpu_percent"])
    assert record["lag"]["job 30 ev/s, terminal"]["terminal_bytes_per_s"] > 0

    startup = record["startup"]
    assert startup["bare"]["screen"] == "Screen" and startup["ollatune"]["screen"] == "HomeScreen"
    for kind in ("bare", "ollatune", "ollatune-cli"):
        assert len(startup[kind]["paint_s"]) == 1
        assert _finite_positive(startup[kind]["median_s"]) and _finite_positive(startup[kind]["median_imports_s"])
    assert _finite_positive(startup["ollatune"]["ratio_to_bare"])
