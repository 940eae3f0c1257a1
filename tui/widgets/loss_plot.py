"""The live training-loss curve."""

from __future__ import annotations

import math
from typing import Any

from textual_plotext import PlotextPlot

MAX_TICKS = 6


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
            self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        if self.losses or self.eval_losses:
            title = "loss" + (f" ({self.note})" if self.note else "")
        else:
            title = f"loss: {self.note}" if self.note else "loss (waiting for the first logged step)"
        self.title_text = title
        plt.title(title)
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
