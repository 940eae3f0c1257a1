"""Seeded train/validation/test splits of examples; the test split is never trained on."""

from __future__ import annotations

import json
import random
from pathlib import Path

from workspace.examples import Example
from workspace.errors import OllatuneError
from workspace.files import write_jsonl_atomic


class SplitError(OllatuneError, ValueError):
    """A split that would leave no training rows or leak test rows into training."""


def group_key(ex: Example) -> str:
    """What must stay on one side of a split: for extractive and context QA the context paragraph(s), so no
    evaluated question shares its paragraph with a training one (the model would have read the answer);
    every other row is its own group."""
    if ex.task == "qa":
        return "qa:" + " ".join(str(ex.fields.get("context", "")).split())
    if ex.task == "raft":
        return "raft:" + json.dumps([" ".join(d.split()) for d in ex.fields.get("documents", [])], ensure_ascii=False)
    return f"row:{id(ex)}"


def split_examples(examples: list[Example], *, validation: int = 0, test: int = 0,
                   seed: int = 0) -> dict[str, list[Example]]:
    """Seeded split into train/validation/test with ``validation`` and ``test`` rows (whole groups: the
    held-out parts take groups until they hold at least that many rows, so they may hold a few more)."""
    if validation < 0 or test < 0:
        raise SplitError("split sizes must be >= 0")
    if validation + test >= len(examples):
        raise SplitError(f"validation={validation} + test={test} leaves no training rows out of {len(examples)}",
                         "lower data.eval_rows (or the split sizes)")
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(group_key(ex), []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    held: dict[str, list[int]] = {"test": [], "validation": []}
    want = {"test": test, "validation": validation}
    rest: list[list[int]] = []
    for members in reversed(order):  # the held-out parts come from the end of the shuffled order
        part = next((k for k in ("test", "validation") if len(held[k]) < want[k]), None)
        if part is None:
            rest.append(members)
        else:
            held[part].extend(members)
    if not rest:
        raise SplitError(f"the held-out parts took every row group out of {len(examples)} rows (rows that share "
                         "a context paragraph stay together)", "lower data.eval_rows or data.val_rows")
    flat = [i for members in order for i in members]  # the shuffled order (for single rows: as before groups)
    side = {i: k for k, members in held.items() for i in members}
    parts = {k: [examples[i] for i in flat if side.get(i, "train") == k] for k in ("train", "validation", "test")}
    assert_disjoint(parts["train"], parts["test"])
    return parts


def _key(ex: Example) -> str:
    return json.dumps([m["content"] for m in ex.prompt if m["role"] != "system"] + [ex.response], ensure_ascii=False)


def assert_disjoint(train: list[Example], test: list[Example]) -> None:
    """The evaluation rows must never be trained on: refuse a split where a test prompt+answer is also
    a training row (duplicates in the source would otherwise leak)."""
    seen = {_key(ex) for ex in train}
    leaked = [ex for ex in test if _key(ex) in seen]
    if leaked:
        raise SplitError(f"{len(leaked)} test row(s) also appear in the training split (first: line {leaked[0].line})",
                         "remove the duplicate rows (`ollatune data validate` lists them)")


def source_row(ex: Example) -> dict:
    """The example back in its source layout (canonical field names), metadata kept."""
    return {**ex.metadata, **ex.fields}


def write_split(path: Path, examples: list[Example]) -> Path:
    return write_jsonl_atomic(path, (source_row(ex) for ex in examples))
