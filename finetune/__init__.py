"""Datasets, recipes, training backends and run directories.

The stage's public entry points are :func:`finetune.prepare_data` (the data stage: ``-> PreparedData``) and
:func:`finetune.train` (``-> TrainResult``). Heavy libraries (torch, transformers, peft, trl, unsloth) are
imported inside the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workspace.lazy import lazy_exports

if TYPE_CHECKING:
    from finetune.prepare import PreparedData, prepare_data
    from finetune.training import TrainResult, train

_EXPORTS = {
    "prepare_data": "finetune.prepare",
    "PreparedData": "finetune.prepare",
    "train": "finetune.training",
    "TrainResult": "finetune.training",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
