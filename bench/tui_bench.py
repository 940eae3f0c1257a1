"""Benchmark: the TUI's event-loop lag while a job streams events, and its start-up to first paint.

    .venv/bin/python bench/tui_bench.py [--seconds 20] [--rate 50] [--runs 5] [--out bench/results/tui_cpu.json]

Lag: the real ``OllatuneApp`` at 80x24 runs a job whose command is this script in ``emit`` mode, writing the
event shapes the pipeline writes (finetune progress per step, a metric per step with loss, lr, tokens/s,
an eval loss every few steps, log lines, an occasional long line) at ``--rate`` events per second, so the
run's live view (stage bar, loss plot, event log) renders every event. A probe coroutine asks to wake every
20 ms and records how late it wakes; the same probe runs with no job (the baseline). Both run twice: with
Textual's headless driver (the screen is composited but no terminal output is produced) and with a driver
that produces the terminal output of every frame and discards it (what a terminal costs, minus the terminal).

Start-up: cold interpreters, alternating, time from just before the parent spawns the process (its
``time.time()`` passed in the environment) to the first frame the app displays: a bare Textual app with
one Static, ``OllatuneApp`` on an empty workspace (its Home screen), and the same with the CLI module
imported first, as ``ollatune tui`` does. Medians, and the ratio to the bare app.
"""

from __future__ import annotations

import time

_SCRIPT_STARTED = time.time()  # for the start-up children: when the interpreter reached this script

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RUN_ID = "demo-ko-20260101-bench1"
PROBE_PERIOD_S = 0.020
LAG_TARGET_MS = 100.0
PAINT_TARGET_S = 1.0
SIZE = (80, 24)
T0_ENV = "TUI_BENCH_T0"
LONG_LINE = ("학습 데이터 검사: 답변이 잘린 행이 있습니다. data.max_seq_len 을 늘리거나 긴 행을 나누세요. " * 6 +
             "/home/user/.ollatune/runs/demo-ko-20260101-bench1/data/train.jsonl " * 3)


# the stream the job writes

def stream_events(rate: float, seconds: float, run: str = RUN_ID, seed: int = 0) -> list[dict[str, Any]]:
    """The events a ``pipeline demo-ko`` job writes over ``seconds`` at ``rate`` events per second, without
    their timestamps: mostly finetune steps (a progress and a metric event each), an eval loss every 20
    steps, a log line every 40 and a long one every 100, framed by the pipeline's and the stages' start and
    done events."""
    rng = random.Random(seed)
    n = max(int(rate * seconds), 12)
    head: list[dict[str, Any]] = [
        {"stage": "pipeline", "type": "start", "recipe": "demo-ko", "stages": ["data", "finetune", "export",
                                                                                "serve", "evals"]},
        {"stage": "data", "type": "start", "source": "samples/demo-ko.jsonl"},
        {"stage": "data", "type": "progress", "done": 1200, "total": 1200, "unit": "rows"},
        {"stage": "data", "type": "done", "rows": 1200, "rejected": 3},
        {"stage": "finetune", "type": "log", "level": "info", "message": "backend hf: no CUDA GPU, plain LoRA"},
    ]
    tail_len = 4
    # (n - head - start - tail) events for the steps: 2 per step plus the extras every 20/40/100 steps
    body = n - len(head) - 1 - tail_len
    total_steps = max(int(body / (2 + 1 / 20 + 1 / 40 + 1 / 100)), 1)
    events = [*head, {"stage": "finetune", "type": "start", "max_steps": total_steps, "base_model":
                      "smollm2-135m-instruct", "backend": "hf"}]
    step = 0
    while len(events) < n - tail_len:
        step += 1
        progress = min(step, total_steps)
        remaining = max(total_steps - progress, 0)
        events.append({"stage": "finetune", "type": "progress", "done": progress, "total": total_steps,
                       "unit": "steps", "eta_s": round(remaining * 0.04, 1)})
        loss = 2.4 * math.exp(-step / 150) + 0.7 + rng.uniform(-0.08, 0.08)
        lr = 2e-4 * 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0)))
        events.append({"stage": "finetune", "type": "metric", "step": step, "total_steps": total_steps,
                       "epoch": round(step / total_steps * 3, 3), "loss": round(loss, 4), "lr": lr,
                       "grad_norm": round(rng.uniform(0.4, 2.5), 4), "tokens": rng.randint(1800, 2300),
                       "tokens_per_s": round(rng.uniform(1100, 1400), 1), "eta_s": round(remaining * 0.04, 1)})
        if step % 20 == 0:
            events.append({"stage": "finetune", "type": "metric", "step": step, "total_steps": total_steps,
                           "epoch": round(step / total_steps * 3, 3), "eval_loss": round(loss + 0.15, 4)})
        if step % 40 == 0:
            events.append({"stage": "finetune", "type": "log", "level": "info",
                           "message": f"checkpoint saved: checkpoint-{step}"})
        if step % 100 == 0:
            events.append({"stage": "finetune", "type": "log", "level": "warning", "message": LONG_LINE})
    events = events[: n - tail_len]
    events += [
        {"stage": "finetune", "type": "artifact", "kind": "adapter",
         "path": f"/home/user/.ollatune/runs/{run}/adapter", "bytes": 3 * 2**20},
        {"stage": "finetune", "type": "done", "steps": step, "final_loss": events[-1].get("loss", 0.8)},
        {"stage": "export", "type": "start", "quants": ["q4_k_m"]},
        {"stage": "pipeline", "type": "done", "run_dir": f"/home/user/.ollatune/runs/{run}"},
    ]
    for e in events:
        e["run"] = run
    return events


