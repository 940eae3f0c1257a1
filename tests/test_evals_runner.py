"""The eval runner end to end with LangChain fake chat models on a temporary SQLite store, and the
vanilla-vs-tuned comparison built from what it stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from evals import ModelUnderTest, compare, load_suite, run, to_markdown
from evals.chains import build_chain, render_prompt
from evals.runner import EvalConnectionError
from workspace.events import EventSink
from workspace.store.engine import make_engine, session_scope
from workspace.store.models import Base, CallCache, EvalRun, Prediction, RegisteredModel, Score

ROWS = [
    {"id": "capital", "instruction": "대한민국의 수도는 어디인가요?", "input": "", "output": "서울입니다."},
    {"id": "antonym", "instruction": "다음 단어의 반대말을 알려 주세요.", "input": "높다", "output": "낮다"},
    {"id": "week", "instruction": "한 주는 며칠인가요?", "input": "", "output": "한 주는 7일입니다."},
]
# The vanilla model rambles and leaks template tokens; the tuned one answers.
VANILLA = [
    "<|im_start|>assistant\n서울입니다.<|im_end|>\n<|im_start|>user\n고마워요",
    "높다의 반대말은 아마도 깊다일 것입니다.</s>",
    "일주일에는 여러 날이 있습니다.",
]
TUNED = ["서울입니다.", "낮다", "한 주는 7일입니다.<|im_end|>"]


def _row_of(messages) -> int:  # noqa: ANN001
    last = messages[-1].content
    return next(i for i, r in enumerate(ROWS) if last.startswith(r["instruction"]))


class CountingChat(FakeListChatModel):
    """A fake chat model that records every call (messages as sent) and, like a greedy model, gives each
    question the same answer whatever the order of the calls (the runner makes several at a time)."""

    calls: ClassVar[list[tuple[str, Any]]] = []
    tag: str = ""

    def _call(self, messages, stop=None, run_manager=None, **kwargs):  # noqa: ANN001
        CountingChat.calls.append((self.tag, [(m.type, m.content) for m in messages]))
        return self.responses[_row_of(messages)]


class DownAfter(CountingChat):
    """Answers the first ``ok`` questions of the file; for the others it behaves like an Ollama that went away."""

    ok: int = 1

    def _call(self, messages, stop=None, run_manager=None, **kwargs):  # noqa: ANN001
        if _row_of(messages) >= self.ok:
            CountingChat.calls.append((self.tag + ":failed", [(m.type, m.content) for m in messages]))
            raise ConnectionError("Failed to connect to Ollama.")
        return super()._call(messages, stop=stop, run_manager=run_manager, **kwargs)


def factory(m: ModelUnderTest):
    return CountingChat(responses=VANILLA if m.role == "vanilla" else TUNED, tag=m.role)


@pytest.fixture(autouse=True)
def _reset_calls():
    CountingChat.calls.clear()
    yield
    CountingChat.calls.clear()


@pytest.fixture
def store(tmp_path):
    engine = make_engine(tmp_path / "ollatune.db")
    Base.metadata.create_all(engine)
    sf = sessionmaker(engine, expire_on_commit=False)
    with session_scope(sf) as s:
        v = RegisteredModel(name="smollm2:135m", host="local", digest="sha256:" + "a" * 64, role="vanilla", template_family="chatml")
        t = RegisteredModel(name="ollatune/ko-smol", host="local", digest="sha256:" + "b" * 64, role="tuned", template_family="chatml")
        s.add_all([v, t])
        s.flush()
        models = [ModelUnderTest(v.id, v.name, v.digest, "vanilla"), ModelUnderTest(t.id, t.name, t.digest, "tuned")]
    yield sf, models
    engine.dispose()


@pytest.fixture
def suite_file(tmp_path) -> Path:
    data = tmp_path / "ko.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8")
    f = tmp_path / "ko.yaml"
    f.write_text(
        "name: ko-test\n"
        "dataset: {path: ko.jsonl, format: alpaca}\n"
        "prompt: {system: '너는 {친절한} 도우미야.', user: '{question}'}\n"
        "params: {num_predict: 32}\n"
        "tokenizer: kiwi\n",
        encoding="utf-8",
    )
    return f


def _events():
    got: list[dict] = []
    return EventSink("t", None, listeners=[got.append]).stage("evals"), got


def test_render_prompt_is_the_training_prompt(suite_file):
    suite = load_suite(suite_file)
    msgs = render_prompt(suite, "반대말을 쓰세요.\n\n높다")
    # The system prompt is literal (braces stay), the user turn is the alpaca user message.
    assert msgs == [
        {"role": "system", "content": "너는 {친절한} 도우미야."},
        {"role": "user", "content": "반대말을 쓰세요.\n\n높다"},
    ]
    assert render_prompt(load_suite("ko-instruct"), "질문") == [{"role": "user", "content": "질문"}]


def test_build_chain_uses_chat_ollama_with_suite_params(suite_file):
    from langchain_ollama import ChatOllama

    suite = load_suite(suite_file, {"params.stop": ["###"]})
    chain = build_chain(suite, "ollatune/ko-smol", "http://127.0.0.1:11434")
    llm = chain.steps[1]
    assert isinstance(llm, ChatOllama)
    assert (llm.model, llm.base_url) == ("ollatune/ko-smol", "http://127.0.0.1:11434")
    assert (llm.temperature, llm.seed, llm.num_predict, llm.num_ctx, llm.stop) == (0, 42, 32, 2048, ["###"])
    fake = build_chain(suite, "x", "http://unused", llm=FakeListChatModel(responses=["답"]))
    assert fake.invoke({"messages": render_prompt(suite, "질문")})["text"] == "답"


def test_run_end_to_end_cache_reuse_and_comparison(store, suite_file):
    sf, models = store
    suite = load_suite(suite_file)
    events, got = _events()

    first = run(suite, models, base_url="http://ollama.invalid", session_factory=sf, events=events, run_id="r1", llm_factory=factory)

    # One model at a time, vanilla first, each example once.
    assert [t for t, _ in CountingChat.calls] == ["vanilla"] * 3 + ["tuned"] * 3
    assert [("system", "너는 {친절한} 도우미야."), ("human", "대한민국의 수도는 어디인가요?")] in [
        c for _, c in CountingChat.calls]
    assert first.skipped is False and set(first.eval_run_ids) == {"vanilla", "tuned"}
    assert first.aggregates["tuned"]["exact_match"] == pytest.approx(1.0)
    assert first.aggregates["vanilla"]["exact_match"] == pytest.approx(1 / 3)  # only the cleaned "서울입니다."
    assert list(first.aggregates["tuned"]) == suite.metrics  # in the suite's order

    with session_scope(sf) as s:
        er = s.get(EvalRun, first.eval_run_ids["vanilla"])
        assert (er.status, er.suite, er.run_id) == ("done", "ko-test", "r1") and er.finished_at is not None
        assert er.params["tokenizer"] == "kiwi" and er.params["num_predict"] == 32 and er.params["seed"] == 42
        preds = s.scalars(select(Prediction).where(Prediction.eval_run_id == er.id).order_by(Prediction.id)).all()
        assert [p.example_id for p in preds] == ["capital", "antonym", "week"]
        assert preds[0].raw == VANILLA[0] and preds[0].cleaned == "서울입니다."  # raw kept, cleaned scored
        assert preds[1].cleaned == "높다의 반대말은 아마도 깊다일 것입니다."
        assert json.loads(preds[1].prompt)[-1] == {"role": "user", "content": "다음 단어의 반대말을 알려 주세요.\n\n높다"}
        assert preds[0].reference == "서울입니다."
        assert all(p.cached is False and p.latency_s is not None for p in preds)
        metrics = {sc.metric: sc.value for sc in preds[0].scores}
        assert set(metrics) == {"rouge_l", "token_f1", "exact_match", "char_f1", "bleu"}
        assert metrics["exact_match"] == 1.0 and metrics["rouge_l"] == pytest.approx(1.0)
        assert s.scalar(select(func.count(Score.id))) == 2 * 3 * 5
        assert s.scalar(select(func.count(CallCache.key))) == 6

    types = [e["type"] for e in got]
    assert types[0] == "start" and types[-1] == "done"
    progress = [e for e in got if e["type"] == "progress"]
    assert [(e["done"], e["total"], e["unit"]) for e in progress[:3]] == [(1, 3, "examples"), (2, 3, "examples"), (3, 3, "examples")]
    assert got[-1]["aggregates"]["tuned"]["exact_match"] == pytest.approx(1.0)

    # Same models, same suite: the complete runs are reused, nothing is called or stored again.
    events2, got2 = _events()
    again = run(suite, models, base_url="http://ollama.invalid", session_factory=sf, events=events2, llm_factory=factory)
    assert again.skipped is True and again.eval_run_ids == first.eval_run_ids
    assert again.aggregates == first.aggregates
    assert len(CountingChat.calls) == 6
    assert any(e.get("skipped") for e in got2 if e["type"] == "log") and got2[-1]["skipped"] is True

    # A suite that differs only in its metrics: a new eval run, every answer from the cache.
    fewer = load_suite(suite_file, {"metrics": ["exact_match", "char_f1"]})
    third = run(fewer, models, base_url="http://ollama.invalid", session_factory=sf, llm_factory=factory)
    assert third.skipped is False and third.eval_run_ids["tuned"] != first.eval_run_ids["tuned"]
    assert len(CountingChat.calls) == 6  # cache hits: no new model calls
    with session_scope(sf) as s:
        preds = s.scalars(select(Prediction).where(Prediction.eval_run_id == third.eval_run_ids["vanilla"])).all()
        assert len(preds) == 3 and all(p.cached and p.latency_s is None for p in preds)
        assert {p.raw for p in preds} == set(VANILLA)
    assert third.aggregates["vanilla"] == {"exact_match": pytest.approx(1 / 3), "char_f1": pytest.approx(first.aggregates["vanilla"]["char_f1"])}

    # The comparison: per metric and per example.
    cmp = compare(sf, first.eval_run_ids)
    assert cmp.roles == ["vanilla", "tuned"] and (cmp.baseline, cmp.candidate) == ("vanilla", "tuned")
    assert [m.metric for m in cmp.metrics] == suite.metrics
    rows = {m.metric: m for m in cmp.metrics}
    em = rows["exact_match"]
    assert em.values == {"vanilla": pytest.approx(1 / 3), "tuned": pytest.approx(1.0)}
    assert em.delta == pytest.approx(2 / 3) and em.winner == "tuned"
    assert em.example_wins == {"vanilla": 0, "tuned": 2, "tie": 1}
    assert all(m.winner == "tuned" and m.delta > 0 for m in cmp.metrics)
    assert [e.example_id for e in cmp.examples] == ["capital", "antonym", "week"]
    week = cmp.examples[2]
    assert week.question == "한 주는 며칠인가요?" and week.reference == "한 주는 7일입니다."
    assert week.outputs == {"vanilla": "일주일에는 여러 날이 있습니다.", "tuned": "한 주는 7일입니다."}
    assert week.raw["tuned"] == TUNED[2]
    assert week.scores["tuned"]["exact_match"] == 1.0 and week.scores["vanilla"]["exact_match"] == 0.0
    assert cmp.runs["tuned"].tokenizer == "kiwi" and cmp.runs["tuned"].model == "ollatune/ko-smol"

    md = to_markdown(cmp)
    assert "| exact_match | 0.333 | 1.000 | +0.667 | tuned | 0 / 2 / 1 |" in md
    assert "한 주는 며칠인가요?" in md and "kiwi" in md


def test_connection_lost_mid_run_then_resume(store, suite_file):
    sf, models = store
    suite = load_suite(suite_file)
    events, got = _events()

    def flaky(m: ModelUnderTest):
        return DownAfter(responses=VANILLA, tag=m.role, ok=1)

    with pytest.raises(EvalConnectionError) as e:
        run(suite, models, base_url="http://127.0.0.1:11434", session_factory=sf, events=events, llm_factory=flaky)
    msg = str(e.value)
    assert "cannot reach Ollama at http://127.0.0.1:11434" in msg and "example antonym (2/3)" in msg
    assert "OLLAMA_HOST" in e.value.hint and "cache" in e.value.hint
    # only the pipeline layer writes error events: the stage raises, once
    assert not [g for g in got if g["type"] == "error"]
    with session_scope(sf) as s:
        failed = s.scalars(select(EvalRun)).one()  # the tuned model was never started
        assert failed.status == "failed"
        assert s.scalar(select(func.count(Prediction.id))) == 1  # what was done is kept
        failed_id = failed.id

    CountingChat.calls.clear()
    result = run(suite, models, base_url="http://127.0.0.1:11434", session_factory=sf, llm_factory=factory)
    assert result.eval_run_ids["vanilla"] == failed_id  # the unfinished run is continued
    # Only the two missing vanilla examples are asked, then the tuned model.
    assert [t for t, _ in CountingChat.calls] == ["vanilla"] * 2 + ["tuned"] * 3
    with session_scope(sf) as s:
        assert s.get(EvalRun, failed_id).status == "done"
        assert s.scalar(select(func.count(Prediction.id)).where(Prediction.eval_run_id == failed_id)) == 3


def test_unreachable_ollama_with_the_real_client(store, suite_file):
    """ChatOllama against a closed local port: the real client's error becomes EvalConnectionError."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    sf, models = store
    with pytest.raises(EvalConnectionError, match="cannot reach Ollama"):
        run(load_suite(suite_file), models[:1], base_url=f"http://127.0.0.1:{port}", session_factory=sf)
    with session_scope(sf) as s:
        assert s.scalars(select(EvalRun.status)).one() == "failed"


