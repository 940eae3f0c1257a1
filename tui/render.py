"""Rich rendering of job events on stderr (data goes to stdout). Used by the CLI; the TUI renders the
same events with widgets."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape


def fmt_value(value: Any, width: int = 60) -> str:
    """A field of an event for a log line: floats to 4 significant digits, lists and mappings summarised."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        inner = ", ".join(f"{k}={fmt_value(v, 20)}" for k, v in value.items()
                          if not isinstance(v, (dict, list)))
        text = "{" + inner + "}" if inner else f"{{{len(value)} fields}}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(fmt_value(v, 20) for v in value) if all(not isinstance(v, (dict, list)) for v in value) \
            else f"[{len(value)} items]"
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def fmt_fields(e: dict[str, Any], skip: tuple[str, ...] = ("ts", "run", "stage", "type")) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in e.items() if k not in skip)


class EventPrinter:
    """A listener for :class:`workspace.events.EventSink` that prints a readable log line per event."""

    def __init__(self, console: Console | None = None, *, metric_every: int = 5) -> None:
        self.console = console or Console(file=sys.stderr, highlight=False)
        self.metric_every = metric_every
        self._last_progress: dict[str, float] = {}

    def __call__(self, e: dict[str, Any]) -> None:
        stage, kind = e.get("stage", "?"), e.get("type")
        tag = f"[bold cyan]{stage:>8}[/]"
        c = self.console
        if kind == "start":
            c.print(f"{tag} [bold]start[/] {escape(fmt_fields(e))}")
        elif kind == "log":
            style = {"warning": "yellow", "error": "red"}.get(e.get("level", "info"), "")
            msg = escape(str(e.get("message", "")))
            c.print(f"{tag} [{style}]{msg}[/]" if style else f"{tag} {msg}")
        elif kind == "metric":
            step = e.get("step", 0)
            if step == 1 or step % self.metric_every == 0:
                parts = [f"step {step}"]
                for key in ("loss", "eval_loss", "epoch", "lr", "grad_norm", "tokens_per_s", "gpu_reserved_gib", "gpu_peak_gib"):
                    if e.get(key) is not None:
                        v = e[key]
                        parts.append(f"{key} {fmt_value(v)}")
                c.print(f"{tag} " + "  ".join(parts))
        elif kind == "progress":
            done, total = e.get("done", 0), e.get("total")
            key = f"{stage}:{e.get('unit')}"
            if total and (done == total or done - self._last_progress.get(key, 0) >= max(total // 10, 1)):
                self._last_progress[key] = done
                eta = f", eta {e['eta_s']:.0f}s" if e.get("eta_s") else ""
                c.print(f"{tag} {done}/{total} {e.get('unit', '')}{eta}")
        elif kind == "artifact":
            size = e.get("bytes")
            size_s = f" ({size / 2**20:.1f} MiB)" if size else ""
            c.print(f"{tag} [green]artifact[/] {e.get('kind')}: {escape(str(e.get('path')))}{size_s}")
        elif kind == "done":
            if e.get("skipped"):
                c.print(f"{tag} [dim]skipped: outputs exist for identical inputs[/]")
            else:
                extra = fmt_fields({k: v for k, v in e.items() if not isinstance(v, (dict, list))})
                c.print(f"{tag} [bold green]done[/] {escape(extra)}")
        elif kind == "error":
            c.print(f"{tag} [bold red]error[/] {escape(str(e.get('message')))}")
            if e.get("hint"):
                c.print(f"{tag} [yellow]next:[/] {escape(str(e['hint']))}")
