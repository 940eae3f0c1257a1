"""Datasets: shipped samples, every format's adapter, the validation report, RAFT, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workspace.examples import ExampleError, adapt
from finetune.raft import build_raft
from finetune.samples import open_records
from workspace.samples import SAMPLES, resolve_source
from workspace.sources import read_records
from finetune.validate import ValidationConfig, run_sql_readonly, token_stats, validate
from tests.conftest import REPO

SHARED = REPO.parent / "shared" / "data"


def _cli(*args, home=None, check=True):
    import os

    env = {**os.environ, **({"OLLATUNE_HOME": str(home)} if home else {})}
    proc = subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_shipped_sample_validates_clean(name, tmp_path):
    proc = _cli("data", "validate", name, "--json", home=tmp_path)
    report = json.loads(proc.stdout)
    assert report["ok"] and report["valid"] == report["total"] > 0, report["rejects"][:3]


def test_sample_sizes():
    sizes = {}
    for name, sample in SAMPLES.items():
        sizes[name] = sum(1 for r in read_records(sample.path) if not r.error)
    assert sizes["ko-alpaca"] >= 200 and sizes["ko-text2sql"] >= 150 and sizes["ko-qa"] >= 100


def test_alpaca_keeps_extra_fields_as_metadata_and_maps_columns():
    ex = adapt({"q": "질문", "a": "답", "category": "생활"}, "alpaca", fields={"instruction": "q", "output": "a"})
    assert ex.prompt[-1]["content"] == "질문" and ex.response == "답" and ex.metadata == {"category": "생활"}
    with pytest.raises(ExampleError) as e:
        adapt({"q": "질문"}, "alpaca", fields={"instruction": "q", "output": "a"})
    assert e.value.field == "output" and "column 'a'" in str(e.value)


def test_text2sql_qa_raft_and_chat_adapters():
    sql = adapt({"question": "몇 명?", "context": "CREATE TABLE t (a INT)", "sql": "SELECT COUNT(*) FROM t",
                 "db_id": "x"}, "text2sql")
    assert "CREATE TABLE t" in sql.prompt[-1]["content"] and sql.response.startswith("SELECT")
    assert sql.metadata == {"db_id": "x"}
    qa = adapt({"context": "서울은 수도다.", "question": "수도는?", "answers": {"text": ["서울"], "answer_start": [0]}}, "qa")
    assert qa.response == "서울" and qa.fields["answers"][0]["answer_start"] == 0
    raft = adapt({"documents": ["문서 하나", "문서 둘"], "question": "q", "answer": "둘", "cot": "둘째 문서에 있다.",
                  "golden": 1}, "raft")
    assert "[문서 2] 문서 둘" in raft.prompt[-1]["content"] and raft.response.endswith("답: 둘")
    chat = adapt({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "hi"},
                                    {"from": "gpt", "value": "yo"}]}, "chat")
    assert [m["role"] for m in chat.prompt] == ["system", "user"] and chat.response == "yo"
    with pytest.raises(ExampleError, match="last message"):
        adapt({"messages": [{"role": "user", "content": "hi"}]}, "chat")
    with pytest.raises(ExampleError, match="unknown role"):
        adapt({"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}, "chat")


def test_qa_grounding_and_sql_execution_are_checked(tmp_path):
    rows = tmp_path / "qa.jsonl"
    rows.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"context": "부산은 항구 도시다.", "question": "어떤 도시?", "answers": [{"text": "항구 도시", "answer_start": 4}]},
        {"context": "부산은 항구 도시다.", "question": "어디?", "answers": [{"text": "서울", "answer_start": 0}]},
        {"context": "부산은 항구 도시다.", "question": "무엇?", "answers": [{"text": "항구", "answer_start": 0}]},
    ]) + "\n", encoding="utf-8")
    ok, report = validate(read_records(rows), ValidationConfig(task="qa"))
    assert [e.line for e in ok] == [1]
    assert "does not occur" in report.rejects[0].reason and "does not point" in report.rejects[1].reason

    import sqlite3

    db = tmp_path / "t.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE t (a INT)")
        c.execute("INSERT INTO t VALUES (1)")
    sql_rows = tmp_path / "sql.jsonl"
    sql_rows.write_text("\n".join(json.dumps(r) for r in [
        {"db_id": "d", "question": "a", "context": "CREATE TABLE t (a INT)", "sql": "SELECT a FROM t"},
        {"db_id": "d", "question": "b", "context": "CREATE TABLE t (a INT)", "sql": "SELECT b FROM t"},
        {"db_id": "d", "question": "c", "context": "CREATE TABLE t (a INT)", "sql": "SELECT a FROM t WHERE a > 5"},
        {"question": "d", "context": "CREATE TABLE t (a INT)", "sql": "SELEC a FROM"},
    ]) + "\n", encoding="utf-8")
    ok, report = validate(read_records(sql_rows), ValidationConfig(task="text2sql", databases={"d": db}))
    assert [e.line for e in ok] == [1]
    reasons = [r.reason for r in report.rejects]
    assert "no such column" in reasons[0] and "returns no rows" in reasons[1] and "does not parse" in reasons[2]


def test_sql_runs_read_only_with_a_timeout(tmp_path):
    import sqlite3

    db = tmp_path / "t.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE t (a INT)")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        run_sql_readonly(db, "INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        run_sql_readonly(db, "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT max(x) FROM r",
                         timeout_s=0.2)


def test_near_duplicates_are_reported(tmp_path):
    rows = [{"instruction": "김치찌개 끓이는 법을 알려 주세요", "output": "김치와 돼지고기를 볶은 뒤 물을 붓고 끓입니다."},
            {"instruction": "김치찌개 끓이는 법을 알려주세요", "output": "김치와 돼지고기를 볶은 뒤 물을 붓고 끓입니다."},
            {"instruction": "하늘은 왜 파란가요?", "output": "짧은 파장의 빛이 더 많이 산란되기 때문입니다."}]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    _ok, report = validate(read_records(p), ValidationConfig(near_threshold=0.8))
    assert [(a, b) for a, b, _s in report.near_duplicates] == [(1, 2)]
    _ok, report = validate(read_records(p), ValidationConfig(near_threshold=0.8, reject_near_duplicates=True))
    assert [r.line for r in report.rejects] == [2]


def test_token_stats_recommend_a_length():
    stats = token_stats([100] * 90 + [300] * 9 + [900], max_seq_len=256)
    assert stats.p50 == 100 and stats.max == 900 and stats.over_max_seq_len == 0.1
    assert stats.recommended_max_seq_len % 64 == 0 and 300 <= stats.recommended_max_seq_len <= 960
    assert sum(c for _a, _b, c in stats.histogram) == 100


def test_raft_builder_draws_distractors_and_keeps_golden_share():
    src, task = resolve_source("ko-qa")
    examples, _ = validate(open_records(src), ValidationConfig(task=task))
    rows = build_raft(examples, distractors=3, golden_share=0.7, seed=3)
    assert len(rows) == len(examples)
    kept = [r for r in rows if r["golden"] >= 0]
    assert 0.55 < len(kept) / len(rows) < 0.85
    for r, ex in zip(rows, examples):
        assert len(r["documents"]) == 4 and len(set(r["documents"])) == 4
        if r["golden"] >= 0:
            assert r["documents"][r["golden"]] == ex.fields["context"]
        else:
            assert ex.fields["context"] not in r["documents"]
    raft_ok, report = validate(iter([type("R", (), {"line": i + 1, "data": r, "error": None})() for i, r in
                                     enumerate(rows)]), ValidationConfig(task="raft"))
    assert report.ok and len(raft_ok) == len(rows)


def test_cli_convert_split_and_rejects(tmp_path):
    _cli("data", "convert", "ko-qa", str(tmp_path / "raft.jsonl"), "--to", "raft", home=tmp_path)
    raft = [json.loads(x) for x in (tmp_path / "raft.jsonl").read_text(encoding="utf-8").splitlines()]
    assert raft and {"documents", "golden", "question", "answer"} <= set(raft[0])
    _cli("data", "split", "ko-alpaca", str(tmp_path / "split"), "--test", "20", "--validation", "10", home=tmp_path)
    counts = {p.stem: len(p.read_text(encoding="utf-8").splitlines()) for p in (tmp_path / "split").glob("*.jsonl")}
    assert counts["test"] == 20 and counts["validation"] == 10 and counts["train"] >= 200
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{broken\n', encoding="utf-8")
    proc = _cli("data", "validate", str(bad), "--rejects", str(tmp_path / "rej.jsonl"), "--strict", home=tmp_path,
                check=False)
    assert proc.returncode == 1 and "2" in proc.stdout and "not valid JSON" in proc.stdout
    rej = [json.loads(x) for x in (tmp_path / "rej.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rej == [{"source": str(bad), "line": 2, "reason": rej[0]["reason"], "field": None}]


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the checkout")
def test_shared_public_samples_load_and_validate_through_the_cli(tmp_path):
    koalpaca = SHARED / "koalpaca_v1_1_sample" / "KoAlpaca1.1.first300.jsonl"
    report = json.loads(_cli("data", "validate", str(koalpaca), "--json", home=tmp_path).stdout)
    assert report["total"] == 300 and report["valid"] >= 290
    wikisql = SHARED / "korean_wikisql_dev"
    proc = _cli("data", "validate", str(wikisql / "dev_with_sql.jsonl"), "--format", "text2sql",
                "--field", "context=ddl", "--field", "sql=gold_sql", "--db", str(wikisql / "dev.sqlite"), "--json",
                home=tmp_path, check=False)
    report = json.loads(proc.stdout)
    assert report["total"] == 144 and report["valid"] >= 140  # one gold query returns no rows


def test_parquet_and_csv_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": "질문 하나", "input": "", "output": "답 하나"}, {"instruction": "질문 둘", "input": "", "output": ""}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    ok, report = validate(read_records(tmp_path / "d.parquet"), ValidationConfig())
    assert [e.line for e in ok] == [1] and report.rejects[0].line == 2 and "empty" in report.rejects[0].reason
    (tmp_path / "d.csv").write_text("instruction,input,output\n질문,,답\n질문2,,답2,extra\n", encoding="utf-8")
    ok, report = validate(read_records(tmp_path / "d.csv"), ValidationConfig())
    assert [e.line for e in ok] == [2] and report.rejects[0].line == 3


def test_hub_id_offline_without_cache_is_a_clear_error(monkeypatch, tmp_path):
    from workspace.sources import SourceError, read_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(SourceError) as e:
        list(read_hub("hf:nobody/no-such-dataset", "train"))
    assert "no-such-dataset" in str(e.value) and "cached" in e.value.hint