def test_roles_must_be_unique(store, suite_file):
    sf, models = store
    with pytest.raises(ValueError, match="role"):
        run(load_suite(suite_file), [models[0], models[0]], base_url="x", session_factory=sf, llm_factory=factory)


def _heldout(tmp_path: Path, task: str = "alpaca") -> Path:
    from workspace.heldout import EvalExample, write_eval_examples

    system = {"role": "system", "content": "한국어로 짧게 답하세요."}
    rows = [EvalExample(id=r["id"], task=task, reference=r["output"],
                        messages=[system, {"role": "user", "content": (r["instruction"] + "\n\n" + r["input"]).strip()}])
            for r in ROWS]
    return write_eval_examples(tmp_path / "heldout.jsonl", rows)


def test_held_out_examples_are_asked_with_their_training_messages(store, tmp_path):
    """The pipeline's evaluation input: each example is sent exactly as trained (its system prompt
    included), whatever the suite's own prompt says; the typed result names the suite and its runs."""
    from evals import EvalResult

    sf, models = store
    suite = load_suite("ko-instruct", {"dataset": {"path": str(_heldout(tmp_path)), "format": "examples"}})
    result = run(suite, models, base_url="http://unused", session_factory=sf, llm_factory=factory)
    assert isinstance(result, EvalResult) and result.suite == "ko-instruct" and set(result.eval_run_ids) == {
        "vanilla", "tuned"}
    sent = [msgs for tag, msgs in CountingChat.calls if tag == "tuned"]
    assert [("system", "한국어로 짧게 답하세요."), ("human", "다음 단어의 반대말을 알려 주세요.\n\n높다")] in sent
    assert result.aggregates["tuned"]["exact_match"] == 1.0  # every tuned answer equals its reference once cleaned
    assert EvalResult.model_validate(result.model_dump(mode="json")) == result


