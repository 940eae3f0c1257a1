"""What a stage function needs besides its typed inputs: where the run lives, its events and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from workspace.events import EventSink, StageEvents
from workspace.settings import Settings
from workspace.store import open_store


@dataclass
class RunContext:
    run_id: str
    run_dir: Path
    settings: Settings
    sink: EventSink
    _store: sessionmaker[Session] | None = field(default=None, repr=False)

    @classmethod
    def create(cls, run_id: str, settings: Settings, *, stdout_jsonl: bool = False, listeners=None) -> "RunContext":  # noqa: ANN001
        run_dir = settings.runs_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        sink = EventSink(run_id, run_dir / "events.jsonl", stdout_jsonl=stdout_jsonl, listeners=listeners)
        return cls(run_id, run_dir, settings, sink)

    @property
    def store(self) -> sessionmaker[Session]:
        if self._store is None:
            self._store = open_store(self.settings.db_path)
        return self._store

    def events(self, stage: str) -> StageEvents:
        return self.sink.stage(stage)
