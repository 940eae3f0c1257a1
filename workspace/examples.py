"""One internal example type for every dataset format, and the adapters that build it.

Formats: ``alpaca`` (KoAlpaca: instruction, input, output; extra fields kept as metadata), ``text2sql``
(question, DDL context, SQL), ``qa`` (SQuAD/KorQuAD: context, question, answer spans), ``raft``
(documents with the golden one and distractors, question, answer, optional chain of thought) and
``chat`` (OpenAI ``role/content`` or ShareGPT ``from/value`` messages). Field names are configurable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from workspace.heldout import EvalExample
from workspace.prompts import QA_PROMPT, RAFT_PROMPT, SQL_PROMPT, alpaca_user_message

Task = Literal["alpaca", "text2sql", "qa", "raft", "chat"]
TASKS: tuple[str, ...] = ("alpaca", "text2sql", "qa", "raft", "chat")

# The canonical field names of each format; a recipe or the CLI may map other names onto them.
DEFAULT_FIELDS: dict[str, dict[str, str]] = {
    "alpaca": {"instruction": "instruction", "input": "input", "output": "output"},
    "text2sql": {"question": "question", "context": "context", "sql": "sql"},
    "qa": {"context": "context", "question": "question", "answers": "answers"},
    "raft": {"instruction": "instruction", "documents": "documents", "question": "question", "answer": "answer",
             "cot": "cot", "golden": "golden"},
    "chat": {"messages": "messages"},
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "output"),
    "text2sql": ("question", "context", "sql"),
    "qa": ("context", "question", "answers"),
    "raft": ("documents", "question", "answer"),
    "chat": ("messages",),
}
ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
                "model": "assistant", "system": "system"}



class ExampleError(ValueError):
    """A row that cannot become an example; ``field`` names the offending field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Example:
    id: str
    task: str
    prompt: list[dict[str, str]]  # chat messages up to the answer (system optional, then user/assistant turns)
    response: str  # the assistant answer the loss is computed on
    fields: dict[str, Any] = field(default_factory=dict)  # the canonical fields, for validation and evaluation
    metadata: dict[str, Any] = field(default_factory=dict)  # everything else the row carried
    line: int | None = None  # where the row was in its source file

    def messages(self) -> list[dict[str, str]]:
        return [*self.prompt, {"role": "assistant", "content": self.response}]

    def prompt_completion(self) -> dict[str, list[dict[str, str]]]:
        return {"prompt": self.prompt, "completion": [{"role": "assistant", "content": self.response}]}

    def user_text(self) -> str:
        return "\n".join(m["content"] for m in self.prompt if m["role"] == "user")


def _text(row: dict, key: str, name: str, required: bool) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise ExampleError(f"missing field {name!r}" + (f" (column {key!r})" if key != name else ""), name)
        return ""
    if not isinstance(value, str):
        raise ExampleError(f"field {name!r} is {type(value).__name__}, expected text", name)
    if required and not value.strip():
        raise ExampleError(f"field {name!r} is empty", name)
    return value


def _system(system: str | None) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}] if system else []


