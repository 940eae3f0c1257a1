"""The streaming merge against PEFT's merge_and_unload on tiny random models: bit-identical weights, sharded
bases, rsLoRA and rank patterns, a mismatched adapter in one line, nothing left behind on failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from export.errors import ExportError
from export.merge import merge_adapter

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny(tmp_path: Path, name: str, hidden: int = 64, layers: int = 2, shard: str | None = None) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    out = tmp_path / name
    model.save_pretrained(out, safe_serialization=True, **({"max_shard_size": shard} if shard else {}))
    return out


def _adapter(tmp_path: Path, base: Path, **lora) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, **lora)
    peft_model = get_peft_model(model, cfg)
    out = tmp_path / "adapter"
    peft_model.save_pretrained(out)
    return out


def _peft_reference(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload().to(torch.bfloat16)
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def _ours(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.parametrize("lora, shard", [({}, None), ({"use_rslora": True}, "40KB"),
                                         ({"rank_pattern": {"down_proj": 2}, "alpha_pattern": {"q_proj": 3}}, None)])
def test_streaming_merge_is_bit_identical_to_peft(tmp_path, lora, shard):
    base = _tiny(tmp_path, "base", shard=shard)
    if shard:
        assert (base / "model.safetensors.index.json").exists()  # a sharded base
    adapter = _adapter(tmp_path, base, **lora)
    result = merge_adapter(base, adapter, tmp_path / "merged", max_shard_bytes=30_000)
    ref = _peft_reference(base, adapter)
    ours = _ours(result.merged_dir)
    assert set(ours) <= set(ref) and {k for k in ref if "lm_head" not in k} <= set(ours)
    for k, v in ours.items():
        assert v.dtype == torch.bfloat16 and torch.equal(v, ref[k]), k
    assert result.targeted_tensors == 2 * len(TARGETS) and result.changed_tensors == 2 * len(TARGETS)
    assert len(result.shards) > 1 and (result.merged_dir / "model.safetensors.index.json").exists()
    index = json.loads((result.merged_dir / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(ours)
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(result.merged_dir)  # a normal HF folder
    assert loaded.config.num_hidden_layers == 2


def test_an_adapter_of_another_base_is_one_line(tmp_path):
    small = _tiny(tmp_path, "small", hidden=64)
    other = _tiny(tmp_path, "other", hidden=32)
    adapter = _adapter(tmp_path, small)
    with pytest.raises(ExportError) as e:
        merge_adapter(other, adapter, tmp_path / "merged")
    assert "does not fit this base" in e.value.message and "\n" not in e.value.message
    assert "model.base" in e.value.hint
    assert not (tmp_path / "merged").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("merged", ".merged"))]


def test_an_interrupted_merge_leaves_no_final_folder_and_a_rerun_completes(tmp_path, monkeypatch):
    import export.merge as m

    base = _tiny(tmp_path, "base")
    adapter = _adapter(tmp_path, base)
    calls = {"n": 0}
    real = m._ShardWriter.add

    def dying(self, name, tensor):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return real(self, name, tensor)

    monkeypatch.setattr(m._ShardWriter, "add", dying)
    with pytest.raises(OSError):
        merge_adapter(base, adapter, tmp_path / "merged", max_shard_bytes=20_000)
    assert not (tmp_path / "merged").exists()
    assert not [p for p in tmp_path.iterdir() if "merged" in p.name]  # no half-written folder under any name
    monkeypatch.setattr(m._ShardWriter, "add", real)
    assert merge_adapter(base, adapter, tmp_path / "merged").changed_tensors == 2 * len(TARGETS)


def test_an_untrained_adapter_is_refused(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = _tiny(tmp_path, "base")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS)).save_pretrained(tmp_path / "a0")
    with pytest.raises(ExportError, match="changed no weight"):
        merge_adapter(base, tmp_path / "a0", tmp_path / "merged")
