"""Load, validate and split instruction datasets, reporting problems by file and line."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.formats import ALPACA_FIELDS
from workspace.files import sha256_file


class DatasetError(ValueError):
    """A dataset problem a user can fix: names the file, the line and the field."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass
class LoadedDataset:
    path: Path
    sha256: str
    format: str
    rows: list[dict[str, str]]
    line_numbers: list[int]
    warnings: list[str] = field(default_factory=list)


def _read_records(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed record) pairs; JSON arrays count records from 1."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        out = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})",
                                       "each line must be one JSON object; fix or delete that line") from None
        return out
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg})", "fix the JSON syntax") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON list of rows", "use a list of objects or JSON Lines")
        return list(enumerate(data, 1))
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return [(n, row) for n, row in enumerate(csv.DictReader(f), 2)]
    raise DatasetError(f"{path}: unsupported file type {suffix or '(none)'}", "use .jsonl, .json or .csv")


def load_alpaca(path: Path) -> LoadedDataset:
    """Rows in the KoAlpaca/Alpaca layout: ``instruction``, optional ``input``, ``output``."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset file {path} does not exist", "check data.path in the recipe")
    if path.is_dir():
        raise DatasetError(f"dataset path {path} is a folder", "point data.path at a .jsonl/.json/.csv file")
    records = _read_records(path)
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    warnings: list[str] = []
    seen: set[tuple[str, str]] = set()
    for n, rec in records:
        where = f"{path}:{n}"
        if not isinstance(rec, dict):
            raise DatasetError(f"{where}: row is {type(rec).__name__}, expected an object",
                               "each row needs instruction, input (optional) and output")
        for key in ("instruction", "output"):
            if key not in rec:
                raise DatasetError(f"{where}: missing field {key!r} (has {', '.join(map(str, rec)) or 'none'})",
                                   "rows need instruction and output (KoAlpaca layout)")
        row = {}
        for key in ALPACA_FIELDS:
            value = rec.get(key, "")
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise DatasetError(f"{where}: field {key!r} is {type(value).__name__}, expected text",
                                   "quote the value as a string")
            row[key] = value
        if not row["instruction"].strip():
            raise DatasetError(f"{where}: field 'instruction' is empty", "write the instruction or drop the row")
        if not row["output"].strip():
            raise DatasetError(f"{where}: field 'output' is empty", "write the answer or drop the row")
        key = (row["instruction"].strip(), row["input"].strip())
        if key in seen:
            warnings.append(f"{where}: duplicate of an earlier row (same instruction and input)")
        seen.add(key)
        rows.append(row)
        lines.append(n)
    if not rows:
        raise DatasetError(f"{path}: no rows", "the file is empty")
    return LoadedDataset(path=path, sha256=sha256_file(path), format="alpaca", rows=rows, line_numbers=lines,
                         warnings=warnings)


def split_rows(rows: list[dict[str, str]], eval_rows: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded shuffle, then the last ``eval_rows`` rows are held out. Same seed, same split."""
    if eval_rows >= len(rows):
        raise DatasetError(f"eval_rows={eval_rows} leaves no training rows out of {len(rows)}",
                           "lower data.eval_rows")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    train_idx = order[: len(rows) - eval_rows]
    held_idx = order[len(rows) - eval_rows:]
    return [rows[i] for i in train_idx], [rows[i] for i in held_idx]
