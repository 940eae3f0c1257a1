"""Build the small SQLite databases behind the Korean Text-to-SQL task.

A database is described by a SQL script (CREATE TABLE + INSERT statements). Scripts may be written in
SQLite syntax or in MySQL flavour (backtick identifiers, ``AUTO_INCREMENT``, ``ENGINE=InnoDB``), as many
Korean text-to-SQL datasets are; MySQL scripts are transpiled statement by statement to SQLite with sqlglot.
The database is written under a temporary name and renamed into place, so a failed build leaves nothing.
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
from pathlib import Path

from workspace.errors import OllatuneError

DATA_DIR = Path(__file__).resolve().parent / "data" / "ko_text2sql"
DATASET_PATH = Path(__file__).resolve().parent / "data" / "ko_text2sql.jsonl"
SHIPPED_DB_IDS = ("game", "shop", "school")

# Table properties MySQL needs and SQLite has no notion of: dropped, not an error.
_HARMLESS_PROPERTIES = ("EngineProperty", "CharacterSetProperty", "CollateProperty", "AutoIncrementProperty",
                        "RowFormatProperty", "SchemaCommentProperty")
# Session/dump statements of MySQL scripts that mean nothing to SQLite.
_SKIPPED_MYSQL = re.compile(r"^\s*(SET\s|LOCK\s+TABLES|UNLOCK\s+TABLES|USE\s)", re.IGNORECASE)
_MYSQL_MARKERS = (
    re.compile(r"\bAUTO_INCREMENT\b", re.IGNORECASE),
    re.compile(r"`"),
    re.compile(r"\bENGINE\s*=", re.IGNORECASE),
    re.compile(r"\bDEFAULT\s+CHARSET\b", re.IGNORECASE),
    re.compile(r"\bUNSIGNED\b", re.IGNORECASE),
)


class DatabaseBuildError(OllatuneError, ValueError):
    """A script that cannot be built into a database: names the file and the statement; `hint` says what to do."""


def shipped_databases() -> dict[str, Path]:
    """db_id -> SQL script of the databases shipped with the ko_text2sql dataset."""
    return {db_id: DATA_DIR / f"{db_id}.sql" for db_id in SHIPPED_DB_IDS}


def detect_dialect(sql: str) -> str:
    """"mysql" when the script carries MySQL markers (AUTO_INCREMENT, backticks, ENGINE=...), else "sqlite"."""
    body = "\n".join(_strip_comments(s) for s in split_statements(sql))
    return "mysql" if any(p.search(body) for p in _MYSQL_MARKERS) else "sqlite"


def split_statements(sql: str) -> list[str]:
    """Split a script on top-level semicolons, respecting quotes ('...', "...", `...`) and comments."""
    out: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\" and c != "`":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            buf.append(sql[i:j + 1])
            i = j + 1
        elif sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            j = n if j < 0 else j
            buf.append(sql[i:j])
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            buf.append(sql[i:j])
            i = j
        elif c == ";":
            out.append("".join(buf))
            buf = []
            i += 1
        else:
            buf.append(c)
            i += 1
    out.append("".join(buf))
    return [s.strip() for s in out if _strip_comments(s).strip()]


def _strip_comments(stmt: str) -> str:
    # Only used to decide whether a statement is empty and to look for dialect markers.
    stmt = re.sub(r"/\*.*?\*/", " ", stmt, flags=re.DOTALL)
    return re.sub(r"(--|#)[^\n]*", " ", stmt)


def _mysql_to_sqlite(stmt: str) -> list[str]:
    """One MySQL statement as SQLite statement(s), via sqlglot (inline KEY/INDEX become CREATE INDEX);
    raises ValueError with sqlglot's reason."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ErrorLevel, SqlglotError

    try:
        trees = sqlglot.parse(stmt, read="mysql")
    except SqlglotError as e:
        raise ValueError(f"sqlglot could not parse it: {e}") from e
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise ValueError(f"expected one statement, sqlglot found {len(trees)}")
    tree = trees[0]
    extra: list[str] = []
    if isinstance(tree, exp.Create):
        extra = _clean_create(tree, exp)
    try:
        # Equivalent to sqlglot.transpile(stmt, read="mysql", write="sqlite"), but an unsupported construct
        # is an error instead of a logged warning and silently wrong SQL.
        return [tree.sql(dialect="sqlite", unsupported_level=ErrorLevel.RAISE), *extra]
    except SqlglotError as e:
        raise ValueError(f"sqlglot cannot write it as SQLite: {e}") from e


_UNSIGNED = {"UTINYINT": "TINYINT", "USMALLINT": "SMALLINT", "UMEDIUMINT": "MEDIUMINT", "UINT": "INT",
             "UBIGINT": "BIGINT", "UDECIMAL": "DECIMAL", "UDOUBLE": "DOUBLE"}


