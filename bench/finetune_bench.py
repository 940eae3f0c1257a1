"""Fine-tuning throughput and memory on a CUDA GPU: ollatune's Unsloth backend, through the public CLI,
against a bare Unsloth script and the plain transformers + PEFT + bitsandbytes QLoRA baseline, all measured
in the same run on the same machine.

Model: random bf16 weights in the Llama-3-8B shape (speed does not depend on weight values), LoRA r=16 on all
seven projections, adamw_8bit, bf16, lr 2e-4, batch 2 x gradient accumulation 4.

  synthetic  rows of exactly 2048 tokens (a word-level tokenizer: one token a word), so every run trains on
             the same number of tokens a step: baseline, bare Unsloth, ollatune 2 x 4, ollatune with the
             automatic micro-batch (same effective batch of 8).
  korean     the project's Korean instruction sample with SmolLM2's tokenizer and ChatML template: short rows
             of uneven length. Effective (non-padding) tokens/s of ollatune (Unsloth, padding-free batches of
             length-bucketed rows) against the baseline with padded batches.

Parts: 1 and 2 as above (2 with the earlier automatic micro-batch, now auto-tune); 3: ollatune's own 2 x 4
with Unsloth's checkpointing (auto-tune off) against auto-tune, free and with train.max_vram_gib=24, on the
synthetic rows; 4: the Korean sample, the padded baseline against ollatune 2 x 4 and auto-tune.

Each measurement is a process of its own; tokens/s is taken over the steps after the first two (compilation
and allocator warm-up). Peak VRAM is the process's peak reserved memory (torch.cuda.max_memory_reserved).

  python bench/finetune_bench.py all --out results.json [--tokenizer DIR] [--steps 12] [--part 1|2|3|4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPE = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=8, vocab_size=128256)
SEQ, MICRO, ACCUM = 2048, 2, 4
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WARM = 2
WORK = Path(os.environ.get("OLLATUNE_BENCH_DIR", "/tmp/ollatune-bench"))  # models, rows, workspaces
# The ollatune runs use the Unsloth backend; OLLATUNE_BENCH_BACKEND=hf checks the script's plumbing without one.
BACKEND = os.environ.get("OLLATUNE_BENCH_BACKEND", "unsloth")
# ChatML-like template for the word-level tokenizer: contents joined by spaces, so a prompt's tokens are a
# prefix of the conversation's and a row of n words is n tokens.
WORD_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def log(*a) -> None:  # noqa: ANN002
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- model folders


def build_models(tokenizer_dir: Path | None) -> None:
    """WORK/weights (random 8B-shape bf16), WORK/synthetic (word-level tokenizer), WORK/korean (SmolLM2's)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerFast

    weights = WORK / "weights"
    if not (weights / "config.json").exists():
        t0 = time.time()
        cfg = LlamaConfig(**SHAPE, max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False,
                          bos_token_id=SHAPE["vocab_size"] - 3, eos_token_id=SHAPE["vocab_size"] - 2)
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        model.save_pretrained(str(weights), max_shard_size="20GB")
        del model
        torch.cuda.empty_cache()
        log(f"random Llama-3-8B-shape weights in {time.time() - t0:.0f} s")

    def link(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for f in weights.iterdir():
            if f.suffix == ".safetensors" or f.name.endswith(".index.json"):
                target = folder / f.name
                if not target.exists():
                    target.symlink_to(f)

    synthetic = WORK / "synthetic"
    if not (synthetic / "tokenizer.json").exists():
        link(synthetic)
        n = SHAPE["vocab_size"]
        vocab = {f"t{i}": i for i in range(n - 3)}
        vocab.update({"<s>": n - 3, "</s>": n - 2, "<pad>": n - 1})
        tk = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
        tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
        tok.chat_template = WORD_TEMPLATE
        tok.save_pretrained(str(synthetic))
        cfg = json.loads((weights / "config.json").read_text())
        (synthetic / "config.json").write_text(json.dumps({**cfg, "pad_token_id": n - 1}))
    korean = WORK / "korean"
    if tokenizer_dir and not (korean / "tokenizer.json").exists():
        link(korean)
        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        tok.save_pretrained(str(korean))
        cfg = json.loads((weights / "config.json").read_text())
        cfg.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        (korean / "config.json").write_text(json.dumps(cfg))


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Alpaca rows whose prompt and answer are 1024 words each: 2048 tokens under WORD_TEMPLATE."""
    rng = random.Random(seed)
    top = SHAPE["vocab_size"] - 3

    def words(k: int) -> str:
        return " ".join(f"t{rng.randrange(1, top)}" for _ in range(k))

    return [{"instruction": words(SEQ // 2), "input": "", "output": words(SEQ // 2)} for _ in range(n)]


def korean_rows() -> list[dict]:
    """The Korean sample as prompt/completion conversations (the same user turn the CLI trains on)."""
    from finetune.samples import open_records
    from workspace.samples import resolve_source
    from finetune.validate import ValidationConfig, validate

    source, task = resolve_source("builtin:ko_instructions", "alpaca")
    examples, _ = validate(open_records(source), ValidationConfig(task=task), source=str(source))
    return [ex.prompt_completion() for ex in examples]


# ---------------------------------------------------------------- the bare scripts


class StepClock:
    """A TrainerCallback that stamps the end of each optimizer step after a device sync."""

    def __new__(cls):  # noqa: ANN204
        import torch
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            stamps: list[float] = []

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
                torch.cuda.synchronize()
                self.stamps.append(time.time())

        return _Clock()


def bare(mode: str, data: str, steps: int, out: Path) -> None:
    if mode == "unsloth":
        import unsloth  # noqa: F401  -- before transformers, as Unsloth requires
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    folder = WORK / data
    t0 = time.time()
    if mode == "unsloth":
        from unsloth import FastLanguageModel

        model, tok = FastLanguageModel.from_pretrained(str(folder), max_seq_length=SEQ, dtype=None, load_in_4bit=True)
        model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0, bias="none",
                                                 target_modules=TARGETS, use_gradient_checkpointing="unsloth",
                                                 random_state=3407)
    else:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(str(folder), quantization_config=q, device_map={"": 0},
                                                     dtype=torch.bfloat16)
        tok = AutoTokenizer.from_pretrained(str(folder))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, bias="none",
                                                 target_modules=TARGETS, task_type="CAUSAL_LM"))
    load_s = time.time() - t0
    n = MICRO * ACCUM * (steps + 1)
    if data == "synthetic":
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1, SHAPE["vocab_size"] - 3, (n, SEQ), generator=g).tolist()
        ds = Dataset.from_dict({"input_ids": ids})
        step_tokens = [MICRO * ACCUM * SEQ] * (steps + 1)
        extra = {}
    else:  # padded batches of the Korean rows in a seeded random order, loss on the answers
        rows = korean_rows()
        random.Random(0).shuffle(rows)
        rows = (rows * (n // len(rows) + 1))[:n]
        lengths = [min(SEQ, len(tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True,
                                                         return_dict=False))) for r in rows]
        per = MICRO * ACCUM
        step_tokens = [sum(lengths[k:k + per]) for k in range(0, n, per)]
        ds = Dataset.from_list(rows)
        extra = {"completion_only_loss": True, "padding_free": False}
    clock = StepClock()
    args = SFTConfig(output_dir=str(WORK / f"out-{mode}-{data}"), per_device_train_batch_size=MICRO,
                     gradient_accumulation_steps=ACCUM, max_steps=steps, learning_rate=2e-4, warmup_steps=1,
                     logging_steps=1, optim="adamw_8bit", bf16=True, report_to="none", save_strategy="no",
                     max_length=SEQ, packing=False, dataset_num_proc=1, seed=3407,
                     gradient_checkpointing=(mode == "hf"), train_sampling_strategy="sequential",
                     disable_tqdm=True, **extra)
    trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=ds, args=args, callbacks=[clock])
    trainer.train()
    st = clock.stamps
    tokens = sum(step_tokens[WARM:len(st)])
    result = {
        "run": f"bare-{mode}-{data}", "tokens_per_s": round(tokens / (st[-1] - st[WARM - 1]), 1),
        "s_per_step": round((st[-1] - st[WARM - 1]) / (len(st) - WARM), 3), "steps": len(st),
        "micro_batch": MICRO, "grad_accum": ACCUM, "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "load_s": round(load_s, 1),
        "losses": [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h],
    }
    out.write_text(json.dumps(result))
    log(json.dumps(result))


# ---------------------------------------------------------------- ollatune through its CLI


def ollatune(data: str, steps: int, out: Path, mode: str) -> None:
    """mode: 2x4 (the recipe's batches and checkpointing, auto-tune off), auto (auto-tune), auto24 (auto-tune
    under train.max_vram_gib=24)."""
    tag = f"ollatune-{data}-{mode}"
    home = WORK / "home" / f"{tag}-{int(time.time())}"  # fresh: a finished run would be skipped
    if data == "synthetic":
        rows_path = WORK / "synthetic-rows.jsonl"
        if not rows_path.exists():
            rows = synthetic_rows(MICRO * ACCUM * (steps + 2))
            rows_path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        dataset = str(rows_path)
    else:
        dataset = "builtin:ko_instructions"
    recipe = {
        "name": tag,
        "model": {"base": str(WORK / data)},
        "data": {"path": dataset, "format": "alpaca", "eval_rows": 0, "max_seq_len": SEQ},
        "train": {"backend": BACKEND, "max_steps": steps, "batch_size": MICRO, "grad_accum": ACCUM,
                  "auto_tune": mode != "2x4", "lr": 2e-4, "lr_scheduler": "linear", "warmup_steps": 1,
                  "optimizer": "adamw_8bit", "logging_steps": 1, "save_steps": 10_000, "seed": 3407,
                  "lora": {"r": 16, "alpha": 16, "dropout": 0.0, "target_modules": TARGETS}},
    }
    if mode == "auto24":
        recipe["train"]["max_vram_gib"] = 24
    path = WORK / f"{tag}.yaml"
    path.write_text(json.dumps(recipe))
    env = {**os.environ, "OLLATUNE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "tui.cli", "finetune", "run", str(path), "--events", "jsonl"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        errors = [e for e in events if e["type"] == "error"]
        raise SystemExit(f"{tag} failed: {errors}\n{proc.stderr[-3000:]}")
    metrics = [e for e in events if e["type"] == "metric" and "loss" in e]
    done = [e for e in events if e["type"] == "done" and e["stage"] == "finetune"][0]
    per_step = [m.get("tokens_per_s") for m in metrics]
    # non-padding tokens of steps WARM+1..N over the wall time between the metric events of steps WARM and N
    span = metrics[-1]["ts"] - metrics[WARM - 1]["ts"]
    tokens = sum(m["tokens"] for m in metrics[WARM:])
    result = {
        "run": tag, "tokens_per_s": round(tokens / span, 1), "s_per_step": round(span / (len(metrics) - WARM), 3),
        "steps": len(metrics), "micro_batch": done["micro_batch"], "grad_accum": done["grad_accum"],
        "peak_reserved_gib": done["memory"].get("peak_reserved_gib"), "memory": done["memory"],
        "cli_wall_s": round(time.time() - t0, 1), "per_step_tokens_per_s": per_step,
        "checkpointing": done.get("checkpointing"), "auto_tune": done.get("auto_tune"),
        "losses": [m["loss"] for m in metrics],
        "log": [e["message"] for e in events if e["type"] == "log"][:40],
    }
    out.write_text(json.dumps(result))
    log(json.dumps({k: v for k, v in result.items() if k not in ("per_step_tokens_per_s", "log")}))


# ---------------------------------------------------------------- the whole benchmark


PARTS = {
    1: [("bare", "hf", "synthetic"), ("bare", "unsloth", "synthetic"), ("ollatune", "2x4", "synthetic")],
    2: [("ollatune", "auto", "synthetic"), ("bare", "hf", "korean"), ("ollatune", "2x4", "korean")],
    # auto-tune: against ollatune's own 2 x 4 checkpointed run, free and capped to 24 GiB, in one invocation
    3: [("ollatune", "2x4", "synthetic"), ("ollatune", "auto", "synthetic"), ("ollatune", "auto24", "synthetic")],
    # the Korean sample: effective tokens/s against the padded transformers + PEFT baseline
    4: [("bare", "hf", "korean"), ("ollatune", "2x4", "korean"), ("ollatune", "auto", "korean")],
}


def run_all(out: Path, steps: int, parts: list[int], tokenizer: Path | None) -> None:
    import torch

    WORK.mkdir(parents=True, exist_ok=True)
    build_models(tokenizer)
    results = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    results["device"] = torch.cuda.get_device_name(0)
    results["gpu_total_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    versions = {}
    from importlib.metadata import PackageNotFoundError, version

    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "unsloth", "unsloth_zoo"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    results["versions"] = versions
    results["settings"] = {"shape": "Llama-3-8B (random bf16 weights)", "seq": SEQ, "micro_batch": MICRO,
                           "grad_accum": ACCUM, "lora_r": 16, "optimizer": "adamw_8bit", "steps": steps,
                           "warmup_steps_excluded": WARM}
    for part in parts:
        for kind, mode, data in PARTS[part]:
            if data == "korean" and not (WORK / "korean" / "tokenizer.json").exists():
                log("no --tokenizer: skipping the Korean runs")
                continue
            tmp = WORK / f"{kind}-{mode}-{data}.json"
            cmd = [sys.executable, __file__, kind, "--mode", mode, "--data", data, "--steps", str(steps),
                   "--result", str(tmp)]
            log("running", " ".join(cmd[2:]))
            rc = subprocess.run(cmd, cwd=REPO).returncode
            key = f"{kind}-{mode}-{data}"
            results["runs"][key] = json.loads(tmp.read_text()) if rc == 0 and tmp.exists() else {"failed": rc}
            out.write_text(json.dumps(results, indent=1))
    results["ratios"] = ratios(results["runs"])
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["ratios"], indent=1))


def ratios(runs: dict) -> dict:
    def tps(key: str) -> float | None:
        return runs.get(key, {}).get("tokens_per_s")

    def gib(key: str) -> float | None:
        return runs.get(key, {}).get("peak_reserved_gib")

    r: dict = {}
    ours, bare_u, base = tps("ollatune-2x4-synthetic"), tps("bare-unsloth-synthetic"), tps("bare-hf-synthetic")
    if ours and bare_u:
        r["ollatune_vs_bare_unsloth"] = round(ours / bare_u, 3)
        r["ollatune_vs_bare_unsloth_ok"] = r["ollatune_vs_bare_unsloth"] >= 0.97
    if ours and base:
        r["ollatune_vs_baseline"] = round(ours / base, 3)
        r["ollatune_vs_baseline_ok"] = r["ollatune_vs_baseline"] >= 1.6
    if gib("ollatune-2x4-synthetic") and gib("bare-hf-synthetic"):
        r["vram_vs_baseline"] = round(gib("ollatune-2x4-synthetic") / gib("bare-hf-synthetic"), 3)
        r["vram_vs_baseline_ok"] = r["vram_vs_baseline"] <= 0.6
    for mode, floor in (("auto", 1.45), ("auto24", 1.0)):
        run = runs.get(f"ollatune-{mode}-synthetic", {})
        if run.get("tokens_per_s") and ours:
            r[f"{mode}_chosen"] = f"{run['micro_batch']} x {run['grad_accum']}, checkpointing {run.get('checkpointing')}"
            r[f"{mode}_vs_2x4"] = round(run["tokens_per_s"] / ours, 3)
            r[f"{mode}_vs_2x4_ok"] = r[f"{mode}_vs_2x4"] >= floor
            r[f"{mode}_peak_reserved_gib"] = run.get("peak_reserved_gib")
            r[f"{mode}_probe_s"] = (run.get("auto_tune") or {}).get("probe_seconds")
            a, b = runs["ollatune-2x4-synthetic"].get("losses") or [], run.get("losses") or []
            if a and len(a) == len(b):
                r[f"{mode}_max_loss_diff_vs_2x4"] = round(max(abs(x - y) for x, y in zip(a, b)), 4)
    if gib("ollatune-auto24-synthetic"):
        r["auto24_fits_24_gib"] = gib("ollatune-auto24-synthetic") <= 24
    for mode in ("2x4", "auto"):
        if tps(f"ollatune-{mode}-korean") and tps("bare-hf-korean"):
            r[f"korean_{mode}_effective_vs_padded_baseline"] = round(tps(f"ollatune-{mode}-korean") / tps("bare-hf-korean"), 3)
    if "korean_auto_effective_vs_padded_baseline" in r:
        r["korean_auto_effective_vs_padded_baseline_ok"] = r["korean_auto_effective_vs_padded_baseline"] >= 3.0
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["all", "build", "bare", "ollatune"])
    ap.add_argument("--mode", default="hf")
    ap.add_argument("--data", default="synthetic", choices=["synthetic", "korean"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--result", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "finetune_gpu.json")
    ap.add_argument("--part", type=int, action="append", choices=sorted(PARTS))
    ap.add_argument("--tokenizer", type=Path, help="A folder with SmolLM2's tokenizer (for the Korean runs).")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    if a.what == "all":
        run_all(a.out, a.steps, a.part or [1, 2], a.tokenizer)
    elif a.what == "build":
        WORK.mkdir(parents=True, exist_ok=True)
        build_models(a.tokenizer)
    elif a.what == "bare":
        bare(a.mode, a.data, a.steps, a.result)
    else:
        ollatune(a.data, a.steps, a.result, a.mode)


if __name__ == "__main__":
    main()
