"""Failures before and during training: rows longer than data.max_seq_len are counted before any training
(none trainable is refused, many cut is a warning), and a training process killed for memory says which
settings to turn, with what it printed kept in its worker.log."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from finetune.lengths import LengthReport, check, measure
from finetune.recipe import load_recipe
from finetune.troubleshoot import TrainingProblem
from tests.tokenizer_dirs import make_tokenizer_dir
from workspace.events import EventSink


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(make_tokenizer_dir(tmp_path_factory.mktemp("tok") / "chatml", "chatml")))


def _row(prompt_words: int, answer_words: int) -> dict:
    return {"prompt": [{"role": "user", "content": " ".join(["question"] * prompt_words)}],
            "completion": [{"role": "assistant", "content": " ".join(["answer"] * answer_words)}]}


def test_rows_are_counted_as_cut_or_dropped_against_max_seq_len(tokenizer):
    # chatml around the words: "<|im_start|> user\n ... <|im_end|>\n<|im_start|> assistant\n" adds a few tokens
    short, long_answer, long_prompt = _row(5, 5), _row(5, 200), _row(300, 5)
    prompt_len = len(tokenizer.apply_chat_template(short["prompt"], tokenize=True, add_generation_prompt=True,
                                                   return_dict=False))
    full_len = len(tokenizer.apply_chat_template(short["prompt"] + short["completion"], tokenize=True,
                                                 return_dict=False))
    assert prompt_len < full_len < 64
    report = measure(tokenizer, [short, long_answer, long_prompt, short], max_seq_len=64)
    assert (report.rows, report.truncated, report.dropped, report.trainable) == (4, 1, 1, 3)
    assert report.keep == [True, True, False, True]
    assert report.lengths[0] == full_len and report.lengths[1] == 64 and report.longest > 300


def test_nothing_trainable_is_refused_with_the_length_that_fits():
    report = LengthReport(rows=40, max_seq_len=448, dropped=40, longest=1210, p95=1130, longest_prompt=1190,
                          keep=[False] * 40)
    with pytest.raises(TrainingProblem) as e:
        check(report)
    assert "every one of the 40 training rows" in e.value.message and "448" in e.value.message
    assert "data.max_seq_len=1152" in e.value.hint  # the p95 rounded up to 64


def test_many_cut_rows_warn_once_and_few_do_not():
    warnings: list[str] = []
    check(LengthReport(rows=100, max_seq_len=256, truncated=5, dropped=0, p95=240), warn=warnings.append)
    assert warnings == []
    check(LengthReport(rows=100, max_seq_len=256, truncated=20, dropped=3, p95=400), warn=warnings.append)
    assert len(warnings) == 1 and "23 of 100" in warnings[0] and "data.max_seq_len=448" in warnings[0]


@pytest.mark.slow
def test_the_stage_refuses_korquad_length_rows_before_training(smollm2_base):
    """Every KorQuAD-style row of the shipped QA sample is longer than a 96-token window before its answer:
    the finetune stage stops before starting the training process."""
    from finetune.prepare import prepare_data
    from finetune.training import train
    from workspace.context import RunContext
    from workspace.settings import get_settings

    recipe = load_recipe("cpu-smoke", ["data.path=ko-qa", "data.format=qa", "data.max_seq_len=96",
                                       "data.eval_rows=2", "data.val_rows=0", "train.eval_steps=null"])
    ctx = RunContext.create("too-long", get_settings().ensure())
    data = prepare_data(recipe, ctx)
    with pytest.raises(TrainingProblem) as e:
        train(recipe, data, ctx, base=smollm2_base)
    assert "nothing would be trained" in e.value.message and "data.max_seq_len=" in e.value.hint
    assert not (ctx.run_dir / "finetune" / "worker.log").exists()  # no training process was started


KILLED_WORKER = textwrap.dedent("""
    import ctypes, json, os, signal, sys
    from finetune.worker import event_channel
    chan = event_channel()
    print("python: loading the model", flush=False)
    ctypes.CDLL(None).puts(b"native: allocating 12 GiB")
    chan.write(json.dumps({"worker": "event", "type": "log", "message": "step 3", "level": "info"}) + "\\n")
    chan.flush()
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_worker_killed_for_memory_names_the_knobs_and_keeps_its_output(tmp_path, monkeypatch):
    from finetune import worker

    monkeypatch.setattr(worker, "worker_argv", lambda spec_path: [sys.executable, "-c", KILLED_WORKER])
    seen: list[dict] = []
    events = EventSink("killed", None, listeners=[seen.append]).stage("finetune")
    recipe = load_recipe("demo-ko")  # batch 8, max_seq_len 448
    spec = {"run": "killed-run", "recipe": recipe.model_dump(mode="json")}
    with pytest.raises(TrainingProblem) as e:
        worker.run_worker(spec, tmp_path, events)
    assert "SIGKILL" in e.value.message and "out-of-memory" in e.value.message
    assert "train.batch_size=4 train.grad_accum=2" in e.value.hint and "data.max_seq_len=224" in e.value.hint
    assert "ollatune finetune resume killed-run" in e.value.hint
    log = (tmp_path / "worker.log").read_text(encoding="utf-8")
    assert "python: loading the model" in log and "native: allocating 12 GiB" in log  # nothing lost to buffers
    assert log.rstrip().splitlines()[-1].startswith("[ollatune] the training process was killed by SIGKILL")
    assert [ev["message"] for ev in seen if ev["type"] == "log"] == ["step 3"]
    assert json.loads((tmp_path / "worker.json").read_text(encoding="utf-8"))["run"] == "killed-run"
    assert Path(tmp_path / "worker.log").stat().st_size > 0
