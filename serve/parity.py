"""Template parity: the Modelfile TEMPLATE (Go) must prompt the model exactly as its Jinja chat template does.

Each sample conversation is rendered twice: with the model's Jinja template (``add_generation_prompt=True``)
and with the Go TEMPLATE as Ollama executes it for ``/api/chat`` (the Modelfile SYSTEM prepended when the
conversation has no system message; consecutive messages of one role merged). Any difference means the
registered model would be prompted differently from how it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serve.chat_templates import RenderJinja, TemplateSpec
from serve.errors import TemplateParityError

__all__ = ["ParityCase", "ParityReport", "SAMPLE_CONVERSATIONS", "check_parity", "require_parity", "ollama_chat_messages"]


SAMPLE_CONVERSATIONS: dict[str, list[dict]] = {
    "single-turn": [{"role": "user", "content": "What is the capital of France?"}],
    "single-turn-system": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Name three primary colors."},
    ],
    "multi-turn": [
        {"role": "user", "content": "Hi, can you help me with SQL?"},
        {"role": "assistant", "content": "Of course. What do you need?"},
        {"role": "user", "content": "Count the rows of table users."},
    ],
    "multi-turn-system": [
        {"role": "system", "content": "You write SQLite queries only."},
        {"role": "user", "content": "List all tables."},
        {"role": "assistant", "content": "SELECT name FROM sqlite_master WHERE type = 'table';"},
        {"role": "user", "content": "Now count the rows of users."},
    ],
    "korean": [{"role": "user", "content": "서울은 어느 나라의 수도인가요?"}],
    "korean-multi-turn-system": [
        {"role": "system", "content": "당신은 친절한 한국어 도우미입니다."},
        {"role": "user", "content": "대한민국의 수도는 어디인가요?"},
        {"role": "assistant", "content": "대한민국의 수도는 서울입니다."},
        {"role": "user", "content": "그럼 부산은 어떤 도시인가요?"},
    ],
}


@dataclass
class ParityCase:
    name: str
    messages: list[dict]
    jinja: str | None
    go: str | None
    diff_pos: int | None = None  # first differing character, None when identical
    skipped: str | None = None  # why the case could not be compared (the Jinja template refused it)

    @property
    def ok(self) -> bool:
        return self.skipped is None and self.diff_pos is None

    def summary(self, context: int = 40) -> str:
        if self.skipped:
            return f"{self.name}: skipped ({self.skipped})"
        if self.diff_pos is None:
            return f"{self.name}: identical"
        p = self.diff_pos
        lo = max(0, p - context)
        j = (self.jinja or "")[lo : p + context]
        g = (self.go or "")[lo : p + context]
        return (
            f"{self.name}: prompts differ at character {p}:\n"
            f"    jinja (training): ...{j!r}...\n"
            f"    go (Modelfile):   ...{g!r}..."
        )


@dataclass
class ParityReport:
    ok: bool
    cases: list[ParityCase] = field(default_factory=list)
    family: str = ""

    def first_failure(self) -> ParityCase | None:
        for c in self.cases:
            if c.skipped is None and c.diff_pos is not None:
                return c
        return None

    def summary(self) -> str:
        return "\n".join(c.summary() for c in self.cases)


def _first_diff(a: str, b: str) -> int | None:
    if a == b:
        return None
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _strip_bos(text: str, bos_token: str | None, go_text: str = "") -> str:
    """The Jinja rendering without a leading BOS text, which the runtime adds when tokenizing - unless the Go
    rendering begins with that text too (SmolLM2's BOS is ``<|im_start|>``, the first token of every turn)."""
    if bos_token and text.startswith(bos_token) and not go_text.startswith(bos_token):
        return text[len(bos_token):]
    return text


def ollama_chat_messages(messages: list[dict], system: str | None) -> list[dict]:
    """What Ollama's chat handler passes to the template: SYSTEM first when the chat has no system message."""
    if system and (not messages or messages[0].get("role") != "system"):
        return [{"role": "system", "content": system}, *messages]
    return list(messages)


def check_parity(
    render_jinja: RenderJinja,
    spec: TemplateSpec,
    conversations: dict[str, list[dict]] | list[list[dict]] | None = None,
    bos_token: str | None = None,
) -> ParityReport:
    """Render every conversation both ways; ``ok`` when all comparable ones are identical.

    A conversation the Jinja template refuses (``raise_exception``, e.g. "System role not supported") is
    reported as skipped; at least one conversation must be compared.
    """
    from serve.gotemplate import render_ollama

    if conversations is None:
        convs = dict(SAMPLE_CONVERSATIONS)
    elif isinstance(conversations, dict):
        convs = dict(conversations)
    else:
        convs = {f"conversation-{i + 1}": c for i, c in enumerate(conversations)}
    cases: list[ParityCase] = []
    for name, msgs in convs.items():
        try:
            jinja = render_jinja(msgs, True)
        except Exception as e:  # noqa: BLE001 - Jinja raise_exception / type errors from the model's template
            cases.append(ParityCase(name, msgs, None, None, skipped=f"the Jinja template refused it: {e}"))
            continue
        go = render_ollama(spec.go_template, ollama_chat_messages(msgs, spec.system))
        jinja = _strip_bos(jinja, bos_token, go)
        cases.append(ParityCase(name, msgs, jinja, go, _first_diff(jinja, go)))
    compared = [c for c in cases if c.skipped is None]
    ok = bool(compared) and all(c.diff_pos is None for c in compared)
    return ParityReport(ok, cases, spec.family)


def require_parity(
    render_jinja: RenderJinja,
    spec: TemplateSpec,
    conversations: dict[str, list[dict]] | list[list[dict]] | None = None,
    bos_token: str | None = None,
) -> ParityReport:
    """:func:`check_parity`, raising :class:`TemplateParityError` with the first difference."""
    report = check_parity(render_jinja, spec, conversations, bos_token=bos_token)
    if report.ok:
        return report
    bad = report.first_failure()
    if bad is None:
        raise TemplateParityError(
            f"template parity for family {spec.family!r} could not be checked: the model's Jinja chat template "
            f"refused every sample conversation:\n{report.summary()}",
        )
    raise TemplateParityError(
        f"the Modelfile TEMPLATE (family {spec.family!r}) renders prompts differently from the model's chat template; "
        f"refusing to register.\n{bad.summary()}"
    )


