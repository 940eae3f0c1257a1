"""The live training-loss curve."""

from __future__ import annotations

import math
from typing import Any

from textual_plotext import PlotextPlot


class LossPlot(PlotextPlot):
    """Training loss (and eval loss when the job logs it) by step, from metric events."""

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.eval_steps: list[int] = []
        self.eval_losses: list[float] = []

    def on_mount(self) -> None:
        self.replot()

    def add_metric(self, event: dict[str, Any]) -> bool:
        """Record one metric event; True when it carried a loss to draw."""
        step = event.get("step")
        if not isinstance(step, (int, float)):
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

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title("loss" if self.losses else "loss (waiting for metric events)")
        plt.xlabel("step")
        if self.losses:
            plt.plot(self.steps, self.losses, label="train", marker="braille")
        if self.eval_losses:
            plt.plot(self.eval_steps, self.eval_losses, label="eval", marker="braille")
        self.refresh()


def _finite(value: Any) -> bool:
    """A number worth drawing: a diverged run logs NaN or inf losses, which the plot cannot scale to."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
