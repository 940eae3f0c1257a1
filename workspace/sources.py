"""Read raw records from local files (JSON, JSONL, CSV, Parquet, SQuAD/KorQuAD JSON) or Hugging Face
dataset ids, one record at a time with its source line, never stopping at a bad row."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workspace.errors import OllatuneError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class SourceError(OllatuneError, ValueError):
    """The source as a whole cannot be read (missing file, unknown type, hub unreachable)."""


@dataclass
class Record:
    line: int  # 1-based line (JSONL, CSV), item number (JSON, Parquet, hub) of the row
    data: Any = None
    error: str | None = None  # why the row could not be read at all


def _decode_error_line(raw: bytes, e: UnicodeDecodeError) -> int:
    return raw.count(b"\n", 0, e.start) + 1


def read_records(path: Path, *, limit: int | None = None) -> Iterator[Record]:
    path = Path(path)
    if not path.exists():
        raise SourceError(f"dataset file {path} does not exist", "check the path (or data.path in the recipe)")
    if path.is_dir():
        raise SourceError(f"{path} is a folder", f"point at a file: {', '.join(SUFFIXES)}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SourceError(f"{path}: unsupported file type {suffix or '(none)'}", f"use one of {', '.join(SUFFIXES)}")
    count = 0
    for rec in _READERS[suffix](path):
        yield rec
        count += 1
        if limit is not None and count >= limit:
            return


def _jsonl(path: Path) -> Iterator[Record]:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Record(n, error=f"not UTF-8 text (byte {e.start} of the line)")
                continue
            try:
                yield Record(n, json.loads(text))
            except json.JSONDecodeError as e:
                yield Record(n, error=f"not valid JSON ({e.msg} at column {e.colno})")
            except RecursionError:
                yield Record(n, error="JSON nested too deeply")


def _read_utf8(path: Path) -> str:
    """A whole file as text; a decoding error names its line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}:{_decode_error_line(raw, e)}: not UTF-8 text", "re-save the file as UTF-8") from None


def _json(path: Path) -> Iterator[Record]:
    text = _read_utf8(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}:{e.lineno}: not valid JSON ({e.msg})", "fix the JSON syntax, or use JSON Lines "
                          "so that one bad row does not hide the others") from None
    except RecursionError:
        raise SourceError(f"{path}: JSON nested too deeply", "check the file") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list) and data["data"] and \
            isinstance(data["data"][0], dict) and "paragraphs" in data["data"][0]:
        yield from _squad(data)
        return
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON list of rows (or SQuAD/KorQuAD layout)",
                          "use a list of objects, JSON Lines, or the SQuAD layout")
    for n, item in enumerate(data, 1):
        yield Record(n, item)


def _squad(data: dict) -> Iterator[Record]:
    """SQuAD v1.1 / KorQuAD v1: one record per question, numbered in file order."""
    n = 0
    for article in data["data"]:
        title = article.get("title", "") if isinstance(article, dict) else ""
        for para in (article.get("paragraphs") or []) if isinstance(article, dict) else []:
            context = para.get("context") if isinstance(para, dict) else None
            for qa in (para.get("qas") or []) if isinstance(para, dict) else []:
                n += 1
                if not isinstance(qa, dict):
                    yield Record(n, error="question entry is not an object")
                    continue
                yield Record(n, {"id": qa.get("id"), "title": title, "context": context,
                                 "question": qa.get("question"), "answers": qa.get("answers")})


def _csv(path: Path) -> Iterator[Record]:
    text = _read_utf8(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            extra = row.pop(None, None)
            if extra:
                yield Record(reader.line_num, error=f"{len(extra)} more value(s) than header columns")
                continue
            yield Record(reader.line_num, row)
    except csv.Error as e:
        yield Record(reader.line_num, error=f"CSV error: {e}")


def _parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise SourceError(f"{path}: not a readable Parquet file ({e.__class__.__name__})", "check the file") from None
    for n, row in enumerate(table.to_pylist(), 1):
        yield Record(n, row)


_READERS = {".jsonl": _jsonl, ".json": _json, ".csv": _csv, ".parquet": _parquet}


def is_hub_ref(ref: str) -> bool:
    return ref.startswith("hf:")


def read_hub(ref: str, split: str = "train", *, limit: int | None = None) -> Iterator[Record]:
    """``hf:owner/name[:config]`` through ``datasets`` (cached after the first download)."""
    from datasets import load_dataset

    spec = ref[3:]
    name, _, config = spec.partition(":")
    try:
        ds = load_dataset(name, config or None, split=split)
    except Exception as e:  # offline with no cache, unknown id, bad split...
        raise SourceError(f"cannot load {name!r} split {split!r} from the Hugging Face hub or its cache: "
                          f"{e.__class__.__name__}: {str(e).splitlines()[0][:200]}",
                          "connect once to download it (it is cached afterwards), or export it to a local "
                          "JSONL/Parquet file and pass that path") from None
    for n, row in enumerate(ds, 1):
        if limit is not None and n > limit:
            return
        yield Record(n, row)
