"""Sanity checks for the shipped Korean data samples (fast, no model needed)."""
import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "workspace" / "data"
QA_PATH = DATA / "ko_qa.json"
INSTR_PATH = DATA / "ko_instructions.jsonl"

REFUSAL_PHRASES = ("도와드릴 수 없", "알려 드릴 수 없", "안내해 드릴 수 없", "작성해 드릴 수 없", "찾아 드릴 수 없")


def _has_hangul(s):
    return any("\uac00" <= ch <= "\ud7a3" for ch in s)


@pytest.fixture(scope="module")
def qa():
    return json.loads(QA_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def qa_items(qa):
    return [(p["context"], q) for art in qa["data"] for p in art["paragraphs"] for q in p["qas"]]


@pytest.fixture(scope="module")
def instr_rows():
    lines = INSTR_PATH.read_text(encoding="utf-8").splitlines()
    return [(n, line) for n, line in enumerate(lines, 1)]


def test_qa_layout_and_size(qa, qa_items):
    assert qa["version"] == "ollatune-ko-qa-1"
    assert isinstance(qa["data"], list)
    paragraphs = [p for art in qa["data"] for p in art["paragraphs"]]
    assert all(art["title"].strip() for art in qa["data"])
    assert len(paragraphs) >= 22
    assert len(qa_items) >= 110
    for p in paragraphs:
        assert _has_hangul(p["context"])
        assert 4 <= len(p["qas"]) <= 6


def test_qa_ids_unique(qa_items):
    ids = [q["id"] for _, q in qa_items]
    assert len(ids) == len(set(ids))
    assert all(i.startswith("koqa-") for i in ids)


def test_qa_answer_spans_match_context(qa_items):
    for ctx, q in qa_items:
        assert q["question"].strip() and _has_hangul(q["question"]), q["id"]
        assert q["answers"], q["id"]
        for a in q["answers"]:
            text, start = a["text"], a["answer_start"]
            assert isinstance(start, int) and not isinstance(start, bool), q["id"]
            assert 0 < len(text) <= 40, q["id"]
            assert text.strip() == text, q["id"]
            assert ctx[start:start + len(text)] == text, (q["id"], text, ctx[start:start + len(text)])


def test_instructions_rows_well_formed(instr_rows):
    assert len(instr_rows) >= 285
    seen = set()
    for n, line in instr_rows:
        row = json.loads(line)
        assert list(row) == ["instruction", "input", "output"], n
        assert all(isinstance(v, str) for v in row.values()), n
        assert row["instruction"].strip() and row["output"].strip(), n
        assert "\\u" not in line, f"line {n} is ASCII-escaped"
        key = (row["instruction"], row["input"])
        assert key not in seen, f"duplicate at line {n}"
        seen.add(key)


def test_instructions_have_spread_refusals(instr_rows):
    hits = [n for n, line in instr_rows if any(p in json.loads(line)["output"] for p in REFUSAL_PHRASES)]
    assert len(hits) >= 20
    # spread across the file, not bunched at the end
    assert hits[0] <= len(instr_rows) // 4
    assert hits[len(hits) // 2] <= len(instr_rows) * 3 // 4
