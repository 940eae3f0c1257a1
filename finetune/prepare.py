"""The data stage: load and validate the rows, split off the held-out rows, record the dataset."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from finetune.data import load_alpaca, split_rows
from finetune.formats import alpaca_to_messages
from finetune.recipe import Recipe, builtin_data_path
from workspace.context import RunContext
from workspace.files import atomic_path
from workspace.store import Dataset, session_scope


@dataclass
class PreparedData:
    dataset_path: Path
    dataset_sha256: str
    dataset_id: int
    train_path: Path  # conversational prompt/completion rows
    heldout_path: Path  # rows in the dataset's own layout, for evaluation
    train_rows: int
    heldout_rows: int


def resolve_data_path(ref: str) -> Path:
    if ref.startswith("builtin:"):
        return builtin_data_path(ref.split(":", 1)[1])
    return Path(ref).expanduser()


def to_prompt_completion(row: dict, system: str | None) -> dict:
    messages = alpaca_to_messages(row, system)
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def prepare_data(recipe: Recipe, ctx: RunContext) -> PreparedData:
    events = ctx.events("data")
    path = resolve_data_path(recipe.data.path)
    events.start(path=str(path), format=recipe.data.format)
    loaded = load_alpaca(path)
    for warning in loaded.warnings[:20]:
        events.log(warning, level="warning")
    train, heldout = split_rows(loaded.rows, recipe.data.eval_rows, recipe.data.seed)
    train_path = ctx.run_dir / "data" / "train.jsonl"
    heldout_path = ctx.run_dir / "data" / "heldout.jsonl"
    _write_jsonl(train_path, [to_prompt_completion(r, recipe.model.system) for r in train])
    _write_jsonl(heldout_path, heldout)
    with session_scope(ctx.store) as s:
        ds = s.scalar(select(Dataset).where(Dataset.sha256 == loaded.sha256))
        if ds is None:
            ds = Dataset(name=path.stem, path=str(path.resolve()), sha256=loaded.sha256, format=loaded.format,
                         rows=len(loaded.rows))
            s.add(ds)
            s.flush()
        dataset_id = ds.id
    events.artifact("dataset", path, sha256=loaded.sha256, bytes=path.stat().st_size)
    events.done(rows=len(loaded.rows), train_rows=len(train), heldout_rows=len(heldout),
                warnings=len(loaded.warnings))
    return PreparedData(path, loaded.sha256, dataset_id, train_path, heldout_path, len(train), len(heldout))
