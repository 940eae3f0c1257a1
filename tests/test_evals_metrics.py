"""Metrics that are right for Korean, with values computed by hand."""

from __future__ import annotations

import pytest

from evals.metrics import (
    METRICS,
    bleu,
    char_f1,
    exact_match,
    get_tokenizer,
    normalize_for_match,
    rouge_l,
    score,
    token_f1,
)

PRED = "대한민국의 수도는 서울입니다."
REF = "수도는 서울입니다."


def test_rouge_score_default_tokenizer_drops_korean_and_ours_does_not():
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rougeL"]).score(REF, PRED)["rougeL"].fmeasure
    assert default == 0.0  # the bug: every Hangul character is deleted before matching
    # Even identical Korean strings score 0 with the default tokenizer.
    assert rouge_scorer.RougeScorer(["rougeL"]).score(REF, REF)["rougeL"].fmeasure == 0.0

    for tok in ("kiwi", "char", "whitespace"):
        assert rouge_l(PRED, REF, tok) > 0.5, tok
        assert rouge_l(REF, REF, tok) == pytest.approx(1.0), tok


def test_rouge_l_known_value_whitespace():
    # LCS of (나는 오늘 학교에 간다) and (나는 내일 학교에 간다) is 3 of 4 tokens: P = R = F = 0.75.
    assert rouge_l("나는 오늘 학교에 간다", "나는 내일 학교에 간다", "whitespace") == pytest.approx(0.75)


def test_kiwi_tokenizer_splits_morphemes_once_and_lowercases():
    tok = get_tokenizer("kiwi")
    tokens = tok.tokenize("서울은 Seoul이다.")
    assert "서울" in tokens and "seoul" in tokens
    assert "." not in tokens  # punctuation-only tokens are dropped
    assert type(tok)._kiwi is not None  # loaded lazily, then kept
    same = type(tok)._kiwi
    tok.tokenize("한 번 더")
    assert type(tok)._kiwi is same


def test_morphemes_match_what_whitespace_misses():
    # "서울은" and "서울이" share the stem: morpheme F1 sees it, word F1 does not.
    assert token_f1("서울은 크다", "서울이 크다", "whitespace") == pytest.approx(0.5)
    assert token_f1("서울은", "서울이", "whitespace") == 0.0
    assert token_f1("서울은", "서울이", "kiwi") > 0.0


def test_token_f1_known_values():
    # pred 5 tokens, ref 6 tokens, 4 in common (the, cat, on, mat): P=4/5, R=4/6 -> F1 = 8/11.
    assert token_f1("The cat sat on mat", "the cat is on the mat", "whitespace") == pytest.approx(8 / 11)
    # char tokens: 서울입니다 (5) vs 서울 (2), 2 in common: P=2/5, R=1 -> F1 = 4/7.
    assert token_f1("서울입니다", "서울", "char") == pytest.approx(4 / 7)
    assert token_f1("", "", "char") == 1.0
    assert token_f1("서울", "", "char") == 0.0
    assert token_f1("부산", "서울", "char") == 0.0


def test_char_f1_korquad_known_values():
    # 세종대왕 (4 chars) inside 조선의세종대왕 (7 chars, space removed): P=1, R=4/7 -> F1 = 8/11.
    assert char_f1("세종대왕", "조선의 세종대왕") == pytest.approx(8 / 11)
    # Quotes, brackets and punctuation are removed; spaces do not count.
    assert char_f1("《세종 대왕》.", "세종대왕") == pytest.approx(1.0)
    # No English article rule (SQuAD would drop "the" and give 1.0): 7 common of 10 vs 7 -> 14/17.
    assert char_f1("the Beatles", "Beatles") == pytest.approx(14 / 17)


def test_exact_match_normalisation():
    assert exact_match("서울입니다.", "서울입니다") == 1.0
    assert exact_match('  "서울   입니다"  ', "서울 입니다") == 1.0
    assert exact_match("Paris!", "paris") == 1.0
    assert exact_match("서울", "서울입니다") == 0.0
    assert normalize_for_match(" 'SELECT 1;' ") == "select 1"


def test_bleu_char_level_scaled():
    assert 0.999 < bleu("대한민국의 수도는 서울입니다", "대한민국의 수도는 서울입니다") <= 1.0
    partial = bleu("수도는 서울입니다", "대한민국의 수도는 서울입니다")
    assert 0.2 < partial < 1.0
    assert bleu("부산", "서울입니다") < 0.1
    assert bleu("", "서울") == 0.0


def test_score_registry_and_unknown_metric():
    assert set(METRICS) == {"rouge_l", "token_f1", "char_f1", "exact_match", "bleu"}
    values = score(PRED, REF, ["rouge_l", "token_f1", "exact_match", "char_f1", "bleu"], "kiwi")
    assert set(values) == set(METRICS)
    assert all(0.0 <= v <= 1.0 for v in values.values())
    assert values["exact_match"] == 0.0 and values["rouge_l"] > 0
    with pytest.raises(ValueError, match="unknown metric"):
        score(PRED, REF, ["meteor"], "kiwi")
    with pytest.raises(ValueError, match="unknown tokenizer"):
        score(PRED, REF, ["rouge_l"], "spacy")