def emit_main(argv: list[str]) -> None:
    """The job: write the stream to stdout, one JSON line per event, paced to the rate."""
    ap = argparse.ArgumentParser(prog="tui_bench.py emit")
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    args, _ = ap.parse_known_args(argv)  # the app appends the CLI args and --events jsonl
    events = stream_events(args.rate, args.seconds)
    t0 = time.monotonic()
    out = sys.stdout
    for i, e in enumerate(events):
        delay = t0 + i / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        out.write(json.dumps({"ts": round(time.time(), 4), **e}, ensure_ascii=False) + "\n")
        out.flush()


# measuring

def summary_ms(samples_s: list[float]) -> dict[str, float | int]:
    """p50, p95, p99, max and mean of durations in seconds, as milliseconds."""
    if not samples_s:
        return {"n": 0}
    ordered = sorted(samples_s)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    return {"n": len(ordered), "p50": round(pct(50) * 1000, 3), "p95": round(pct(95) * 1000, 3),
            "p99": round(pct(99) * 1000, 3), "max": round(ordered[-1] * 1000, 3),
            "mean": round(statistics.fmean(ordered) * 1000, 3)}


async def probe(stop: asyncio.Event, period: float = PROBE_PERIOD_S) -> list[tuple[float, float]]:
    """Ask to wake every ``period`` seconds until ``stop``; (time since start, lateness) of each wake."""
    samples: list[tuple[float, float]] = []
    start = time.perf_counter()
    while not stop.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(period)
        woke = time.perf_counter()
        samples.append((woke - start, max(woke - asked - period, 0.0)))
    return samples


_DRIVER: type | None = None


def null_terminal_driver() -> type:
    """A Textual driver that is not headless, so the app renders each frame to terminal output, which
    it counts and discards."""
    global _DRIVER
    if _DRIVER is None:
        from textual.drivers.headless_driver import HeadlessDriver

        class NullTerminalDriver(HeadlessDriver):
            written = 0
            writes = 0

            @property
            def is_headless(self) -> bool:
                return False

            def write(self, data: str) -> None:
                NullTerminalDriver.written += len(data)
                NullTerminalDriver.writes += 1

        _DRIVER = NullTerminalDriver
    return _DRIVER


