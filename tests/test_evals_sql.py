"""Text-to-SQL scoring: the SQL sandbox, the result semantics (Spider bags, BIRD sets, soft F1), SQL
extraction from answers, exact match, and hostile SQL that must neither change a file nor hang."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from evals.sql_metrics import (
    EXECUTION_KEYS,
    NO_SQL_ERROR,
    SCHEMA_ONLY_KEYS,
    bird_match,
    extract_sql,
    has_order_by,
    normalize_sql,
    score_text2sql,
    soft_f1,
    spider_match,
    sql_exact_match,
)
from workspace.errors import OllatuneError
from workspace.samples import sample_databases
from workspace.sql_sandbox import SqlSandbox, SqlSandboxError, sandbox_for
from workspace.text2sql_db import DATASET_PATH

pytestmark = pytest.mark.timeout(60)

TIMEOUT_S = 1.0
KOREAN_WIKISQL = Path(__file__).resolve().parents[2] / "shared" / "data" / "korean_wikisql_dev"


@pytest.fixture(scope="module")
def dbs(tmp_path_factory) -> dict[str, Path]:
    return sample_databases(tmp_path_factory.mktemp("text2sql-dbs"))


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in DATASET_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(*folders: Path) -> set[Path]:
    return {p for folder in folders for p in folder.rglob("*")}


# --- result semantics -----------------------------------------------------------------------------


def test_bags_count_duplicates_sets_do_not():
    gold = [(1,), (1,), (2,)]
    assert spider_match(gold, [(1,), (2,), (1,)], ordered=False)
    assert not spider_match(gold, [(1,), (2,), (2,)], ordered=False)  # same set, other bag
    assert not spider_match(gold, [(1,), (2,)], ordered=False)
    assert bird_match(gold, [(1,), (2,), (2,)]) and bird_match(gold, [(2,), (1,)])
    assert not bird_match(gold, [(1,), (3,)])


def test_order_counts_only_when_gold_orders():
    gold, pred = [(1, "a"), (2, "b")], [(2, "b"), (1, "a")]
    assert spider_match(gold, pred, ordered=False)
    assert not spider_match(gold, pred, ordered=True)
    assert spider_match(gold, list(gold), ordered=True)
    assert bird_match(gold, pred)


def test_has_order_by_looks_at_the_outermost_query():
    assert has_order_by("SELECT name FROM t ORDER BY name")
    assert has_order_by("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1")
    assert has_order_by("WITH c AS (SELECT a FROM t) SELECT a FROM c ORDER BY a DESC")
    assert not has_order_by("SELECT a FROM (SELECT a FROM t ORDER BY a LIMIT 3)")
    assert not has_order_by("SELECT COUNT(*) FROM t")


def test_column_order_is_free_for_spider_but_not_for_bird():
    gold = [(1, "a", 10.0), (2, "b", 20.0)]
    pred = [("a", 10.0, 1), ("b", 20.0, 2)]
    assert spider_match(gold, pred, ordered=False) and spider_match(gold, pred, ordered=True)
    assert not bird_match(gold, pred)
    assert not spider_match([(1,)], [(1, 1)], ordered=False)  # same values, other column count


def test_matching_column_multisets_without_a_consistent_permutation():
    # Column multisets: gold {1,0,1} {2,1,1} {1,2,0}; pred {2,1,1} {0,1,1} {1,2,0}: each gold column has a
    # partner. Row multisets match too ({1,1,2} {0,1,2} {0,1,1} both sides). Yet no single permutation of
    # the predicted columns reproduces the gold rows.
    gold = [(1, 2, 1), (0, 1, 2), (1, 1, 0)]
    pred = [(2, 0, 1), (1, 1, 2), (1, 1, 0)]
    assert not spider_match(gold, pred, ordered=False)


@pytest.mark.timeout(60)
def test_wide_rows_stay_fast():
    import random

    rng = random.Random(0)
    width = 40
    gold = [tuple(rng.randint(0, 3) for _ in range(width)) for _ in range(300)]
    perm = list(range(width))
    rng.shuffle(perm)
    pred = [tuple(row[j] for j in perm) for row in gold]
    # 40! column orders: only the per-column pruning lets this finish (the timeout marker bounds it)
    assert spider_match(gold, pred, ordered=False)
    broken = [*pred[:-1], tuple(reversed(pred[-1]))]
    assert not spider_match(gold, broken, ordered=False)


def test_soft_f1_by_hand():
    gold = [(1, "a"), (2, "b"), (3, "c")]
    pred = [(1, "a"), (1, "a"), (2, "x")]  # the duplicate is dropped first
    # pair 1: (1,'a') vs (1,'a'): matched 2/2 = 1, pred-only 0, gold-only 0
    # pair 2: (2,'x') vs (2,'b'): matched 1/2 = 0.5, pred-only 0.5 ('x'), gold-only 0.5 ('b')
    # gold row 3 has no partner: gold-only 1
    # tp = 1.5, fp = 0.5, fn = 1.5 -> precision 0.75, recall 0.5 -> F1 = 2*0.75*0.5 / 1.25 = 0.6
    assert soft_f1(gold, pred) == pytest.approx(0.6)
    # an extra predicted row counts pred-only 1: tp 1, fp 1, fn 0 -> P 0.5, R 1 -> F1 2/3
    assert soft_f1([(1,)], [(1,), (2,)]) == pytest.approx(2 / 3)
    assert soft_f1(gold, [("a", 1), ("b", 2), ("c", 3)]) == 1.0  # values compared ignoring column order


def test_empty_results():
    assert spider_match([], [], ordered=False) and spider_match([], [], ordered=True)
    assert bird_match([], [])
    assert soft_f1([], []) == 1.0
    assert not spider_match([], [(1,)], ordered=False) and not spider_match([(1,)], [], ordered=False)
    assert not bird_match([(1,)], [])
    assert soft_f1([(1,)], []) == 0.0 and soft_f1([], [(1,)]) == 0.0


# --- extracting the SQL ---------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "sql"), [
    ("```sql\nSELECT name FROM players;\n```\n플레이어 이름을 보여줍니다.", "SELECT name FROM players"),
    ("설명:\n```\nSELECT name\nFROM players\n\nWHERE city = '서울'\n```", "SELECT name\nFROM players\n\nWHERE city = '서울'"),
    ("```python\nprint(1)\n```\n```\nSELECT 2\n```", "SELECT 2"),
    ("Here is the query:\n\nSELECT COUNT(*) FROM players\n\nIt counts the players.", "SELECT COUNT(*) FROM players"),
    ("SQL: SELECT nickname FROM players WHERE city = 'a;b';", "SELECT nickname FROM players WHERE city = 'a;b'"),
    ("다음 쿼리를 사용하세요: SELECT COUNT(*) FROM players WHERE city = '서울';", "SELECT COUNT(*) FROM players WHERE city = '서울'"),
    ("SELECT p.nickname\nFROM players p\n이 쿼리는 닉네임을 보여줍니다.", "SELECT p.nickname\nFROM players p"),
    ("`SELECT name FROM players`를 실행하면 됩니다.", "SELECT name FROM players"),
    ('쿼리는 "SELECT COUNT(*) FROM players" 입니다.', "SELECT COUNT(*) FROM players"),
    ("with the players table: WITH t AS (SELECT 1 AS a) SELECT a FROM t;", "WITH t AS (SELECT 1 AS a) SELECT a FROM t"),
    ("SELECT COUNT(*) FROM players;;", "SELECT COUNT(*) FROM players"),
    ("SELECT 1; DROP TABLE players", "SELECT 1; DROP TABLE players"),  # kept whole: the sandbox refuses it
])
def test_extract_sql(answer, sql):
    assert extract_sql(answer) == sql


@pytest.mark.parametrize("answer", ["", "   ", "죄송하지만 그 질문에는 답할 수 없습니다.", "I would start with the table."])
def test_extract_sql_finds_nothing(answer):
    assert extract_sql(answer) is None


# --- normalisation and exact match ----------------------------------------------------------------


def test_exact_match_ignores_case_quoting_and_whitespace():
    gold = 'SELECT "name", COUNT(*) AS n FROM "Players" WHERE city = \'서울\' GROUP BY name;'
    assert sql_exact_match("select name,count(*) n\n  from players where CITY='서울' group by NAME", gold) == 1.0
    assert sql_exact_match("SELECT `name`, count(*) AS n FROM [players] WHERE city = '서울' GROUP BY name", gold) == 1.0
    assert normalize_sql("SELECT a FROM t;") == normalize_sql("select  A  from T")


def test_exact_match_tells_different_queries_apart():
    gold = "SELECT name FROM players WHERE city = '서울'"
    assert sql_exact_match("SELECT name FROM players WHERE city = '부산'", gold) == 0.0
    assert sql_exact_match("SELECT nickname FROM players WHERE city = '서울'", gold) == 0.0
    assert sql_exact_match(None, gold) == 0.0
    assert normalize_sql("SELECT FROM WHERE (") is None


# --- scoring on the shipped databases -------------------------------------------------------------


def test_gold_as_prediction_scores_one_on_every_shipped_row(dbs, rows):
    for row in rows:
        metrics, details = score_text2sql(row["sql"], row["sql"], db_path=dbs[row["db_id"]], schema_sql=None)
        assert tuple(metrics) == EXECUTION_KEYS
        assert metrics == {k: 1.0 for k in EXECUTION_KEYS}, (row["sql"], details)
        assert details["semantics"] == "execution" and details["error"] is None
        json.dumps(details)


def test_wrong_and_reordered_queries(dbs):
    db = dbs["shop"]
    gold = "SELECT name, email FROM customers WHERE city = '제주'"
    wrong, _ = score_text2sql("SELECT name, email FROM customers WHERE city = '서울'", gold, db_path=db, schema_sql=None)
    assert wrong["exec_acc"] == 0.0 and wrong["exec_acc_set"] == 0.0 and wrong["valid_sql"] == 1.0
    answer = "```sql\nSELECT email, name FROM customers WHERE city = '제주';\n```"
    swapped, details = score_text2sql(answer, gold, db_path=db, schema_sql=None)
    assert details["gold_rows"], "the gold query should return rows"
    assert swapped["exec_acc"] == 1.0 and swapped["exec_acc_set"] == 0.0
    assert swapped["soft_f1"] == 1.0 and swapped["exact_match"] == 0.0


def test_order_by_in_gold_makes_row_order_count(dbs):
    db = dbs["shop"]
    gold = "SELECT name, price FROM products ORDER BY price DESC LIMIT 3"
    asc, details = score_text2sql("SELECT name, price FROM products ORDER BY price DESC LIMIT 3 OFFSET 0",
                                  gold, db_path=db, schema_sql=None)
    assert asc["exec_acc"] == 1.0 and details["ordered"]
    reversed_, _ = score_text2sql(
        "SELECT * FROM (SELECT name, price FROM products ORDER BY price DESC LIMIT 3) ORDER BY price",
        gold, db_path=db, schema_sql=None)
    assert reversed_["exec_acc"] == 0.0 and reversed_["exec_acc_set"] == 1.0


def test_no_sql_in_the_answer_scores_zero(dbs):
    metrics, details = score_text2sql("잘 모르겠습니다.", "SELECT COUNT(*) FROM customers",
                                      db_path=dbs["shop"], schema_sql=None)
    assert metrics == {k: 0.0 for k in EXECUTION_KEYS}
    assert details["error"] == NO_SQL_ERROR and details["sql"] is None


def test_failing_gold_sql_is_an_error_for_the_caller(dbs):
    with pytest.raises(OllatuneError) as err:
        score_text2sql("SELECT 1", "SELECT missing_column FROM customers", db_path=dbs["shop"], schema_sql=None)
    assert "missing_column" in str(err.value) and "shop" in str(err.value) and err.value.hint


def test_details_are_json_safe(dbs):
    _metrics, details = score_text2sql("SELECT x'00ff', 1.5, NULL", "SELECT x'00ff', 1.5, NULL",
                                       db_path=dbs["shop"], schema_sql=None)
    assert details["pred_rows"] == [["00ff", 1.5, None]] == details["gold_rows"]
    json.dumps(details, allow_nan=False)


def test_each_thread_copies_a_database_once(dbs, rows):
    shop = [r for r in rows if r["db_id"] == "shop"]
    boxes: dict[int, set[int]] = {}
    failures: list[str] = []

    def work(n: int) -> None:
        for row in shop:
            metrics, _ = score_text2sql(row["sql"], row["sql"], db_path=dbs["shop"], schema_sql=None)
            if metrics["exec_acc"] != 1.0:
                failures.append(row["sql"])
            boxes.setdefault(n, set()).add(id(sandbox_for(dbs["shop"])))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert all(len(ids) == 1 for ids in boxes.values()) and len(boxes) == 4
    assert len(set().union(*boxes.values())) == 4


# --- hostile SQL ----------------------------------------------------------------------------------

HOSTILE = {
    "drop": "DROP TABLE customers",
    "delete": "DELETE FROM customers",
    "delete-behind-cte": "WITH x AS (SELECT 1) DELETE FROM customers",
    "update": "UPDATE customers SET name = 'x'",
    "insert": "INSERT INTO customers (name) VALUES ('x')",
    "create-temp": "CREATE TEMP TABLE t AS SELECT * FROM customers",
    "attach-file": "ATTACH DATABASE '{tmp}/evil.sqlite' AS evil",
    "attach-memory": "ATTACH DATABASE ':memory:' AS evil",
    "pragma-wal": "PRAGMA journal_mode=WAL",
    "pragma-user-version": "PRAGMA user_version=5",
    "pragma-query-only-off": "PRAGMA query_only=0",
    "vacuum-into": "VACUUM INTO '{tmp}/copy.sqlite'",
    "vacuum": "VACUUM",
    "begin": "BEGIN IMMEDIATE",
    "load-extension": "SELECT load_extension('x')",
    "recursive-forever": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c",
    "cross-join": "SELECT count(*) FROM order_items a, orders b, customers c, products d, reviews e, order_items f",
    "multiple-statements": "SELECT 1; DROP TABLE customers",
    "fenced-multiple": "```sql\nSELECT 1;\nDELETE FROM customers;\n```",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_sql_changes_nothing_and_ends(name, dbs, tmp_path):
    db = dbs["shop"]
    gold = "SELECT COUNT(*) FROM customers"
    answer = HOSTILE[name].replace("{tmp}", str(tmp_path))
    before_hash, before_files = _sha256(db), _files(db.parent, tmp_path)
    t0 = time.monotonic()
    metrics, details = score_text2sql(answer, gold, db_path=db, schema_sql=None, timeout_s=TIMEOUT_S)
    elapsed = time.monotonic() - t0
    assert elapsed < TIMEOUT_S + 2
    assert set(metrics) == set(EXECUTION_KEYS) and all(v == 0.0 for v in metrics.values()), (metrics, details)
    assert details["error"], details
    assert _sha256(db) == before_hash
    assert _files(db.parent, tmp_path) == before_files
    again, _ = score_text2sql(gold, gold, db_path=db, schema_sql=None)  # the sandbox's copy is intact too
    assert again["exec_acc"] == 1.0 and details["gold_rows"] == [[40]]


@pytest.mark.parametrize("name", ["drop", "delete", "update", "insert", "create-temp", "attach-file",
                                  "attach-memory", "pragma-wal", "pragma-user-version", "pragma-query-only-off",
                                  "vacuum-into", "vacuum", "begin", "multiple-statements"])
def test_the_authorizer_alone_refuses_writes(name, dbs, tmp_path, monkeypatch):
    """Layers stand on their own: with the statement pre-check switched off, SQLite's authorizer and
    query_only still refuse every write (REINDEX is the one statement the authorizer is never asked
    about, which is why the pre-check exists)."""
    import workspace.sql_sandbox as sandbox

    monkeypatch.setattr(sandbox, "precheck", lambda sql: None)
    db = dbs["shop"]
    before_hash, before_files = _sha256(db), _files(db.parent, tmp_path)
    with SqlSandbox.from_file(db) as box:
        result = box.run(HOSTILE[name].replace("{tmp}", str(tmp_path)))
        assert not result.ok and result.error.startswith(("not allowed", "multiple statements")), result
        assert box.run("SELECT COUNT(*) FROM customers").rows == [(40,)]
    assert _sha256(db) == before_hash and _files(db.parent, tmp_path) == before_files


def test_timeout_and_refusal_name_their_kind(dbs):
    box = sandbox_for(dbs["shop"])
    slow = box.run(HOSTILE["recursive-forever"], timeout_s=0.3)
    assert slow.error.startswith("timeout after 0.3 s") and 0.3 <= slow.elapsed_s < 2.3
    assert box.run("DELETE FROM customers").error.startswith("not allowed: write/DDL/attach")
    assert box.run(HOSTILE["delete-behind-cte"]).error.startswith("not allowed: write/DDL/attach (DELETE")
    assert box.run("SELEC name FROM customers").error.startswith("syntax error")
    assert box.run("SELECT name FROM customers WHERE").error.startswith("syntax error")
    assert box.run("SELECT 1; SELECT 2").error.startswith("multiple statements")
    huge = box.run("SELECT printf('%.*c', 1000000, 'x') FROM customers a, customers b", timeout_s=TIMEOUT_S)
    assert huge.error.startswith("too large") and huge.rows == []


def test_row_cap_stops_an_endless_result(dbs):
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c"
    result = sandbox_for(dbs["shop"]).run(endless, timeout_s=TIMEOUT_S, max_rows=50)
    assert result.ok and result.truncated and len(result.rows) == 50 and result.columns == ["x"]


def test_a_file_queried_in_place_is_still_read_only(dbs, tmp_path):
    db = dbs["school"]
    before_hash, before_files = _sha256(db), _files(db.parent)
    with SqlSandbox.from_file(db, copy_limit_bytes=0) as box:
        assert box.run("SELECT COUNT(*) FROM students").rows == [(50,)]
        for sql in ("DELETE FROM students", "WITH x AS (SELECT 1) DELETE FROM students",
                    f"VACUUM INTO '{tmp_path}/x.sqlite'", HOSTILE["recursive-forever"]):
            assert not box.run(sql, timeout_s=TIMEOUT_S).ok
    assert _sha256(db) == before_hash and _files(db.parent) == before_files
    assert not list(tmp_path.iterdir())


def test_missing_or_broken_database_file(tmp_path):
    with pytest.raises(SqlSandboxError, match="no such database file"):
        sandbox_for(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(SqlSandboxError, match="not a readable SQLite database"):
        SqlSandbox.from_file(junk)


# --- schema only ----------------------------------------------------------------------------------

MYSQL_SCHEMA = """
CREATE TABLE `players` (
  `player_id` INT AUTO_INCREMENT PRIMARY KEY,
  `nickname` VARCHAR(50) NOT NULL,
  `level` INT UNSIGNED NOT NULL DEFAULT 1
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
"""


def test_schema_only_runs_on_an_empty_database():
    ok, details = score_text2sql("SELECT nickname FROM players WHERE level > 10", "SELECT nickname FROM players",
                                 db_path=None, schema_sql=MYSQL_SCHEMA)
    assert tuple(ok) == SCHEMA_ONLY_KEYS and "exec_acc" not in ok and "exec_acc_set" not in ok
    assert ok["executes_on_schema"] == 1.0 and ok["valid_sql"] == 1.0 and ok["exact_match"] == 0.0
    assert details["semantics"] == "schema-only" and details["pred_rows"] == []
    missing, details = score_text2sql("SELECT guild FROM players", "SELECT nickname FROM players",
                                      db_path=None, schema_sql=MYSQL_SCHEMA)
    assert missing == {"executes_on_schema": 0.0, "exact_match": 0.0, "valid_sql": 0.0}
    assert "no such column" in details["error"]
    same, _ = score_text2sql("select NICKNAME from Players", "SELECT nickname FROM players",
                             db_path=None, schema_sql=MYSQL_SCHEMA)
    assert same == {"executes_on_schema": 1.0, "exact_match": 1.0, "valid_sql": 1.0}


def test_schema_only_records_a_failing_gold_query():
    metrics, details = score_text2sql("SELECT nickname FROM players", "SELECT nope FROM players",
                                      db_path=None, schema_sql=MYSQL_SCHEMA)
    assert metrics["executes_on_schema"] == 1.0 and "no such column" in details["gold_error"]


def test_hostile_sql_on_a_schema_is_refused():
    box = SqlSandbox.from_schema(MYSQL_SCHEMA)
    assert not box.run("DROP TABLE players").ok
    assert not box.run("INSERT INTO players (nickname) VALUES ('x')").ok
    assert box.run("SELECT COUNT(*) FROM players").rows == [(0,)]


def test_broken_schema_is_an_error():
    with pytest.raises(SqlSandboxError, match="schema statement 1"):
        SqlSandbox.from_schema("CREATE TABLE t (a INT,, b INT)")


# --- real data (optional) -------------------------------------------------------------------------


@pytest.mark.skipif(not KOREAN_WIKISQL.is_dir(), reason="../shared/data/korean_wikisql_dev is not here")
def test_korean_wikisql_gold_scores_one_on_its_database():
    db = KOREAN_WIKISQL / "dev.sqlite"
    lines = (KOREAN_WIKISQL / "dev_with_sql.jsonl").read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    assert items
    before = _sha256(db)
    bad = []
    for item in items:
        metrics, details = score_text2sql(item["gold_sql"], item["gold_sql"], db_path=db, schema_sql=None)
        if metrics["exec_acc"] != 1.0 or metrics["exec_acc_set"] != 1.0:
            bad.append((item["idx"], metrics, details))
    assert not bad
    assert _sha256(db) == before

