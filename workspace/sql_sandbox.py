"""Run model-written SQL on a SQLite database with no way to change it, create a file or hang the caller.

A sandbox is opened either on a SQLite file (a gold database with rows) or on DDL text (the schema only,
no rows). A file is opened read-only and immutable through a URI and copied into an in-memory database
with ``Connection.backup``; the file handle is closed at once, so whatever a query does, it does it to the
copy: the gold file cannot change and no -wal/-shm/-journal file can appear next to it.

Then the connection is locked down, in layers, so one missed case in a layer is caught by the next:

1. a pre-check: one statement per call, and it must start with SELECT, WITH or VALUES;
2. ``PRAGMA query_only`` and ``temp_store=MEMORY`` (sorts and temp b-trees never touch the disk);
3. an authorizer that allows only reading (SELECT, READ, FUNCTION, recursive CTEs) and denies every
   write, DDL, ATTACH/DETACH (which also stops VACUUM INTO), PRAGMA, transaction, ANALYZE and REINDEX,
   plus the functions that reach files or allocate huge values (load_extension, readfile, randomblob...);
4. connection limits: no attached databases, no string or blob over 1 MiB;
5. a progress handler with a monotonic deadline over execute *and* fetch, a row cap and a cap on the
   bytes of one result, so an endless or exploding query ends with an error instead of eating memory.

Large files (over COPY_LIMIT_BYTES) are queried in place instead of copied: still read-only and immutable,
so still no write and no side file, but without holding a copy per thread.

``run`` never raises for bad SQL: the error is part of the result, as a kind plus SQLite's message
("timeout after 5 s", "not allowed: write/DDL/attach ...", "syntax error: ...").
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workspace.errors import OllatuneError

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_ROWS = 10_000
# Files larger than this are queried in place (read-only + immutable) instead of copied, so four threads
# scoring a large benchmark database do not hold four multi-gigabyte copies in memory.
COPY_LIMIT_BYTES = 512 << 20
MAX_VALUE_BYTES = 1 << 20  # longest string/blob a query may build or read (SQLite allows 1 GB)
MAX_RESULT_BYTES = 128 << 20  # text and blobs of one result, all rows together
FETCH_CHUNK = 64  # rows fetched between two size/deadline checks in Python
MAX_SQL_CHARS = 100_000
PROGRESS_EVERY = 1_000  # VM instructions between deadline checks: a single function call may be slow
CACHE_PER_THREAD = 4

_DENIED_FUNCTIONS = frozenset({"load_extension", "writefile", "readfile", "edit", "fts3_tokenizer",
                               "randomblob", "zeroblob"})
_QUERY_WORDS = ("SELECT", "WITH", "VALUES")
# Every other statement SQLite knows: refused by name, before SQLite sees it.
_STATEMENT_WORDS = frozenset({"ALTER", "ANALYZE", "ATTACH", "BEGIN", "COMMIT", "CREATE", "DELETE", "DETACH",
                              "DROP", "END", "EXPLAIN", "INSERT", "PRAGMA", "REINDEX", "RELEASE", "REPLACE",
                              "ROLLBACK", "SAVEPOINT", "UPDATE", "UPSERT", "VACUUM"})
# Reading actions; SQLITE_FUNCTION is allowed too, except for the names in _DENIED_FUNCTIONS.
_READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, getattr(sqlite3, "SQLITE_RECURSIVE", 33)})
# Authorizer action codes by name, for error messages that say what was refused.
_ACTION_NAMES = (
    "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
    "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE",
    "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW",
    "INSERT", "PRAGMA", "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE", "REINDEX", "ANALYZE",
    "CREATE_VTABLE", "DROP_VTABLE", "SAVEPOINT",
)
_ACTION_LABELS = {getattr(sqlite3, f"SQLITE_{n}"): n.replace("_", " ") for n in _ACTION_NAMES
                  if hasattr(sqlite3, f"SQLITE_{n}")}
_SYNTAX_MARKERS = ("syntax error", "incomplete input", "unrecognized token")
_SCHEMA_MARKERS = ("no such table", "no such column", "no such function", "ambiguous column")


class SqlSandboxError(OllatuneError, sqlite3.OperationalError):
    """A sandbox that cannot be opened, or a query result turned into an exception by ``check``.

    It is also a ``sqlite3.OperationalError`` so callers that catch ``sqlite3.Error`` keep working."""


@dataclass(frozen=True)
class SqlResult:
    """Rows of one query, or why there are none. ``truncated``: more than ``max_rows`` rows existed."""

    rows: list[tuple]
    columns: list[str]
    error: str | None = None
    truncated: bool = False
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def check(self) -> SqlResult:
        """This result, or SqlSandboxError when the query failed: for callers that want an exception."""
        if self.error is not None:
            raise SqlSandboxError(self.error, hint="fix the SQL: the sandbox runs one read-only SELECT")
        return self


class SqlSandbox:
    """One locked-down SQLite connection; ``run`` is serialised by a lock, so sharing it is safe
    (but slow): use :func:`sandbox_for` to get one per thread."""

    def __init__(self, conn: sqlite3.Connection, source: str) -> None:
        """Take over ``conn`` (already holding the data) and lock it down; use from_file/from_schema."""
        self.source = source
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()
        self._denied: str | None = None
        _lock_down(conn, self._authorize, source)

    @classmethod
    def from_file(cls, path: Path | str, *, copy_limit_bytes: int = COPY_LIMIT_BYTES) -> SqlSandbox:
        """A sandbox over a copy of the SQLite file ``path`` (queried in place, still read-only and
        immutable, when the file is larger than ``copy_limit_bytes``)."""
        path = Path(path).resolve()
        if not path.is_file():
            raise SqlSandboxError(f"{path}: no such database file",
                                  hint="check the database path of the dataset or suite")
        src = _open_immutable(path)
        if path.stat().st_size > copy_limit_bytes:
            return cls(src, str(path))
        mem = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        try:
            src.backup(mem)
        except sqlite3.Error as e:
            mem.close()
            raise SqlSandboxError(f"{path}: not a readable SQLite database: {e}",
                                  hint="rebuild the database file, or point the dataset at the right file") from e
        finally:
            src.close()
        return cls(mem, str(path))

    @classmethod
    def from_schema(cls, schema_sql: str, *, name: str = "schema") -> SqlSandbox:
        """A sandbox over an empty in-memory database built from DDL (SQLite or MySQL flavour)."""
        statements = _schema_statements(schema_sql, name)
        conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        try:
            for number, stmt in enumerate(statements, 1):
                try:
                    conn.execute(stmt)
                except sqlite3.Error as e:
                    raise SqlSandboxError(f"{name}: schema statement {number} fails: {e}\n  {_excerpt(stmt)}",
                                          hint="fix the DDL (the context field) of this dataset row") from e
        except BaseException:
            conn.close()
            raise
        return cls(conn, name)

    def run(self, sql: str, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS) -> SqlResult:
        """Run one read-only statement; at most ``max_rows`` rows, at most ``timeout_s`` seconds
        (execute and fetch together). Never raises for bad SQL: the error is in the result."""
        start = time.monotonic()
        problem = precheck(sql)
        if problem is not None:
            return SqlResult([], [], problem, False, time.monotonic() - start)
        with self._lock:
            if self._conn is None:
                return SqlResult([], [], "closed: the sandbox was closed", False, 0.0)
            return self._run_locked(sql, start, timeout_s, max_rows)

    def _run_locked(self, sql: str, start: float, timeout_s: float, max_rows: int) -> SqlResult:
        conn = self._conn
        assert conn is not None
        deadline = start + timeout_s
        self._denied = None
        conn.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_EVERY)
        cur = None
        try:
            cur = conn.execute(sql)
            columns = [d[0] for d in cur.description or ()]
            rows, problem = _fetch(cur, max_rows + 1, deadline, timeout_s)
            if problem is not None:
                return SqlResult([], columns, problem, False, time.monotonic() - start)
        except (sqlite3.Error, sqlite3.Warning) as e:
            error = self._describe(e, time.monotonic() > deadline, timeout_s)
            return SqlResult([], [], error, False, time.monotonic() - start)
        except MemoryError:
            return SqlResult([], [], "out of memory: the result is too large", False, time.monotonic() - start)
        finally:
            if cur is not None:
                cur.close()
            conn.set_progress_handler(None, 0)
        return SqlResult(rows[:max_rows], columns, None, len(rows) > max_rows, time.monotonic() - start)

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, _db: str | None,
                   _trigger: str | None) -> int:
        """Allow reading only; remember what was refused so the error can name it."""
        if action in _READ_ACTIONS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() not in _DENIED_FUNCTIONS:
                return sqlite3.SQLITE_OK
            self._denied = f"function {arg2}"
            return sqlite3.SQLITE_DENY
        label = _ACTION_LABELS.get(action, f"action {action}")
        self._denied = f"{label} {arg1}" if arg1 else label
        return sqlite3.SQLITE_DENY

    def _describe(self, exc: BaseException, timed_out: bool, timeout_s: float) -> str:
        """The error of a failed query as "kind: message"."""
        msg = str(exc)
        low = msg.lower()
        if timed_out or low == "interrupted":
            return f"timeout after {timeout_s:g} s (query interrupted)"
        if self._denied is not None or "not authorized" in low or "readonly" in low:
            what = f" ({self._denied})" if self._denied else ""
            return f"not allowed: write/DDL/attach{what}: the sandbox is readonly"
        if "one statement at a time" in low:
            return "multiple statements: only one SQL statement per query is allowed"
        if any(m in low for m in _SYNTAX_MARKERS):
            return f"syntax error: {msg}"
        if any(m in low for m in _SCHEMA_MARKERS):
            return f"schema error: {msg}"
        return f"sql error: {msg}"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SqlSandbox:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def precheck(sql: str) -> str | None:
    """Why ``sql`` must not run at all (empty, several statements, not a query), or None.

    SQLite's authorizer is never asked about some statements (a bare REINDEX), so only statements that
    start as a query get as far as SQLite."""
    from workspace.text2sql_db import _strip_comments, split_statements

    if not isinstance(sql, str) or not sql.strip():
        return "empty query: there is no SQL to run"
    if len(sql) > MAX_SQL_CHARS:
        return f"too long: {len(sql)} characters, the sandbox takes at most {MAX_SQL_CHARS}"
    statements = split_statements(sql)
    if not statements:
        return "empty query: only comments"
    if len(statements) > 1:
        return f"multiple statements: only one SQL statement per query is allowed (found {len(statements)})"
    head = _strip_comments(statements[0]).lstrip().lstrip("(").lstrip()
    match = re.match(r"[A-Za-z_]+", head)
    word = match.group(0).upper() if match else ""
    if word in _QUERY_WORDS:
        return None
    if word in _STATEMENT_WORDS:
        return f"not allowed: write/DDL/attach ({word} statement): the sandbox is readonly and runs only SELECT"
    return f"syntax error: not a query, it starts with {_excerpt(head, 20)!r}"


def _fetch(cur: sqlite3.Cursor, limit: int, deadline: float, timeout_s: float) -> tuple[list[tuple], str | None]:
    """Up to ``limit`` rows, in chunks: between chunks the deadline and the result size are checked in
    Python too, since turning large values into Python objects happens outside SQLite's progress handler."""
    rows: list[tuple] = []
    size = 0
    while len(rows) < limit:
        chunk = cur.fetchmany(min(FETCH_CHUNK, limit - len(rows)))
        if not chunk:
            break
        rows += chunk
        size += sum(len(v) if isinstance(v, (str, bytes)) else 8 for row in chunk for v in row)
        if size > MAX_RESULT_BYTES:
            return [], f"too large: the result holds more than {MAX_RESULT_BYTES >> 20} MiB after {len(rows)} rows"
        if time.monotonic() > deadline:
            return [], f"timeout after {timeout_s:g} s (query interrupted while fetching rows)"
    return rows, None


