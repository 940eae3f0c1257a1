"""Malformed files of every kind reach every loader: never a traceback, always a report naming the line."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workspace.examples import TASKS
from workspace.sources import SourceError, read_records
from finetune.validate import ValidationConfig, validate

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["instruction", "input", "output", "question", "context", "sql", "answers", "documents", "answer",
         "messages", "role", "content", "text", "answer_start", "golden"]), inner, max_size=5),
    max_leaves=12,
)
garbage_line = st.one_of(
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8")),
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda t: t.encode("utf-16")),  # another encoding
    st.text(max_size=60).map(lambda t: t.encode("euc-kr", errors="ignore")),
    st.just(b'{"instruction": "' + b"x" * 30_000 + b'", "output": "y"}'),  # a huge row
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(path: Path, task: str) -> None:
    try:
        examples, report = validate(read_records(path), ValidationConfig(task=task, max_chars=20_000))
    except SourceError as e:  # the file as a whole is unreadable: the message names it (and the line)
        assert str(path) in str(e) and e.hint
        return
    assert report.valid + len(report.rejects) == report.total
    for r in report.rejects:
        assert isinstance(r.line, int) and r.line >= 1 and r.reason


@SETTINGS
@given(lines=st.lists(garbage_line, min_size=1, max_size=12), task=st.sampled_from(TASKS))
def test_jsonl_loader_never_raises(lines, task):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.jsonl"
        p.write_bytes(b"\n".join(lines) + b"\n")
        _check(p, task)


@SETTINGS
@given(blob=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
       task=st.sampled_from(TASKS))
def test_json_loader_never_raises(blob, task):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.json"
        p.write_bytes(blob)
        _check(p, task)


@SETTINGS
@given(lines=st.lists(st.one_of(st.text(max_size=50), st.binary(max_size=50).map(
    lambda b: b.decode("latin-1"))), min_size=1, max_size=10), task=st.sampled_from(TASKS))
def test_csv_loader_never_raises(lines, task):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.csv"
        p.write_bytes(("instruction,input,output\n" + "\n".join(lines)).encode("utf-8", errors="surrogatepass"))
        _check(p, task)


def test_binary_garbage_parquet_is_a_clear_error(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_bytes(b"\x00\x01garbage")
    try:
        list(read_records(p))
    except SourceError as e:
        assert "Parquet" in str(e)
    else:
        raise AssertionError("garbage parquet was accepted")