def adapt(row: Any, task: str, *, fields: dict[str, str] | None = None, system: str | None = None,
          id: str | None = None, line: int | None = None) -> Example:
    """Build an :class:`Example` from one raw row of ``task``'s format; raises ExampleError."""
    if task not in TASKS:
        raise ExampleError(f"unknown format {task!r}; expected one of {', '.join(TASKS)}", "format")
    if not isinstance(row, dict):
        raise ExampleError(f"row is {type(row).__name__}, expected an object")
    names = {**DEFAULT_FIELDS[task], **(fields or {})}
    used = set(names.values())
    metadata = {k: v for k, v in row.items() if k not in used and k != "id"}
    rid = id or str(row.get("id") or (f"line-{line}" if line is not None else ""))

    if task == "alpaca":
        instruction = _text(row, names["instruction"], "instruction", True)
        inp = _text(row, names["input"], "input", False)
        output = _text(row, names["output"], "output", True)
        prompt = _system(system) + [{"role": "user", "content": alpaca_user_message(instruction, inp)}]
        return Example(rid, task, prompt, output.strip(), {"instruction": instruction, "input": inp, "output": output},
                       metadata, line)

    if task == "text2sql":
        question = _text(row, names["question"], "question", True)
        context = _text(row, names["context"], "context", True)
        sql = _text(row, names["sql"], "sql", True)
        prompt = _system(system) + [{"role": "user", "content": SQL_PROMPT.format(context=context.strip(),
                                                                                   question=question.strip())}]
        return Example(rid, task, prompt, sql.strip(), {"question": question, "context": context, "sql": sql},
                       metadata, line)

    if task == "qa":
        context = _text(row, names["context"], "context", True)
        question = _text(row, names["question"], "question", True)
        answers = row.get(names["answers"])
        if isinstance(answers, str):
            answers = [{"text": answers}]
        if isinstance(answers, dict) and "text" in answers:  # HF squad layout: {"text": [...], "answer_start": [...]}
            starts = answers.get("answer_start") or [None] * len(answers["text"])
            answers = [{"text": t, "answer_start": s} for t, s in zip(answers["text"], starts)]
        if not isinstance(answers, list) or not answers:
            raise ExampleError("field 'answers' must be a non-empty list of {text, answer_start}", "answers")
        spans = []
        for a in answers:
            if not isinstance(a, dict) or not isinstance(a.get("text"), str) or not a["text"].strip():
                raise ExampleError("each answer needs a non-empty 'text'", "answers")
            spans.append({"text": a["text"], "answer_start": a.get("answer_start")})
        prompt = _system(system) + [{"role": "user", "content": QA_PROMPT.format(context=context.strip(),
                                                                                  question=question.strip())}]
        return Example(rid, task, prompt, spans[0]["text"].strip(),
                       {"context": context, "question": question, "answers": spans}, metadata, line)

    if task == "raft":
        docs = row.get(names["documents"])
        if isinstance(docs, str):
            docs = [docs]
        if not isinstance(docs, list) or not docs or not all(isinstance(d, str) and d.strip() for d in docs):
            raise ExampleError("field 'documents' must be a non-empty list of texts", "documents")
        question = _text(row, names["question"], "question", True)
        answer = _text(row, names["answer"], "answer", True)
        cot = _text(row, names["cot"], "cot", False)
        instruction = _text(row, names["instruction"], "instruction", False)
        golden = row.get(names["golden"])
        if golden is not None and not (isinstance(golden, int) and -1 <= golden < len(docs)):
            raise ExampleError(f"field 'golden' must be an index into documents (or -1), got {golden!r}", "golden")
        listing = "\n\n".join(f"[문서 {i + 1}] {d.strip()}" for i, d in enumerate(docs))
        user = RAFT_PROMPT.format(documents=listing, question=question.strip())
        if instruction.strip():
            user = f"{instruction.strip()}\n\n{user}"
        response = f"{cot.strip()}\n\n답: {answer.strip()}" if cot.strip() else answer.strip()
        return Example(rid, task, _system(system) + [{"role": "user", "content": user}], response,
                       {"documents": docs, "question": question, "answer": answer, "cot": cot, "golden": golden},
                       metadata, line)

    # chat
    msgs = row.get(names["messages"])
    if msgs is None and "conversations" in row:  # ShareGPT's usual key
        msgs = row["conversations"]
        metadata.pop("conversations", None)
    if not isinstance(msgs, list) or not msgs:
        raise ExampleError("field 'messages' must be a non-empty list", "messages")
    out: list[dict[str, str]] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise ExampleError(f"message {i} is {type(m).__name__}, expected an object", "messages")
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if role not in ROLE_ALIASES:
            raise ExampleError(f"message {i} has unknown role {role!r}", "messages")
        if not isinstance(content, str):
            raise ExampleError(f"message {i} has no text content", "messages")
        out.append({"role": ROLE_ALIASES[role], "content": content})
    if out[-1]["role"] != "assistant" or not out[-1]["content"].strip():
        raise ExampleError("the last message must be a non-empty assistant answer", "messages")
    if system and out[0]["role"] != "system":
        out = _system(system) + out
    return Example(rid, task, out[:-1], out[-1]["content"].strip(), {"messages": out}, metadata, line)


def to_eval_example(ex: Example) -> EvalExample:
    """A validated example as a held-out evaluation example: the prompt as trained, the reference, and what
    its task's scoring needs."""
    answers: list[str] = []
    db_id = schema = None
    if ex.task == "qa":
        answers = [a["text"].strip() for a in ex.fields["answers"]]
    elif ex.task == "raft":
        answers = [ex.fields["answer"].strip()]
    elif ex.task == "text2sql":
        db_id = ex.metadata.get("db_id")
        db_id = str(db_id) if db_id is not None else None
        schema = ex.fields["context"]
    return EvalExample(id=ex.id, task=ex.task, messages=ex.prompt, reference=ex.response, answers=answers,
                       db_id=db_id, schema_sql=schema, line=ex.line,
                       metadata={k: v for k, v in ex.metadata.items() if k != "db_id"})
