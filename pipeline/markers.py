"""Stage markers: a stage is complete for given inputs when its marker holds the same input key.

A marker is the stage's typed result (``model_dump``) under the key of its inputs; skipping a stage reads the
same type back (``model_validate``), so a resumed run hands the next stage exactly what a fresh one would.
A marker whose files are gone, or that no longer validates, counts as absent: the stage runs again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from workspace.files import sha256_json, write_json_atomic

R = TypeVar("R", bound=BaseModel)


def input_key(inputs: BaseModel) -> str:
    return sha256_json(inputs.model_dump(mode="json"))


class StageMarkers:
    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / "stages"

    def path(self, stage: str) -> Path:
        return self.dir / f"{stage}.json"

    def load(self, stage: str, inputs: BaseModel, result_type: type[R]) -> R | None:
        """The stored result when the marker's key matches ``inputs`` and its files exist, else None."""
        try:
            marker = json.loads(self.path(stage).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(marker, dict) or marker.get("key") != input_key(inputs):
            return None
        if not all(Path(p).exists() for p in marker.get("paths", [])):
            return None
        try:
            return result_type.model_validate(marker.get("result"))
        except ValidationError:
            return None

    def save(self, stage: str, inputs: BaseModel, result: BaseModel, paths: list[Path | str]) -> Path:
        return write_json_atomic(self.path(stage), {
            "stage": stage,
            "key": input_key(inputs),
            "inputs": inputs.model_dump(mode="json"),
            "result_type": type(result).__name__,
            "result": result.model_dump(mode="json"),
            "paths": [str(p) for p in paths],
        })
