"""What a stage function needs besides its typed inputs: where the run lives, its events and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from workspace.events import EventSink, StageEvents
from workspace.files import sha256_json, write_json_atomic
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

    # Stage markers: a stage is complete for given inputs when its marker holds the same input key.
    def marker_path(self, stage: str) -> Path:
        return self.run_dir / "stages" / f"{stage}.json"

    def completed(self, stage: str, inputs: Any) -> dict[str, Any] | None:
        import json

        path = self.marker_path(stage)
        if not path.exists():
            return None
        try:
            marker = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if marker.get("key") != sha256_json(inputs):
            return None
        outputs = marker.get("outputs", {})
        for p in marker.get("paths", []):
            if not Path(p).exists():
                return None
        return outputs

    def mark_complete(self, stage: str, inputs: Any, outputs: dict[str, Any], paths: list[Path | str]) -> None:
        write_json_atomic(self.marker_path(stage), {
            "stage": stage, "key": sha256_json(inputs), "outputs": outputs, "paths": [str(p) for p in paths],
        })
