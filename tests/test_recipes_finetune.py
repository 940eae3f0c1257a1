"""Shipped fine-tuning recipes, recipe rules, backend choice and the troubleshooting messages."""

from __future__ import annotations

import pytest

from finetune.backends import pick_backend, unsloth_unavailable
from finetune.recipe import RecipeError, load_recipe, shipped_recipes
from finetune.samples import open_records
from workspace.samples import resolve_source
from finetune.troubleshoot import TrainingProblem, diagnose, flat_loss_hint, hub_problem, nan_loss_problem


def test_the_issue_recipes_are_shipped():
    assert {"cpu-smoke", "ko-alpaca-qlora", "ko-text2sql-qlora", "demo-ko"} <= set(shipped_recipes())


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_fits_its_data(name):
    r = load_recipe(name)
    source, task = resolve_source(r.data.path, r.data.format)
    assert task == r.data.format, f"{name}: data.format {r.data.format} but the sample is {task}"
    rows = sum(1 for _ in open_records(source))
    assert r.data.eval_rows + r.data.val_rows < rows / 2, f"{name}: too few training rows left"
    if r.train.eval_steps is not None:
        assert r.data.val_rows > 0, f"{name}: eval_steps without validation rows"
    steps = r.train.total_steps(rows - r.data.eval_rows - r.data.val_rows)
    assert steps >= 1
    if r.train.backend != "hf":
        assert r.train.quant.load_in_4bit  # the GPU recipes are QLoRA


def test_qlora_recipe_trains_for_epochs():
    r = load_recipe("ko-alpaca-qlora")
    assert r.train.max_steps is None and r.train.epochs == 3
    # 245 training rows, effective batch 2 x 4 = 8 -> 31 steps an epoch
    assert r.train.total_steps(245) == 93
    assert load_recipe("ko-alpaca-qlora", ["train.lora.r=32"]).train.lora.r == 32


@pytest.mark.parametrize("overrides, field", [
    (["train.lora.loftq=true"], "load_in_4bit"),
    (["train.max_steps=10"], "only one of"),
    (["train.epochs=null"], "max_steps or train.epochs"),
    (["train.packing=true", "train.padding_free=false"], "packing"),
    (["train.optimizer=sgd"], "train.optimizer"),
    (["train.quant.quant_type=int3"], "train.quant.quant_type"),
])
def test_inconsistent_settings_are_refused(overrides, field):
    with pytest.raises(RecipeError, match=field.replace(".", r"\.")):
        load_recipe("ko-alpaca-qlora", overrides)


def test_auto_backend_says_why_it_is_not_unsloth_here():
    reason = unsloth_unavailable()
    if reason is None:
        pytest.skip("this machine can run unsloth")
    choice = pick_backend("auto")
    assert choice.name == "hf" and reason in choice.reason
    with pytest.raises(TrainingProblem) as e:
        pick_backend("unsloth")
    assert "train.backend=auto" in e.value.hint


def test_out_of_memory_names_the_knobs():
    import torch

    r = load_recipe("ko-alpaca-qlora", ["train.auto_tune=false"])
    p = diagnose(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), r)
    assert p.args[0].startswith("CUDA out of memory")
    assert "train.batch_size=1 train.grad_accum=8" in p.hint
    assert "train.auto_tune=true" in p.hint and "data.max_seq_len=1024" in p.hint


def test_nan_and_flat_loss_messages():
    r = load_recipe("demo-ko")
    p = nan_loss_problem(7, float("nan"), r)
    assert "step 7" in str(p) and "train.lr=0.0005" in p.hint
    flat = [2.0, 2.01, 1.99, 2.0, 2.0, 2.01, 1.995, 2.0]
    hot = load_recipe("demo-ko", ["train.lr=0.5"])
    assert "has not moved" in flat_loss_hint(flat, hot) and "lower train.lr" in flat_loss_hint(flat, hot)
    assert "raise train.lr" in flat_loss_hint(flat, load_recipe("ko-alpaca-qlora"))
    assert flat_loss_hint([2.0, 1.8, 1.6, 1.4, 1.2, 1.0, 0.9, 0.8], r) is None
    assert "masked" in flat_loss_hint([0.0] * 8, r)


def test_gated_and_missing_models_are_explained():
    class GatedRepoError(Exception):
        pass

    class RepositoryNotFoundError(Exception):
        pass

    gated = hub_problem("meta-llama/Llama-3.1-8B", GatedRepoError("401 Client Error"))
    assert "gated" in str(gated) and "licence" in gated.hint
    missing = hub_problem("nobody/nothing", RepositoryNotFoundError("404"))
    assert "does not exist" in str(missing) and "model.base" in missing.hint


def test_an_unknown_hub_model_fails_before_training(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tui.cli import app

    monkeypatch.setenv("OLLATUNE_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(app, ["finetune", "run", "cpu-smoke", "--set", "model.base=nobody/no-such-model"])
    assert res.exit_code == 1
    assert "nobody/no-such-model" in res.output and "next:" in res.output


def test_the_metric_callback_stops_on_a_nan_loss_and_warns_once_on_a_flat_one(tmp_path):
    from types import SimpleNamespace

    from finetune.backends import TrainJob
    from finetune.backends.common import metric_callback
    from workspace.events import EventSink

    seen: list[dict] = []
    job = TrainJob(load_recipe("ko-alpaca-qlora"), tmp_path, [], tmp_path, EventSink("t", None, listeners=[seen.append])
                   .stage("finetune"))
    cb = metric_callback(job, 40, [100] * 40, cuda=False)
    state = SimpleNamespace(global_step=0, epoch=0.0)
    cb.on_train_begin(None, state, None)
    for step in range(1, 13):
        state.global_step, state.epoch = step, step / 40
        cb.on_log(None, state, None, logs={"loss": 2.0 + 0.001 * (step % 2), "learning_rate": 2e-4, "grad_norm": 0.5})
    warnings = [e for e in seen if e["type"] == "log" and e["level"] == "warning"]
    assert len(warnings) == 1 and "has not moved" in warnings[0]["message"]
    metrics = [e for e in seen if e["type"] == "metric"]
    assert metrics[-1]["step"] == 12 and metrics[-1]["total_steps"] == 40 and metrics[-1]["eta_s"] >= 0
    state.global_step = 13
    with pytest.raises(TrainingProblem, match="step 13"):
        cb.on_log(None, state, None, logs={"loss": float("nan")})


def test_tensorboard_without_the_package_is_refused_before_training(tmp_path, monkeypatch):
    import importlib.util

    from typer.testing import CliRunner

    from tui.cli import app

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    monkeypatch.setenv("OLLATUNE_HOME", str(tmp_path))
    res = CliRunner().invoke(app, ["finetune", "run", "cpu-smoke", "--set", "train.tensorboard=true"])
    assert res.exit_code == 1
    assert "tensorboard package is not installed" in res.output and "train.tensorboard=false" in res.output
