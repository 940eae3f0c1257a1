"""Near-duplicate detection with MinHash signatures and LSH banding over character 3-grams.

The signatures of all rows are computed in batches with numpy (one rolling hash over the concatenated
texts, then a segment minimum per permutation), which is what lets ``data validate`` check 50,000 rows
in seconds; ``bench/near_dup_bench.py`` measures it against datasketch's per-row MinHash on the same rows.
"""

from __future__ import annotations

import re
import numpy as np

MASK32 = np.uint64(0xFFFFFFFF)
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    return _SPACES.sub(" ", text.strip().lower())


def signatures(texts: list[str], num_perm: int = 64, seed: int = 1, batch: int = 2048) -> np.ndarray:
    """A (len(texts), num_perm) uint32 MinHash signature matrix over character 3-grams."""
    rng = np.random.default_rng(seed)
    a = (rng.integers(1, 2**32, size=(num_perm, 1), dtype=np.uint64) | np.uint64(1))
    b = rng.integers(0, 2**32, size=(num_perm, 1), dtype=np.uint64)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    for start in range(0, len(texts), batch):
        chunk = [normalize(t) for t in texts[start:start + batch]]
        chunk = [t if len(t) >= 3 else (t + "\x00\x00\x00")[:3] for t in chunk]
        codes = [np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64) for t in chunk]
        lengths = np.array([len(c) - 2 for c in codes])
        flat = np.concatenate(codes)
        offsets = np.concatenate(([0], np.cumsum([len(c) for c in codes])[:-1]))
        # 3-gram hash at every position, then keep the positions that start a 3-gram inside one text
        h = (flat[:-2] * np.uint64(1_000_003) ** np.uint64(2) + flat[1:-1] * np.uint64(1_000_003) + flat[2:]) & MASK32
        keep = np.concatenate([np.arange(o, o + n) for o, n in zip(offsets, lengths)])
        shingles = h[keep]
        seg = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        hashed = ((a * shingles[None, :] + b) & MASK32).astype(np.uint32)
        out[start:start + len(chunk)] = np.minimum.reduceat(hashed, seg, axis=1).T
    return out


def near_duplicate_pairs(texts: list[str], threshold: float = 0.85, num_perm: int = 64,
                         bands: int = 16, max_bucket: int = 200) -> list[tuple[int, int, float]]:
    """Pairs (i, j, estimated Jaccard) with i < j whose 3-gram Jaccard similarity is about ``threshold``
    or more. Exact duplicates (after normalisation) are included with 1.0. Buckets larger than
    ``max_bucket`` (boilerplate every row shares) are not expanded into pairs."""
    n = len(texts)
    if n < 2:
        return []
    sig = signatures(texts, num_perm)
    rows = num_perm // bands
    found = []
    for band in range(bands):
        part = np.ascontiguousarray(sig[:, band * rows:(band + 1) * rows])
        keys = part.view(np.dtype((np.void, part.dtype.itemsize * rows))).ravel()
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, n])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
            if size > max_bucket:
                continue
            members = np.sort(order[start:start + size])
            a, b = np.triu_indices(size, k=1)
            found.append(members[a].astype(np.int64) * n + members[b])
    if not found:
        return []
    cand = np.unique(np.concatenate(found))
    i_idx, j_idx = cand // n, cand % n
    pairs: list[tuple[int, int, float]] = []
    for k in range(0, len(cand), 100_000):
        i, j = i_idx[k:k + 100_000], j_idx[k:k + 100_000]
        sims = (sig[i] == sig[j]).mean(axis=1)
        keep = sims >= threshold
        pairs.extend(zip(i[keep].tolist(), j[keep].tolist(), np.round(sims[keep], 3).tolist()))
    return pairs
