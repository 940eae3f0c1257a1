"""Build RAFT-style examples from context QA rows: the golden document plus distractors drawn from
other rows' contexts; a configurable share of rows keeps the golden document (the rest teach the model
to answer from memory when retrieval missed)."""

from __future__ import annotations

import random

from workspace.examples import Example


def build_raft(examples: list[Example], *, distractors: int = 3, golden_share: float = 0.8,
               seed: int = 0) -> list[dict]:
    """RAFT rows (documents, golden index or -1, question, answer) from ``qa`` examples."""
    if not 0.0 <= golden_share <= 1.0:
        raise ValueError("golden_share must be between 0 and 1")
    contexts = sorted({ex.fields["context"] for ex in examples if ex.task == "qa"})
    if len(contexts) < 2:
        raise ValueError("RAFT needs QA rows from at least two different contexts to draw distractors")
    rng = random.Random(seed)
    rows = []
    for ex in examples:
        if ex.task != "qa":
            raise ValueError(f"row {ex.line}: RAFT rows are built from qa examples, not {ex.task}")
        golden_doc = ex.fields["context"]
        others = [c for c in contexts if c != golden_doc]
        picked = rng.sample(others, min(distractors, len(others)))
        keep_golden = rng.random() < golden_share
        docs = picked + [golden_doc] if keep_golden else picked + [rng.choice([c for c in others if c not in picked]
                                                                             or others)]
        rng.shuffle(docs)
        rows.append({
            "id": ex.id,
            "documents": docs,
            "golden": docs.index(golden_doc) if keep_golden else -1,
            "question": ex.fields["question"],
            "answer": ex.response,
        })
    return rows
