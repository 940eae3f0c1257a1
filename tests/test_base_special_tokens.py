"""A base model read from a GGUF gets the special tokens the GGUF's metadata names, whatever the installed
transformers read: a wrong EOS would teach the model to end its answers with the wrong token."""

from __future__ import annotations

import json
import shutil

import pytest

from finetune.base_model import (
    BaseModelError,
    check_folder_special_tokens,
    reconcile_special_tokens,
    smollm2_gguf,
)
from workspace.gguf_info import read_gguf

pytestmark = pytest.mark.slow


def test_the_tokenizer_agrees_with_the_gguf_metadata(smollm2_base):
    from transformers import AutoTokenizer

    info = read_gguf(smollm2_gguf())
    tok = AutoTokenizer.from_pretrained(str(smollm2_base.hf_dir))
    assert tok.eos_token_id == info.metadata["tokenizer.ggml.eos_token_id"] == 2
    assert tok.bos_token_id == info.metadata["tokenizer.ggml.bos_token_id"] == 1
    record = json.loads((smollm2_base.hf_dir / "ollatune-source.json").read_text())
    assert "special_tokens" in record  # checked when the folder was made


def test_a_misread_eos_is_corrected_to_the_gguf_id(smollm2_base):
    """What one transformers release did with SmolLM2: eos_token = <|im_start|> (id 1); the file says 2."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_base.hf_dir))
    tok.eos_token = "<|im_start|>"
    assert tok.eos_token_id == 1
    fixes = reconcile_special_tokens(tok, smollm2_gguf())
    assert fixes == {"eos": {"was": "<|im_start|>", "was_id": 1, "now": "<|im_end|>", "now_id": 2}}
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert reconcile_special_tokens(tok, smollm2_gguf()) == {}


def test_a_folder_made_before_the_check_is_repaired_and_saved(smollm2_base, tmp_path):
    from transformers import AutoTokenizer

    folder = tmp_path / "old"
    shutil.copytree(smollm2_base.hf_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.eos_token = "<|im_start|>"
    tok.save_pretrained(str(folder))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["eos_token_id"] = 1
    (folder / "config.json").write_text(json.dumps(cfg))
    logged = []
    fixes = check_folder_special_tokens(folder, smollm2_gguf(), logged.append)
    assert fixes["eos"]["now_id"] == 2 and "corrected" in logged[0]
    assert AutoTokenizer.from_pretrained(str(folder)).eos_token_id == 2
    assert json.loads((folder / "config.json").read_text())["eos_token_id"] == 2


def test_a_gguf_whose_metadata_names_a_token_the_vocabulary_lacks_is_refused(smollm2_base, monkeypatch):
    import dataclasses

    from transformers import AutoTokenizer

    import workspace.gguf_info as gi

    info = read_gguf(smollm2_gguf())
    broken = dataclasses.replace(info, special_texts={**info.special_texts, 2: "<|no-such-token|>"})
    monkeypatch.setattr(gi, "read_gguf", lambda path: broken)
    tok = AutoTokenizer.from_pretrained(str(smollm2_base.hf_dir))
    with pytest.raises(BaseModelError, match="eos_token_id = 2"):
        reconcile_special_tokens(tok, smollm2_gguf())