def _clean_create(tree, exp) -> list[str]:
    """Drop what SQLite cannot express and does not need: ENGINE/CHARSET/COLLATE, column COMMENTs, VARCHAR
    lengths, UNSIGNED. Inline `KEY name (cols)` are removed and returned as CREATE INDEX statements."""
    indexes: list[str] = []
    schema = tree.this
    if isinstance(schema, exp.Schema):
        table = schema.this
        kept = []
        for e in schema.expressions:
            if isinstance(e, exp.IndexColumnConstraint) and e.this is not None:
                cols = ", ".join(c.sql(dialect="sqlite") for c in e.expressions)
                indexes.append(f"CREATE INDEX {e.this.sql(dialect='sqlite')} ON {table.sql(dialect='sqlite')} ({cols})")
                continue
            if isinstance(e, exp.UniqueColumnConstraint) and isinstance(e.this, exp.Schema) and e.this.this is not None:
                e.this.set("this", None)  # UNIQUE KEY name (cols) -> UNIQUE (cols)
            kept.append(e)
        schema.set("expressions", kept)
    props = tree.args.get("properties")
    if props is not None:
        props.set("expressions", [p for p in props.expressions if type(p).__name__ not in _HARMLESS_PROPERTIES])
        if not props.expressions:
            tree.set("properties", None)
    for cons in list(tree.find_all(exp.ColumnConstraint)):
        kind = cons.args.get("kind")
        if type(kind).__name__ in ("CommentColumnConstraint", "CharacterSetColumnConstraint",
                                   "CollateColumnConstraint", "OnUpdateColumnConstraint"):
            cons.pop()
    for dt in tree.find_all(exp.DataType):
        if dt.this.name in _UNSIGNED:
            dt.set("this", exp.DataType.Type[_UNSIGNED[dt.this.name]])
        if dt.this in (exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR, exp.DataType.Type.NVARCHAR,
                       exp.DataType.Type.NCHAR, exp.DataType.Type.TEXT):
            dt.set("expressions", [])
            dt.set("this", exp.DataType.Type.TEXT)
    return indexes


def build_database(script: Path, out: Path, dialect: str | None = None) -> Path:
    """Build the SQLite database described by `script` at `out` (replacing it) and return `out`.

    `dialect` is "sqlite" or "mysql"; None detects it. MySQL statements are transpiled one by one with sqlglot.
    Raises DatabaseBuildError naming the file and the 1-based statement number; no file is left behind then.
    """
    script, out = Path(script), Path(out)
    try:
        text = script.read_text(encoding="utf-8")
    except OSError as e:
        raise DatabaseBuildError(f"{script}: cannot read the script: {e}", hint="check the path") from e
    dialect = (dialect or detect_dialect(text)).lower()
    if dialect not in ("sqlite", "mysql"):
        raise DatabaseBuildError(f"{script}: unknown dialect {dialect!r}", hint='use "sqlite" or "mysql"')
    statements = split_statements(text)
    if not statements:
        raise DatabaseBuildError(f"{script}: no SQL statements", hint="the script is empty or only comments")

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("BEGIN")
            for number, stmt in enumerate(statements, 1):
                sqls = [stmt]
                if dialect == "mysql":
                    if _SKIPPED_MYSQL.match(_strip_comments(stmt)):
                        continue
                    try:
                        sqls = _mysql_to_sqlite(stmt)
                    except ValueError as e:
                        raise DatabaseBuildError(
                            f"{script}: statement {number} cannot be transpiled from MySQL to SQLite: {e}\n"
                            f"  {_excerpt(stmt)}",
                            hint="rewrite the statement in plain SQL that both MySQL and SQLite accept",
                        ) from e
                elif re.match(r"^\s*PRAGMA\s+foreign_keys", _strip_comments(stmt), re.IGNORECASE):
                    continue  # already on; PRAGMA foreign_keys is a no-op inside a transaction anyway
                try:
                    for sql in sqls:
                        conn.execute(sql)
                except sqlite3.Error as e:
                    via = " (after transpiling from MySQL)" if dialect == "mysql" else ""
                    raise DatabaseBuildError(
                        f"{script}: statement {number} failed{via}: {e}\n  {_excerpt(sql)}",
                        hint="fix the statement; tables must be created before rows that reference them",
                    ) from e
            conn.execute("COMMIT")
        finally:
            conn.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _excerpt(stmt: str, limit: int = 160) -> str:
    one_line = " ".join(stmt.split())
    return one_line if len(one_line) <= limit else one_line[:limit] + " ..."


def ddl_of(db_path: Path, tables: list[str] | set[str] | None = None) -> str:
    """The CREATE TABLE statements as stored in sqlite_master, tables in name order, one per line.

    `tables` restricts the output to those tables (case-insensitive); unknown names are ignored.
    """
    conn = sqlite3.connect(f"file:{Path(db_path)}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
    finally:
        conn.close()
    wanted = None if tables is None else {t.lower() for t in tables}
    return "\n".join(sql for name, sql in rows if wanted is None or name.lower() in wanted)


def tables_of_query(sql: str) -> list[str]:
    """Names of the tables a SQLite query reads (CTE names excluded), sorted and lower-cased."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="sqlite")
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    return sorted({t.name.lower() for t in tree.find_all(exp.Table) if t.name and t.name.lower() not in ctes})
