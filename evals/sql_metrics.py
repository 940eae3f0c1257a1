"""Text-to-SQL scoring: take the SQL out of a model answer, run it in the sandbox, compare the results.

Execution accuracy comes in the two semantics benchmarks report, because they disagree on real answers:

- ``exec_acc`` (Spider test-suite): result rows compared as bags (duplicates count), in order only when
  the gold query has an outermost ORDER BY, and the predicted columns may come in any order;
- ``exec_acc_set`` (BIRD): ``set(pred) == set(gold)`` on the rows as returned: column order counts,
  duplicates and row order do not;
- ``soft_f1`` (BIRD mini-dev): partial credit per row and per value.

A database without rows cannot tell a right query from a wrong one, so on DDL alone the only execution
metric is ``executes_on_schema``; the execution-accuracy keys are then absent, not 0.
All metric values are floats in 0..1, higher is better.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from workspace.errors import OllatuneError
from workspace.sql_sandbox import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, SqlResult, sandbox_for, sandbox_key

EXECUTION_KEYS = ("exec_acc", "exec_acc_set", "soft_f1", "exact_match", "valid_sql")
SCHEMA_ONLY_KEYS = ("executes_on_schema", "exact_match", "valid_sql")
NO_SQL_ERROR = "no SQL found in the answer"
DETAIL_ROWS = 5

Rows = Sequence[Sequence[Any]]

# --------------------------------------------------------------------------------------------------
# Extracting the SQL of an answer
# --------------------------------------------------------------------------------------------------

_SQL_LANGS = frozenset({"sql", "sqlite", "sqlite3", "mysql", "postgresql", "postgres", "psql", "tsql", "plsql"})
_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
# Words that start an SQL statement: an answer that *is* such a statement is taken whole.
_STATEMENT_START = re.compile(
    r"(?:SELECT|WITH|VALUES|INSERT|UPDATE|DELETE|REPLACE|DROP|CREATE|ALTER|ATTACH|DETACH|PRAGMA|VACUUM|BEGIN|"
    r"COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE|ANALYZE|REINDEX|EXPLAIN)\b",
    re.IGNORECASE,
)
# SELECT/WITH inside prose ("SQL: SELECT ...", "다음 쿼리를 사용하세요: SELECT ..."); not inside a word.
_QUERY_START = re.compile(r"(?<![A-Za-z0-9_$.])(SELECT|WITH)\b", re.IGNORECASE)
# WITH only counts when a CTE follows: English prose says "with" all the time.
_CTE_HEAD = re.compile(
    r"WITH\s+(?:RECURSIVE\s+)?(?:\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|\w+)\s*(?:\([^)]*\))?\s*AS\s*"
    r"(?:NOT\s+)?(?:MATERIALIZED\s*)?\(",
    re.IGNORECASE,
)
_HANGUL = re.compile(r"[\uac00-\ud7a3\u3131-\u318e]")
# A line starting with an unquoted Korean identifier followed by SQL punctuation continues the query.
_HANGUL_IDENTIFIER_LINE = re.compile(r"[\uac00-\ud7a3_0-9]+\s*(?:[,.)=<>+\-*/|]|$)")
_MARKDOWN_LINE = re.compile(r"(?:\*\*|#{1,6}\s|[-•]\s|\d+[.)]\s)")  # bold, heading, bullet, numbered
_SQL_WORDS = frozenset("""
    SELECT FROM WHERE AND OR NOT JOIN INNER LEFT RIGHT FULL CROSS OUTER NATURAL ON USING GROUP ORDER BY HAVING
    LIMIT OFFSET UNION INTERSECT EXCEPT ALL DISTINCT AS CASE WHEN THEN ELSE END IN IS NULL LIKE GLOB BETWEEN
    EXISTS WITH VALUES ASC DESC COUNT SUM AVG MIN MAX CAST COALESCE IFNULL ROUND LENGTH SUBSTR LOWER UPPER
    WINDOW OVER PARTITION FILTER COLLATE ESCAPE RECURSIVE MATERIALIZED