class _Timings:
    """Times (wall and CPU) the live view's frames, its event handling and the widgets' parts of both, by
    wrapping their methods for the length of one measurement."""

    def __init__(self) -> None:
        self.parts: dict[str, list[tuple[float, float]]] = {}  # name -> (wall s, CPU s) per call
        self.latency: list[float] = []  # seconds from the job writing an event to the live view taking it
        self._undo: list[tuple[type, str, Any]] = []

    def install(self) -> None:
        from textual._compositor import Compositor
        from textual.app import App
        from textual.screen import Screen

        from tui.screens.base import NavBar
        from tui.screens.run import RunScreen
        from tui.widgets.event_log import EventLog
        from tui.widgets.loss_plot import LossPlot
        from tui.widgets.stage_progress import StageProgress

        if hasattr(Screen, "_on_timer_update"):  # one frame: layout, widget renders, terminal output
            self._time(Screen, "_on_timer_update", "frame", only=RunScreen)
        if hasattr(Compositor, "reflow"):  # a frame's layout, when a widget asked for one
            self._time(Compositor, "reflow", "frame: layout reflow")
        if hasattr(Compositor, "render_update"):  # a frame's widget renders, composited
            self._time(Compositor, "render_update", "frame: composite")
        self._time(RunScreen, "feed", "feed", latency=True)
        self._time(RunScreen, "_show_title", "feed: title")
        self._time(StageProgress, "apply", "feed: stage bar")
        self._time(EventLog, "add", "feed: event log")
        self._time(LossPlot, "replot", "feed: plot data")
        self._time(NavBar, "show_job", "listeners: nav line")
        self._time(LossPlot, "render", "frame: plot render")
        self._time(EventLog, "render_line", "frame: event log lines")
        if hasattr(App, "_display"):  # a frame turned into terminal output
            self._time(App, "_display", "frame: terminal output")

    def _time(self, owner: type, name: str, key: str, *, only: type | None = None, latency: bool = False) -> None:
        method = getattr(owner, name)
        samples = self.parts.setdefault(key, [])
        timings = self

        def timed(obj: Any, *args: Any, **kwargs: Any) -> Any:
            w, c = time.perf_counter(), time.thread_time()
            try:
                return method(obj, *args, **kwargs)
            finally:
                if only is None or isinstance(obj, only):
                    samples.append((time.perf_counter() - w, time.thread_time() - c))
                if latency and args:
                    now = time.time()
                    timings.latency.extend(now - e["ts"] for e in args[0] if isinstance(e.get("ts"), (int, float)))

        self._undo.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, timed)

    def watch_gc(self) -> None:
        """Garbage-collector pauses, one sample per collection, by generation."""
        import gc

        started: list[tuple[float, float]] = []

        def callback(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[:] = [(time.perf_counter(), time.thread_time())]
            elif started:
                w, c = started[0]
                key = f"gc gen{info.get('generation', '?')}"
                self.parts.setdefault(key, []).append((time.perf_counter() - w, time.thread_time() - c))

        gc.callbacks.append(callback)
        self._gc_callback = callback

    def watch_app(self, app: Any) -> None:
        """Every screen's job listener together, per event (the app calls them one by one)."""
        tell = app._tell
        samples = self.parts.setdefault("listeners", [])

        def timed_tell(job: Any, event: Any) -> None:
            w, c = time.perf_counter(), time.thread_time()
            tell(job, event)
            if event is not None:
                samples.append((time.perf_counter() - w, time.thread_time() - c))

        app._tell = timed_tell

    def uninstall(self) -> None:
        import gc

        callback = getattr(self, "_gc_callback", None)
        if callback in gc.callbacks:
            gc.callbacks.remove(callback)
        while self._undo:
            owner, name, value = self._undo.pop()
            if value is None:
                delattr(owner, name)
            else:
                setattr(owner, name, value)

    def report(self, wall: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, samples in self.parts.items():
            cpu = [s[1] for s in samples]
            out[key] = {"calls_per_s": round(len(samples) / wall, 1), "wall_ms": summary_ms([s[0] for s in samples]),
                        "cpu_ms": summary_ms(cpu), "first_cpu_ms": round(cpu[0] * 1000, 3) if cpu else None,
                        "cpu_share": round(sum(cpu) / wall, 3)}
        return out


def _switches() -> int:
    """Involuntary context switches of this process so far: how often the kernel gave its CPU to others."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def _make_app(home: Path, terminal: bool, job_command: list[str] | None = None) -> Any:
    from tui.app import OllatuneApp
    from workspace.settings import Settings

    app = OllatuneApp(Settings(home=home).ensure(), job_command=job_command, reattach=False)
    if terminal:
        app.driver_class = null_terminal_driver()
    return app


def _worst(samples: list[tuple[float, float]], k: int = 5) -> list[list[float]]:
    return [[round(at, 3), round(lag * 1000, 1)] for at, lag in sorted(samples, key=lambda s: -s[1])[:k]]


async def idle_lag(seconds: float, home: Path, *, terminal: bool = True) -> dict[str, Any]:
    """The probe on the Home screen with no job: what the loop's wake-ups cost by themselves."""
    app = _make_app(home, terminal)
    driver = null_terminal_driver()
    written0 = driver.written
    async with app.run_test(headless=not terminal, size=SIZE) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        stop = asyncio.Event()
        task = asyncio.ensure_future(probe(stop))
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        stop.set()
        samples = await task
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        screen = type(app.screen).__name__
    return {"screen": screen, "seconds": round(wall, 2), "lag_ms": summary_ms([s[1] for s in samples]),
            "worst": _worst(samples), "cpu_percent": round(100 * cpu / wall, 1),
            "terminal_bytes": driver.written - written0 if terminal else 0}


async def job_lag(seconds: float, rate: float, home: Path, *, terminal: bool = True) -> dict[str, Any]:
    """Start ``pipeline demo-ko`` as a job streaming ``rate`` events/s for ``seconds``; the probe runs from
    the job's start to its end on the live view."""
    from tui.screens.run import RunScreen
    from tui.widgets.event_log import EventLog
    from tui.widgets.loss_plot import LossPlot

    command = [sys.executable, str(Path(__file__).resolve()), "emit", "--rate", str(rate), "--seconds",
               str(seconds)]
    expected = stream_events(rate, seconds)
    app = _make_app(home, terminal, command)
    timings = _Timings()
    driver = null_terminal_driver()
    timings.install()
    timings.watch_gc()
    try:
        async with app.run_test(headless=not terminal, size=SIZE, notifications=True) as pilot:
            timings.watch_app(app)
            await pilot.pause()
            await app.workers.wait_for_complete()  # the Home screen's start-up reads (the doctor's probe)
            stop = asyncio.Event()
            task = asyncio.ensure_future(probe(stop))
            written0 = driver.written
            cpu0, t0, switches0 = time.process_time(), time.perf_counter(), _switches()
            job = app.start_job("bench", ["pipeline", "demo-ko"])
            if job is None:
                raise RuntimeError("the app refused to start the job")
            deadline = t0 + 3 * seconds + 60
            while job.running and time.perf_counter() < deadline:
                await asyncio.sleep(0.1)
            if job.running:
                await app.stop_job(job)
                raise RuntimeError(f"the job still ran {3 * seconds + 60:.0f} s after it started")
            stop.set()
            samples = await task
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            switches = _switches() - switches0
            written = driver.written - written0
            await pilot.pause()
            screen = app.screen
            if not isinstance(screen, RunScreen):
                raise RuntimeError(f"the job's live view is not on screen: {type(screen).__name__}")
            plot = screen.query_one(LossPlot)
            log = screen.query_one(EventLog)
            recorded = list(job.events)
            state, returncode, stderr = job.state, job.returncode, list(job.stderr_tail)
            plot_losses, plot_evals = list(plot.losses), list(plot.eval_losses)
            log_lines = len(log.lines)
            shown_events = screen.events_seen
    finally:
        timings.uninstall()

    def count(events: list[dict[str, Any]]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in events:
            counts[e["type"]] = counts.get(e["type"], 0) + 1
        return counts

    exp_losses = [e["loss"] for e in expected if e["type"] == "metric" and "loss" in e]
    exp_evals = [e["eval_loss"] for e in expected if e["type"] == "metric" and "eval_loss" in e]
    exp_counts, got_counts = count(expected), count(recorded)
    non_progress_ok = all(got_counts.get(k, 0) == v for k, v in exp_counts.items() if k != "progress")
    stream_s = (recorded[-1]["ts"] - recorded[0]["ts"]) if len(recorded) > 1 else 0.0
    lags = [s[1] for s in samples]
    return {
        "rate": rate, "seconds": seconds, "terminal_output": terminal,
        "job": {"state": state, "returncode": returncode, "stderr_tail": stderr[-3:]},
        "events": {"emitted": len(expected), "recorded": len(recorded), "shown_by_live_view": shown_events,
                   "by_type_emitted": exp_counts, "by_type_recorded": got_counts,
                   "all_but_progress_recorded": non_progress_ok,
                   "progress_coalesced": exp_counts.get("progress", 0) - got_counts.get("progress", 0),
                   "measured_rate": round((len(recorded) - 1) / stream_s, 1) if stream_s else None},
        "plot": {"losses": len(plot_losses), "losses_expected": len(exp_losses),
                 "all_losses": plot_losses == exp_losses, "eval_losses": len(plot_evals),
                 "all_eval_losses": plot_evals == exp_evals},
        "event_log_lines": log_lines,
        "seconds_measured": round(wall, 2),
        "lag_ms": summary_ms(lags),
        "lag_over_target": sum(1 for lag in lags if lag * 1000 >= LAG_TARGET_MS),
        "worst": _worst(samples),
        "cpu_percent": round(100 * cpu / wall, 1),
        "involuntary_switches_per_s": round(switches / wall, 1),
        "parts": timings.report(wall),
        "event_to_view_latency_ms": summary_ms(timings.latency),
        "terminal_bytes_per_s": round(written / wall) if terminal else 0,
    }


# start-up to first paint

def paint_main(kind: str) -> None:
    """A start-up child: build the app, print a JSON marker at its first displayed frame, exit."""
    t0 = float(os.environ.get(T0_ENV, _SCRIPT_STARTED))
    from textual.app import App, ComposeResult
    from textual.widgets import Static

    if kind == "bare":
        class Bare(App[None]):
            def compose(self) -> ComposeResult:
                yield Static("ollatune")

        base: type = Bare
        make = Bare
    else:
        if kind == "ollatune-cli":
            import importlib

            importlib.import_module("tui.cli")  # what `ollatune tui` imports before the app
        from tui.app import OllatuneApp
        from workspace.settings import get_settings

        settings = get_settings()
        base = OllatuneApp

        def make(cls: type) -> Any:
            return cls(settings)
    imported = time.time()

    class FirstPaint(base):  # type: ignore[misc, valid-type]
        painted = False

        def post_display_hook(self) -> None:
            super().post_display_hook()
            if FirstPaint.painted:
                return
            FirstPaint.painted = True
            now = time.time()
            marker = json.dumps({"paint_s": now - t0, "interpreter_s": _SCRIPT_STARTED - t0,
                                 "imports_s": imported - _SCRIPT_STARTED, "screen": type(self.screen).__name__,
                                 "widgets": len(list(self.screen.walk_children()))})
            os.write(1, marker.encode() + b"\n")  # Textual captures print() while it drives a terminal
            self.call_later(self.exit)

    app = FirstPaint() if kind == "bare" else make(FirstPaint)
    app.driver_class = null_terminal_driver()
    app.run(headless=False, size=SIZE)


def startup_once(kind: str, home: Path) -> dict[str, Any]:
    env = dict(os.environ, OLLATUNE_HOME=str(home))
    cmd = [sys.executable, str(Path(__file__).resolve()), "paint", kind]
    env[T0_ENV] = repr(time.time())
    t = time.perf_counter()
    # A session of its own: once it has painted, the child and what its Home screen started (the doctor's
    # probe, which imports torch) are stopped together, so they take no CPU from the next start.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
                            start_new_session=True)
    line = proc.stdout.readline() if proc.stdout else b""  # type: ignore[union-attr]
    parent_s = time.perf_counter() - t
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    out, err = proc.communicate(timeout=60)
    try:
        marker = json.loads(line)
    except ValueError as exc:
        raise RuntimeError(f"the {kind} start-up child printed no marker (exit code {proc.returncode}): "
                           f"{(line + out + err).decode(errors='replace')[-800:]}") from exc
    return {**marker, "parent_s": parent_s}


def measure_startup(runs: int, kinds: tuple[str, ...] = ("bare", "ollatune", "ollatune-cli"),
                    warmup: bool = True) -> dict[str, Any]:
    """``runs`` cold starts of each kind, alternating; one unrecorded warm-up round first (page cache, .pyc)."""
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="tui-bench-start-") as tmp:
        for round_ in range(runs + (1 if warmup else 0)):
            for kind in kinds:
                home = Path(tmp) / f"{kind}-{round_}"  # an empty workspace each time
                result = startup_once(kind, home)
                if warmup and round_ == 0:
                    continue
                samples[kind].append(result)
    out: dict[str, Any] = {"runs": runs, "warmup_round": warmup, "size": list(SIZE)}
    for kind, rows in samples.items():
        out[kind] = {"median_s": round(statistics.median(r["paint_s"] for r in rows), 4),
                     "median_parent_s": round(statistics.median(r["parent_s"] for r in rows), 4),
                     "median_interpreter_s": round(statistics.median(r["interpreter_s"] for r in rows), 4),
                     "median_imports_s": round(statistics.median(r["imports_s"] for r in rows), 4),
                     "paint_s": [round(r["paint_s"], 4) for r in rows],
                     "screen": rows[0]["screen"], "widgets": rows[0]["widgets"]}
    bare = out["bare"]["median_s"] if "bare" in out else None
    for kind in kinds:
        if kind != "bare" and bare:
            out[kind]["ratio_to_bare"] = round(out[kind]["median_s"] / bare, 2)
    return out


# the machine

def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("textual", "rich", "textual-plotext", "plotext"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "affinity": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else None, "python": platform.python_version(),
            "platform": platform.platform(), **versions}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


# the report

def _row(name: str, r: dict[str, Any]) -> str:
    lag = r["lag_ms"]
    return (f"{name:<34} {lag['p50']:>7.1f} {lag['p95']:>7.1f} {lag['p99']:>7.1f} {lag['max']:>7.1f} "
            f"{r['cpu_percent']:>5.0f}%")


def print_report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, Textual {m['textual']}, "
          f"Rich {m['rich']}; load average {result['load_before']} -> {result['load_after']}")
    print(f"\nevent-loop lag at {SIZE[0]}x{SIZE[1]} (probe every {PROBE_PERIOD_S * 1000:.0f} ms), ms; "
          f"target p99/max < {LAG_TARGET_MS:.0f}")
    print(f"{'':<34} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'cpu':>6}")
    for key, r in result["lag"].items():
        print(_row(key, r))
    for key, r in result["lag"].items():
        if "events" not in r:
            continue
        ev, plot = r["events"], r["plot"]
        print(f"\n{key}: {ev['recorded']}/{ev['emitted']} events recorded at {ev['measured_rate']}/s "
              f"(non-progress all recorded: {ev['all_but_progress_recorded']}, progress coalesced in the "
              f"queue: {ev['progress_coalesced']}); plot {plot['losses']}/{plot['losses_expected']} losses "
              f"(all: {plot['all_losses']}), {plot['eval_losses']} eval losses (all: {plot['all_eval_losses']})")
        lt = r["event_to_view_latency_ms"]
        print(f"  event written -> live view ms p50 {lt['p50']} p95 {lt['p95']} max {lt['max']}; "
              f"{r['involuntary_switches_per_s']} involuntary context switches/s; worst wakes [s, ms] {r['worst']}")
        print(f"  {'part':<24} {'calls/s':>7} {'wall p50':>8} {'p95':>6} {'max':>6} {'cpu mean':>8} {'p95':>6} "
              f"{'max':>6} {'first':>6} {'cpu share':>9}")
        for part, t in r["parts"].items():
            w, c = t["wall_ms"], t["cpu_ms"]
            if not c.get("n"):
                continue
            print(f"  {part:<24} {t['calls_per_s']:>7} {w['p50']:>8.2f} {w['p95']:>6.1f} {w['max']:>6.1f} "
                  f"{c['mean']:>8.2f} {c['p95']:>6.1f} {c['max']:>6.1f} {t['first_cpu_ms']:>6.1f} "
                  f"{100 * t['cpu_share']:>8.1f}%")
    s = result["startup"]
    print(f"\nstart-up to first paint, {s['runs']} cold starts each (alternating), median s; target < "
          f"{PAINT_TARGET_S:.0f} s")
    for kind in ("bare", "ollatune", "ollatune-cli"):
        if kind in s:
            k = s[kind]
            ratio = f"  {k['ratio_to_bare']:.2f}x bare" if "ratio_to_bare" in k else ""
            print(f"  {kind:<13} {k['median_s']:.3f} (interpreter {k['median_interpreter_s']:.3f}, imports "
                  f"{k['median_imports_s']:.3f}; {k['screen']}, {k['widgets']} widgets){ratio}  all {k['paint_s']}")


