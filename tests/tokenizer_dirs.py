"""Small real Hugging Face tokenizer folders with the chat templates of other model families, built offline
with the `tokenizers` library (a word-level vocabulary; the special tokens are real added tokens)."""

from __future__ import annotations

import json
from pathlib import Path

from workspace.chat_families import FAMILIES

WORDS = ["hello", "what", "is", "the", "capital", "of", "france", "paris", "a", "an", "answer", "question"]

# The families' reference Jinja templates in the layout their models ship (BOS first for Llama 3 and Gemma).
SPECIALS = {
    "llama3": {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>",
               "extra": ["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"]},
    "gemma": {"bos": "<bos>", "eos": "<end_of_turn>", "extra": ["<start_of_turn>", "<eos>", "<pad>"]},
    "chatml": {"bos": "<|im_start|>", "eos": "<|im_end|>", "extra": ["<|endoftext|>"]},
}


def make_tokenizer_dir(folder: Path, family: str, chat_template: str | None = None) -> Path:
    """A tokenizer folder whose chat template is ``family``'s (or ``chat_template``), loadable with
    ``AutoTokenizer.from_pretrained``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    sp = SPECIALS[family]
    specials = [sp["bos"], sp["eos"], *sp["extra"], "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=sp["bos"], eos_token=sp["eos"], unk_token="<unk>",
                                  additional_special_tokens=sp["extra"])
    tok.chat_template = chat_template or FAMILIES[family].jinja_template
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    (folder / "ollatune-test.json").write_text(json.dumps({"family": family}), encoding="utf-8")
    return folder
