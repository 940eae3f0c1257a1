"""From a raw answer to stored scores, per task: cleaning, the answer after a reasoning marker, SQL
extraction and execution for text-to-SQL, and the text metrics for everything else.

A :class:`Scorer` is made once per suite (it opens the suite's databases once) and scores one example at a
time or a batch (the embedding metric batches its model calls). Every score carries the name of the
tokenizer it was computed with, so two numbers are only compared when they were computed alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.cleaning import clean
from evals.suites import SAFETY_METRICS, Example, Suite, database_for, databases


@dataclass
class Scored:
    cleaned: str  # what was scored: the cleaned answer, or the SQL extracted from it
    values: dict[str, float]
    tokenizers: dict[str, str | None] = field(default_factory=dict)
    details: dict[str, Any] | None = None


def after_marker(text: str, marker: str) -> str:
    """The final answer of a chain-of-thought output: what follows the last ``marker`` (the whole text when
    the model never wrote the marker: it is scored as it is, and usually loses)."""
    at = text.rfind(marker)
    return text[at + len(marker):].strip() if at >= 0 else text.strip()


def clean_answer(suite: Suite, raw: str) -> str:
    text = clean(raw, suite.params.stop)
    if suite.prompt.chain_of_thought:
        text = after_marker(text, suite.prompt.answer_marker)
    return text


class Scorer:
    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.dbs: dict[str, Path] = databases(suite) if suite.task == "text2sql" else {}

    @property
    def text_metrics(self) -> list[str]:
        return [m for m in self.suite.metrics if m not in SAFETY_METRICS]

    def schema_only(self) -> bool:
        """True when the suite's text-to-SQL examples have no database rows (DDL only)."""
        return self.suite.task == "text2sql" and not self.dbs

    def score_batch(self, examples: list[Example], raws: list[str]) -> list[Scored]:
        cleaned = [clean_answer(self.suite, raw) for raw in raws]
        if self.suite.task == "text2sql":
            return [self._sql(ex, text) for ex, text in zip(examples, cleaned)]
        from evals.metrics import metric_tokenizer, score_batch

        metrics = self.text_metrics
        if not metrics:
            return [Scored(text, {}) for text in cleaned]
        tok = self.suite.tokenizer
        values = score_batch(cleaned, [ex.references() for ex in examples], metrics, tok)
        names = {m: metric_tokenizer(m, tok) for m in metrics}
        return [Scored(text, v, names) for text, v in zip(cleaned, values)]

    def score(self, ex: Example, raw: str) -> Scored:
        return self.score_batch([ex], [raw])[0]

    def _sql(self, ex: Example, text: str) -> Scored:
        from evals.sql_metrics import score_text2sql

        db = database_for(self.dbs, ex)
        values, details = score_text2sql(text, ex.reference, db_path=db, schema_sql=ex.schema_sql,
                                         timeout_s=self.suite.sql.timeout_s, max_rows=self.suite.sql.max_rows)
        wanted = list(self.suite.metrics)
        if db is None and "executes_on_schema" not in wanted:
            wanted.append("executes_on_schema")  # DDL only: reported instead of execution accuracy
        kept = {k: float(v) for k, v in values.items() if k in wanted}
        sql = details.get("sql") if isinstance(details, dict) else None
        tokenizers = {k: ("sqlite-execution" if k != "exact_match" else "sqlglot-normalised") for k in kept}
        return Scored(sql if sql is not None else text, kept, tokenizers, details)