def _open_immutable(path: Path) -> sqlite3.Connection:
    """A read-only, immutable connection: SQLite takes no lock and writes no journal, WAL or SHM file."""
    uri = f"{path.as_uri()}?mode=ro&immutable=1"
    try:
        return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as e:
        raise SqlSandboxError(f"{path}: cannot open the database read-only: {e}",
                              hint="check that the file exists and is readable") from e


def _lock_down(conn: sqlite3.Connection, authorizer: Callable[..., int], source: str) -> None:
    """Everything that makes the connection read-only; the authorizer goes last, after the setup
    statements that it would refuse."""
    conn.text_factory = _decode_text
    if hasattr(conn, "enable_load_extension"):
        conn.enable_load_extension(False)
    try:
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # parse the schema now, unauthorized
    except sqlite3.Error as e:
        conn.close()
        raise SqlSandboxError(f"{source}: cannot prepare the database: {e}",
                              hint="the file is not a SQLite database, or it is damaged: rebuild it") from e
    if hasattr(conn, "setlimit"):
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.set_authorizer(authorizer)


def _decode_text(raw: bytes) -> str:
    """TEXT as str even when a database holds invalid UTF-8 (real benchmark files do): one bad cell
    must not turn a correct query into an error."""
    return raw.decode("utf-8", errors="replace")


