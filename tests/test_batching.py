from __future__ import annotations

import random

from finetune.batching import bucketed_order, padded_tokens


def test_bucketed_order_covers_rows_and_cuts_padding():
    rng = random.Random(1)
    lengths = [rng.randint(60, 400) for _ in range(241)]
    order = bucketed_order(lengths, 8, seed=0, rows_needed=288)
    assert len(order) == 2 * 241  # two epochs needed for 288 rows
    assert sorted(order[:241]) == list(range(241)) and sorted(order[241:]) == list(range(241))
    shuffled = list(range(241))
    rng.shuffle(shuffled)
    assert padded_tokens(lengths, order[:241], 8) < 0.8 * padded_tokens(lengths, shuffled, 8)
    # batch order is random, not a walk from short to long (or back)
    maxima = [max(lengths[i] for i in order[k:k + 8]) for k in range(0, 241, 8)]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
    assert order == bucketed_order(lengths, 8, seed=0, rows_needed=288)
    assert order != bucketed_order(lengths, 8, seed=1, rows_needed=288)
