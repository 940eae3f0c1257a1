"""Typed ORM models. Lineage: dataset -> training run -> artifacts -> registered models -> eval runs
-> predictions -> scores, and judge runs -> judgments (both orders of a pairwise verdict, raw text kept).
Schema changes go through an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    format: Mapped[str] = mapped_column(String(40))
    rows: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    training_runs: Mapped[list[TrainingRun]] = relationship(back_populates="dataset")


class TrainingRun(Base):
    __tablename__ = "training_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(String(200), unique=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    base_model: Mapped[str] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(40))
    chat_template: Mapped[str] = mapped_column(String(40))
    config: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="running")
    steps: Mapped[int | None] = mapped_column(Integer)
    final_loss: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    dataset: Mapped[Dataset | None] = relationship(back_populates="training_runs")
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="training_run")


class Artifact(Base):
    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"))
    kind: Mapped[str] = mapped_column(String(40))  # adapter | merged | gguf | base-gguf
    quant: Mapped[str | None] = mapped_column(String(20))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(Integer)
    bits_per_weight: Mapped[float | None] = mapped_column(Float, nullable=True)  # GGUF files
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    training_run: Mapped[TrainingRun | None] = relationship(back_populates="artifacts")
    registered_models: Mapped[list[RegisteredModel]] = relationship(back_populates="artifact")


class RegisteredModel(Base):
    __tablename__ = "registered_models"
    __table_args__ = (UniqueConstraint("name", "host", "digest"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"))
    name: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(80))
    role: Mapped[str] = mapped_column(String(20))  # vanilla | tuned
    template_family: Mapped[str] = mapped_column(String(40))
    modelfile_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    artifact: Mapped[Artifact | None] = relationship(back_populates="registered_models")
    eval_runs: Mapped[list[EvalRun]] = relationship(back_populates="model")


class EvalRun(Base):
    __tablename__ = "eval_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str | None] = mapped_column(String(200))  # the pipeline run it belongs to
    suite: Mapped[str] = mapped_column(String(200))
    suite_hash: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id"))
    params: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="running")
    # "generate": the runner asked the model; "score": predictions made elsewhere, scored here
    source: Mapped[str] = mapped_column(String(20), default="generate", server_default="generate")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    model: Mapped[RegisteredModel] = relationship(back_populates="eval_runs")
    predictions: Mapped[list[Prediction]] = relationship(back_populates="eval_run", cascade="all, delete-orphan")


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("eval_run_id", "example_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    eval_run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    example_id: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    cleaned: Mapped[str] = mapped_column(Text)
    latency_s: Mapped[float | None] = mapped_column(Float)
    cached: Mapped[bool] = mapped_column(default=False)
    tokens: Mapped[int | None] = mapped_column(Integer)  # tokens the model generated (eval_count)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[dict | None] = mapped_column(JSON)  # task-specific: extracted SQL, its error, rows, ...

    eval_run: Mapped[EvalRun] = relationship(back_populates="predictions")
    scores: Mapped[list[Score]] = relationship(back_populates="prediction", cascade="all, delete-orphan")


class Score(Base):
    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("prediction_id", "metric"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(80))
    value: Mapped[float] = mapped_column(Float)
    tokenizer: Mapped[str | None] = mapped_column(String(80))  # what the metric tokenized with

    prediction: Mapped[Prediction] = relationship(back_populates="scores")


class JudgeRun(Base):
    """A judge model over eval runs: pairwise (two runs of the same examples), grade or refusal (one run)."""

    __tablename__ = "judge_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # pairwise | grade | refusal
    suite: Mapped[str] = mapped_column(String(200))
    suite_hash: Mapped[str] = mapped_column(String(64))
    judge_name: Mapped[str] = mapped_column(String(200))
    judge_digest: Mapped[str] = mapped_column(String(80))
    eval_run_a_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    eval_run_b_id: Mapped[int | None] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    params: Mapped[dict] = mapped_column(JSON)
    summary: Mapped[dict | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    judgments: Mapped[list[Judgment]] = relationship(back_populates="judge_run", cascade="all, delete-orphan")


class Judgment(Base):
    """One judge call: for pairwise, one row per order ("ab": run A's answer shown first, "ba": swapped)."""

    __tablename__ = "judgments"
    __table_args__ = (UniqueConstraint("judge_run_id", "example_id", "order"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    judge_run_id: Mapped[int] = mapped_column(ForeignKey("judge_runs.id", ondelete="CASCADE"))
    example_id: Mapped[str] = mapped_column(String(200))
    order: Mapped[str] = mapped_column(String(10))  # ab | ba | single
    verdict: Mapped[str | None] = mapped_column(String(20))  # pairwise: a | b | tie; None: unparseable
    value: Mapped[float | None] = mapped_column(Float)  # grade: the score; refusal: 1.0 refused
    reason: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    parsed_by: Mapped[str | None] = mapped_column(String(20))  # json | fallback | None
    cached: Mapped[bool] = mapped_column(default=False)

    judge_run: Mapped[JudgeRun] = relationship(back_populates="judgments")


class CallCache(Base):
    """Model answers keyed by (model digest, rendered prompt, parameters): interrupted evals resume."""

    __tablename__ = "call_cache"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_digest: Mapped[str] = mapped_column(String(80))
    response: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict | None] = mapped_column(JSON)  # token counts, log-probabilities when asked for
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
