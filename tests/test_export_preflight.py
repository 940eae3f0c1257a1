"""The export's preflight: architecture, disk and memory are checked from config.json and the safetensors
headers before a weight is read, with the estimate in words and one clear line when something does not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.errors import ExportError
from export.preflight import GIB, check_architecture, plan_export, read_weights


def _model(folder: Path, arch: str = "LlamaForCausalLM", shapes: dict | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [arch], "model_type": "llama"}))
    shapes = shapes or {"model.embed_tokens.weight": (1000, 64), "model.layers.0.mlp.up_proj.weight": (128, 64)}
    half = len(shapes) // 2 or 1
    items = list(shapes.items())
    save_file({k: torch.zeros(v, dtype=torch.bfloat16) for k, v in items[:half]}, str(folder / "model-1.safetensors"))
    if items[half:]:
        save_file({k: torch.zeros(v, dtype=torch.bfloat16) for k, v in items[half:]},
                  str(folder / "model-2.safetensors"))
    return folder


def test_weights_are_counted_from_the_headers(tmp_path):
    w = read_weights(_model(tmp_path / "m"))
    assert w.params == 1000 * 64 + 128 * 64 and w.largest_tensor == 64000 and w.dtypes == {"BF16"}
    assert w.bytes == sum(f.stat().st_size for f in (tmp_path / "m").glob("*.safetensors"))
    assert w.largest_shard == (tmp_path / "m" / "model-1.safetensors").stat().st_size


def test_an_unsupported_architecture_is_one_clear_line(tmp_path):
    assert check_architecture(_model(tmp_path / "ok")) == "LlamaForCausalLM"
    with pytest.raises(ExportError) as e:
        check_architecture(_model(tmp_path / "odd", arch="TotallyNewForCausalLM"))
    assert "TotallyNewForCausalLM" in e.value.message and "\n" not in e.value.message
    assert "does not support" in e.value.message and e.value.hint
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "config.json").write_text("{}")
    with pytest.raises(ExportError, match="names no architecture"):
        check_architecture(tmp_path / "none")


def test_the_plan_estimates_disk_and_memory_and_picks_where_the_reference_runs(tmp_path):
    model = _model(tmp_path / "m")
    params = read_weights(model).params
    plan = plan_export(model, tmp_path / "out", ["q4_k_m", "q8_0"], merge=True, ram=16 * GIB, cuda_free=0)
    # merged 16-bit copy + f16 file + both quantizations + one temporary beside them
    want = 2 * params + 2 * params + int(params * 4.9 / 8) + int(params * 8.5 / 8) + (64 << 20)
    assert plan.disk_needed == want and plan.reference == "cpu-float32"
    assert set(plan.phases) == {"merge", "convert", "quantize", "reference"}
    assert "GiB of disk" in plan.summary() and "HF reference on cpu-float32" in plan.summary()
    gpu = plan_export(model, tmp_path / "out", ["q4_k_m"], merge=False, ram=16 * GIB, cuda_free=80 * GIB)
    assert gpu.reference == "cuda-float32" and "merge" not in gpu.phases


def test_an_8b_model_on_a_small_box_is_checked_without_a_second_full_load(tmp_path, monkeypatch):
    """The shape of Llama-3-8B (read from headers only: the tensors are never allocated) on a WSL2 box with
    16 GiB: the plan fits in memory, and the HF reference is left out rather than loaded in float32."""
    import export.preflight as pf

    fake = pf.Weights(params=8_030_000_000, bytes=16_060_000_000, largest_shard=4_980_000_000,
                      largest_tensor=128256 * 4096, dtypes={"BF16"}, largest_layer_tensor=14336 * 4096)
    monkeypatch.setattr(pf, "read_weights", lambda folder: fake)
    model = _model(tmp_path / "m")
    plan = plan_export(model, tmp_path / "out", ["q4_k_m"], merge=True, ram=16 * GIB, cuda_free=0,
                       disk_free=200 * GIB)
    assert plan.reference == "" and "float32" in plan.reference_note
    # measured on the 8B shape: merge 7.15 GiB, convert and quantize 5.27 GiB peak RSS
    assert 6.5 * GIB < plan.phases["merge"] <= 8 * GIB and 5 * GIB < plan.phases["convert"] < 6 * GIB
    on_gpu = plan_export(model, tmp_path / "out", ["q4_k_m"], merge=True, ram=16 * GIB, cuda_free=22 * GIB,
                         disk_free=200 * GIB)
    assert on_gpu.reference == "cuda-bfloat16" and on_gpu.phases["reference"] < 4 * GIB


def test_too_little_disk_or_memory_is_refused_before_anything_is_written(tmp_path):
    model = _model(tmp_path / "m")
    with pytest.raises(ExportError, match="GiB of disk") as e:
        plan_export(model, tmp_path / "out", ["q4_k_m"], merge=True, ram=16 * GIB, disk_free=1000)
    assert "nothing was written" in e.value.hint
    with pytest.raises(ExportError, match="GiB of host RAM") as e:
        plan_export(model, tmp_path / "out", ["q4_k_m"], merge=True, ram=100 << 20, cuda_free=0)
    assert ".wslconfig" in e.value.hint
    assert list((tmp_path / "out").iterdir()) == []
