"""Reading the records of a data source (a shipped sample, a local file or a hub dataset)."""

from __future__ import annotations

from pathlib import Path


def open_records(source: str, *, split: str = "train", limit: int | None = None):  # noqa: ANN201
    from workspace.sources import read_hub, read_records, is_hub_ref

    if is_hub_ref(source):
        return read_hub(source, split, limit=limit)
    return read_records(Path(source).expanduser(), limit=limit)
