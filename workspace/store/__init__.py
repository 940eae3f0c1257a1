"""The SQLite store: lineage from dataset to scores, through SQLAlchemy 2.0 with Alembic migrations."""

from workspace.store.engine import open_store, session_scope
from workspace.store.models import (
    Artifact,
    Base,
    CallCache,
    Dataset,
    EvalRun,
    Prediction,
    RegisteredModel,
    Score,
    TrainingRun,
)

__all__ = [
    "Artifact",
    "Base",
    "CallCache",
    "Dataset",
    "EvalRun",
    "Prediction",
    "RegisteredModel",
    "Score",
    "TrainingRun",
    "open_store",
    "session_scope",
]