def _schema_statements(schema_sql: str, name: str) -> list[str]:
    """The DDL as SQLite statements: MySQL flavour (backticks, AUTO_INCREMENT, ENGINE=...) transpiled."""
    from workspace.text2sql_db import (_SKIPPED_MYSQL, _mysql_to_sqlite, _strip_comments, detect_dialect,
                                       split_statements)

    if not isinstance(schema_sql, str) or not split_statements(schema_sql):
        raise SqlSandboxError(f"{name}: the schema has no SQL statements",
                              hint="give the CREATE TABLE statements of the database (the context field)")
    if detect_dialect(schema_sql) == "sqlite":
        return split_statements(schema_sql)
    out: list[str] = []
    for number, stmt in enumerate(split_statements(schema_sql), 1):
        if _SKIPPED_MYSQL.match(_strip_comments(stmt)):
            continue
        try:
            out += _mysql_to_sqlite(stmt)
        except ValueError as e:
            raise SqlSandboxError(f"{name}: schema statement {number} cannot be transpiled from MySQL: {e}\n"
                                  f"  {_excerpt(stmt)}",
                                  hint="rewrite the statement in plain SQL that both MySQL and SQLite accept") from e
    return out


def _excerpt(stmt: str, limit: int = 160) -> str:
    one_line = " ".join(stmt.split())
    return one_line if len(one_line) <= limit else one_line[:limit] + " ..."


