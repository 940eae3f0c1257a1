"""Settings read from the environment (``OLLATUNE_*``) with sensible offline defaults."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"


def normalize_host(host: str) -> str:
    """Turn an ``OLLAMA_HOST`` value (``0.0.0.0``, ``:11434``, ``host:port``, URL) into a base URL."""
    host = host.strip() or DEFAULT_OLLAMA_HOST
    if "://" not in host:
        host = "http://" + host
    scheme, rest = host.split("://", 1)
    rest = rest.rstrip("/")
    if rest.startswith(":"):
        rest = "127.0.0.1" + rest
    if ":" not in rest.rsplit("]", 1)[-1]:
        rest += ":11434"
    if rest.startswith("0.0.0.0"):
        rest = "127.0.0.1" + rest[len("0.0.0.0"):]
    return f"{scheme}://{rest}"


def listen_address(value: str) -> tuple[str, int]:
    """Where a server given ``OLLAMA_HOST=value`` listens, read as Ollama reads it: empty -> 127.0.0.1:11434;
    ``0.0.0.0`` or ``:11434`` -> every interface; ``host`` -> port 11434; ``http://host`` -> port 80,
    ``https://host`` -> 443; a bare IPv6 address in brackets or not."""
    v = value.strip().strip("\"'").strip()
    if not v:
        return "127.0.0.1", 11434
    scheme, default_port = "", 11434
    if "://" in v:
        scheme, v = v.split("://", 1)
        default_port = {"http": 80, "https": 443}.get(scheme.lower(), 11434)
    v = v.split("/", 1)[0]
    if v.count(":") > 1 and not v.startswith("["):  # bare IPv6
        return v, default_port
    if v.startswith("["):
        end = v.index("]")
        host, rest = v[1:end], v[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    elif ":" in v:
        host, port = v.rsplit(":", 1)
    else:
        host, port = v, ""
    try:
        p = int(port) if port else default_port
    except ValueError:
        p = default_port
    if not 0 <= p <= 65535:
        p = 11434
    return (host or "0.0.0.0"), p


def api_headers() -> dict[str, str]:
    """The bearer token our own clients send when ``OLLATUNE_API_KEY`` is set (an exposed runtime needs it)."""
    key = os.environ.get("OLLATUNE_API_KEY", "").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OLLATUNE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".ollatune")
    # The Ollama host is read from the variable Ollama itself uses.
    ollama_host: str = Field(default_factory=lambda: normalize_host(os.environ.get("OLLAMA_HOST", "")))
    # Set to "never" to refuse to start the embedded runtime when no daemon answers.
    embedded_runtime: str = "auto"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def models_dir(self) -> Path:
        """Base models converted to a local HF folder, keyed by source hash."""
        return self.home / "models"

    @property
    def ollama_dir(self) -> Path:
        """Blobs and manifests of the embedded Ollama-compatible runtime."""
        return self.home / "ollama"

    @property
    def db_path(self) -> Path:
        return self.home / "ollatune.db"

    def ensure(self) -> "Settings":
        for d in (self.home, self.runs_dir, self.models_dir, self.ollama_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self


def get_settings() -> Settings:
    return Settings().ensure()
