"""The one GGUF metadata reader of the project: what the runtime, the template detector, the create checks
and the base-model loader need from a GGUF file, read without loading the model (``gguf.GGUFReader`` maps
the file)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workspace.errors import OllatuneError

__all__ = ["GGUFInfo", "GGUFError", "read_gguf", "FILE_TYPES"]

GGUF_MAGIC = b"GGUF"
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
              12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
              19: "IQ2_XXS", 20: "IQ2_XS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 28: "IQ4_XS", 32: "BF16"}


class GGUFError(OllatuneError):
    default_hint = "re-export or re-download the file; it may be truncated or not a GGUF file"


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    metadata: dict[str, Any]  # every scalar key (strings decoded), without the chat template
    chat_template: str | None
    bos_token: str
    eos_token: str
    add_bos: bool
    parameter_count: int
    tensor_names: frozenset[str] = field(default_factory=frozenset, repr=False)
    special_texts: dict[int, str] = field(default_factory=dict, repr=False)  # id -> text of every *_token_id

    def token_text(self, idx: int) -> str:
        """The text of a token the metadata names as special (BOS, EOS, padding, EOT...)."""
        return self.special_texts.get(int(idx), "")

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture") or "")

    @property
    def kind(self) -> str:
        """``model`` or ``adapter`` (general.type; older files have none and are models)."""
        return str(self.metadata.get("general.type") or "model")

    @property
    def name(self) -> str | None:
        return self.metadata.get("general.name")

    @property
    def context_length(self) -> int | None:
        v = self.metadata.get(f"{self.architecture}.context_length")
        return int(v) if isinstance(v, (int, float)) else None

    @property
    def is_embedding(self) -> bool:
        """An encoder/embedding model (it declares a pooling type), as Ollama decides its capabilities."""
        return f"{self.architecture}.pooling_type" in self.metadata

    @property
    def has_vision(self) -> bool:
        return f"{self.architecture}.vision.block_count" in self.metadata or "clip.has_vision_encoder" in self.metadata

    @property
    def file_type(self) -> str:
        ft = self.metadata.get("general.file_type")
        return FILE_TYPES.get(ft, str(ft) if ft is not None else "")

    def size_label(self) -> str:
        n = self.parameter_count
        if self.metadata.get("general.size_label"):
            return str(self.metadata["general.size_label"])
        return f"{n / 1e9:.1f}B" if n >= 1e9 else (f"{n / 1e6:.0f}M" if n >= 1e6 else str(n))

    def summary(self) -> dict:
        """The config fields Ollama keeps for a model layer (family, size, quantization, model_info)."""
        arch = self.architecture
        info = {**self.metadata, "general.parameter_count": self.parameter_count}
        return {"model_format": "gguf", "model_family": arch, "model_families": [arch] if arch else None,
                "model_type": self.size_label(), "file_type": self.file_type, "model_info": info}


def read_gguf(path: Path | str) -> GGUFInfo:
    """The metadata of a GGUF file; GGUFError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"GGUF file not found: {path}", hint="check the path, or run `ollatune export` first")
    st = path.stat()
    return _read(str(path.absolute()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _read(path_str: str, size: int, mtime_ns: int) -> GGUFInfo:
    import gguf

    path = Path(path_str)
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise GGUFError(f"{path.name} is not in GGUF format (no GGUF magic bytes)")
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file for us
        raise GGUFError(f"cannot read the GGUF metadata of {path.name}: {e}") from None

    meta: dict[str, Any] = {}
    chat_template = None
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or not f.types or not f.data:
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            continue
        part = f.parts[f.data[0]]
        if t == gguf.GGUFValueType.STRING:
            value: Any = bytes(part).decode("utf-8", "replace")
            if key == "tokenizer.chat_template":
                chat_template = value
                continue
        else:
            value = part.tolist()[0] if hasattr(part, "tolist") else part[0]
        meta[key] = value

    tokens = reader.fields.get("tokenizer.ggml.tokens")

    def token(idx: Any) -> str:
        if idx is None or tokens is None or not (0 <= int(idx) < len(tokens.data)):
            return ""
        return bytes(tokens.parts[tokens.data[int(idx)]]).decode("utf-8", "replace")

    count = 0
    for t in reader.tensors:
        n = 1
        for d in t.shape:
            n *= int(d)
        count += n
    add_bos = meta.get("tokenizer.ggml.add_bos_token")
    return GGUFInfo(path=path, metadata=meta, chat_template=chat_template,
                    bos_token=token(meta.get("tokenizer.ggml.bos_token_id")),
                    eos_token=token(meta.get("tokenizer.ggml.eos_token_id")),
                    add_bos=bool(add_bos) if add_bos is not None else True, parameter_count=count,
                    tensor_names=frozenset(t.name for t in reader.tensors),
                    special_texts={int(v): token(v) for k, v in meta.items()
                                   if k.startswith("tokenizer.ggml.") and k.endswith("_token_id")
                                   and isinstance(v, int)})
