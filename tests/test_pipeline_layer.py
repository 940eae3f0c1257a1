"""The pipeline layer: run identity versus stage inputs, stage markers that round-trip each stage's typed
result, and one error event labelled with the stage that failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.runner import EvalResult
from export import ExportResult
from finetune.base_model import ResolvedBase
from finetune.prepare import PreparedData
from finetune.recipe import load_recipe
from finetune.training import TrainResult
from pipeline import ExportedModels, PublishedModels, StageFailed, run_id_for, run_pipeline, vanilla_name
from pipeline.markers import StageMarkers
from pipeline.run import DataInputs, EvalsInputs
from serve.publishing import PublishResult
from workspace.events import read_events
from workspace.settings import get_settings


def _files(tmp_path: Path, *names: str) -> list[Path]:
    out = []
    for n in names:
        p = tmp_path / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x", encoding="utf-8")
        out.append(p)
    return out


def _results(tmp_path: Path) -> dict[str, object]:
    train, held, val, adapter, f16, q4, mf = _files(tmp_path, "train.jsonl", "heldout.jsonl", "val.jsonl",
                                                     "adapter/adapter_config.json", "t-f16.gguf", "t-q4.gguf",
                                                     "Modelfile")
    base = ResolvedBase(ref="Qwen/Qwen2.5-7B-Instruct", kind="hub", hf_dir=tmp_path, source_sha256="b" * 64)
    exported = ExportResult(hf_dir=tmp_path, f16_gguf=f16, gguf=q4, quant="q4_k_m", sha256="c" * 64, bytes=1,
                            artifact_id=3, verify={"f16": {"greedy_agreement": [1.0]}})
    published = PublishResult(role="tuned", name="ollatune/x:latest", digest="d" * 64, modelfile=mf, model_id=4,
                              family="llama3", stop=["<|eot_id|>"], system="sys", host="embedded:/tmp/o")
    return {
        "data": PreparedData(dataset_path=train, dataset_sha256="a" * 64, dataset_id=1, task="text2sql",
                             train_path=train, train_rows=10, heldout_path=held, heldout_rows=2, val_path=val,
                             val_rows=1),
        "finetune": TrainResult(adapter_dir=adapter.parent, adapter_sha256="e" * 64, base=base, backend="hf",
                                steps=2, final_loss=1.5, first_loss=2.0, training_run_id=7, memory={"device": "cpu"}),
        "export": ExportedModels(tuned=exported, vanilla=exported),
        "serve": PublishedModels(tuned=published, vanilla=published.model_copy(update={"role": "vanilla"})),
        "evals": EvalResult(suite="ko-instruct", suite_hash="f" * 64, eval_run_ids={"vanilla": 1, "tuned": 2},
                            aggregates={"tuned": {"rouge_l": 0.25}}, skipped=False),
    }


def test_each_stage_result_round_trips_through_its_marker(tmp_path):
    markers = StageMarkers(tmp_path / "run")
    inputs = EvalsInputs(suite_hash="1", models={"tuned": "2"})
    for stage, result in _results(tmp_path).items():
        markers.save(stage, inputs, result, [])
        back = markers.load(stage, inputs, type(result))
        assert type(back) is type(result) and back == result, stage
        stored = json.loads(markers.path(stage).read_text(encoding="utf-8"))
        assert stored["result_type"] == type(result).__name__ and stored["inputs"] == inputs.model_dump()


def test_a_marker_counts_only_for_the_same_inputs_and_existing_files(tmp_path):
    markers = StageMarkers(tmp_path / "run")
    data = _results(tmp_path)["data"]
    inputs = DataInputs(data={"path": "x"}, system=None, source="a")
    markers.save("data", inputs, data, data.paths())
    assert markers.load("data", inputs, PreparedData) == data
    assert markers.load("data", inputs.model_copy(update={"system": "new"}), PreparedData) is None
    assert markers.load("data", inputs, TrainResult) is None  # another type does not validate
    data.heldout_path.unlink()
    assert markers.load("data", inputs, PreparedData) is None  # its files are gone: the stage runs again
    markers.path("data").write_text("{torn", encoding="utf-8")
    assert markers.load("data", inputs, PreparedData) is None


def test_run_identity_is_what_the_adapter_depends_on():
    base = load_recipe("demo-ko")
    same = [["eval.limit=3"], ["eval.num_predict=12"], ["eval.suite=ko-instruct"], ["export.quant=q8_0"],
            ["serve.name=ollatune/other"], ["serve.parameters.num_ctx=4096"]]
    for overrides in same:
        assert run_id_for(load_recipe("demo-ko", overrides)) == run_id_for(base), overrides
    changed = [["train.lr=0.01"], ["data.eval_rows=10"], ["model.system=안녕"], ["train.lora.r=8"]]
    for overrides in changed:
        assert run_id_for(load_recipe("demo-ko", overrides)) != run_id_for(base), overrides


def test_vanilla_models_are_named_after_the_base_actually_used(tmp_path):
    recipe = load_recipe("ko-text2sql-qlora")
    qwen = ResolvedBase(ref="Qwen/Qwen2.5-7B-Instruct", kind="hub", hf_dir=tmp_path, source_sha256="0")
    smol = ResolvedBase(ref="smollm2-135m-instruct", kind="alias", hf_dir=tmp_path, source_sha256="0")
    gguf = ResolvedBase(ref="/models/EXAONE-3.0-7.8B-Instruct.Q4_K_M.gguf", kind="gguf", hf_dir=tmp_path,
                        source_sha256="0")
    assert vanilla_name(recipe, qwen) == "ollatune/qwen2.5-7b-instruct-vanilla"
    assert vanilla_name(recipe, smol) == "ollatune/smollm2-135m-instruct-vanilla"
    assert vanilla_name(recipe, gguf) == "ollatune/exaone-3.0-7.8b-instruct-vanilla"
    assert vanilla_name(load_recipe("demo-ko", ["serve.vanilla_name=ollatune/mine"]), smol) == "ollatune/mine"


def test_a_failing_stage_writes_one_error_event_labelled_with_its_stage(monkeypatch):
    """tensorboard asked for but not installed: the data stage completes, the finetune stage refuses."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    recipe = load_recipe("cpu-smoke", ["train.tensorboard=true"])
    with pytest.raises(StageFailed) as e:
        run_pipeline(recipe, get_settings().ensure())
    assert e.value.stage == "finetune" and "tensorboard" in e.value.message and "pip install" in e.value.hint
    events = list(read_events(get_settings().runs_dir / run_id_for(recipe) / "events.jsonl"))
    errors = [ev for ev in events if ev["type"] == "error"]
    assert len(errors) == 1 and errors[0]["stage"] == "finetune" and errors[0]["hint"] == e.value.hint
    assert [ev["stage"] for ev in events if ev["type"] == "done"] == ["data"]


