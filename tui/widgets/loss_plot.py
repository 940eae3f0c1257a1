"""The live training-loss curve."""

from __future__ import annotations

import math
import time
from typing import Any

from textual_plotext import PlotextPlot

MAX_TICKS = 6
REDRAW_S = 0.25  # a curve fed 20 metric events a second is drawn at most this often


def step_ticks(steps: list[int], most: int = MAX_TICKS) -> list[int]:
    """Whole-step x ticks, evenly spaced, first and last included: a training step is never 2.5."""
    if not steps:
        return []
    lo, hi = min(steps), max(steps)
    if hi - lo < most:
        return list(range(lo, hi + 1))
    stride = math.ceil((hi - lo) / (most - 1))
    ticks = list(range(lo, hi, stride))
    if hi - ticks[-1] < stride / 2 and len(ticks) > 1:
        ticks[-1] = hi
    else:
        ticks.append(hi)
    return ticks


class LossPlot(PlotextPlot):
    """Training loss (and eval loss when the job logs it) by step, from metric events."""

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.eval_steps: list[int] = []
        self.eval_losses: list[float] = []
        self.note: str = ""  # why there is no curve, or where it comes from
        self.title_text = ""
        self._drawn_at = 0.0
        self._pending = None  # the timer of a deferred redraw

    def on_mount(self) -> None:
        self.replot()

    def add_metric(self, event: dict[str, Any]) -> bool:
        """Record one metric event; True when it carried a loss to draw."""
        step = event.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            return False
        added = False
        if _finite(event.get("loss")):
            self.steps.append(int(step))
            self.losses.append(float(event["loss"]))
            added = True
        if _finite(event.get("eval_loss")):
            self.eval_steps.append(int(step))
            self.eval_losses.append(float(event["eval_loss"]))
            added = True
        return added

    def no_curve(self, reason: str) -> None:
        """Say why nothing is drawn (a job that ended before logging a loss), instead of "waiting"."""
        if not self.losses and not self.eval_losses:
            self.note = reason
            self.replot(now=True)

    def replot(self, now: bool = False) -> None:
        """Redraw, at most every REDRAW_S: a sooner call schedules one redraw for the end of the interval."""
        self.title_text = self._title()
        wait = self._drawn_at + REDRAW_S - time.monotonic()
        if now or wait <= 0 or not self.is_mounted:
            self._draw()
        elif self._pending is None:
            self._pending = self.set_timer(wait, self._draw)

    def _title(self) -> str:
        if self.losses or self.eval_losses:
            return "loss" + (f" ({self.note})" if self.note else "")
        return f"loss: {self.note}" if self.note else "loss (waiting for the first logged step)"

    def _draw(self) -> None:
        if self._pending is not None:
            self._pending.stop()
            self._pending = None
        self._drawn_at = time.monotonic()
        plt = self.plt
        plt.clear_data()
        self.title_text = self._title()
        plt.title(self.title_text)
        plt.xlabel("step")
        if self.losses:
            plt.plot(self.steps, self.losses, label="train", marker="hd")
        if self.eval_losses:
            plt.plot(self.eval_steps, self.eval_losses, label="eval", marker="hd")
        ticks = step_ticks(sorted(set(self.steps + self.eval_steps)))
        if ticks:
            plt.xticks(ticks, [str(t) for t in ticks])
        self.refresh()


def _finite(value: Any) -> bool:
    """A number worth drawing: a diverged run logs NaN or inf losses, which the plot cannot scale to."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
