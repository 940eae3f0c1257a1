"""Cleaning raw model output before scoring: special tokens, stop strings, role headers, fences."""

from __future__ import annotations

import pytest

from evals.cleaning import END_TOKENS, START_TOKENS, clean

REQUIRED = ["<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "<end_of_turn>", "</s>", "<|end|>"]


def test_every_required_token_is_known():
    assert set(REQUIRED) <= set(END_TOKENS) | set(START_TOKENS)


@pytest.mark.parametrize("tok", REQUIRED)
def test_special_token_after_answer_ends_it(tok):
    raw = f"서울입니다.{tok}\n<|im_start|>user\n또 질문이 있어요"
    assert clean(raw, []) == "서울입니다."


@pytest.mark.parametrize("tok", REQUIRED)
def test_special_token_before_answer_is_dropped(tok):
    assert clean(f"{tok}서울입니다.", []) == "서울입니다."
    assert clean(f" \n{tok}\n서울입니다.{tok}", []) == "서울입니다."


def test_broken_template_role_headers():
    assert clean("<|im_start|>assistant\n서울입니다.<|im_end|>", []) == "서울입니다."
    assert clean("assistant\n\n서울입니다.", []) == "서울입니다."
    assert clean("Assistant: Paris.", []) == "Paris."
    assert clean("<|start_header_id|>assistant<|end_header_id|>\n\n서울<|eot_id|>", []) == "서울"
    assert clean("### Response: 서울", []) == "서울"
    # A real answer that starts with the word keeps it.
    assert clean("Assistant managers help managers.", []) == "Assistant managers help managers."


def test_stop_strings_cut_at_first_occurrence():
    assert clean("SELECT 1;\n\nThis query selects one.", ["\n\n"]) == "SELECT 1;"
    assert clean("답: 서울 ### 질문: 다음", ["###", "질문:"]) == "답: 서울"
    assert clean("서울", ["", "###"]) == "서울"  # an empty stop string is ignored


def test_code_fences():
    assert clean("```sql\nSELECT name FROM t;\n```", []) == "SELECT name FROM t;"
    assert clean("Here it is:\n```\nSELECT 1\n```\n", []) == "Here it is:\nSELECT 1"
    assert clean("```sql SELECT 1```", []) == "SELECT 1"
    assert clean("```SELECT 1```", []) == "SELECT 1"


def test_plain_answer_unchanged_but_trimmed():
    assert clean("  대한민국의 수도는 서울입니다.  \n", []) == "대한민국의 수도는 서울입니다."
    assert clean("", []) == ""
