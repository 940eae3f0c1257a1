"""What the TUI's screens read: the list of runs (store + run folders) and a follower of a run's
``events.jsonl``. Plain data and files, no Textual, so it is tested and reused without a terminal."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from workspace.settings import Settings

EVENTS_FILE = "events.jsonl"
# A run folder whose log has not moved for this long and never finished was killed or crashed.
STALE_AFTER_S = 120.0


@dataclass
class RunSummary:
    run_id: str
    status: str  # running | done | failed | stopped | whatever the store says
    steps: int | None
    final_loss: float | None
    evals: int
    started: datetime | None
    run_dir: Path | None  # None when the store knows the run but its folder is gone
    in_store: bool


@dataclass
class EventsSummary:
    status: str
    steps: int | None
    final_loss: float | None
    started: datetime | None


def summarize_events(events: Iterable[dict[str, Any]], *, stale: bool = False) -> EventsSummary:
    """Status, last training step and loss of a run, from its events alone."""
    status = "running"
    steps: int | None = None
    loss: float | None = None
    started: datetime | None = None
    seen_pipeline = False
    last_type = None
    for e in events:
        kind, stage = e.get("type"), e.get("stage")
        if started is None and isinstance(e.get("ts"), (int, float)):
            started = datetime.fromtimestamp(e["ts"], timezone.utc)
        if stage == "pipeline":
            seen_pipeline = True
            if kind == "start":
                status = "running"
            elif kind == "done":
                status = "done"
        if kind == "error":
            status = "failed"
        if kind == "metric" and isinstance(e.get("step"), int):
            steps = e["step"]
            if isinstance(e.get("loss"), (int, float)):
                loss = float(e["loss"])
        last_type = kind
    if not seen_pipeline and last_type == "done" and status != "failed":
        status = "done"  # a single-stage job (e.g. `ollatune finetune`) without pipeline events
    if status == "running" and stale:
        status = "stopped"
    return EventsSummary(status, steps, loss, started)


class EventTail:
    """Follows an events log: each :meth:`read_new` returns the events appended since the last call.

    A line without its newline yet (a job mid-write, or killed mid-write) is held back until it is
    complete; lines that are not JSON are skipped. A log that shrank (rewritten) is read again from
    the start.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.offset:
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended with a newline
        events = []
        for raw in lines:
            raw = raw.strip()
            if not raw:
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


def run_folders(settings: Settings) -> dict[str, Path]:
    """Run folders under ``runs_dir`` that hold an events log, by run id."""
    if not settings.runs_dir.is_dir():
        return {}
    return {p.name: p for p in settings.runs_dir.iterdir() if (p / EVENTS_FILE).is_file()}


# path -> (mtime_ns, size, summary of a log that is not stale): the runs screen refreshes every few
# seconds and should not re-read every finished run's log each time.
_SUMMARIES: dict[Path, tuple[int, int, EventsSummary]] = {}


def summarize_folder(run_dir: Path, now: float | None = None) -> EventsSummary:
    path = run_dir / EVENTS_FILE
    now = time.time() if now is None else now
    try:
        st = path.stat()
    except OSError:
        return EventsSummary("missing", None, None, None)
    cached = _SUMMARIES.get(path)
    if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
        summary = cached[2]
    else:
        summary = summarize_events(EventTail(path).read_new())
        _SUMMARIES[path] = (st.st_mtime_ns, st.st_size, summary)
    if summary.status == "running" and now - st.st_mtime > STALE_AFTER_S:
        return EventsSummary("stopped", summary.steps, summary.final_loss, summary.started)
    return summary


def load_runs(settings: Settings) -> list[RunSummary]:
    """Every run the workspace knows, newest first: training runs in the store, plus run folders with an
    events log (runs that stopped before training, or whose store is elsewhere). Steps and loss come
    from the store when it has them; the status comes from the log when there is one."""
    folders = run_folders(settings)
    runs: dict[str, RunSummary] = {}
    if settings.db_path.exists():  # never create a database just by looking
        for row in _store_runs(settings):
            row.run_dir = folders.get(row.run_id)
            runs[row.run_id] = row
    for run_id, run_dir in folders.items():
        summary = summarize_folder(run_dir)
        row = runs.get(run_id)
        if row is None:
            runs[run_id] = RunSummary(run_id, summary.status, summary.steps, summary.final_loss, 0,
                                      summary.started, run_dir, in_store=False)
            continue
        if row.steps is None:
            row.steps = summary.steps
        if row.final_loss is None:
            row.final_loss = summary.final_loss
        # The store's status is the training's; the log tells the whole run's (a later stage may fail).
        row.status = summary.status
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(runs.values(), key=lambda r: (_aware(r.started) or epoch, r.run_id), reverse=True)


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)  # SQLite gives naive datetimes back
    return dt


def _store_runs(settings: Settings) -> list[RunSummary]:
    from sqlalchemy import func, select

    from workspace.store import EvalRun, TrainingRun, open_store, session_scope

    factory = open_store(settings.db_path)
    rows: list[RunSummary] = []
    with session_scope(factory) as s:
        # Finished evaluations: the ones a comparison can use.
        evals = dict(s.execute(select(EvalRun.run_id, func.count(EvalRun.id)).where(EvalRun.status == "done")
                               .group_by(EvalRun.run_id)).all())
        seen = set()
        for tr in s.scalars(select(TrainingRun)):
            seen.add(tr.run_id)
            rows.append(RunSummary(tr.run_id, tr.status, tr.steps, tr.final_loss, evals.get(tr.run_id, 0),
                                   _aware(tr.started_at), None, in_store=True))
        for run_id, count in evals.items():  # evaluated without a training run (e.g. vanilla only)
            if run_id and run_id not in seen:
                rows.append(RunSummary(run_id, "evaluated", None, None, count, None, None, in_store=True))
    return rows


def load_comparison(settings: Settings, run_id: str):  # noqa: ANN201 - evals.report.Comparison, imported lazily
    """The vanilla-vs-tuned comparison of a run's latest finished eval runs; LookupError when there is none."""
    if not settings.db_path.exists():
        raise LookupError(f"no database at {settings.db_path}: run `ollatune pipeline` first")
    from evals.report import compare
    from tui.report import latest_eval_ids
    from workspace.store import open_store

    ids = latest_eval_ids(settings, run_id)
    if not ids:
        raise LookupError(f"run {run_id!r} has no finished evaluation in {settings.db_path}")
    return compare(open_store(settings.db_path), ids)
