"""Engine with the SQLite pragmas the store relies on, and migrations run on open."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


def _set_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(db_path: Path) -> Engine:
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{db_path}")
    event.listen(engine, "connect", _set_pragmas)
    return engine


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest schema (Alembic ``upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
    # The migration switched foreign keys off on its connection: start every later one fresh.
    engine.dispose()


_SESSIONMAKERS: dict[str, sessionmaker[Session]] = {}


def open_store(db_path: Path) -> sessionmaker[Session]:
    """A session factory for the database at ``db_path``, migrated to the newest schema."""
    key = str(Path(db_path).resolve())
    if key not in _SESSIONMAKERS:
        engine = make_engine(Path(db_path))
        upgrade(engine)
        _SESSIONMAKERS[key] = sessionmaker(engine, expire_on_commit=False)
    return _SESSIONMAKERS[key]


@contextlib.contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session per unit of work: commit on success, roll back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
