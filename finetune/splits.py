"""Seeded train/validation/test splits of examples; the test split is never trained on."""

from __future__ import annotations

import json
import random
from pathlib import Path

from finetune.examples import Example
from workspace.errors import OllatuneError
from workspace.files import write_jsonl_atomic


class SplitError(OllatuneError, ValueError):
    """A split that would leave no training rows or leak test rows into training."""


def split_examples(examples: list[Example], *, validation: int = 0, test: int = 0,
                   seed: int = 0) -> dict[str, list[Example]]:
    if validation < 0 or test < 0:
        raise SplitError("split sizes must be >= 0")
    if validation + test >= len(examples):
        raise SplitError(f"validation={validation} + test={test} leaves no training rows out of {len(examples)}",
                         "lower data.eval_rows (or the split sizes)")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_train = len(examples) - validation - test
    parts = {
        "train": [examples[i] for i in order[:n_train]],
        "validation": [examples[i] for i in order[n_train:n_train + validation]],
        "test": [examples[i] for i in order[n_train + validation:]],
    }
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