""".split())


def extract_sql(text: str | None) -> str | None:
    """The SQL of a model answer, without a trailing semicolon; None when nothing looks like SQL.

    Order of preference: the first ```sql fenced block; any other fenced block that parses as SQL; an
    answer that is itself a statement; a SELECT/WITH inside prose, up to the end of the statement (a
    semicolon outside quotes, a blank line, or a line of prose). Several statements are kept together,
    so "SELECT 1; DROP TABLE x" is refused by the sandbox instead of being cut down to a harmless query.
    """
    if not text or not text.strip():
        return None
    fenced = _from_fences(text)
    if fenced is not None:
        return fenced
    stripped = text.strip()
    head = _skip_blanks(stripped, 0)
    if _starts_statement(stripped, head):
        sql = _cut(stripped, head, prose=True)
        if sql:
            return sql
    return _from_prose(text)


def _from_fences(text: str) -> str | None:
    """The first SQL-labelled fence, else the first unlabelled one whose body parses as a statement."""
    other: str | None = None
    for m in _FENCE.finditer(text):
        lang, body = m.group(1).lower(), m.group(2)
        sql = _cut(body, _skip_blanks(body, 0), prose=False)
        if not sql:
            continue
        if lang in _SQL_LANGS:
            return sql
        if other is None and _starts_statement(sql, 0) and _parses(sql):
            other = sql
    return other


def _from_prose(text: str) -> str | None:
    """The first SELECT/WITH in prose that parses; else the first one at all (scored as invalid SQL)."""
    first: str | None = None
    for m in _QUERY_START.finditer(text):
        start = m.start()
        if not _starts_statement(text, start):
            continue
        # Quoted in prose (`SELECT ...`, "SELECT ..."): the same quote closes it.
        closer = text[start - 1] if start > 0 and text[start - 1] in "`\"'" else None
        sql = _cut(text, start, prose=True, closer=closer)
        if not sql:
            continue
        if _parses(sql):
            return sql
        first = first or sql
    return first


def _starts_statement(text: str, i: int) -> bool:
    """Whether an SQL statement starts at ``i``; WITH only when a CTE follows it."""
    m = _STATEMENT_START.match(text, i)
    return m is not None and (m.group(0).upper() != "WITH" or _CTE_HEAD.match(text, i) is not None)


def _cut(text: str, start: int, *, prose: bool, closer: str | None = None) -> str | None:
    """text[start:] up to the end of its statement, stripped of whitespace and trailing semicolons."""
    end = _statement_end(text, start, prose=prose, closer=closer)
    sql = text[start:end].strip()
    while sql.endswith(";"):
        sql = sql[:-1].rstrip()
    return sql or None


def _statement_end(text: str, start: int, *, prose: bool, closer: str | None) -> int:
    """Where the SQL starting at ``start`` ends: quotes and comments are skipped, so a ';' or a blank line
    inside a string literal does not end it. ``closer``: the quote the SQL was written inside."""
    i, n = start, len(text)
    while i < n:
        c = text[i]
        if text.startswith("```", i) or c == closer:
            return i
        if c in "'\"`[":
            i = _skip_quoted(text, i)
        elif text.startswith("--", i) or text.startswith("/*", i):
            i = _skip_comment(text, i)
        elif c == ";":
            if not _starts_statement(text, _skip_blanks(text, i + 1)):
                return i
            i += 1
        elif c == "\n" and prose and _ends_statement(text, i + 1):
            return i
        else:
            i += 1
    return n


def _ends_statement(text: str, line_start: int) -> bool:
    """Whether the line starting at ``line_start`` is not SQL: blank, a fence, markdown, or prose."""
    line_end = text.find("\n", line_start)
    line = text[line_start:line_end if line_end >= 0 else len(text)].strip()
    if not line or line.startswith("```") or _MARKDOWN_LINE.match(line):
        return True
    if _HANGUL.match(line):
        return not _HANGUL_IDENTIFIER_LINE.match(line)
    m = re.match(r"([A-Z][a-z]+)[\s:,]", line)
    if m is None or m.group(1).upper() in _SQL_WORDS:
        return False
    return line.endswith((".", ":", "!", "?")) or len(line.split()) >= 4


