"""Held-out evaluation examples: what the data stage writes and the evals stage reads.

One JSON object a line. Each example carries its task kind, the exact chat messages the model was trained on
up to the answer (system prompt included), the reference answer, and what the task's scoring needs: the
database id (and the schema) for text-to-SQL, every acceptable answer for extractive QA. Evaluation never
has to know how a dataset format turns a row into a prompt, so it never imports the training code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workspace.errors import OllatuneError
from workspace.files import write_jsonl_atomic

TaskKind = Literal["alpaca", "text2sql", "qa", "raft", "chat"]
FILE_KIND = "ollatune.eval-examples/1"  # first key of every line, so a file says what it holds


class HeldoutError(OllatuneError, ValueError):
    """A held-out file that cannot be read: the file and line are in the message."""

    default_hint = "re-run the data stage (`ollatune pipeline RECIPE --until data`) to write it again"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class EvalExample(BaseModel):
    """One held-out example, normalised across dataset formats."""

    model_config = ConfigDict(extra="forbid")

    id: str
    task: TaskKind
    messages: list[ChatMessage] = Field(min_length=1)  # the prompt exactly as trained, ending with a user turn
    reference: str  # the answer the model was trained to give
    answers: list[str] = Field(default_factory=list)  # every acceptable answer (extractive QA); else [reference]
    db_id: str | None = None  # text-to-SQL: the database the gold SQL runs on (None: DDL only)
    schema_sql: str | None = None  # text-to-SQL: the DDL the question was asked over
    line: int | None = None  # where the row was in its source file
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if v[-1].role != "user":
            raise ValueError("the prompt must end with a user turn")
        return v

    def chat(self) -> list[dict[str, str]]:
        """The messages as role/content dicts, as a chat API takes them."""
        return [m.model_dump() for m in self.messages]

    def question(self) -> str:
        """The last user turn (what the report shows as the question)."""
        return self.messages[-1].content


def write_eval_examples(path: Path, examples: Iterable[EvalExample]) -> Path:
    return write_jsonl_atomic(path, ({"kind": FILE_KIND, **ex.model_dump(mode="json")} for ex in examples))


def is_eval_examples_file(path: Path) -> bool:
    """True when the first row of ``path`` is a held-out example written by :func:`write_eval_examples`."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    return isinstance(row, dict) and row.get("kind") == FILE_KIND
    except (OSError, ValueError):
        return False
    return False


def read_eval_examples(path: Path) -> list[EvalExample]:
    path = Path(path)
    if not path.is_file():
        raise HeldoutError(f"held-out examples file {path} does not exist")
    out: list[EvalExample] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise HeldoutError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict) or row.pop("kind", None) != FILE_KIND:
                raise HeldoutError(f"{path}:{lineno}: not a held-out example (no \"kind\": \"{FILE_KIND}\")")
            try:
                out.append(EvalExample.model_validate(row))
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(x) for x in first["loc"]) or "(row)"
                raise HeldoutError(f"{path}:{lineno}: field {where}: {first['msg']}") from None
    return out
