"""Progress of the current stage: a label (stage, counts, eta, state) and a bar."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar


class StageProgress(Horizontal):
    DEFAULT_CSS = """
    StageProgress { height: 1; }
    StageProgress > #stage-label { width: 1fr; }
    StageProgress > ProgressBar { width: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.stage: str | None = None
        self.state = "idle"  # idle | running | done | skipped | failed | cancelled
        self.done: int | None = None
        self.total: int | None = None
        self.unit = ""
        self.eta_s: float | None = None
        self._label = ""

    def compose(self) -> ComposeResult:
        yield Label("waiting for events", id="stage-label")
        yield ProgressBar(total=None, show_eta=False, id="stage-bar")

    def apply(self, event: dict[str, Any]) -> None:
        """Follow one event of the job; pipeline-level events leave the current stage alone."""
        stage, kind = event.get("stage"), event.get("type")
        if stage == "pipeline" and kind != "error":
            return
        if kind == "start":
            self.stage, self.state = stage, "running"
            self.done = self.total = self.eta_s = None
            self.unit = ""
        elif kind == "progress":
            if stage != self.stage:
                self.stage, self.state = stage, "running"
            self.done = event.get("done") if isinstance(event.get("done"), int) else self.done
            self.total = event.get("total") if isinstance(event.get("total"), int) else None
            self.unit = str(event.get("unit") or "")
            self.eta_s = event.get("eta_s") if isinstance(event.get("eta_s"), (int, float)) else None
        elif kind == "done":
            self.stage = stage
            self.state = "skipped" if event.get("skipped") else "done"
            if self.total:
                self.done = self.total
        elif kind == "error":
            if stage not in ("pipeline", self.stage):  # a stage that failed before its first progress
                self.stage, self.done, self.total, self.unit, self.eta_s = stage, None, None, "", None
            self.state = "failed"
        else:
            return
        self._render_state()

    def finish(self, state: str) -> None:
        """The job ended (failed or cancelled): the bar stops where it was instead of pulsing on."""
        if self.state in ("idle", "running", "failed"):
            self.state = state
            self._render_state()

    def _render_state(self) -> None:
        bar = self.query_one(ProgressBar)
        if self.state in ("done", "skipped") and not self.total:
            bar.update(total=1, progress=1)
        elif self.state in ("failed", "cancelled"):
            bar.update(total=self.total or 1, progress=self.done or 0)  # a known total: no animation
        else:
            bar.update(total=self.total, progress=self.done or 0)
        style = {"failed": "red", "cancelled": "magenta", "done": "green"}.get(self.state, "")
        parts = [f"[b]{self.stage or '-'}[/b]", f"[{style}]{self.state}[/]" if style else self.state]
        if self.done is not None:
            parts.append(f"{self.done}/{self.total if self.total is not None else '?'} {self.unit}".rstrip())
        if self.eta_s and self.state == "running":
            parts.append(f"eta {self.eta_s:.0f}s")
        label = "  ".join(parts)
        if label != self._label:  # the label's width is 1fr: a change needs no layout pass
            self._label = label
            self.query_one("#stage-label", Label).update(label, layout=False)