def test_held_out_examples_of_another_task_are_refused_in_one_line(store, tmp_path):
    from evals import SuiteError, load_examples, suite_for_task

    suite = load_suite("ko-instruct", {"dataset": {"path": str(_heldout(tmp_path, "text2sql")),
                                                       "format": "examples"}})
    with pytest.raises(SuiteError) as e:
        load_examples(suite)
    assert "scores alpaca examples" in e.value.message and "3 text2sql example(s)" in e.value.message
    assert "\n" not in e.value.message and "eval.suite" in e.value.hint
    assert suite_for_task("alpaca") == "ko-instruct"
    with pytest.raises(SuiteError) as e:
        suite_for_task("chat")
    assert e.value.message.startswith("no evaluation suite scores chat examples yet (shipped suites: ko-instruct "
                                      "(alpaca), ")


def _stored(sf, eval_run_id):  # noqa: ANN001, ANN202
    with session_scope(sf) as s:
        preds = s.scalars(select(Prediction).where(Prediction.eval_run_id == eval_run_id).order_by(Prediction.id)).all()
        return [(p.example_id, p.raw, p.cleaned, sorted((sc.metric, sc.value, sc.tokenizer) for sc in p.scores))
                for p in preds]


def test_concurrent_calls_store_what_sequential_calls_store(tmp_path, suite_file):
    results = []
    for concurrency in (1, 4):
        engine = make_engine(tmp_path / f"c{concurrency}.db")
        Base.metadata.create_all(engine)
        sf = sessionmaker(engine, expire_on_commit=False)
        with session_scope(sf) as s:
            v = RegisteredModel(name="m", host="local", digest="sha256:" + "c" * 64, role="vanilla",
                                template_family="chatml")
            s.add(v)
            s.flush()
            m = ModelUnderTest(v.id, v.name, v.digest, "vanilla")
        res = run(load_suite(suite_file), [m], base_url="x", session_factory=sf, llm_factory=factory,
                  concurrency=concurrency)
        results.append((_stored(sf, res.eval_run_ids["vanilla"]), res.aggregates))
        engine.dispose()
    assert results[0] == results[1]
    assert [row[0] for row in results[0][0]] == ["capital", "antonym", "week"]  # example order either way
    assert all(tok for row in results[0][0] for _, _, tok in row[3] if tok is not None)


