"""Model names and digests as Ollama spells and compares them, and the error type of the HTTP API.

A name is ``[namespace/]model[:tag]`` (tag ``latest`` by default); names compare case-insensitively, as
Ollama's ``getExistingName`` does, so ``Smol`` and ``smol`` are one model. A digest is ``sha256:<64 hex>``
(``sha256-<hex>`` on disk).
"""

from __future__ import annotations

import re

__all__ = ["ApiError", "parse_name", "full_name", "normalize_digest", "not_found"]

_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


class ApiError(Exception):
    """An HTTP error with Ollama's status code and ``{"error": message}`` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(name: str) -> ApiError:
    return ApiError(404, f'model "{name}" not found, try pulling it first')


def parse_name(name: object) -> tuple[str, str]:
    """``ns/model:tag`` -> (``ns/model``, ``tag``), both lower-cased; the tag defaults to ``latest``."""
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "model is required")
    name = name.strip()
    base, tag = name, "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        base, tag = name.rsplit(":", 1)
    parts = base.split("/")
    if len(parts) > 3 or not all(_NAME_PART.match(p) for p in parts) or not _TAG.match(tag):
        raise ApiError(400, f"invalid model name {name!r}")
    return base.lower(), tag.lower()


def full_name(name: object) -> str:
    base, tag = parse_name(name)
    return f"{base}:{tag}"


def normalize_digest(digest: object) -> str:
    """``sha256:<hex>`` or ``sha256-<hex>`` -> ``<hex>``; ApiError(400) otherwise."""
    m = _DIGEST.match(digest if isinstance(digest, str) else "")
    if not m:
        raise ApiError(400, f"invalid digest format {digest!r}: expected sha256:<64 hex digits>")
    return m.group(1)