def _skip_quoted(text: str, i: int) -> int:
    """Index after the quoted token at ``i`` ('...', "...", `...`, [...]; doubled quotes escape)."""
    close = "]" if text[i] == "[" else text[i]
    j = i + 1
    while j < len(text):
        if text[j] == close:
            if close != "]" and j + 1 < len(text) and text[j + 1] == close:
                j += 2
                continue
            return j + 1
        j += 1
    return len(text)


def _skip_comment(text: str, i: int) -> int:
    if text.startswith("--", i):
        j = text.find("\n", i)
        return len(text) if j < 0 else j
    j = text.find("*/", i + 2)
    return len(text) if j < 0 else j + 2


def _skip_blanks(text: str, i: int) -> int:
    """Index of the first character at or after ``i`` that is neither whitespace nor a comment."""
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif text.startswith("--", i) or text.startswith("/*", i):
            i = _skip_comment(text, i)
        else:
            break
    return i


# --------------------------------------------------------------------------------------------------
# sqlglot: parsing, ORDER BY, normalisation
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _parse(sql: str) -> tuple | None:
    """The statements of ``sql`` as sqlglot trees (SQLite dialect), or None when it does not parse."""
    import sqlglot
    from sqlglot.errors import SqlglotError

    try:
        trees = tuple(t for t in sqlglot.parse(sql, read="sqlite") if t is not None)
    except (SqlglotError, ValueError, RecursionError):
        return None
    return trees or None


def _parses(sql: str) -> bool:
    return _parse(sql) is not None


def _single_tree(sql: str):  # noqa: ANN202 - a sqlglot Expression, typed loosely to keep sqlglot lazy
    trees = _parse(sql.strip().rstrip(";").strip()) if sql else None
    return trees[0] if trees and len(trees) == 1 else None


def has_order_by(sql: str) -> bool:
    """Whether the outermost query of ``sql`` has ORDER BY (an inner one in a subquery does not order
    the result). Falls back to looking for the words when sqlglot cannot parse the query."""
    from sqlglot import exp

    tree = _single_tree(sql)
    if tree is None:
        return re.search(r"\border\s+by\b", sql or "", re.IGNORECASE) is not None
    while isinstance(tree, (exp.Subquery, exp.Paren)) and tree.this is not None:
        tree = tree.this
    return bool(tree.args.get("order"))


@lru_cache(maxsize=4096)
def normalize_sql(sql: str) -> str | None:
    """One spelling of a query: keywords upper-case, identifiers lower-case and always quoted (SQLite
    identifiers are case-insensitive, quoted or not), whitespace and trailing semicolon dropped.
    None when ``sql`` is not exactly one statement sqlglot can parse."""
    from sqlglot import exp

    tree = _single_tree(sql)
    if tree is None:
        return None
    tree = tree.copy()
    for ident in tree.find_all(exp.Identifier):
        ident.set("this", ident.name.lower())
        ident.set("quoted", False)
    try:
        return tree.sql(dialect="sqlite", identify=True, pretty=False)
    except Exception:  # noqa: BLE001 - a generator gap in sqlglot must not fail scoring
        return None


def sql_exact_match(pred: str | None, gold: str) -> float:
    """1.0 when both queries normalise to the same text (whitespace-collapsed text when the gold query
    does not parse), else 0.0."""
    if not pred:
        return 0.0
    gold_norm = normalize_sql(gold)
    if gold_norm is None:
        return float(_collapsed(pred) == _collapsed(gold))
    return float(normalize_sql(pred) == gold_norm)


def _collapsed(sql: str) -> str:
    return " ".join(sql.split()).rstrip(";").strip().lower()


# --------------------------------------------------------------------------------------------------
# Result comparison (pure functions over row lists)
# --------------------------------------------------------------------------------------------------


