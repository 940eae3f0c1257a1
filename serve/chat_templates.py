"""Detection of a model's chat template family from its own (Jinja) chat template.

The families themselves are data in :mod:`workspace.chat_families` (training uses them too): each holds the
Go TEMPLATE Ollama should use (written for ``.Messages`` and ending with the generation prompt of the
assistant turn), every end-of-turn string as ``stop``, and a reference Jinja chat template.

:func:`detect_template` renders probe conversations with the model's Jinja template and picks the family
whose Go rendering (as Ollama would execute it) matches exactly. If the Jinja template injects a default
system prompt when the conversation has none, that text becomes ``TemplateSpec.system``: Ollama prepends the
Modelfile SYSTEM as a system message in that case, so both prompts are then identical. A family that writes a
date (Llama 3.1/3.2) is tried with its pinned date and with today's: a template that renders ``strftime_now``
is registered with the date it renders at detection time, since no Ollama template function writes that format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve.errors import ServeError, TemplateDetectionError
from workspace.chat_families import FAMILIES, ChatFamily, ChatFamilyError
from workspace.chat_families import template_for_family as _family

RenderJinja = Callable[[list[dict], bool], str]

__all__ = [
    "ChatFamily",
    "TemplateSpec",
    "FAMILIES",
    "RenderJinja",
    "template_for_family",
    "detect_template",
    "jinja_renderer",
    "GGUFChatInfo",
    "read_gguf_chat_info",
    "spec_from_gguf",
]


@dataclass
class TemplateSpec:
    family: str
    go_template: str
    stop: list[str]
    system: str | None = None


def template_for_family(name: str) -> ChatFamily:
    """The family called ``name`` (aliases such as ``qwen`` or ``phi-3`` accepted)."""
    try:
        return _family(name)
    except ChatFamilyError as e:
        raise TemplateDetectionError(e.message, hint=e.hint) from None


def spec_for_family(name: str, system: str | None = None, extra_stop: list[str] | None = None) -> TemplateSpec:
    fam = template_for_family(name)
    stop = list(fam.stop)
    for s in extra_stop or []:
        if s and s not in stop:
            stop.append(s)
    return TemplateSpec(fam.name, fam.go_template, stop, system)


# --------------------------------------------------------------------------------------------- Jinja side


def jinja_renderer(chat_template: str, bos_token: str = "", eos_token: str = "", strip_bos: bool = True) -> RenderJinja:
    """``render_jinja(messages, add_generation_prompt)`` for a raw Jinja chat template, as transformers renders it.

    With ``strip_bos`` a leading ``bos_token`` is removed from the result: the runtime (Ollama, llama.cpp)
    adds BOS while tokenizing, so the text prompt must not carry it.
    """
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
        import json

        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        import datetime

        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        compiled = env.from_string(chat_template)
    except jinja2.TemplateSyntaxError as e:
        raise ServeError(
            f"the model's Jinja chat template does not parse: {e.message} (line {e.lineno})",
            hint="fix tokenizer.chat_template in the tokenizer/GGUF, or pass the chat family explicitly",
        ) from None

    def render_jinja(messages: list[dict], add_generation_prompt: bool) -> str:
        text = compiled.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            tools=None,
            documents=None,
        )
        if strip_bos and bos_token and text.startswith(bos_token):
            text = text[len(bos_token):]
        return text

    return render_jinja


@dataclass
class GGUFChatInfo:
    path: Path
    chat_template: str | None
    bos_token: str
    eos_token: str
    add_bos: bool
    architecture: str | None = None
    name: str | None = None
    extra: dict = field(default_factory=dict)

    def renderer(self) -> RenderJinja:
        """``render_jinja`` for the embedded template; BOS stripped only if llama.cpp adds it when tokenizing."""
        if not self.chat_template:
            raise TemplateDetectionError(
                f"{self.path} has no tokenizer.chat_template in its metadata",
                hint="pass the chat family explicitly (e.g. --template chatml), matching how the model was trained",
            )
        return jinja_renderer(self.chat_template, self.bos_token, self.eos_token, strip_bos=self.add_bos)


def read_gguf_chat_info(path: Path | str) -> GGUFChatInfo:
    """Chat template, BOS/EOS token texts and add_bos flag from a GGUF's metadata (no model load)."""
    from workspace.gguf_info import read_gguf

    info = read_gguf(path)
    return GGUFChatInfo(path=info.path, chat_template=info.chat_template, bos_token=info.bos_token,
                        eos_token=info.eos_token, add_bos=info.add_bos, architecture=info.architecture or None,
                        name=info.name)