def test_until_names_a_stage():
    from workspace.errors import OllatuneError

    with pytest.raises(OllatuneError) as e:
        run_pipeline(load_recipe("cpu-smoke"), get_settings().ensure(), until="deploy")
    assert "data, finetune, export, serve, evals" in e.value.hint


def test_the_cli_shows_a_stage_error_whole_with_its_stage_and_next_step(monkeypatch, capsys):
    """A parity failure's message is its diff: every line of it reaches the user, not only the first."""
    import tui.cli

    message = ("the Modelfile TEMPLATE (family 'chatml') renders prompts differently from the model's chat "
               "template; refusing to register.\nsingle-turn: prompts differ at character 10:\n"
               "    jinja (training): ...'<|im_start|>system'...\n    go (Modelfile):   ...'<|im_start|>user'...")

    def failing_app():
        raise StageFailed("serve", message, "pick the family the model was trained with")

    monkeypatch.setattr(tui.cli, "app", failing_app)
    with pytest.raises(SystemExit) as e:
        tui.cli.main()
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error serve: the Modelfile TEMPLATE")
    assert "jinja (training): ...'<|im_start|>system'..." in err and "go (Modelfile):" in err
    assert "next: pick the family the model was trained with" in err and "Traceback" not in err


def test_each_stage_has_its_public_entry_point():
    """What the pipeline calls, by the names the stages publish (also after their submodules are loaded)."""
    import inspect

    import evals
    import export
    import finetune
    import finetune.training  # noqa: F401  -- a submodule import must not shadow the entry point
    import serve
    import serve.publishing  # noqa: F401

    entry = {"finetune.prepare_data": finetune.prepare_data, "finetune.train": finetune.train,
             "export.to_gguf": export.to_gguf, "serve.publish": serve.publish, "evals.run": evals.run}
    for name, fn in entry.items():
        assert inspect.isfunction(fn), name
    assert inspect.signature(finetune.train).return_annotation in ("TrainResult", finetune.TrainResult)
    assert inspect.signature(serve.publish).return_annotation in ("PublishResult", serve.PublishResult)
