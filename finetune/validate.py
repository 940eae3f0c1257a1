"""The validation report: every row checked, rejects kept with their line and reason, valid rows go on.

Checks: readable row, required fields and types (through the format adapter), length bounds, exact and
near duplicates, answers grounded in their context (QA/RAFT), gold SQL that executes (text-to-SQL),
and the token-length distribution under the chosen model's chat template.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workspace.examples import Example, ExampleError, adapt
from workspace.sources import Record


@dataclass
class ValidationConfig:
    task: str = "alpaca"
    fields: dict[str, str] = field(default_factory=dict)
    system: str | None = None
    min_chars: int = 1  # of the answer
    max_chars: int = 20_000  # of prompt + answer
    near_duplicates: bool = True
    near_threshold: float = 0.9
    reject_near_duplicates: bool = False
    databases: dict[str, Path] = field(default_factory=dict)  # text-to-SQL db_id (or "*") -> SQLite file
    sql_timeout_s: float = 2.0
    max_seq_len: int = 2048


@dataclass
class Reject:
    line: int | None
    reason: str
    field: str | None = None


@dataclass
class TokenStats:
    mean: float
    p50: int
    p95: int
    max: int
    over_max_seq_len: float  # share of rows longer than max_seq_len
    max_seq_len: int
    recommended_max_seq_len: int
    histogram: list[tuple[int, int, int]]  # (from, to, count)


@dataclass
class Report:
    source: str
    task: str
    total: int = 0
    valid: int = 0
    rejects: list[Reject] = field(default_factory=list)
    near_duplicates: list[tuple[int | None, int | None, float]] = field(default_factory=list)
    tokens: TokenStats | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.rejects

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _key(ex: Example) -> str:
    text = json.dumps([m["content"].strip() for m in ex.prompt] + [ex.response.strip()], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _dedup_text(ex: Example) -> str:
    """What makes two rows the same task: a shared QA context or DDL is not duplication."""
    if ex.task in ("qa", "text2sql", "raft"):
        return ex.fields["question"] + "\n" + ex.response
    return ex.user_text() + "\n" + ex.response


def _grounding_problem(ex: Example) -> str | None:
    if ex.task == "qa":
        ctx = ex.fields["context"]
        for a in ex.fields["answers"]:
            start = a.get("answer_start")
            if a["text"] not in ctx:
                return f"answer {a['text']!r} does not occur in the context"
            if isinstance(start, int) and ctx[start:start + len(a["text"])] != a["text"]:
                return f"answer_start {start} does not point at {a['text']!r}"
    if ex.task == "raft":
        golden = ex.fields.get("golden")
        if isinstance(golden, int) and golden >= 0 and ex.fields["answer"].strip() not in ex.fields["documents"][golden]:
            return "the answer does not occur in the golden document"
    return None


def run_sql_readonly(db: Path, sql: str, timeout_s: float = 2.0, max_rows: int = 10_000) -> list[tuple]:
    """Run ``sql`` in the SQL sandbox (an in-memory copy of ``db``, read-only, with a real timeout):
    dataset SQL can never modify the database or hang the caller. Raises a ``sqlite3.OperationalError``
    subclass when the query fails, is refused or times out."""
    from workspace.sql_sandbox import sandbox_for

    return sandbox_for(db).run(sql, timeout_s=timeout_s, max_rows=max_rows).check().rows


def _sql_problem(ex: Example, cfg: ValidationConfig) -> str | None:
    import sqlglot

    sql = ex.fields["sql"]
    db_id = ex.metadata.get("db_id")
    db = cfg.databases.get(db_id) if db_id else cfg.databases.get("*")  # "*": the database of every row
    if db is None:
        try:
            sqlglot.parse_one(sql, read="sqlite")
        except sqlglot.errors.ParseError as e:
            return f"gold SQL does not parse: {str(e).splitlines()[0][:160]}"
        return None
    try:
        rows = run_sql_readonly(db, sql, cfg.sql_timeout_s)
    except sqlite3.Error as e:
        return f"gold SQL fails on {db_id}: {e}"
    if not rows:
        return f"gold SQL returns no rows on {db_id}"
    return None


def validate(records: Iterable[Record], cfg: ValidationConfig, *, source: str = "",
             render=None) -> tuple[list[Example], Report]:  # noqa: ANN001
    """Check every record; return the valid examples and the report. ``render(examples) -> list[int]``
    gives token lengths (the model's tokenizer and chat template); without it no token statistics."""
    import time

    t0 = time.monotonic()
    report = Report(source=source, task=cfg.task)
    valid: list[Example] = []
    seen: dict[str, int | None] = {}
    for rec in records:
        report.total += 1
        if rec.error:
            report.rejects.append(Reject(rec.line, rec.error))
            continue
        try:
            ex = adapt(rec.data, cfg.task, fields=cfg.fields, system=cfg.system, line=rec.line)
        except ExampleError as e:
            report.rejects.append(Reject(rec.line, str(e), e.field))
            continue
        except RecursionError:
            report.rejects.append(Reject(rec.line, "row nested too deeply"))
            continue
        size = sum(len(m["content"]) for m in ex.prompt) + len(ex.response)
        if len(ex.response.strip()) < cfg.min_chars:
            report.rejects.append(Reject(rec.line, f"answer shorter than {cfg.min_chars} characters", "response"))
            continue
        if size > cfg.max_chars:
            report.rejects.append(Reject(rec.line, f"row has {size} characters, more than {cfg.max_chars}", None))
            continue
        key = _key(ex)
        if key in seen:
            report.rejects.append(Reject(rec.line, f"exact duplicate of line {seen[key]}", None))
            continue
        problem = _grounding_problem(ex) or (_sql_problem(ex, cfg) if ex.task == "text2sql" else None)
        if problem:
            report.rejects.append(Reject(rec.line, problem, "answers" if ex.task == "qa" else None))
            continue
        seen[key] = rec.line
        valid.append(ex)
    if cfg.near_duplicates and len(valid) > 1:
        from finetune.near_dup import near_duplicate_pairs

        texts = [_dedup_text(ex) for ex in valid]
        pairs = near_duplicate_pairs(texts, cfg.near_threshold)
        report.near_duplicates = [(valid[i].line, valid[j].line, sim) for i, j, sim in pairs]
        if cfg.reject_near_duplicates and pairs:
            drop = {j for _i, j, _s in pairs}
            for j in sorted(drop):
                report.rejects.append(Reject(valid[j].line, f"near duplicate of line {valid[[p[0] for p in pairs if p[1] == j][0]].line}"))
            valid = [ex for k, ex in enumerate(valid) if k not in drop]
    report.valid = len(valid)
    if render is not None and valid:
        report.tokens = token_stats(render(valid), cfg.max_seq_len)
    report.rejects.sort(key=lambda r: (r.line is None, r.line or 0))
    report.seconds = round(time.monotonic() - t0, 2)
    return valid, report


def token_stats(lengths: list[int], max_seq_len: int, bins: int = 12) -> TokenStats:
    import numpy as np

    arr = np.asarray(lengths)
    p95 = int(np.percentile(arr, 95))
    p99 = int(np.percentile(arr, 99))
    recommended = int(min(max(64, -(-p99 // 64) * 64), max(64, -(-int(arr.max()) // 64) * 64)))
    counts, edges = np.histogram(arr, bins=min(bins, max(1, len(set(lengths)))))
    hist = [(int(edges[i]), int(edges[i + 1]), int(c)) for i, c in enumerate(counts)]
    return TokenStats(round(float(arr.mean()), 1), int(np.percentile(arr, 50)), p95, int(arr.max()),
                      round(float((arr > max_seq_len).mean()), 4), max_seq_len, recommended, hist)


def write_rejects(path: Path, report: Report) -> Path:
    """One JSON line per rejected row: source line, reason, field."""
    from workspace.files import write_text_atomic

    lines = [json.dumps({"source": report.source, **asdict(r)}, ensure_ascii=False) for r in report.rejects]
    return write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def chat_template_lengths(tokenizer) -> Any:  # noqa: ANN001
    """A ``render`` for :func:`validate`: token count of each example as the model will see it."""

    def render(examples: list[Example]) -> list[int]:
        texts = [tokenizer.apply_chat_template(ex.messages(), tokenize=False) for ex in examples]
        enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(x) for x in enc]

    return render