def spec_from_gguf(path: Path | str) -> TemplateSpec:
    """Detect the chat family of a GGUF from its embedded chat template."""
    info = read_gguf_chat_info(path)
    render = info.renderer()
    return detect_template(render, bos_token=info.bos_token if info.add_bos else None, eos_token=info.eos_token)


# ---------------------------------------------------------------------------------------------- detection

_PROBE_USER = "Hello! What is 2 + 3?"
_SENTINEL = "\x00OLLATUNE-SYSTEM-SENTINEL\x00"


def _go_templates(fam: ChatFamily) -> list[str]:
    """The family's Go TEMPLATE and, for a family that writes a date (Llama 3.1/3.2's system header), the same
    TEMPLATE with today's date: a template that renders ``strftime_now`` is matched by the date it renders now,
    which the registered TEMPLATE then keeps (Ollama cannot render a date in that format)."""
    templates = [fam.go_template]
    if fam.pinned_date and fam.date_format:
        import datetime

        today = fam.go_template_for_date(datetime.datetime.now().strftime(fam.date_format))
        if today not in templates:
            templates.append(today)
    return templates


def _default_system(render_jinja: RenderJinja, fam: ChatFamily, bos_token: str | None,
                    go_template: str | None = None) -> tuple[bool, str | None]:
    """(usable, injected system text) for a family; usable is False when the shapes cannot match."""
    from serve.gotemplate import render_ollama
    from serve.parity import _strip_bos

    go_template = go_template or fam.go_template
    try:
        raw = render_jinja([{"role": "user", "content": _PROBE_USER}], True)
    except Exception:  # noqa: BLE001 - a template that refuses the probe is not this family
        return False, None
    plain = render_ollama(go_template, [{"role": "user", "content": _PROBE_USER}])
    if _strip_bos(raw, bos_token, plain) == plain:
        return True, None
    with_sys = render_ollama(go_template, [{"role": "system", "content": _SENTINEL}, {"role": "user", "content": _PROBE_USER}])
    if _SENTINEL not in with_sys:
        return False, None
    jinja = _strip_bos(raw, bos_token, with_sys)
    prefix, suffix = with_sys.split(_SENTINEL, 1)
    if jinja.startswith(prefix) and jinja.endswith(suffix) and len(jinja) > len(prefix) + len(suffix):
        return True, jinja[len(prefix): len(jinja) - len(suffix)]
    return False, None


def detect_template(
    render_jinja: RenderJinja,
    bos_token: str | None = None,
    eos_token: str | None = None,
    families: list[str] | None = None,
) -> TemplateSpec:
    """Find the family whose Go TEMPLATE renders every probe conversation exactly like ``render_jinja``.

    ``bos_token``: a leading BOS in the Jinja rendering is ignored (the runtime adds it when tokenizing).
    ``eos_token``: added to the stop list when it is not there yet.
    """
    from serve.parity import check_parity

    tried: list[str] = []
    for name in families or list(FAMILIES):
        fam = template_for_family(name)
        reason = ""
        for go_template in _go_templates(fam):
            usable, system = _default_system(render_jinja, fam, bos_token, go_template)
            if not usable:
                reason = reason or "the single-turn prompt has a different shape"
                continue
            spec = spec_for_family(fam.name, system=system, extra_stop=[eos_token] if eos_token else None)
            spec.go_template = go_template
            report = check_parity(render_jinja, spec, bos_token=bos_token)
            if report.ok:
                return spec
            bad = report.first_failure()
            reason = bad.summary() if bad else "no conversation could be rendered"
        tried.append(f"{fam.name}: {reason}")
    raise TemplateDetectionError(
        "the model's chat template matches none of the known families; tried:\n  " + "\n  ".join(tried)
    )
