"""Text metrics that are right for Korean, each recorded with the tokenizer it used.

rouge-score's default tokenizer lower-cases, then replaces every character outside ``[a-z0-9]`` with a
space: a Korean answer has no tokens left and scores 0 against anything. We always hand RougeScorer a
tokenizer of our own:

- ``kiwi``: morphemes from kiwipiepy (``Token.form``), lower-cased. Korean is agglutinative, so a
  word-level match misses "서울은" vs "서울이"; morphemes see the shared stem.
- ``char``: every non-space character (language-agnostic, forgiving).
- ``whitespace``: whitespace-separated words (what English metrics usually mean by a token).

All three lower-case and drop tokens made only of punctuation, as SQuAD/KorQuAD normalisation removes
punctuation before comparing. Metric functions take ``(prediction, reference, tokenizer)`` and return a
float in 0..1; higher is better for every metric here.
"""

from __future__ import annotations

import re
import string
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol

# Bump when a metric or tokenizer changes behaviour: suite hashes include it, so stored eval runs made
# with the old code are not reused as if they were current.
METRICS_VERSION = "1"

TOKENIZERS = ("kiwi", "char", "whitespace")


class Tokenizer(Protocol):
    name: str

    def tokenize(self, text: str) -> list[str]: ...


def _is_punct_token(token: str) -> bool:
    return all(unicodedata.category(ch)[0] in "PS" for ch in token)


class WhitespaceTokenizer:
    name = "whitespace"

    def tokenize(self, text: str) -> list[str]:
        out = []
        for word in text.lower().split():
            # Strip punctuation glued to a word ("서울이다." -> "서울이다"), keep inner hyphens etc.
            word = word.strip(_PUNCT_CHARS)
            if word and not _is_punct_token(word):
                out.append(word)
        return out


class CharTokenizer:
    name = "char"

    def tokenize(self, text: str) -> list[str]:
        return [ch for ch in text.lower() if not ch.isspace() and not _is_punct_token(ch)]


class KiwiTokenizer:
    """Korean morphemes via kiwipiepy. The Kiwi model takes a second to load: done once, on first use."""

    name = "kiwi"
    _kiwi: Any = None
    _lock = threading.Lock()

    @classmethod
    def _get(cls) -> Any:
        if cls._kiwi is None:
            with cls._lock:
                if cls._kiwi is None:
                    from kiwipiepy import Kiwi

                    cls._kiwi = Kiwi()
        return cls._kiwi

    def tokenize(self, text: str) -> list[str]:
        if not text.strip():
            return []
        tokens = self._get().tokenize(text)
        return [t.form.lower() for t in tokens if t.form.strip() and not _is_punct_token(t.form)]


_PUNCT_CHARS = "".join(
    sorted(set(string.punctuation) | set("“”‘’«»《》〈〉「」『』【】〔〕·…。、，！？：；（）～"))
)

_TOKENIZERS: dict[str, Tokenizer] = {
    "kiwi": KiwiTokenizer(),
    "char": CharTokenizer(),
    "whitespace": WhitespaceTokenizer(),
}


def get_tokenizer(tokenizer: str | Tokenizer) -> Tokenizer:
    if not isinstance(tokenizer, str):
        return tokenizer
    try:
        return _TOKENIZERS[tokenizer]
    except KeyError:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}") from None


# ---------------------------------------------------------------------------------------------- metrics


@lru_cache(maxsize=None)
def _rouge_scorer(tokenizer_name: str) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_TOKENIZERS[tokenizer_name])


def rouge_l(prediction: str, reference: str, tokenizer: str | Tokenizer = "kiwi") -> float:
    """ROUGE-L F-measure (longest common subsequence) over our tokens."""
    tok = get_tokenizer(tokenizer)
    if tok.name in _TOKENIZERS and _TOKENIZERS[tok.name] is tok:
        scorer = _rouge_scorer(tok.name)
    else:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=tok)
    return float(scorer.score(reference, prediction)["rougeL"].fmeasure)


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    if not pred_tokens or not ref_tokens:
        # SQuAD v2 convention: two empty answers agree; one empty answer scores 0.
        return float(pred_tokens == ref_tokens)
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, reference: str, tokenizer: str | Tokenizer = "kiwi") -> float:
    """SQuAD-style bag-of-tokens F1 with the chosen tokenizer (no English article rule)."""
    tok = get_tokenizer(tokenizer)
    return _f1(tok.tokenize(prediction), tok.tokenize(reference))


# KorQuAD v1 evaluate script: these quote/bracket characters become spaces before punctuation removal.
_KORQUAD_REMOVE = re.compile(r"['\"《》<>〈〉\(\)‘’“”「」『』【】·]")


def _korquad_normalize(text: str) -> str:
    text = _KORQUAD_REMOVE.sub(" ", text.lower())
    text = "".join(ch for ch in text if ch not in string.punctuation)
    return " ".join(text.split())


def char_f1(prediction: str, reference: str, tokenizer: str | Tokenizer | None = None) -> float:
    """KorQuAD's official F1: character-level over the normalised answer, spaces removed.

    Unlike SQuAD it has no English article rule (``a``/``an``/``the`` stay). The tokenizer argument is
    accepted for a uniform signature and ignored: the metric is defined on characters.
    """
    pred_chars = list(_korquad_normalize(prediction).replace(" ", ""))
    ref_chars = list(_korquad_normalize(reference).replace(" ", ""))
    return _f1(pred_chars, ref_chars)


_TRAILING = re.compile(r"[\s" + re.escape(_PUNCT_CHARS) + r"]+$")
_QUOTES = "\"'`“”‘’「」『』«»"


def normalize_for_match(text: str) -> str:
    """Strip, collapse whitespace, drop surrounding quotes and trailing punctuation, case-fold."""
    text = " ".join(text.split())
    text = text.strip(_QUOTES + " ")
    text = _TRAILING.sub("", text)
    text = text.strip(_QUOTES + " ")
    return text.casefold()


def exact_match(prediction: str, reference: str, tokenizer: str | Tokenizer | None = None) -> float:
    """1.0 if the normalised prediction equals the normalised reference (see ``normalize_for_match``)."""
    return float(normalize_for_match(prediction) == normalize_for_match(reference))


def bleu(prediction: str, reference: str, tokenizer: str | Tokenizer | None = None) -> float:
    """Sentence BLEU from sacrebleu on characters (``tokenize="char"``: no Korean word segmenter needed),
    scaled to 0..1. The tokenizer argument is ignored."""
    if not prediction.strip() or not reference.strip():
        return float(prediction.strip() == reference.strip())
    import sacrebleu

    value = float(sacrebleu.sentence_bleu(prediction, [reference], tokenize="char").score) / 100.0
    return min(1.0, max(0.0, value))  # sacrebleu's float arithmetic can give 100.00000000000004


Metric = Callable[[str, str, Any], float]

METRICS: dict[str, Metric] = {
    "rouge_l": rouge_l,
    "token_f1": token_f1,
    "char_f1": char_f1,
    "exact_match": exact_match,
    "bleu": bleu,
}

# Metrics whose value depends on the tokenizer argument (the others ignore it).
TOKENIZED_METRICS = frozenset({"rouge_l", "token_f1"})


def score(
    prediction: str, reference: str, metrics: list[str] | tuple[str, ...], tokenizer: str | Tokenizer = "kiwi"
) -> dict[str, float]:
    """Every requested metric for one (prediction, reference) pair."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    tok = get_tokenizer(tokenizer)
    return {m: METRICS[m](prediction, reference, tok) for m in metrics}