def run_all(seconds: float, rate: float, idle_seconds: float, runs: int, *,
            modes: tuple[str, ...] = ("headless", "terminal"), warmup: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
                              "load_before": load(), "targets": {"lag_ms": LAG_TARGET_MS,
                                                                 "first_paint_s": PAINT_TARGET_S},
                              "probe_period_ms": PROBE_PERIOD_S * 1000, "size": list(SIZE), "lag": {}}
    with tempfile.TemporaryDirectory(prefix="tui-bench-") as tmp:
        for mode in modes:
            terminal = mode == "terminal"
            result["lag"][f"idle, {mode}"] = asyncio.run(idle_lag(idle_seconds, Path(tmp) / f"idle-{mode}",
                                                                  terminal=terminal))
            result["lag"][f"job {rate:g} ev/s, {mode}"] = asyncio.run(
                job_lag(seconds, rate, Path(tmp) / f"job-{mode}", terminal=terminal))
    result["load_mid"] = load()
    result["startup"] = measure_startup(runs, warmup=warmup)
    result["load_after"] = load()
    return result


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["emit"]:
        emit_main(argv[1:])
        return
    if argv[:1] == ["paint"]:
        paint_main(argv[1])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the job streams")
    ap.add_argument("--rate", type=float, default=50.0, help="events per second")
    ap.add_argument("--idle-seconds", type=float, default=10.0, help="the baseline probe with no job")
    ap.add_argument("--runs", type=int, default=5, help="cold starts of each app")
    ap.add_argument("--modes", default="headless,terminal",
                    help="headless (no terminal output), terminal (output produced and discarded), or both")
    ap.add_argument("--no-warmup", action="store_true", help="record the first start-up round too")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tui_cpu.json")
    args = ap.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    unknown = set(modes) - {"headless", "terminal"}
    if unknown or not modes:
        ap.error(f"--modes: headless and/or terminal, not {args.modes!r}")
    result = run_all(args.seconds, args.rate, args.idle_seconds, args.runs, modes=modes,
                     warmup=not args.no_warmup)
    print_report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
