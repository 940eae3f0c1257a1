"""A Rich live view of the finetune stage for the CLI: progress bar, latest metrics and a loss sparkline.

Every other event is printed line by line by :class:`tui.render.EventPrinter`, above the live display.
When the console is not a terminal (or ``OLLATUNE_NO_LIVE=1``) the listener prints exactly what
``EventPrinter`` prints.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tui.render import EventPrinter

STAGE = "finetune"
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60


def live_enabled(console: Console) -> bool:
    """A live display only on an interactive terminal, and only unless ``OLLATUNE_NO_LIVE`` is set."""
    if os.environ.get("OLLATUNE_NO_LIVE", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    return console.is_terminal and not console.is_dumb_terminal


def make_listener(console: Console | None = None, *, live: bool | None = None) -> "TrainingLiveView":
    """The CLI's event listener: a live view of training on a terminal, one line per event otherwise.

    Call ``close()`` in a ``finally`` so that a job that raises leaves no live display behind.
    """
    console = console or Console(file=sys.stderr, highlight=False)
    return TrainingLiveView(console, live=live_enabled(console) if live is None else live)


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """The last ``width`` finite values as unicode blocks, lowest ``▁`` to highest ``█``."""
    vals = [v for v in values if math.isfinite(v)][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        return SPARK_BLOCKS[len(SPARK_BLOCKS) // 2] * len(vals)
    top = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[round((v - lo) / (hi - lo) * top)] for v in vals)


def format_duration(seconds: float | None) -> str:
    """``m:ss`` under an hour, ``h:mm:ss`` above; ``–`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    total = max(int(round(seconds)), 0)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class TrainingState:
    """What the live view shows, folded from the finetune stage's events."""

    def __init__(self, start: dict[str, Any] | None = None) -> None:
        self.title = STAGE
        self.done = 0
        self.total: int | None = None
        self.t0 = time.monotonic()
        self.t_end: float | None = None
        self.eta_s: float | None = None
        self.eta_at = self.t0
        self.first_done: int | None = None
        self.latest: dict[str, float] = {}
        self.losses: list[float] = []
        self.first_loss: float | None = None
        if start:
            total = _number(start.get("total_steps")) or _number(start.get("max_steps"))
            if total and total > 0:
                self.total = int(total)
            about = " · ".join(escape(str(start[k])) for k in ("base", "backend") if start.get(k))
            self.title = f"[bold cyan]{STAGE}[/] {about}".rstrip()

    def progress(self, event: dict[str, Any]) -> None:
        done, total = _number(event.get("done")), _number(event.get("total"))
        if done is not None:
            self._step(int(done))
        if total and total > 0:
            self.total = int(total)
        self._eta(event)

    def metric(self, event: dict[str, Any]) -> None:
        step, total = _number(event.get("step")), _number(event.get("total_steps"))
        if step is not None:
            self._step(int(step))
        if total and total > 0:
            self.total = int(total)
        self._eta(event)
        for key in ("epoch", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s", "gpu_reserved_gib",
                    "gpu_peak_gib", "gpu_mem_gib"):
            value = _number(event.get(key))
            if value is not None:
                self.latest[key] = value
        loss = _number(event.get("loss"))
        if loss is not None:
            self.losses.append(loss)
            if self.first_loss is None:
                self.first_loss = loss

    def finish(self) -> None:
        if self.t_end is None:
            self.t_end = time.monotonic()

    def _step(self, done: int) -> None:
        if self.first_done is None:
            self.first_done = done - 1 if done > 0 else 0
        self.done = max(self.done, done)

    def _eta(self, event: dict[str, Any]) -> None:
        eta = _number(event.get("eta_s"))
        if eta is not None:
            self.eta_s, self.eta_at = eta, time.monotonic()

    def elapsed(self) -> float:
        return (self.t_end or time.monotonic()) - self.t0

    def eta(self) -> float | None:
        """The job's last ETA, counted down since it came; else from the step rate seen here."""
        if self.total and self.done >= self.total:
            return 0.0
        now = self.t_end or time.monotonic()
        if self.eta_s is not None:
            return max(self.eta_s - (now - self.eta_at), 0.0)
        steps = self.done - (self.first_done or 0)
        if self.total and steps > 0:
            return (now - self.t0) / steps * (self.total - self.done)
        return None


class TrainingLiveView:
    """An event listener: the finetune stage as a live display, every other event as a printed line."""

    def __init__(self, console: Console, *, live: bool = True, refresh_per_second: float = 4,
                 metric_every: int = 5) -> None:
        self.console = console
        self.printer = EventPrinter(console, metric_every=metric_every)
        self.live_enabled = live
        self.refresh_per_second = refresh_per_second
        self.state = TrainingState()
        self._live: Live | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether a live display is on screen now."""
        return self._live is not None

    def __call__(self, e: dict[str, Any]) -> None:
        if not self.live_enabled:
            self.printer(e)
            return
        stage, kind = e.get("stage"), e.get("type")
        if stage == STAGE and kind == "start":
            self.stop()
            self.printer(e)
            with self._lock:
                self.state = TrainingState(e)
            self._start()
            return
        steps = kind == "metric" or (kind == "progress" and e.get("unit", "steps") == "steps")
        if self._live is not None and stage == STAGE and steps:
            with self._lock:
                (self.state.progress if kind == "progress" else self.state.metric)(e)
            return
        if self._live is not None and (kind == "error" or (stage == STAGE and kind == "done")
                                       or (kind == "start" and stage != STAGE)):
            self.stop()
        self.printer(e)

    def close(self) -> None:
        """Stop the live display if one is running; safe to call more than once."""
        self.stop()

    def stop(self) -> None:
        live, self._live = self._live, None
        if live is None:
            return
        with self._lock:
            self.state.finish()
        live.stop()

    def _start(self) -> None:
        live = Live(console=self.console, get_renderable=self.render, transient=False,
                    refresh_per_second=self.refresh_per_second,
                    redirect_stdout=_isatty(sys.stdout), redirect_stderr=True)
        live.start()
        self._live = live

    def render(self) -> RenderableType:
        """The live display: progress bar, latest metrics, loss sparkline."""
        with self._lock:
            s = self.state
            return Panel(Group(self._bar(s), self._metrics(s), self._spark(s)), title=s.title,
                         title_align="left", border_style="cyan")

    @staticmethod
    def _bar(s: TrainingState) -> Table:
        grid = Table.grid(padding=(0, 2))
        bar = ProgressBar(total=s.total, completed=min(s.done, s.total) if s.total else s.done, width=36,
                          pulse=not s.total)
        steps = f"{s.done}/{s.total} steps" if s.total else f"{s.done} steps"
        pct = f"{100 * s.done / s.total:.0f}%" if s.total else ""
        grid.add_row(bar, Text(steps, style="bold"), Text(pct), Text(f"elapsed {format_duration(s.elapsed())}"),
                     Text(f"eta {format_duration(s.eta())}", style="cyan"))
        return grid

    @staticmethod
    def _metrics(s: TrainingState) -> Table:
        m = s.latest

        def fmt(key: str, spec: str, suffix: str = "") -> Text:
            return Text(format(m[key], spec) + suffix) if key in m else Text("–", style="dim")

        reserved = "gpu_reserved_gib" if "gpu_reserved_gib" in m else "gpu_mem_gib"
        step = f"{s.done}/{s.total}" if s.total else str(s.done)
        grid = Table.grid(padding=(0, 1))
        for _ in range(3):
            grid.add_column(style="dim", no_wrap=True)
            grid.add_column(no_wrap=True, min_width=10)
        grid.add_row("step", Text(step), "loss", fmt("loss", ".4f"), "tokens/s", fmt("tokens_per_s", ",.0f"))
        grid.add_row("epoch", fmt("epoch", ".2f"), "eval loss", fmt("eval_loss", ".4f"),
                     "gpu reserved", fmt(reserved, ".2f", " GiB"))
        grid.add_row("lr", fmt("lr", ".2e"), "grad norm", fmt("grad_norm", ".3f"),
                     "gpu peak", fmt("gpu_peak_gib", ".2f", " GiB"))
        return grid

    @staticmethod
    def _spark(s: TrainingState) -> Text:
        spark = sparkline(s.losses)
        if not spark:
            return Text.assemble(("loss ", "dim"), ("waiting for the first logged loss", "dim"))
        return Text.assemble(("loss ", "dim"), (spark, "green"), f"  {s.first_loss:.4f} → {s.losses[-1]:.4f}")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
