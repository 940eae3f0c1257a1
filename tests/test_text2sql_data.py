"""The Korean Text-to-SQL dataset and the SQLite databases it is checked against."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter

import pytest

from workspace.text2sql_db import (
    DATASET_PATH,
    DatabaseBuildError,
    build_database,
    ddl_of,
    detect_dialect,
    shipped_databases,
    tables_of_query,
)

KEYS = ["db_id", "question", "context", "sql"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("text2sql-dbs")
    return {db_id: build_database(script, out / f"{db_id}.db") for db_id, script in shipped_databases().items()}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    with open(DATASET_PATH, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _ro(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _tables(path) -> set[str]:
    with _ro(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not r[0].startswith("sqlite_")}


# ---------------------------------------------------------------- databases

def test_shipped_databases_are_the_three_scripts():
    dbs = shipped_databases()
    assert set(dbs) == {"game", "shop", "school"}
    assert all(p.is_file() and p.suffix == ".sql" for p in dbs.values())


@pytest.mark.parametrize("db_id", ["game", "shop", "school"])
def test_each_script_builds(built, db_id):
    path = built[db_id]
    assert path.is_file()
    tables = _tables(path)
    assert 3 <= len(tables) <= 5, tables
    with _ro(path) as conn:
        for t in tables:
            n = conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
            assert 15 <= n <= 70, (t, n)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    ddl = ddl_of(path)
    assert ddl.count("CREATE TABLE") == len(tables)
    assert "sqlite_sequence" not in ddl
    # tables in name order
    names = [re.match(r'CREATE TABLE "?(\w+)"?', line).group(1) for line in ddl.splitlines()]
    assert names == sorted(names)
    # no leftover temporary files next to the database
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_dialects_detected():
    dbs = shipped_databases()
    assert detect_dialect(dbs["shop"].read_text(encoding="utf-8")) == "mysql"
    assert detect_dialect(dbs["game"].read_text(encoding="utf-8")) == "sqlite"
    assert detect_dialect(dbs["school"].read_text(encoding="utf-8")) == "sqlite"


def test_shop_script_really_needed_transpiling(built, tmp_path):
    script = shipped_databases()["shop"].read_text(encoding="utf-8")
    assert "AUTO_INCREMENT" in script and "ENGINE=InnoDB" in script and "`" in script
    raw = sqlite3.connect(tmp_path / "raw.db")
    with pytest.raises(sqlite3.Error):
        raw.executescript(script)
    raw.close()
    assert _tables(built["shop"]) == {"customers", "products", "orders", "order_items", "reviews"}
    ddl = ddl_of(built["shop"])
    assert "ENGINE" not in ddl and "AUTO_INCREMENT" not in ddl and "`" not in ddl
    with _ro(built["shop"]) as conn:
        assert conn.execute("SELECT COUNT(*) FROM customers WHERE name GLOB '*[가-힣]*'").fetchone()[0] > 0


def test_korean_content_in_every_database(built):
    for db_id, path in built.items():
        with _ro(path) as conn:
            text = " ".join(str(v) for t in _tables(path) for r in conn.execute(f'SELECT * FROM "{t}"') for v in r)
        assert len(re.findall(r"[가-힣]", text)) > 200, db_id


def test_mysql_extras_are_transpiled(tmp_path):
    script = tmp_path / "extra.sql"
    script.write_text(
        "/*!40101 SET NAMES utf8mb4 */;\n"
        "DROP TABLE IF EXISTS `t`;\n"
        "CREATE TABLE `t` (\n"
        "  `id` INT UNSIGNED NOT NULL AUTO_INCREMENT,\n"
        "  `name` VARCHAR(100) NOT NULL COMMENT '이름; 세미콜론 포함',\n"
        "  `created_at` DATETIME DEFAULT CURRENT_TIMESTAMP,\n"
        "  PRIMARY KEY (`id`),\n"
        "  KEY `idx_name` (`name`)\n"
        ") ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4;\n"
        "INSERT INTO `t` (`name`) VALUES ('it\\'s'), ('둘');\n",
        encoding="utf-8",
    )
    db = build_database(script, tmp_path / "extra.db")
    with _ro(db) as conn:
        assert conn.execute("SELECT name FROM t ORDER BY id").fetchall() == [("it's",), ("둘",)]
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'idx_name'").fetchone()


@pytest.mark.parametrize("dialect", ["sqlite", "mysql"])
def test_broken_script_names_statement_and_leaves_nothing(tmp_path, dialect):
    script = tmp_path / "broken.sql"
    q = "`" if dialect == "mysql" else ""
    script.write_text(
        f"-- comment; with a semicolon\nCREATE TABLE {q}a{q} (id INTEGER PRIMARY KEY, name TEXT);\n"
        f"INSERT INTO {q}a{q} (id, name) VALUES (1, '가;나');\n"
        f"INSERT INTO {q}missing_table{q} (id) VALUES (2);\n",
        encoding="utf-8",
    )
    out = tmp_path / "out" / "broken.db"
    with pytest.raises(DatabaseBuildError) as err:
        build_database(script, out, dialect=dialect)
    assert "statement 3" in str(err.value)
    assert "broken.sql" in str(err.value)
    assert err.value.hint
    assert isinstance(err.value, ValueError)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_unparsable_mysql_statement_is_a_build_error(tmp_path):
    script = tmp_path / "bad.sql"
    script.write_text("CREATE TABLE `a` (`id` INT AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB;\nSELEC FROM WHERE (((;\n",
                      encoding="utf-8")
    out = tmp_path / "bad.db"
    with pytest.raises(DatabaseBuildError, match="statement 2"):
        build_database(script, out)
    assert not out.exists()


def test_rebuild_replaces_existing_file(tmp_path):
    script = shipped_databases()["game"]
    out = tmp_path / "game.db"
    out.write_bytes(b"not a database")
    build_database(script, out)
    assert "players" in _tables(out)


# ---------------------------------------------------------------- dataset

def test_dataset_size_and_spread(rows):
    assert len(rows) >= 150
    per_db = Counter(r["db_id"] for r in rows)
    assert all(per_db[db] >= 45 for db in ("game", "shop", "school")), per_db
    # interleaved: the last 30 rows (a typical held-out tail) cover every database
    assert set(r["db_id"] for r in rows[-30:]) == {"game", "shop", "school"}
    questions = [r["question"] for r in rows]
    assert len(set(questions)) == len(questions)


def test_dataset_rows_are_well_formed(rows):
    raw = DATASET_PATH.read_text(encoding="utf-8")
    assert "\\u" not in raw  # real Hangul, not escapes
    for i, r in enumerate(rows, 1):
        assert list(r) == KEYS, (i, list(r))
        assert r["db_id"] in shipped_databases(), i
        assert all(isinstance(r[k], str) and r[k].strip() for k in KEYS), i
        assert re.search(r"[가-힣]", r["question"]), i


def test_sql_feature_mix(rows):
    sqls = [r["sql"].upper() for r in rows]
    assert sum(" JOIN " in s for s in sqls) >= 15
    assert sum("GROUP BY" in s for s in sqls) >= 15
    assert sum("ORDER BY" in s for s in sqls) >= 15
    assert sum("HAVING" in s for s in sqls) >= 5
    assert sum("LIMIT" in s for s in sqls) >= 5
    assert sum("(SELECT" in s for s in sqls) >= 3
    assert sum(" LIKE '" in s for s in sqls) >= 5
    assert any(re.search(r"(COUNT|SUM|AVG|MIN|MAX)\(", s) for s in sqls)


def test_every_gold_sql_executes_and_returns_rows(rows, built):
    for i, r in enumerate(rows, 1):
        with _ro(built[r["db_id"]]) as conn:
            result = conn.execute(r["sql"]).fetchall()
        assert result, (i, r["question"], r["sql"])


def test_context_is_the_ddl_of_the_tables_used(rows, built):
    for i, r in enumerate(rows, 1):
        used = tables_of_query(r["sql"])
        assert used, (i, r["sql"])
        from_join = re.findall(r"\b(?:FROM|JOIN)\s+\"?(\w+)", r["sql"], flags=re.IGNORECASE)
        for t in from_join:
            assert re.search(rf'CREATE TABLE "?{t}"? ', r["context"]), (i, t, r["context"])
        assert r["context"] == ddl_of(built[r["db_id"]], used), i