def sandbox_key(db_path: Path | str | None, schema_sql: str | None = None) -> tuple:
    """What identifies a sandbox's data: (path, mtime, size) of a file (a rebuilt file is a new key),
    else the hash of the schema text. The file wins when both are given."""
    if db_path is not None:
        path = Path(db_path).resolve()
        try:
            st = path.stat()
        except OSError as e:
            raise SqlSandboxError(f"{path}: no such database file ({e.strerror})",
                                  hint="check the database path of the dataset or suite") from e
        return ("file", str(path), st.st_mtime_ns, st.st_size)
    if schema_sql:
        return ("schema", hashlib.sha256(schema_sql.encode("utf-8")).hexdigest())
    raise SqlSandboxError("no database and no schema to run SQL on",
                          hint="give the SQLite file of the row's db_id, or its DDL (context)")


_local = threading.local()


def sandbox_for(db_path: Path | str | None, schema_sql: str | None = None) -> SqlSandbox:
    """This thread's sandbox for a database file or a schema: built once per thread and kept in a small
    LRU, so one gold database is copied once per thread, not once per query."""
    key = sandbox_key(db_path, schema_sql)
    cache: OrderedDict[tuple, SqlSandbox] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = OrderedDict()
    box = cache.get(key)
    if box is not None:
        cache.move_to_end(key)
        return box
    box = SqlSandbox.from_file(db_path) if db_path is not None else SqlSandbox.from_schema(schema_sql or "")
    cache[key] = box
    while len(cache) > CACHE_PER_THREAD:
        _key, old = cache.popitem(last=False)
        old.close()
    return box


def clear_sandboxes() -> None:
    """Close this thread's cached sandboxes (frees their in-memory copies)."""
    cache: OrderedDict[tuple, SqlSandbox] | None = getattr(_local, "cache", None)
    while cache:
        _key, box = cache.popitem()
        box.close()
