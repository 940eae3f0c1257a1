"""Evaluation suites: dataset + prompt template + model parameters + tokenizer + metrics, from YAML.

A suite file (``evals/suites/<name>.yaml`` for the shipped ones)::

    name: ko-instructions
    task: alpaca                                                   # the task whose examples it scores
    dataset: {path: data/ko-instructions.jsonl, format: alpaca}   # relative to the YAML file
    prompt: {system: null, user: "{question}"}                     # LangChain f-string template
    params: {temperature: 0, seed: 42, num_predict: 128, stop: [], num_ctx: 2048}
    tokenizer: kiwi                                                # kiwi | char | whitespace
    metrics: [rouge_l, token_f1, exact_match, char_f1, bleu]
    limit: null                                                    # first N examples only

For ``format: alpaca`` the question is ``workspace.prompts.alpaca_user_message(instruction, input)``,
exactly the user turn used in training, and the reference is ``output``; the suite's prompt makes the
messages. For ``format: examples`` the rows are the held-out examples the data stage wrote
(:mod:`workspace.heldout`): each is asked with the exact messages the model was trained on, and a row of
another task than the suite's is refused.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evals.metrics import METRICS, METRICS_VERSION
from workspace.errors import OllatuneError
from workspace.heldout import HeldoutError, TaskKind, read_eval_examples
from workspace.prompts import alpaca_user_message

SUITES_DIR = Path(__file__).with_name("suites")


class SuiteError(OllatuneError, ValueError):
    """A suite or its dataset is wrong; the message names the file (and line or field)."""

    default_hint = "fix the suite file or its dataset at the place named, then re-run"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    path: Path
    format: Literal["alpaca", "examples"] = "alpaca"


class PromptSpec(_Strict):
    system: str | None = None
    user: str = "{question}"

    @field_validator("user")
    @classmethod
    def _only_question(cls, v: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(v) if name is not None}
        except ValueError as e:
            raise ValueError(f"bad template {v!r}: {e} (write literal braces as {{{{ and }}}})") from None
        if names != {"question"}:
            extra = sorted(names - {"question"})
            raise ValueError(
                "the user template must use exactly the variable {question}"
                + (f"; unknown variable(s): {', '.join(extra)}" if extra else "; it is missing")
                + " (write literal braces as {{ and }})"
            )
        return v


class Params(_Strict):
    """Model parameters sent with every call. Greedy and seeded so that runs are reproducible."""

    temperature: float = 0.0
    seed: int = 42
    num_predict: int = Field(128, gt=0)
    stop: list[str] = Field(default_factory=list)
    num_ctx: int = Field(2048, gt=0)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class Suite(_Strict):
    name: str
    description: str | None = None
    task: TaskKind = "alpaca"  # the task whose examples the suite's metrics score
    dataset: DatasetSpec
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    params: Params = Field(default_factory=Params)
    tokenizer: Literal["kiwi", "char", "whitespace"] = "kiwi"
    metrics: list[str] = Field(default_factory=lambda: ["rouge_l", "token_f1", "exact_match", "char_f1", "bleu"])
    limit: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _rows_of_the_task(self) -> "Suite":
        if self.dataset.format == "alpaca" and self.task != "alpaca":
            raise ValueError(f"dataset.format alpaca holds instruction rows; a {self.task} suite reads held-out "
                             "examples (dataset.format: examples)")
        return self

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
        if not v:
            raise ValueError("at least one metric is needed")
        return list(dict.fromkeys(v))


@dataclass(frozen=True)
class Example:
    id: str
    question: str  # the last user turn, as reports show it
    reference: str
    messages: list[dict[str, str]] = field(default_factory=list)  # what the model is asked
    answers: tuple[str, ...] = ()  # every acceptable answer, when there are several


def shipped_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def suite_for_task(task: str) -> str:
    """The shipped suite that scores ``task`` examples; a SuiteError naming what exists when none does."""
    by_task: dict[str, list[str]] = {}
    for name in shipped_suites():
        by_task.setdefault(load_suite(name).task, []).append(name)
    if task in by_task:
        return by_task[task][0]
    have = ", ".join(f"{n} ({t})" for t, names in sorted(by_task.items()) for n in names) or "none"
    raise SuiteError(f"no evaluation suite scores {task} examples yet (shipped suites: {have})",
                     f"set eval.suite to a suite file whose task is {task}, or stop before evaluation with "
                     "--until serve")


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any], prefix: str = "") -> None:
    for key, value in overrides.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            _apply_overrides(data, value, prefix=full + ".")
        else:
            if full == "dataset.path" and value is not None:
                value = str(Path(value).expanduser().resolve())  # override paths are relative to the cwd
            _set_dotted(data, full, value)


def _resolve_suite_file(path_or_name: str | Path) -> Path:
    p = Path(path_or_name).expanduser()
    if p.is_file():
        return p
    if isinstance(path_or_name, str) and "/" not in path_or_name and not path_or_name.endswith((".yaml", ".yml")):
        shipped = SUITES_DIR / f"{path_or_name}.yaml"
        if shipped.is_file():
            return shipped
    raise SuiteError(
        f"no suite file or shipped suite named {str(path_or_name)!r}; "
        f"shipped suites: {', '.join(shipped_suites()) or '(none)'}"
    )


def _format_validation(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def load_suite(path_or_name: str | Path, overrides: dict[str, Any] | None = None) -> Suite:
    """A suite from a YAML file or a shipped suite name, with dotted-key overrides applied.

    ``overrides`` may be nested (``{"params": {"num_predict": 64}}``) or dotted
    (``{"params.num_predict": 64, "dataset.path": "held_out.jsonl", "limit": 20}``). A relative
    ``dataset.path`` in the YAML is relative to the YAML file; one given as an override, to the cwd.
    """
    file = _resolve_suite_file(path_or_name)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SuiteError(f"{file}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{file}: a suite is a mapping with name, dataset, prompt, params, metrics")
    ds = data.get("dataset")
    if isinstance(ds, dict) and ds.get("path"):
        p = Path(str(ds["path"])).expanduser()
        ds["path"] = str(p if p.is_absolute() else (file.parent / p).resolve())
    if overrides:
        _apply_overrides(data, overrides)
    try:
        return Suite.model_validate(data)
    except ValidationError as e:
        raise SuiteError(f"{file}: {_format_validation(e)}") from None


def _rows(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed row) for a JSONL file, or (index + 1, row) for a JSON array."""
    if not path.is_file():
        raise SuiteError(f"dataset file {path} does not exist (set dataset.path in the suite or override it)")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SuiteError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
        if not isinstance(data, list):
            raise SuiteError(f"{path}: a .json dataset must be an array of rows (or use .jsonl)")
        return [(i + 1, row) for i, row in enumerate(data)]
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise SuiteError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    return rows