def _predictions(tmp_path, lines):  # noqa: ANN001, ANN202
    p = tmp_path / "preds.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_predictions_file_is_scored_without_a_model(store, suite_file, tmp_path):
    from evals.runner import score_predictions

    sf, _ = store
    good = _predictions(tmp_path, [json.dumps({"id": r["id"], "prediction": r["output"]}, ensure_ascii=False)
                                   for r in ROWS])
    res = score_predictions(load_suite(suite_file), good, label="elsewhere", session_factory=sf)
    assert res.aggregates["elsewhere"]["exact_match"] == 1.0
    assert res.aggregates["elsewhere"]["rouge_l"] == pytest.approx(1.0)
    with session_scope(sf) as s:
        er = s.get(EvalRun, res.eval_run_ids["elsewhere"])
        assert (er.status, er.source) == ("done", "score")
        assert er.model.name == "elsewhere" and er.model.digest.startswith("sha256:")
    assert CountingChat.calls == []


@pytest.mark.parametrize("lines, message", [
    (['{"id": "capital", "prediction": "서울"}', '{"id": "antonym", "prediction": ', '{"id": "week", "text": "7"}'],
     r"preds\.jsonl:2: invalid JSON"),
    (['{"id": "capital", "prediction": "a"}', '{"id": "capital", "prediction": "b"}'],
     r"preds\.jsonl:2: duplicate id 'capital' \(first at line 1\)"),
    (['{"id": "capital", "prediction": "a"}', '{"id": "nope", "prediction": "b"}'],
     r"preds\.jsonl:2: id 'nope' is not an example"),
    (['{"id": "capital", "prediction": "a"}', '{"prediction": "b"}'], r"preds\.jsonl:2: missing field 'id'"),
    (['{"id": "capital", "prediction": 5}'], r"preds\.jsonl:1: missing text field"),
    (['{"id": "capital", "prediction": "a"}'], r"no prediction for 2 of 3 examples: antonym, week"),
])
def test_bad_predictions_files_name_the_line_and_store_nothing(store, suite_file, tmp_path, lines, message):
    from evals.runner import PredictionsError, score_predictions

    sf, _ = store
    with pytest.raises(PredictionsError, match=message):
        score_predictions(load_suite(suite_file), _predictions(tmp_path, lines), label="bad", session_factory=sf)
    with session_scope(sf) as s:
        assert s.scalar(select(func.count(EvalRun.id))) == 0
        assert s.scalar(select(func.count(Prediction.id))) == 0
        assert s.scalar(select(func.count(RegisteredModel.id))) == 2  # the fixture's two, no third


def test_a_judged_suite_needs_its_judge(store):
    from evals import SuiteError

    sf, models = store
    with pytest.raises(SuiteError, match="judged") as e:
        run(load_suite("ko-safety"), models, base_url="x", session_factory=sf, llm_factory=factory)
    assert "--judge" in e.value.hint
