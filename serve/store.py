"""The model store, laid out like Ollama's: ``blobs/sha256-<hex>`` holds the GGUF and one small blob per
layer (template, system, params, messages, adapter, config); ``manifests/<name>/<tag>.json`` lists the
layers; a model's digest is the sha256 of its manifest bytes. Names are stored lower-cased, so they compare
case-insensitively as Ollama's do (creating ``Smol`` replaces ``smol``)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve.names import ApiError, full_name, normalize_digest, not_found, parse_name

__all__ = ["ModelRecord", "ModelStore", "MEDIA_MODEL", "MEDIA_ADAPTER", "MEDIA_TEMPLATE", "MEDIA_SYSTEM",
           "MEDIA_PARAMS", "MEDIA_MESSAGES", "MEDIA_LICENSE", "MEDIA_CONFIG", "MEDIA_MANIFEST"]

MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass
class ModelRecord:
    name: str  # name:tag
    digest: str  # sha256 hex of the manifest bytes
    manifest: dict
    modified_at: float
    model_path: Path
    size: int
    template: str
    system: str
    params: dict
    messages: list[dict]
    adapters: list[Path]
    config: dict
    license: list[str] = field(default_factory=list)

    @property
    def model_info(self) -> dict:
        return self.config.get("model_info") or {}

    @property
    def context_length(self) -> int | None:
        """The context the model was trained with (``<arch>.context_length``), the cap of num_ctx."""
        info = self.model_info
        v = info.get(f"{info.get('general.architecture', '')}.context_length")
        return int(v) if isinstance(v, (int, float)) and v > 0 else None

    def capabilities(self) -> list[str]:
        """What the model can do, decided as Ollama decides it: an embedding model declares a pooling type,
        tools and insert (fill-in-the-middle) come from the TEMPLATE, thinking from think tags in it."""
        info = self.model_info
        arch = info.get("general.architecture", "")
        caps = ["embedding"] if f"{arch}.pooling_type" in info else ["completion"]
        t = self.template or ""
        if ".Tools" in t:
            caps.append("tools")
        if ".Suffix" in t:
            caps.append("insert")
        if ".Think" in t or "<think>" in t:
            caps.append("thinking")
        if f"{arch}.vision.block_count" in info:
            caps.append("vision")
        return caps

    @property
    def details(self) -> dict:
        c = self.config
        return {
            "parent_model": c.get("parent_model", ""),
            "format": c.get("model_format", "gguf"),
            "family": c.get("model_family", ""),
            "families": c.get("model_families") or ([c["model_family"]] if c.get("model_family") else None),
            "parameter_size": c.get("model_type", ""),
            "quantization_level": c.get("file_type", ""),
        }


class ModelStore:
    """Blobs and manifests under one folder, laid out like Ollama's."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.manifests.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    # blobs
    def blob_path(self, digest: str) -> Path:
        return self.blobs / f"sha256-{normalize_digest(digest)}"

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        hexd = hashlib.sha256(data).hexdigest()
        p = self.blobs / f"sha256-{hexd}"
        if not p.exists():
            tmp = self.blobs / f".partial-{uuid.uuid4().hex}"
            tmp.write_bytes(data)
            os.replace(tmp, p)
        return hexd, len(data)

    def get_json_blob(self, digest: str) -> Any:
        return json.loads(self.blob_path(digest).read_text(encoding="utf-8"))

    # manifests
    def manifest_path(self, name: str) -> Path:
        base, tag = parse_name(name)
        return self.manifests.joinpath(*base.split("/")) / f"{tag}.json"

    def digest_of(self, name: Any) -> str | None:
        """The digest of model ``name`` now, or None when there is no such model."""
        try:
            path = self.manifest_path(name)
        except ApiError:
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    def names(self) -> list[str]:
        out = []
        for p in sorted(self.manifests.rglob("*.json")):
            rel = p.relative_to(self.manifests)
            out.append("/".join(rel.parts[:-1]) + ":" + p.stem)
        return out

    def get(self, name: str) -> ModelRecord:
        path = self.manifest_path(name)
        if not path.is_file():
            raise not_found(name)
        raw = path.read_bytes()
        try:
            manifest = json.loads(raw)
        except json.JSONDecodeError:
            raise ApiError(500, f"manifest of {name} at {path} is corrupt; delete the model and create it again") from None
        rec: dict[str, Any] = {"template": "", "system": "", "params": {}, "messages": [], "adapters": [], "license": []}
        model_path = None
        size = 0
        for layer in manifest.get("layers", []):
            size += int(layer.get("size", 0))
            mt, dg = layer.get("mediaType"), layer.get("digest", "")
            bp = self.blob_path(dg)
            if not bp.is_file():
                raise ApiError(500, f"blob {dg} of model {name} is missing from {self.blobs}; create the model again")
            if mt == MEDIA_MODEL:
                model_path = bp
            elif mt == MEDIA_ADAPTER:
                rec["adapters"].append(bp)
            elif mt == MEDIA_TEMPLATE:
                rec["template"] = bp.read_text(encoding="utf-8")
            elif mt == MEDIA_SYSTEM:
                rec["system"] = bp.read_text(encoding="utf-8")
            elif mt == MEDIA_PARAMS:
                rec["params"] = json.loads(bp.read_text(encoding="utf-8"))
            elif mt == MEDIA_MESSAGES:
                rec["messages"] = json.loads(bp.read_text(encoding="utf-8"))
            elif mt == MEDIA_LICENSE:
                rec["license"].append(bp.read_text(encoding="utf-8"))
        if model_path is None:
            raise ApiError(500, f"model {name} has no model layer; create it again")
        cfg = manifest.get("config") or {}
        config = self.get_json_blob(cfg["digest"]) if cfg.get("digest") and self.has_blob(cfg["digest"]) else {}
        return ModelRecord(
            name=full_name(name), digest=hashlib.sha256(raw).hexdigest(), manifest=manifest,
            modified_at=path.stat().st_mtime, model_path=model_path, size=size, config=config, **rec,
        )

    def write_manifest(self, name: str, layers: list[dict], config: dict) -> str:
        cfg_hex, cfg_size = self.put_bytes(json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": f"sha256:{cfg_hex}", "size": cfg_size},
            "layers": layers,
        }
        data = json.dumps(manifest, indent=None, separators=(",", ":")).encode()
        path = self.manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return hashlib.sha256(data).hexdigest()

    def delete(self, name: str) -> None:
        with self._lock:
            rec = self.get(name)
            path = self.manifest_path(name)
            path.unlink()
            # prune empty folders and the layers no other manifest uses (as Ollama does)
            d = path.parent
            while d != self.manifests and not any(d.iterdir()):
                d.rmdir()
                d = d.parent
            used: set[str] = set()
            for other in self.names():
                try:
                    m = json.loads(self.manifest_path(other).read_bytes())
                except (OSError, json.JSONDecodeError):
                    continue
                used.update(normalize_digest(l["digest"]) for l in m.get("layers", []))
                if m.get("config", {}).get("digest"):
                    used.add(normalize_digest(m["config"]["digest"]))
            mine = [l["digest"] for l in rec.manifest.get("layers", [])]
            if rec.manifest.get("config", {}).get("digest"):
                mine.append(rec.manifest["config"]["digest"])
            for dg in mine:
                if normalize_digest(dg) not in used:
                    self.blob_path(dg).unlink(missing_ok=True)

    def copy(self, source: str, destination: str) -> None:
        with self._lock:
            src = self.manifest_path(source)
            if not src.is_file():
                raise not_found(source)
            dst = self.manifest_path(destination)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.partial")
            tmp.write_bytes(src.read_bytes())
            os.replace(tmp, dst)
