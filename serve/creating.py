"""``POST /api/create``: a request checked whole before anything is written, then the layers and manifest.

Checked first (each a 400 with Ollama's wording where Ollama has one): the name; ``files``/``adapters``
map names to uploaded blobs; exactly one model GGUF (or ``from`` an existing model); each adapter is a GGUF
LoRA adapter of the base model's architecture (an adapter llama.cpp would crash on never becomes a model);
the TEMPLATE parses; parameters have their option types. Without a TEMPLATE the model's own chat template
(from the GGUF) is detected and followed, its default system prompt included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from serve.errors import ServeError
from workspace.gguf_info import GGUFError, read_gguf
from serve.names import ApiError, full_name, normalize_digest, parse_name
from serve.options import check_type
from serve.store import (MEDIA_ADAPTER, MEDIA_LICENSE, MEDIA_MESSAGES, MEDIA_MODEL, MEDIA_PARAMS, MEDIA_SYSTEM,
                         MEDIA_TEMPLATE, ModelRecord, ModelStore)

__all__ = ["CreatePlan"]


@dataclass
class CreatePlan:
    store: ModelStore
    name: str
    base: ModelRecord | None
    model_blob: str | None  # hex digest of the model GGUF (None: the base model's)
    adapter_blobs: list[str]
    template: str | None
    system: str | None
    params: dict[str, Any]
    messages: list[dict] | None
    licenses: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    detected_stop: list[str] | None = None

    @classmethod
    def from_request(cls, store: ModelStore, data: dict) -> "CreatePlan":
        name = data.get("model") or data.get("name")
        parse_name(name)
        files, adapters = data.get("files") or {}, data.get("adapters") or {}
        if not isinstance(files, dict) or not isinstance(adapters, dict):
            raise ApiError(400, "files and adapters must map file names to sha256 digests")
        for fn, dg in list(files.items()) + list(adapters.items()):
            if not isinstance(fn, str) or fn.startswith("/") or ".." in fn.split("/"):
                raise ApiError(400, "file path must be relative")
            normalize_digest(dg)
            if not store.has_blob(dg):
                raise ApiError(400, f"blob {dg} for file {fn!r} not found: upload it first with POST /api/blobs/{dg}")
        base = None
        if data.get("from"):
            try:
                base = store.get(data["from"])
            except ApiError:
                raise ApiError(400, f'base model "{data["from"]}" not found: create it first (this runtime pulls '
                                    "nothing), or give files instead of from") from None
        ggufs = [(fn, dg) for fn, dg in files.items() if fn.lower().endswith(".gguf")]
        if not ggufs and base is None:
            if files:
                raise ApiError(400, f"no .gguf file among files {sorted(files)}: ollatune's runtime serves GGUF "
                                    "models only")
            raise ApiError(400, "neither 'from' or 'files' was specified")
        if len(ggufs) > 1:
            raise ApiError(400, f"more than one .gguf file given ({[f for f, _ in ggufs]}); give exactly one")
        if len(adapters) > 1:
            raise ApiError(400, "only one adapter is currently supported")

        config: dict = dict(base.config) if base else {}
        model_blob = None
        if ggufs:
            fn, dg = ggufs[0]
            info = _gguf(store, fn, dg)
            if info.kind == "adapter":
                raise ApiError(400, f"{fn} is a LoRA adapter, not a model: give it in adapters, with the base "
                                    "model in files or from")
            model_blob = normalize_digest(dg)
            config = info.summary()
        else:
            config["parent_model"] = base.name
        arch = (config.get("model_info") or {}).get("general.architecture", "")
        adapter_blobs = []
        for fn, dg in adapters.items():
            info = _gguf(store, fn, dg)
            if info.kind != "adapter":
                raise ApiError(400, f"{fn} is not a LoRA adapter (its GGUF says general.type={info.kind!r})")
            if arch and info.architecture and info.architecture != arch:
                raise ApiError(400, f"the adapter {fn} is for architecture {info.architecture!r}, the model is "
                                    f"{arch!r}")
            adapter_blobs.append(normalize_digest(dg))

        params = dict(base.params) if base else {}
        for k, v in (data.get("parameters") or {}).items():
            if isinstance(v, str) and k != "stop":
                from serve.modelfile import coerce_parameter

                v = coerce_parameter(k, v)
            params[k] = check_type(k, v)
        template = data.get("template")
        system = data.get("system")
        detected_stop = None
        if template is None and base is not None:
            template = base.template
        if template is None and model_blob:
            template, detected_stop, detected_system = _template_from_gguf(store, model_blob)
            if system is None and detected_system:
                system = detected_system  # the model's own template adds it: serve the model as it prompts
            if detected_stop and "stop" not in params:
                params["stop"] = detected_stop
        if template:
            from serve.gotemplate import parse as parse_go

            try:
                parse_go(template)
            except ServeError as e:
                raise ApiError(400, f"template error: {e.message}") from None
        if system is None and base is not None:
            system = base.system
        messages = data.get("messages")
        if messages is None and base is not None:
            messages = base.messages
        if messages is not None and not (isinstance(messages, list) and all(isinstance(m, dict) for m in messages)):
            raise ApiError(400, "messages must be a list of {role, content} objects")
        lic = data.get("license")
        licenses = [lic] if isinstance(lic, str) else list(lic or [])
        return cls(store, full_name(name), base, model_blob, adapter_blobs, template, system, params, messages,
                   licenses, config, detected_stop)

    def steps(self) -> Iterator[dict]:
        store = self.store
        layers: list[dict] = []
        if self.model_blob:
            yield {"status": f"using existing layer sha256:{self.model_blob}"}
            yield {"status": "parsing GGUF"}
            layers.append({"mediaType": MEDIA_MODEL, "digest": f"sha256:{self.model_blob}",
                           "size": store.blob_path(f"sha256:{self.model_blob}").stat().st_size})
        else:
            layers += [dict(layer) for layer in self.base.manifest["layers"] if layer["mediaType"] == MEDIA_MODEL]
        if self.adapter_blobs:
            for hexd in self.adapter_blobs:
                layers.append({"mediaType": MEDIA_ADAPTER, "digest": f"sha256:{hexd}",
                               "size": store.blob_path(f"sha256:{hexd}").stat().st_size})
        elif self.base is not None:
            layers += [dict(layer) for layer in self.base.manifest["layers"] if layer["mediaType"] == MEDIA_ADAPTER]
        if self.detected_stop is not None:
            yield {"status": "using the chat template of the GGUF's metadata"}
        if self.template:
            yield _layer(store, layers, MEDIA_TEMPLATE, self.template.encode("utf-8"))
        if self.system:
            yield _layer(store, layers, MEDIA_SYSTEM, self.system.encode("utf-8"))
        if self.params:
            yield _layer(store, layers, MEDIA_PARAMS, json.dumps(self.params, sort_keys=True).encode())
        if self.messages:
            yield _layer(store, layers, MEDIA_MESSAGES, json.dumps(self.messages, ensure_ascii=False).encode())
        for text in self.licenses:
            yield _layer(store, layers, MEDIA_LICENSE, str(text).encode("utf-8"))
        yield {"status": "writing manifest"}
        store.write_manifest(self.name, layers, self.config)
        yield {"status": "success"}


def _gguf(store: ModelStore, fn: str, digest: str):  # noqa: ANN202
    try:
        return read_gguf(store.blob_path(digest))
    except GGUFError as e:
        if "not in GGUF format" in e.message:
            raise ApiError(400, "supplied file was not in GGUF format") from None
        raise ApiError(400, f"{fn}: {e.message}") from None


def _layer(store: ModelStore, layers: list[dict], media: str, data: bytes) -> dict:
    hexd, size = store.put_bytes(data)
    layers.append({"mediaType": media, "digest": f"sha256:{hexd}", "size": size})
    return {"status": f"creating new layer sha256:{hexd}"}


def _template_from_gguf(store: ModelStore, hexd: str) -> tuple[str, list[str] | None, str | None]:
    from serve.chat_templates import spec_from_gguf

    try:
        spec = spec_from_gguf(store.blob_path(f"sha256:{hexd}"))
    except (ServeError, GGUFError):
        return "{{ .Prompt }}", None, None
    return spec.go_template, spec.stop, spec.system
