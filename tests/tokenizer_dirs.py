"""Small real Hugging Face tokenizer folders with the chat templates of other model families, built offline
with the `tokenizers` library (a word-level vocabulary; the special tokens are real added tokens)."""

from __future__ import annotations

import json
from pathlib import Path

from workspace.chat_families import FAMILIES

WORDS = ["hello", "what", "is", "the", "capital", "of", "france", "paris", "a", "an", "answer", "question"]

# Special tokens of the families' models (their reference Jinja templates write BOS first for Llama 3 and Gemma);
# ``bos`` is None for a tokenizer without one.
SPECIALS = {
    "llama3": {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>",
               "extra": ["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"]},
    "gemma": {"bos": "<bos>", "eos": "<end_of_turn>", "extra": ["<start_of_turn>", "<eos>", "<pad>"]},
    "chatml": {"bos": "<|im_start|>", "eos": "<|im_end|>", "extra": ["<|endoftext|>"]},
    "llama3.1": {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>",
                 "extra": ["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>", "<|eom_id|>"]},
    "mistral": {"bos": "<s>", "eos": "</s>", "extra": ["[INST]", "[/INST]"]},
    "mistral-tekken": {"bos": "<s>", "eos": "</s>", "extra": ["[INST]", "[/INST]"]},
    "mistral-v1": {"bos": "<s>", "eos": "</s>", "extra": []},
    "mistral-legacy": {"bos": "<s>", "eos": "</s>", "extra": []},
    "mistral-legacy-v0.1": {"bos": "<s>", "eos": "</s>", "extra": []},
    "phi3": {"bos": "<s>", "eos": "<|endoftext|>", "extra": ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]},
    "phi3-legacy": {"bos": "<s>", "eos": "<|endoftext|>", "extra": ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]},
    "zephyr": {"bos": "<s>", "eos": "</s>", "extra": ["<|system|>", "<|user|>", "<|assistant|>"]},
    "llama2": {"bos": "<s>", "eos": "</s>", "extra": []},
    "exaone": {"bos": "[BOS]", "eos": "[|endofturn|]", "extra": ["[|system|]", "[|user|]", "[|assistant|]", "[PAD]"]},
    "deepseek": {"bos": "<｜begin▁of▁sentence｜>", "eos": "<｜end▁of▁sentence｜>", "extra": []},
    "deepseek-v3": {"bos": "<｜begin▁of▁sentence｜>", "eos": "<｜end▁of▁sentence｜>", "extra": ["<｜User｜>", "<｜Assistant｜>"]},
    "granite": {"bos": "<|end_of_text|>", "eos": "<|end_of_text|>", "extra": ["<|start_of_role|>", "<|end_of_role|>"]},
    "alpaca-ko": {"bos": None, "eos": "<|endoftext|>", "extra": []},
}


def make_tokenizer_dir(folder: Path, family: str, chat_template: str | None = None, *,
                       specials: dict | None = None) -> Path:
    """A tokenizer folder whose chat template is ``family``'s (or ``chat_template``), loadable with
    ``AutoTokenizer.from_pretrained``. ``specials`` (``{"bos": str | None, "eos": str, "extra": [...]}``) gives the
    tokenizer's special tokens; by default they are ``SPECIALS[family]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    sp = specials if specials is not None else SPECIALS[family]
    bos, eos = sp.get("bos"), sp["eos"]
    extra = [t for t in dict.fromkeys(sp.get("extra", ())) if t not in (bos, eos, "<unk>")]
    specials_list = list(dict.fromkeys([t for t in (bos, eos) if t] + extra + ["<unk>"]))
    vocab = {tok: i for i, tok in enumerate(specials_list + [w for w in WORDS if w not in specials_list])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=eos, unk_token="<unk>",
                                  additional_special_tokens=extra)
    tok.chat_template = chat_template or FAMILIES[family].jinja_template
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    (folder / "ollatune-test.json").write_text(json.dumps({"family": family}), encoding="utf-8")
    return folder