def spider_match(gold_rows: Rows, pred_rows: Rows, ordered: bool) -> bool:
    """Spider test-suite equality: rows as bags (as lists when ``ordered``), and some permutation of the
    predicted columns must make the rows equal. Same number of columns required."""
    gold = [tuple(r) for r in gold_rows]
    pred = [tuple(r) for r in pred_rows]
    if not gold and not pred:
        return True
    if len(gold) != len(pred):
        return False
    width = len(gold[0])
    if any(len(r) != width for r in gold) or any(len(r) != width for r in pred):
        return False
    if not _same_rows_ignoring_columns(gold, pred, ordered):
        return False
    candidates = _column_candidates(gold, pred, width)
    if any(not c for c in candidates):
        return False
    order = sorted(range(width), key=lambda i: len(candidates[i]))
    return _assign(gold, pred, ordered, order, candidates, [])


def _same_rows_ignoring_columns(gold: list[tuple], pred: list[tuple], ordered: bool) -> bool:
    """Quick reject: each row's multiset of values must match, whatever the column order."""
    g = [frozenset(Counter(r).items()) for r in gold]
    p = [frozenset(Counter(r).items()) for r in pred]
    return g == p if ordered else Counter(g) == Counter(p)


def _column_candidates(gold: list[tuple], pred: list[tuple], width: int) -> list[list[int]]:
    """For each gold column, the predicted columns holding the same multiset of values: the only ones a
    valid permutation can map it to. This keeps wide rows fast."""
    gold_cols = [Counter(r[i] for r in gold) for i in range(width)]
    pred_cols = [Counter(r[j] for r in pred) for j in range(width)]
    return [[j for j in range(width) if pred_cols[j] == gold_cols[i]] for i in range(width)]


def _assign(gold: list[tuple], pred: list[tuple], ordered: bool, order: list[int],
            candidates: list[list[int]], chosen: list[int]) -> bool:
    """Backtracking over column assignments; every partial assignment must already match on the
    columns chosen so far, which prunes columns whose values agree one by one but not row by row."""
    depth = len(chosen)
    if depth == len(order):
        return True
    gold_cols = order[:depth + 1]
    for j in candidates[order[depth]]:
        if j in chosen:
            continue
        pred_cols = [*chosen, j]
        g = [tuple(r[c] for c in gold_cols) for r in gold]
        p = [tuple(r[c] for c in pred_cols) for r in pred]
        if (g == p if ordered else Counter(g) == Counter(p)) and _assign(gold, pred, ordered, order,
                                                                          candidates, pred_cols):
            return True
    return False


def bird_match(gold_rows: Rows, pred_rows: Rows) -> bool:
    """BIRD equality: the sets of row tuples are equal (column order counts; duplicates, row order not)."""
    return {tuple(r) for r in pred_rows} == {tuple(r) for r in gold_rows}


def soft_f1(gold_rows: Rows, pred_rows: Rows) -> float:
    """BIRD mini-dev soft F1: de-duplicated rows (first occurrence kept) are paired by position; within a
    pair, values are compared ignoring column order, as shares of the gold row's width. A gold row with
    no partner is all missed (1), a predicted row with no partner all extra (1)."""
    gold = list(dict.fromkeys(tuple(r) for r in gold_rows))
    pred = list(dict.fromkeys(tuple(r) for r in pred_rows))
    if not gold and not pred:
        return 1.0
    tp = fp = fn = 0.0
    for i, gold_row in enumerate(gold):
        if i >= len(pred):
            fn += 1.0
            continue
        matched, pred_only, truth_only = _row_overlap(gold_row, pred[i])
        tp, fp, fn = tp + matched, fp + pred_only, fn + truth_only
    fp += max(0, len(pred) - len(gold))
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _row_overlap(gold_row: tuple, pred_row: tuple) -> tuple[float, float, float]:
    """(matched, predicted-only, gold-only) values of one row pair, each divided by the gold width."""
    width = len(gold_row) or 1
    matched = sum(1 for v in pred_row if v in gold_row)
    pred_only = len(pred_row) - matched
    truth_only = sum(1 for v in gold_row if v not in pred_row)
    return matched / width, pred_only / width, truth_only / width


