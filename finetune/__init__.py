"""Datasets, recipes, training backends and run directories.

The public entry point is :func:`finetune.train`. Heavy libraries (torch, transformers, peft, trl,
unsloth) are imported inside the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from finetune.train import TrainResult


def train(*args: Any, **kwargs: Any) -> "TrainResult":
    from finetune.train import train as _train

    return _train(*args, **kwargs)
