"""Content hashes and atomic writes: nothing half-written ever appears under a final name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workspace.errors import OllatuneError


class DiskSpaceError(OllatuneError, OSError):
    """Not enough free disk for a step that writes large files."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: Path) -> str:
    """Hash of a file, or of a folder's relative names and contents."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def tree_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ensure_free_space(folder: Path, need_bytes: int, what: str) -> None:
    """Refuse to start work that cannot finish on this disk (merge/convert/quantize)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise DiskSpaceError(
            f"not enough disk space for {what} in {folder}: need {need_bytes / 2**30:.2f} GiB, "
            f"{free / 2**30:.2f} GiB free",
            "free some space or set OLLATUNE_HOME to a larger disk, then re-run",
        )


def partial_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds.

    Works for files and folders. On failure the temporary is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(final)
    _remove(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp} was not written")
        _remove(final)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def write_text_atomic(final: Path, text: str) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(final)


def write_jsonl_atomic(final: Path, rows) -> Path:  # noqa: ANN001
    """One JSON object per line (real UTF-8, not escapes), renamed into place when complete."""
    with atomic_path(final) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(final)


def write_json_atomic(final: Path, obj: Any) -> Path:
    return write_text_atomic(final, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()