# --------------------------------------------------------------------------------------------------
# Scoring one answer
# --------------------------------------------------------------------------------------------------


def score_text2sql(prediction: str, gold_sql: str, *, db_path: Path | None, schema_sql: str | None,
                   timeout_s: float = DEFAULT_TIMEOUT_S,
                   max_rows: int = DEFAULT_MAX_ROWS) -> tuple[dict[str, float], dict]:
    """Metrics and details of one answer against its gold query.

    With ``db_path`` (a database with rows): EXECUTION_KEYS. With only ``schema_sql``: SCHEMA_ONLY_KEYS,
    run on an empty database built from the DDL. A gold query that fails on its database raises
    OllatuneError (the dataset is wrong; a silent 0 would blame the model). On a schema only, a failing
    gold query is recorded as ``gold_error``, since no metric compares against its rows.
    """
    semantics = "execution" if db_path is not None else "schema-only"
    gold = _gold_result(sandbox_key(db_path, schema_sql), None if db_path is None else str(db_path),
                        schema_sql if db_path is None else None, gold_sql, timeout_s, max_rows)
    if gold.error is not None and semantics == "execution":
        raise OllatuneError(
            f"gold SQL fails on {db_path}: {gold.error}\n  gold SQL: {' '.join(gold_sql.split())[:300]}",
            hint="the dataset row is wrong for its database: fix its SQL or db_id, or drop the row",
        )
    sql = extract_sql(prediction)
    pred = None if sql is None else sandbox_for(db_path, schema_sql if db_path is None else None).run(
        sql, timeout_s=timeout_s, max_rows=max_rows)
    metrics = _execution_metrics(gold, gold_sql, pred) if semantics == "execution" else _schema_metrics(pred)
    metrics["exact_match"] = sql_exact_match(sql, gold_sql) if pred is not None else 0.0
    keys = EXECUTION_KEYS if semantics == "execution" else SCHEMA_ONLY_KEYS
    details = {
        "sql": sql,
        "error": NO_SQL_ERROR if pred is None else pred.error,
        "gold_error": gold.error,
        "pred_rows": _json_rows(pred.rows if pred is not None else []),
        "gold_rows": _json_rows(gold.rows),
        "semantics": semantics,
        "ordered": semantics == "execution" and has_order_by(gold_sql),
        "truncated": bool(gold.truncated or (pred is not None and pred.truncated)),
    }
    return {k: metrics[k] for k in keys}, details


def _execution_metrics(gold: SqlResult, gold_sql: str, pred: SqlResult | None) -> dict[str, float]:
    if pred is None or not pred.ok:
        return {"exec_acc": 0.0, "exec_acc_set": 0.0, "soft_f1": 0.0, "valid_sql": 0.0}
    return {
        "exec_acc": float(spider_match(gold.rows, pred.rows, has_order_by(gold_sql))),
        "exec_acc_set": float(bird_match(gold.rows, pred.rows)),
        "soft_f1": soft_f1(gold.rows, pred.rows),
        "valid_sql": 1.0,
    }


def _schema_metrics(pred: SqlResult | None) -> dict[str, float]:
    ran = float(pred is not None and pred.ok)
    return {"executes_on_schema": ran, "valid_sql": ran}


@lru_cache(maxsize=8192)
def _gold_result(key: tuple, db_path: str | None, schema_sql: str | None, gold_sql: str,
                 timeout_s: float, max_rows: int) -> SqlResult:
    """The gold query's result, once per (database version, query) in this process: scoring several
    models on one suite runs each gold query once. ``key`` changes when the database file changes."""
    del key  # part of the cache key only
    return sandbox_for(db_path, schema_sql).run(gold_sql, timeout_s=timeout_s, max_rows=max_rows)


def _json_rows(rows: Rows) -> list[list[Any]]:
    return [[_json_value(v) for v in row] for row in list(rows)[:DETAIL_ROWS]]


def _json_value(value: Any) -> Any:
    """A value JSON can hold: bytes as hex, NaN/inf as text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
