from __future__ import annotations

import json

import pytest
from sqlalchemy import inspect, select

from workspace.events import EventSink, read_events
from workspace.files import atomic_path, write_json_atomic
from workspace.settings import Settings, normalize_host
from workspace.store import Dataset, TrainingRun, open_store, session_scope
from workspace.store.engine import make_engine


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "model.gguf"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_on_success(tmp_path):
    final = tmp_path / "x.json"
    write_json_atomic(final, {"a": 1})
    write_json_atomic(final, {"a": 2})
    assert json.loads(final.read_text())["a"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_events_go_to_log_stdout_and_listeners(tmp_path, capsys):
    seen = []
    sink = EventSink("r1", tmp_path / "events.jsonl", stdout_jsonl=True, listeners=[seen.append])
    ev = sink.stage("finetune")
    ev.start(backend="hf")
    ev.metric(1, loss=2.5, lr=1e-3)
    ev.error("boom", hint="do this")
    logged = list(read_events(tmp_path / "events.jsonl"))
    assert [e["type"] for e in logged] == ["start", "metric", "error"]
    assert logged[1]["loss"] == 2.5 and logged[1]["run"] == "r1" and logged[1]["stage"] == "finetune"
    assert logged[2]["hint"] == "do this"
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out == logged == seen
    with pytest.raises(ValueError):
        sink.emit("finetune", "bogus")


def test_read_events_skips_torn_last_line(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_text('{"type": "start"}\n{"type": "metr', encoding="utf-8")
    assert [e["type"] for e in read_events(log)] == ["start"]


def test_store_migrates_and_sets_pragmas(tmp_path):
    factory = open_store(tmp_path / "o.db")
    engine = factory.kw["bind"]
    names = set(inspect(engine).get_table_names())
    assert {"datasets", "training_runs", "artifacts", "registered_models", "eval_runs", "predictions", "scores",
            "call_cache", "alembic_version"} <= names
    with engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with session_scope(factory) as s:
        s.add(Dataset(name="d", path="/x", sha256="a" * 64, format="alpaca", rows=3))
    with session_scope(factory) as s:
        assert s.scalar(select(Dataset.rows)) == 3
    with pytest.raises(Exception):  # foreign keys are enforced
        with session_scope(factory) as s:
            s.add(TrainingRun(run_id="r", dataset_id=999, base_model="b", backend="hf", chat_template="t", config={}))


def test_migration_matches_models(tmp_path):
    """The Alembic head describes exactly the ORM models (no autogenerate diff)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from workspace.store.engine import upgrade
    from workspace.store.models import Base

    engine = make_engine(tmp_path / "m.db")
    upgrade(engine)
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diff == []


def test_ollama_host_normalisation():
    assert normalize_host("") == "http://127.0.0.1:11434"
    assert normalize_host("0.0.0.0") == "http://127.0.0.1:11434"
    assert normalize_host(":8080") == "http://127.0.0.1:8080"
    assert normalize_host("http://10.0.0.5:11434/") == "http://10.0.0.5:11434"
    assert normalize_host("myhost") == "http://myhost:11434"


def test_settings_follow_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLATUNE_HOME", str(tmp_path / "h"))
    s = Settings().ensure()
    assert s.home == tmp_path / "h" and s.runs_dir.is_dir() and s.db_path.name == "ollatune.db"


def test_a_store_of_the_first_schema_upgrades_in_place(tmp_path):
    """A workspace made before judge runs existed keeps its eval runs and gains the new columns and tables."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect, text

    from workspace.store.engine import MIGRATIONS, make_engine, open_store

    db = tmp_path / "old.db"
    engine = make_engine(db)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("INSERT INTO registered_models (name, host, digest, role, template_family, created_at) "
                          "VALUES ('m', 'h', 'sha256:1', 'vanilla', 'chatml', '2026-11-21')"))
        conn.execute(text("INSERT INTO eval_runs (suite, suite_hash, model_id, params, status, started_at) "
                          "VALUES ('ko-instructions', 'x', 1, '{}', 'done', '2026-11-21')"))
    engine.dispose()
    sf = open_store(db)
    insp = inspect(sf.kw["bind"])
    assert {"judge_runs", "judgments"} <= set(insp.get_table_names())
    assert {"tokens", "prompt_tokens", "details"} <= {c["name"] for c in insp.get_columns("predictions")}
    assert "tokenizer" in {c["name"] for c in insp.get_columns("scores")}
    with sf() as s:
        assert s.execute(text("SELECT suite, source FROM eval_runs")).all() == [("ko-instructions", "generate")]
