"""Training on a tiny random model with SmolLM2's real tokenizer: loss goes down on a fixed toy set, and
a run killed with SIGKILL resumes from its checkpoint with a continuous step count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(smollm2_base, tmp_path_factory):
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(str(smollm2_base.hf_dir))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(str(out))
    for f in smollm2_base.hf_dir.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, out / f.name)
    return out


def _toy(tmp_path, n=16):
    rows = [{"instruction": f"{i}번 질문에 답해 주세요.", "input": "", "output": "네, 알겠습니다."} for i in range(n)]
    p = tmp_path / "toy.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return p


def _args(model, data, steps, extra=()):
    sets = [f"model.base={model}", f"data.path={data}", "data.eval_rows=2", "data.max_seq_len=96",
            f"train.max_steps={steps}", "train.batch_size=4", "train.lr=0.01", "train.warmup_steps=0", "name=toy",
            *extra]
    return [x for kv in sets for x in ("--set", kv)]


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_loss_decreases_on_a_fixed_toy_set(tiny_model, tmp_path):
    env = {**os.environ, "OLLATUNE_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "tui.cli", "finetune", "run", "demo-ko", "--events", "jsonl",
                           *_args(tiny_model, _toy(tmp_path, 20), 30, ["data.val_rows=2", "train.eval_steps=10"])],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = _events(proc.stdout)
    metrics = [e for e in events if e["type"] == "metric"]
    losses = [e["loss"] for e in metrics if "loss" in e]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:3]) / 3 - 0.5  # nats; an untrained run stays flat
    # every training metric event carries the step, epoch, learning rate, tokens/s and ETA
    assert all({"epoch", "lr", "tokens_per_s", "total_steps"} <= set(e) for e in metrics if "loss" in e)
    assert metrics[-1]["step"] == 30 and "eta_s" in metrics[0]
    evals = [e for e in metrics if "eval_loss" in e]
    assert [e["step"] for e in evals] == [10, 20, 30] and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    done = [e for e in events if e["type"] == "done" and e["stage"] == "finetune"][0]
    assert done["backend"] == "hf" and done["memory"]["peak_rss_gib"] > 0
    assert any("memory: peak resident set" in e.get("message", "") for e in events)


def test_resume_after_kill_continues_the_step_count(tiny_model, tmp_path):
    env = {**os.environ, "OLLATUNE_HOME": str(tmp_path / "home")}
    args = _args(tiny_model, _toy(tmp_path), 24, ["train.save_steps=6"])
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "finetune", "run", "demo-ko", "--events", "jsonl",
                             *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first: list[dict] = []
    for line in proc.stdout:
        if line.startswith("{"):
            first.append(json.loads(line))
            if first[-1]["type"] == "metric" and first[-1]["step"] >= 14:
                proc.send_signal(signal.SIGKILL)  # no chance to clean up, like a power cut
                break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    run_id = first[0]["run"]
    run_dir = tmp_path / "home" / "runs" / run_id
    assert not (run_dir / "finetune" / "adapter").exists()
    resumed = subprocess.run([sys.executable, "-m", "tui.cli", "finetune", "resume", run_id, "--events", "jsonl"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    second = _events(resumed.stdout)
    steps = [e["step"] for e in second if e["type"] == "metric"]
    assert any(e["type"] == "log" and "resuming from checkpoint-12" in e["message"] for e in second)
    assert steps == list(range(13, 25))
    assert (run_dir / "finetune" / "adapter" / "adapter_model.safetensors").exists()