def load_examples(suite: Suite) -> list[Example]:
    """The suite's examples in file order (the first ``limit`` of them), with the messages to send."""
    if suite.dataset.format == "examples":
        examples = _heldout_examples(suite)
    else:
        examples = _alpaca_examples(suite)
    if not examples:
        raise SuiteError(f"{suite.dataset.path}: no examples")
    return examples[: suite.limit] if suite.limit is not None else examples


def _heldout_examples(suite: Suite) -> list[Example]:
    path = Path(suite.dataset.path)
    try:
        rows = read_eval_examples(path)
    except HeldoutError as e:
        raise SuiteError(e.message, e.hint) from None
    wrong = [r for r in rows if r.task != suite.task]
    if wrong:
        tasks = sorted({r.task for r in wrong})
        raise SuiteError(
            f"suite {suite.name!r} scores {suite.task} examples, but {path} holds {len(wrong)} "
            f"{'/'.join(tasks)} example(s) (first at line {wrong[0].line or '?'} of the source)",
            f"evaluate them with a suite whose task is {tasks[0]} (`eval.suite` in the recipe)")
    return [Example(id=r.id, question=r.question(), reference=r.reference.strip(), messages=r.chat(),
                    answers=tuple(r.answers)) for r in rows]


def _alpaca_examples(suite: Suite) -> list[Example]:
    from evals.chains import render_prompt

    path = Path(suite.dataset.path)
    where = "row" if path.suffix == ".json" else "line"
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for lineno, row in _rows(path):
        if not isinstance(row, dict):
            raise SuiteError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        for field_name in ("instruction", "output"):
            if not isinstance(row.get(field_name), str) or not row[field_name].strip():
                raise SuiteError(f"{path}:{lineno}: missing or empty string field {field_name!r} (alpaca layout)")
        if row.get("input") is not None and not isinstance(row["input"], str):
            raise SuiteError(f"{path}:{lineno}: field 'input' must be a string")
        ex_id = str(row["id"]) if row.get("id") is not None else str(lineno)
        if ex_id in seen:
            raise SuiteError(f"{path}:{lineno}: duplicate example id {ex_id!r} (first at {where} {seen[ex_id]})")
        seen[ex_id] = lineno
        question = alpaca_user_message(row["instruction"], row.get("input") or "")
        examples.append(Example(id=ex_id, question=question, reference=row["output"].strip(),
                                messages=render_prompt(suite, question)))
        if suite.limit is not None and len(examples) >= suite.limit:
            break
    return examples


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def suite_hash(suite: Suite) -> str:
    """Content hash of what decides the results: the suite minus its description and dataset location,
    plus the dataset's bytes and the metric code version. Moving the dataset keeps the hash."""
    body = suite.model_dump(mode="json", exclude={"description": True, "dataset": {"path"}})
    body["dataset_sha256"] = _file_sha256(Path(suite.dataset.path))
    body["metrics_version"] = METRICS_VERSION
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
