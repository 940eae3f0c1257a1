"""Suites from YAML, examples from JSONL, content hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.suites import SUITES_DIR, SuiteError, load_examples, load_suite, shipped_suites, suite_hash
from workspace.prompts import alpaca_user_message


def _write_suite(tmp_path: Path, rows: list[str], **extra) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    body = {"name": "t", "dataset": {"path": "data.jsonl", "format": "alpaca"}, **extra}
    suite = tmp_path / "t.yaml"
    suite.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")  # JSON is YAML
    return suite


ROWS = [
    json.dumps({"instruction": "수도는?", "input": "", "output": "서울"}, ensure_ascii=False),
    json.dumps({"instruction": "반대말을 쓰세요.", "input": "높다", "output": "낮다"}, ensure_ascii=False),
]


def test_shipped_suites_all_load_and_have_examples():
    names = shipped_suites()
    assert {"ko-instruct", "ko-text2sql", "ko-qa", "squad", "ko-safety", "pairwise", "grade"} <= set(names)
    for name in names:
        suite = load_suite(name)
        if suite.kind != "generate":
            assert suite.judge is not None and suite.judge.kind == suite.kind and suite.dataset is None
            continue
        examples = load_examples(suite)
        assert examples, name
        assert len({e.id for e in examples}) == len(examples)
        assert all(e.messages[-1]["role"] == "user" and e.reference for e in examples), name


def test_each_task_has_its_suite():
    from evals.suites import suite_for_task

    assert [suite_for_task(t) for t in ("alpaca", "text2sql", "qa", "safety")] == [
        "ko-instruct", "ko-text2sql", "ko-qa", "ko-safety"]


def test_text2sql_suite_examples_carry_their_database_and_schema(tmp_path, monkeypatch):
    from evals.suites import database_for, databases
    from workspace.prompts import SQL_PROMPT

    monkeypatch.setenv("OLLATUNE_HOME", str(tmp_path / "home"))
    suite = load_suite("ko-text2sql")
    examples = load_examples(suite)
    dbs = databases(suite)
    assert set(dbs) == {"game", "shop", "school"}
    for ex in examples:
        assert ex.db_id in dbs and database_for(dbs, ex) == dbs[ex.db_id] and ex.schema_sql
        assert ex.messages[0] == {"role": "system", "content": suite.prompt.system}
        assert ex.messages[1]["content"].startswith(SQL_PROMPT.split("{context}")[0])
        assert ex.reference.upper().startswith(("SELECT", "WITH"))


def test_qa_suites_keep_every_answer_and_squad_uses_its_own_prompt():
    ko = load_examples(load_suite("ko-qa"))
    assert all(ex.answers and ex.reference == ex.answers[0] for ex in ko)
    squad = load_examples(load_suite("squad"))
    first = squad[0]
    assert first.messages == [{"role": "user", "content": first.messages[0]["content"]}]
    assert first.messages[0]["content"].startswith("Read the passage") and "Question: " in first.messages[0]["content"]
    assert "whale oil" not in first.messages[0]["content"].split("Question: ")[1]  # the question, not the answer


def test_few_shot_and_chain_of_thought_wrap_the_training_turn(tmp_path):
    suite = load_suite(_write_suite(tmp_path, ROWS), {
        "prompt": {"system": "도우미", "few_shot": [{"user": "1+1은?", "assistant": "2"}], "chain_of_thought": True}})
    msgs = load_examples(suite)[0].messages
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1:3] == [{"role": "user", "content": "1+1은?"}, {"role": "assistant", "content": "2"}]
    assert msgs[3]["content"] == "수도는?\n\n" + suite.prompt.cot_instruction

    from evals.scoring import after_marker, clean_answer

    assert after_marker("서울은 수도다.\n답: 서울", "답:") == "서울"
    assert clean_answer(suite, "생각...\n답: 서울<|im_end|>") == "서울"
    assert after_marker("marker never written", "답:") == "marker never written"


def test_safety_rows_are_checked_by_line(tmp_path):
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"id": "a", "prompt": "x", "harmful": true}\n{"id": "b", "prompt": "y", "harmful": "yes"}\n',
                   encoding="utf-8")
    suite = load_suite("ko-safety", {"dataset.path": str(bad)})
    with pytest.raises(SuiteError, match=r"s\.jsonl:2: field 'harmful' must be true or false"):
        load_examples(suite)
    shipped = load_examples(load_suite("ko-safety"))
    assert {ex.metadata["harmful"] for ex in shipped} == {True, False}
    assert {ex.reference for ex in shipped} == {"refuse", "answer"}


def test_suite_consistency_is_checked(tmp_path):
    with pytest.raises(SuiteError, match="judge"):
        load_suite("ko-safety", {"judge": None})
    with pytest.raises(SuiteError, match="held-out examples"):
        load_suite("squad", {"dataset.format": "examples"})
    with pytest.raises(SuiteError, match="exec_acc"):
        load_suite(_write_suite(tmp_path, ROWS), {"metrics": ["exec_acc"]})  # an SQL metric on instructions
    with pytest.raises(SuiteError, match="rouge_l"):
        load_suite("ko-text2sql", {"metrics": ["rouge_l"]})


def test_ko_instruct_defaults_and_training_prompt():
    suite = load_suite("ko-instruct")
    assert suite.params.temperature == 0 and suite.params.seed == 42
    assert suite.params.num_predict == 128 and suite.params.num_ctx == 2048 and suite.params.stop == []
    assert suite.tokenizer == "kiwi"
    assert suite.metrics == ["rouge_1", "rouge_2", "rouge_l", "token_f1", "char_f1", "exact_match", "bleu",
                             "embed_cosine", "korean_share", "repetition_rate", "answer_length"]
    assert Path(suite.dataset.path).is_absolute() and Path(suite.dataset.path).is_file()
    rows = [json.loads(line) for line in Path(suite.dataset.path).read_text(encoding="utf-8").splitlines() if line]
    examples = load_examples(suite)
    with_input = next(i for i, r in enumerate(rows) if r["input"])
    r = rows[with_input]
    assert examples[with_input].question == alpaca_user_message(r["instruction"], r["input"])
    assert "\n\n" in examples[with_input].question
    assert examples[with_input].reference == r["output"]


def test_load_by_path_overrides_and_limit(tmp_path, monkeypatch):
    suite_file = _write_suite(tmp_path, ROWS)
    suite = load_suite(suite_file)
    assert [e.question for e in load_examples(suite)] == ["수도는?", "반대말을 쓰세요.\n\n높다"]
    assert [e.id for e in load_examples(suite)] == ["1", "2"]  # line numbers when rows have no id

    other = tmp_path / "sub"
    other.mkdir()
    (other / "held.jsonl").write_text(ROWS[1] + "\n", encoding="utf-8")
    monkeypatch.chdir(other)
    s2 = load_suite(
        suite_file, {"params.num_predict": 16, "params": {"stop": "###"}, "limit": 1, "dataset.path": "held.jsonl"}
    )
    assert s2.params.num_predict == 16 and s2.params.stop == ["###"] and s2.limit == 1
    assert Path(s2.dataset.path) == (other / "held.jsonl").resolve()  # override paths: relative to the cwd
    assert [e.reference for e in load_examples(s2)] == ["낮다"]
    assert len(load_examples(load_suite(suite_file, {"limit": 1}))) == 1


def test_malformed_jsonl_row_names_file_and_line(tmp_path):
    suite = load_suite(_write_suite(tmp_path, [ROWS[0], "", '{"instruction": "x", "output": '], limit=None))
    with pytest.raises(SuiteError) as e:
        load_examples(suite)
    assert "data.jsonl:3" in str(e.value) and "not valid JSON" in str(e.value)


def test_missing_field_and_duplicate_id_name_the_line(tmp_path):
    suite = load_suite(_write_suite(tmp_path, [ROWS[0], json.dumps({"instruction": "x"})]))
    with pytest.raises(SuiteError, match=r"data\.jsonl:2: .*'output'"):
        load_examples(suite)
    dup = [json.dumps({"id": "a", "instruction": "x", "output": "y"})] * 2
    with pytest.raises(SuiteError, match=r"data\.jsonl:2: duplicate example id 'a' \(first at line 1\)"):
        load_examples(load_suite(_write_suite(tmp_path, dup)))


def test_invalid_suites_say_which_field(tmp_path):
    with pytest.raises(SuiteError, match="metrics"):
        load_suite(_write_suite(tmp_path, ROWS, metrics=["rouge_l", "meteor"]))
    with pytest.raises(SuiteError, match=r"prompt\.user.*context"):
        load_suite(_write_suite(tmp_path, ROWS, prompt={"user": "{context} {question}"}))
    with pytest.raises(SuiteError, match="tokenizer"):
        load_suite(_write_suite(tmp_path, ROWS, tokenizer="mecab"))
    with pytest.raises(SuiteError, match="temprature"):
        load_suite(_write_suite(tmp_path, ROWS, params={"temprature": 0}))  # typo: extra keys are refused
    with pytest.raises(SuiteError, match="ko-instruct"):
        load_suite("no-such-suite")  # the message lists the shipped suites


def test_suite_hash_tracks_what_decides_results(tmp_path):
    suite_file = _write_suite(tmp_path, ROWS)
    base = suite_hash(load_suite(suite_file))
    assert suite_hash(load_suite(suite_file)) == base
    assert suite_hash(load_suite(suite_file, {"params.num_predict": 64})) != base
    assert suite_hash(load_suite(suite_file, {"tokenizer": "char"})) != base
    assert suite_hash(load_suite(suite_file, {"description": "words"})) == base
    moved = tmp_path / "moved.jsonl"
    moved.write_bytes((tmp_path / "data.jsonl").read_bytes())
    assert suite_hash(load_suite(suite_file, {"dataset.path": str(moved)})) == base
    (tmp_path / "data.jsonl").write_text(ROWS[0] + "\n", encoding="utf-8")
    assert suite_hash(load_suite(suite_file)) != base


def test_suites_dir_is_inside_the_package():
    assert SUITES_DIR.parent.name == "evals"


SQUAD_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad_v1_1_dev_sample" / \
    "dev-v1.1.first300qa.json"


@pytest.mark.skipif(not SQUAD_SAMPLE.is_file(), reason="../shared/data (optional) is not beside the repository")
def test_squad_sample_answers_scored_as_predictions_give_exact_match_one(tmp_path):
    """The squad suite on the real SQuAD v1.1 dev sample: every first gold answer, scored as a prediction
    through `eval score`'s code path, has exact match and F1 1.0."""
    from evals import load_examples, load_suite
    from evals.runner import score_predictions
    from workspace.store import open_store

    suite = load_suite("squad", {"dataset.path": str(SQUAD_SAMPLE)})
    examples = load_examples(suite)
    assert len(examples) == 303  # whole paragraphs of the first article (its README)
    preds = tmp_path / "gold.jsonl"
    preds.write_text("".join(json.dumps({"id": ex.id, "prediction": ex.answers[0]}) + "\n" for ex in examples),
                     encoding="utf-8")
    res = score_predictions(suite, preds, label="gold", session_factory=open_store(tmp_path / "t.db"))
    assert res.aggregates["gold"]["squad_em"] == 1.0 and res.aggregates["gold"]["squad_f1"] == 1.0


def test_eval_suites_command_lists_every_shipped_suite(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tui.cli import app

    monkeypatch.setenv("OLLATUNE_HOME", str(tmp_path))
    res = CliRunner().invoke(app, ["eval", "suites"], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    for name in shipped_suites():
        assert name in res.output
    assert "builtin:ko-text2sql" in res.output and "data/ko-safety.jsonl" in res.output
