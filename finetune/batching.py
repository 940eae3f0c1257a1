"""Length-bucketed batches in shuffled order: rows of similar length share a batch (little padding, which
on a CPU is a third of the work with random batches), while the order of batches stays random."""

from __future__ import annotations

import math
import random


def bucketed_order(lengths: list[int], batch_size: int, seed: int, rows_needed: int) -> list[int]:
    """Row indices covering at least ``rows_needed`` rows, epoch after epoch; each epoch sorts the rows
    by length (ties broken at random), cuts them into batches and shuffles the batches."""
    if not lengths:
        return []
    rng = random.Random(seed)
    order: list[int] = []
    epochs = max(1, math.ceil(rows_needed / len(lengths)))
    for _ in range(epochs):
        idx = list(range(len(lengths)))
        rng.shuffle(idx)
        idx.sort(key=lambda i: lengths[i])
        batches = [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]
        rng.shuffle(batches)
        order.extend(i for b in batches for i in b)
    return order


def padded_tokens(lengths: list[int], order: list[int], batch_size: int) -> int:
    """Tokens a batch-padded pass over ``order`` computes (for reporting the saving)."""
    return sum(batch_size * max(lengths[i] for i in order[k:k + batch_size]) for k in range(0, len(order), batch_size))
