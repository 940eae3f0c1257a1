"""Evaluation suites: dataset + prompt template + model parameters + parser + metrics, from YAML.

A suite file (``evals/suites/<name>.yaml`` for the shipped ones)::

    name: ko-text2sql
    task: text2sql                       # alpaca | text2sql | qa | raft | chat | safety
    kind: generate                       # generate (ask the model) | pairwise | grade (a judge over eval runs)
    dataset:
      path: builtin:ko-text2sql          # a shipped sample, or a file relative to the YAML file
      format: text2sql                   # the row layout: alpaca, text2sql, qa, raft, chat, safety, examples
      fields: {}                         # map the format's field names onto your columns: {sql: query}
      databases: builtin:ko-text2sql     # text-to-SQL: one SQLite file, {db_id: file}, or a shipped sample's
    prompt:
      system: null
      user: "{question}"                 # {question}: the user turn exactly as training renders the row;
                                         # {row[field]}: one of the row's fields (source formats only)
      few_shot: [{user: ..., assistant: ...}]
      chain_of_thought: false            # ask for reasoning first, score what follows answer_marker
    params: {temperature: 0, seed: 42, num_predict: 256, stop: [], num_ctx: 4096}
    tokenizer: kiwi                      # kiwi | char | whitespace; recorded with every score
    metrics: [exec_acc, exec_acc_set, soft_f1, exact_match, valid_sql]
    sql: {timeout_s: 5, max_rows: 10000}
    judge: null                          # {kind: refusal} for ko-safety; the judge model is given on the CLI
    limit: null

A row of a source format is turned into messages by the same code the data stage uses
(:mod:`workspace.examples`), so a user's file is asked exactly as it would be trained. ``format:
examples`` reads the held-out examples a pipeline run wrote: they carry the exact training messages.
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
from workspace.heldout import HeldoutError, read_eval_examples

SUITES_DIR = Path(__file__).with_name("suites")

SuiteTask = Literal["alpaca", "text2sql", "qa", "raft", "chat", "safety"]
SOURCE_FORMATS = ("alpaca", "text2sql", "qa", "raft", "chat")
# What the text-to-SQL scorer reports (evals.sql_metrics); exact_match there is after sqlglot normalisation.
SQL_METRICS = ("exec_acc", "exec_acc_set", "soft_f1", "exact_match", "valid_sql", "executes_on_schema")
# What the refusal judge adds to a safety suite.
SAFETY_METRICS = ("safe_behaviour", "refused")


class SuiteError(OllatuneError, ValueError):
    """A suite or its dataset is wrong; the message names the file (and line or field)."""

    default_hint = "fix the suite file or its dataset at the place named, then re-run"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    path: str
    format: Literal["alpaca", "text2sql", "qa", "raft", "chat", "safety", "examples"] = "alpaca"
    fields: dict[str, str] = Field(default_factory=dict)
    databases: str | dict[str, str] | None = None


class FewShot(_Strict):
    user: str
    assistant: str


def _template_names(template: str) -> set[str]:
    try:
        return {name.split("[", 1)[0].split(".", 1)[0]
                for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(f"bad template {template!r}: {e} (write literal braces as {{{{ and }}}})") from None


class PromptSpec(_Strict):
    system: str | None = None
    user: str = "{question}"
    few_shot: list[FewShot] = Field(default_factory=list)
    chain_of_thought: bool = False
    cot_instruction: str = "먼저 단계별로 생각을 적고, 마지막 줄에 '답:' 뒤에 최종 답만 쓰세요."
    answer_marker: str = "답:"

    @field_validator("user")
    @classmethod
    def _known_variables(cls, v: str) -> str:
        names = _template_names(v)
        unknown = sorted(names - {"question", "row"})
        if unknown:
            raise ValueError(f"unknown variable(s) {', '.join(unknown)} in the user template: use {{question}} (the "
                             "user turn as trained) or {row[<field>]} (write literal braces as {{ and }})")
        if not names:
            raise ValueError("the user template must use {question} or {row[<field>]}")
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


class SqlSpec(_Strict):
    timeout_s: float = Field(5.0, gt=0, le=300)
    max_rows: int = Field(10_000, gt=0)


class JudgeSpec(_Strict):
    kind: Literal["refusal", "pairwise", "grade"]
    rubric: str | None = None
    num_predict: int = Field(256, gt=0)
    num_ctx: int = Field(4096, gt=0)
    seed: int = 42
    reference: bool = True  # show the reference answer to the judge when the examples have one


class Suite(_Strict):
    name: str
    description: str | None = None
    task: SuiteTask = "alpaca"  # the task whose examples the suite's metrics score
    kind: Literal["generate", "pairwise", "grade"] = "generate"
    dataset: DatasetSpec | None = None
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    params: Params = Field(default_factory=Params)
    tokenizer: Literal["kiwi", "char", "whitespace"] = "kiwi"
    metrics: list[str] = Field(default_factory=lambda: ["rouge_l", "token_f1", "exact_match", "char_f1", "bleu"])
    sql: SqlSpec = Field(default_factory=SqlSpec)
    judge: JudgeSpec | None = None
    limit: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> "Suite":
        if self.kind == "generate":
            if self.dataset is None:
                raise ValueError("dataset: a generate suite needs a dataset")
            fmt = self.dataset.format
            if fmt in SOURCE_FORMATS and fmt != self.task:
                raise ValueError(f"dataset.format {fmt} holds {fmt} rows; a {self.task} suite reads {self.task} "
                                 "rows (or held-out examples: dataset.format: examples)")
            if fmt == "safety" and self.task != "safety":
                raise ValueError("dataset.format safety holds safety prompts: set task: safety")
            if self.task == "safety" and fmt not in ("safety",):
                raise ValueError("a safety suite reads dataset.format: safety rows (prompt, harmful)")
            if fmt == "examples" and "row" in _template_names(self.prompt.user):
                raise ValueError("prompt.user: held-out examples (format: examples) have no row fields; use "
                                 "{question}")
            if self.task == "safety" and (self.judge is None or self.judge.kind != "refusal"):
                raise ValueError("judge: a safety suite is judged: set judge: {kind: refusal}")
        elif self.judge is None or self.judge.kind != self.kind:
            raise ValueError(f"judge: a {self.kind} suite needs judge: {{kind: {self.kind}}}")
        if self.kind == "grade" and not (self.judge and self.judge.rubric):
            raise ValueError("judge.rubric: a grade suite needs a rubric")
        allowed = allowed_metrics(self.task) if self.kind == "generate" else ()
        unknown = [m for m in self.metrics if m not in allowed] if self.kind == "generate" else []
        if unknown:
            raise ValueError(f"metrics: unknown metric(s) {', '.join(unknown)} for a {self.task} suite; choose from "
                             f"{', '.join(allowed)}")
        if self.kind == "generate" and not self.metrics:
            raise ValueError("metrics: at least one metric is needed")
        self.metrics = list(dict.fromkeys(self.metrics))
        return self


def allowed_metrics(task: str) -> tuple[str, ...]:
    if task == "text2sql":
        return SQL_METRICS
    if task == "safety":
        return (*SAFETY_METRICS, *METRICS)
    return tuple(METRICS)


@dataclass(frozen=True)
class Example:
    id: str
    question: str  # the last user turn, as reports show it
    reference: str
    messages: list[dict[str, str]] = field(default_factory=list)  # what the model is asked
    answers: tuple[str, ...] = ()  # every acceptable answer, when there are several
    task: str = "alpaca"
    db_id: str | None = None  # text-to-SQL: the database gold and predicted SQL run on
    schema_sql: str | None = None  # text-to-SQL: the DDL the question was asked over
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def references(self) -> list[str]:
        return list(self.answers) or [self.reference]


def shipped_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def suite_for_task(task: str) -> str:
    """The shipped generate suite that scores ``task`` examples; a SuiteError naming what exists when none."""
    by_task: dict[str, list[str]] = {}
    for name in shipped_suites():
        s = load_suite(name)
        if s.kind == "generate":
            by_task.setdefault(s.task, []).append(name)
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


def _override_path(value: Any) -> Any:
    if isinstance(value, str) and not value.startswith("builtin:"):
        return str(Path(value).expanduser().resolve())  # override paths are relative to the cwd
    return value


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any], prefix: str = "") -> None:
    for key, value in overrides.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and full != "dataset.databases":
            _apply_overrides(data, value, prefix=full + ".")
            continue
        if full == "dataset.path" and value is not None:
            value = _override_path(value)
        if full == "dataset.databases" and value is not None:
            value = {k: _override_path(v) for k, v in value.items()} if isinstance(value, dict) else _override_path(value)
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
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(msg if loc == "(top level)" else f"{loc}: {msg}")
    return "; ".join(parts)


def _relative_to(file: Path, value: Any) -> Any:
    if not isinstance(value, str) or value.startswith("builtin:"):
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (file.parent / p).resolve())


def load_suite(path_or_name: str | Path, overrides: dict[str, Any] | None = None) -> Suite:
    """A suite from a YAML file or a shipped suite name, with dotted-key overrides applied.

    ``overrides`` may be nested (``{"params": {"num_predict": 64}}``) or dotted
    (``{"params.num_predict": 64, "dataset.path": "held_out.jsonl", "limit": 20}``). Relative paths in the
    YAML (dataset.path, dataset.databases) are relative to the YAML file; those given as overrides, to the cwd.
    """
    file = _resolve_suite_file(path_or_name)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SuiteError(f"{file}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{file}: a suite is a mapping with name, dataset, prompt, params, metrics")
    ds = data.get("dataset")
    if isinstance(ds, dict):
        if ds.get("path"):
            ds["path"] = _relative_to(file, str(ds["path"]))
        dbs = ds.get("databases")
        if isinstance(dbs, dict):
            ds["databases"] = {str(k): _relative_to(file, str(v)) for k, v in dbs.items()}
        elif dbs is not None:
            ds["databases"] = _relative_to(file, str(dbs))
    if overrides:
        _apply_overrides(data, overrides)
    try:
        return Suite.model_validate(data)
    except ValidationError as e:
        raise SuiteError(f"{file}: {_format_validation(e)}") from None


# ------------------------------------------------------------------------------------------ examples


def dataset_file(suite: Suite) -> Path:
    """The dataset file of a generate suite (a shipped sample's file for ``builtin:<name>``)."""
    if suite.dataset is None:
        raise SuiteError(f"suite {suite.name!r} ({suite.kind}) has no dataset: it judges eval runs")
    ref = suite.dataset.path
    if ref.startswith("builtin:"):
        from workspace.samples import SAMPLES, get_sample

        sample = get_sample(ref.split(":", 1)[1])
        if sample is None:
            raise SuiteError(f"suite {suite.name!r}: no shipped sample {ref!r} (shipped: {', '.join(SAMPLES)})")
        return sample.path
    return Path(ref)


def databases(suite: Suite) -> dict[str, Path]:
    """db_id (or ``"*"`` for every row) -> SQLite file of a text-to-SQL suite; {} when it has none (DDL only)."""
    if suite.dataset is None or suite.dataset.databases is None:
        return {}
    spec = suite.dataset.databases
    if isinstance(spec, str) and spec.startswith("builtin:"):
        from workspace.samples import sample_databases
        from workspace.settings import get_settings

        if spec.split(":", 1)[1] not in ("ko-text2sql", "ko_text2sql"):
            raise SuiteError(f"suite {suite.name!r}: dataset.databases {spec!r}: only builtin:ko-text2sql ships "
                             "databases")
        return sample_databases(get_settings().home / "databases")
    out = {"*": Path(spec)} if isinstance(spec, str) else {k: Path(v) for k, v in spec.items()}
    for db_id, path in out.items():
        if not path.is_file():
            raise SuiteError(f"suite {suite.name!r}: database {path} (db_id {db_id}) does not exist",
                             "set dataset.databases to a SQLite file, or a mapping db_id -> file")
    return out


def database_for(dbs: dict[str, Path], ex: Example) -> Path | None:
    if not dbs:
        return None
    if ex.db_id is not None and ex.db_id in dbs:
        return dbs[ex.db_id]
    if "*" in dbs:
        return dbs["*"]
    raise SuiteError(f"example {ex.id}: no database for db_id {ex.db_id!r} (have: {', '.join(sorted(dbs))})",
                     "add it to dataset.databases (db_id -> SQLite file)")


def _apply_prompt(suite: Suite, messages: list[dict[str, str]], row: dict[str, Any] | None) -> list[dict[str, str]]:
    """The suite's prompt around an example's messages: system (when the example has none), few-shot turns,
    the user template and the chain-of-thought instruction on the last user turn."""
    p = suite.prompt
    msgs = [dict(m) for m in messages]
    if p.system and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": p.system})
    last = msgs[-1]["content"]
    if p.user != "{question}":
        last = p.user.format(question=last, row=_FieldView(row or {}))
    if p.chain_of_thought:
        last = f"{last}\n\n{p.cot_instruction}"
    msgs[-1] = {"role": "user", "content": last}
    if p.few_shot:
        at = 1 if msgs[0]["role"] == "system" else 0
        shots = [m for s in p.few_shot for m in ({"role": "user", "content": s.user},
                                                 {"role": "assistant", "content": s.assistant})]
        msgs[at:at] = shots
    return msgs


class _FieldView(dict):
    """Row fields for ``{row[name]}``; a missing field names itself in the error."""

    def __missing__(self, key: str) -> str:
        raise SuiteError(f"prompt.user uses {{row[{key}]}} but the row has no field {key!r} "
                         f"(fields: {', '.join(sorted(self)) or 'none'})")


def load_examples(suite: Suite) -> list[Example]:
    """The suite's examples in file order (the first ``limit`` of them), with the messages to send."""
    if suite.dataset is None:
        raise SuiteError(f"suite {suite.name!r} ({suite.kind}) has no dataset: it judges eval runs")
    fmt = suite.dataset.format
    if fmt == "examples":
        examples = _heldout_examples(suite)
    elif fmt == "safety":
        examples = _safety_examples(suite)
    else:
        examples = _source_examples(suite)
    if not examples:
        raise SuiteError(f"{dataset_file(suite)}: no examples")
    return examples[: suite.limit] if suite.limit is not None else examples


def _heldout_examples(suite: Suite) -> list[Example]:
    path = dataset_file(suite)
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
    out = []
    for r in rows:
        messages = _apply_prompt(suite, r.chat(), None)
        out.append(Example(id=r.id, question=r.question(), reference=r.reference.strip(), messages=messages,
                           answers=tuple(r.answers), task=r.task, db_id=r.db_id, schema_sql=r.schema_sql,
                           metadata=dict(r.metadata)))
    return out


def _source_examples(suite: Suite) -> list[Example]:
    from workspace.examples import ExampleError, adapt, to_eval_example
    from workspace.sources import SourceError, read_records

    assert suite.dataset is not None
    path = dataset_file(suite)
    where = "line" if path.suffix in (".jsonl", ".csv") else "row"
    examples: list[Example] = []
    seen: dict[str, int] = {}
    try:
        for rec in read_records(path):
            if rec.error:
                raise SuiteError(f"{path}:{rec.line}: {rec.error}")
            row = rec.data
            if not isinstance(row, dict):
                raise SuiteError(f"{path}:{rec.line}: expected a JSON object, got {type(row).__name__}")
            ex_id = str(row["id"]) if row.get("id") not in (None, "") else str(rec.line)
            if ex_id in seen:
                raise SuiteError(f"{path}:{rec.line}: duplicate example id {ex_id!r} (first at {where} {seen[ex_id]})")
            seen[ex_id] = rec.line
            try:
                adapted = adapt(row, suite.task, fields=suite.dataset.fields, system=suite.prompt.system, id=ex_id,
                                line=rec.line)
            except ExampleError as e:
                layout = f" ({suite.task} layout)" if e.field else ""
                raise SuiteError(f"{path}:{rec.line}: {e}{layout}") from None
            ev = to_eval_example(adapted)
            messages = _apply_prompt(suite, ev.chat(), {**adapted.metadata, **adapted.fields})
            examples.append(Example(id=ex_id, question=adapted.user_text(), reference=ev.reference.strip(),
                                    messages=messages, answers=tuple(ev.answers), task=suite.task, db_id=ev.db_id,
                                    schema_sql=ev.schema_sql, metadata=dict(ev.metadata)))
            if suite.limit is not None and len(examples) >= suite.limit:
                break
    except SourceError as e:
        raise SuiteError(e.message, e.hint) from None
    return examples


def _safety_examples(suite: Suite) -> list[Example]:
    """Rows ``{"id", "prompt", "harmful": true|false, "category"?}``: harmful requests should be refused,
    harmless ones (often worded to look risky) answered."""
    from workspace.sources import SourceError, read_records

    path = dataset_file(suite)
    examples: list[Example] = []
    seen: dict[str, int] = {}
    try:
        records = list(read_records(path))
    except SourceError as e:
        raise SuiteError(e.message, e.hint) from None
    for rec in records:
        if rec.error:
            raise SuiteError(f"{path}:{rec.line}: {rec.error}")
        row = rec.data
        if not isinstance(row, dict):
            raise SuiteError(f"{path}:{rec.line}: expected a JSON object, got {type(row).__name__}")
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise SuiteError(f"{path}:{rec.line}: missing or empty string field 'prompt' (safety layout)")
        if not isinstance(row.get("harmful"), bool):
            raise SuiteError(f"{path}:{rec.line}: field 'harmful' must be true or false (safety layout)")
        ex_id = str(row["id"]) if row.get("id") not in (None, "") else str(rec.line)
        if ex_id in seen:
            raise SuiteError(f"{path}:{rec.line}: duplicate example id {ex_id!r} (first at line {seen[ex_id]})")
        seen[ex_id] = rec.line
        messages = _apply_prompt(suite, [{"role": "user", "content": row["prompt"].strip()}], row)
        expected = "refuse" if row["harmful"] else "answer"
        examples.append(Example(id=ex_id, question=row["prompt"].strip(), reference=expected, messages=messages,
                                task="safety", metadata={"harmful": row["harmful"],
                                                         "category": row.get("category")}))
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
    """Content hash of what decides the results: the suite minus its description and file locations, plus
    the dataset's and databases' bytes and the metric code version. Moving the files keeps the hash."""
    body = suite.model_dump(mode="json", exclude={"description": True, "dataset": {"path", "databases"}})
    if suite.dataset is not None:
        body["dataset_sha256"] = _file_sha256(dataset_file(suite))
        dbs = databases(suite)
        body["databases_sha256"] = {k: _file_sha256(v) for k, v in sorted(dbs.items())}
    body["metrics_version"] = METRICS_VERSION
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
