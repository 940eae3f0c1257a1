"""Render a Modelfile from ``Modelfile.template`` and read Modelfiles back.

The template is looked up next to this package first (``serve/Modelfile.template``, where the wheel puts
it) and then at the repository root. TEMPLATE and SYSTEM are written between triple quotes; Ollama's
Modelfile parser has no escape for ``\"\"\"`` there, so a TEMPLATE containing quotes that would close the
block early gets them spelled as the Go action ``{{ "\\"" }}``, which renders the same text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from serve.chat_templates import TemplateSpec
from serve.errors import ModelfileError
from serve.options import BOOL_OPTIONS, FLOAT_OPTIONS, INT_OPTIONS

__all__ = ["render_modelfile", "parse_modelfile", "modelfile_template_path", "PARAMETER_ORDER", "coerce_parameter"]

# explicit parameters first, in this order; anything else after, sorted
PARAMETER_ORDER = ("temperature", "top_p", "top_k", "repeat_penalty", "num_ctx", "seed", "num_predict")

# the option types Ollama knows (one table for the Modelfile reader and the runtime)
_INT_PARAMS, _FLOAT_PARAMS, _BOOL_PARAMS = INT_OPTIONS, FLOAT_OPTIONS, BOOL_OPTIONS


def modelfile_template_path() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "Modelfile.template", here.parent / "Modelfile.template"):
        if candidate.is_file():
            return candidate
    raise ModelfileError(
        f"Modelfile.template not found in {here} or {here.parent}",
        hint="reinstall ollatune (the wheel ships serve/Modelfile.template) or restore Modelfile.template at the repository root",
    )


def _quote_go_template(t: str) -> str:
    """Make a Go template safe inside TEMPLATE \"\"\"...\"\"\" without changing what it renders.

    In text (outside actions) a run of three or more double quotes, and a double quote at either end of
    the template, are written as the Go action ``{{ "\\"" }}`` (which renders a double quote).
    """
    parts = re.split(r"({{.*?}})", t, flags=re.S)
    for k in range(0, len(parts), 2):  # text segments
        parts[k] = re.sub(r'"{3,}', lambda m: '""{{ "' + '\\"' * (len(m.group()) - 2) + '" }}', parts[k])
    if parts[0].startswith('"'):
        parts[0] = '{{ "\\"" }}' + parts[0][1:]
    if parts[-1].endswith('"'):
        parts[-1] = parts[-1][:-1] + '{{ "\\"" }}'
    out = "".join(parts)
    if '"""' in out:
        raise ModelfileError(
            'the TEMPLATE contains """ inside a Go action, which a Modelfile cannot hold',
            hint='write the quotes in the template with printf or as separate string literals',
        )
    return out


def _check_triple_safe(value: str, what: str) -> None:
    if '"""' in value or value.startswith('"') or value.endswith('"'):
        raise ModelfileError(
            f"the {what} contains a triple quote or starts/ends with a double quote, which a Modelfile cannot hold "
            f'between """ delimiters: {value[:60]!r}...',
            hint=f"rephrase the {what} without leading/trailing double quotes or \"\"\"",
        )


def _format_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else (str(int(value)) if name in _INT_PARAMS else f"{value:.1f}")
    if isinstance(value, int):
        return str(value)
    s = str(value)
    if s == "" or any(c in s for c in ' "\n\t\\#'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


def _quote_stop(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")


def render_modelfile(from_path: str, spec: TemplateSpec, parameters: dict, header: str, *,
                     adapters: list[str] | tuple = (), messages: list[dict] | tuple = (),
                     require_stop: bool = True) -> str:
    """The Modelfile text: FROM, ADAPTERs, TEMPLATE, SYSTEM (if any), every stop, the given parameters, then
    MESSAGEs. The one Modelfile writer of the project: exports write it beside the GGUF, the runtime's
    ``/api/show`` answers with it."""
    import jinja2

    params = dict(parameters or {})
    stops: list[str] = []
    extra_stop = params.pop("stop", None)
    if isinstance(extra_stop, str):
        extra_stop = [extra_stop]
    for s in list(spec.stop) + list(extra_stop or []):
        if s and s not in stops:
            stops.append(s)
    if not stops and require_stop:
        raise ModelfileError(
            f"no stop strings for chat family {spec.family!r}",
            hint="every end-of-turn token must be a PARAMETER stop; give the family's stops or parameters['stop']",
        )
    ordered = [(k, params[k]) for k in PARAMETER_ORDER if params.get(k) is not None]
    ordered += [(k, params[k]) for k in sorted(params) if k not in PARAMETER_ORDER and params[k] is not None]
    for k, _ in ordered:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", k):
            raise ModelfileError(f"invalid Modelfile parameter name {k!r}", hint="parameter names are lower_snake_case, e.g. num_ctx")
    if spec.system:
        _check_triple_safe(spec.system, "SYSTEM prompt")
    if "\n" in from_path:
        raise ModelfileError(f"FROM path contains a newline: {from_path!r}", hint="rename the GGUF file")
    path = modelfile_template_path()
    env = jinja2.Environment(
        autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined
    )
    try:
        tmpl = env.from_string(path.read_text(encoding="utf-8"))
        text = tmpl.render(
            header_lines=[ln.rstrip() for ln in (header or "").splitlines()] or [],
            from_path=from_path,
            template=_quote_go_template(spec.go_template),
            system=spec.system or "",
            stops=[_quote_stop(s) for s in stops],
            parameters=[(k, _format_value(k, v)) for k, v in ordered],
            adapters=[str(a) for a in adapters],
            messages=[(m.get("role", "user"), _format_value("message", m.get("content", "") or ""))
                      for m in messages],
        )
    except jinja2.TemplateError as e:
        raise ModelfileError(f"cannot render {path}: {e}", hint=f"fix the jinja2 syntax of {path}") from None
    return text


# -------------------------------------------------------------------------------------------------- parse

_COMMANDS = {"from", "adapter", "template", "system", "parameter", "message", "license", "requires"}


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), s)


def coerce_parameter(name: str, raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        if name in _INT_PARAMS:
            return int(float(raw))
        if name in _FLOAT_PARAMS:
            return float(raw)
    except ValueError:
        raise ModelfileError(f"PARAMETER {name} expects a number, got {raw!r}", hint=f"write e.g. PARAMETER {name} 1") from None
    if name in _BOOL_PARAMS:
        return raw.lower() in ("1", "true", "yes", "on")
    return raw


def _read_value(text: str, i: int, lineno: int) -> tuple[str, int]:
    """Read one value starting at ``i`` (after the command); returns (value, index after it)."""
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if text.startswith('"""', i):
        end = text.find('"""', i + 3)
        if end < 0:
            raise ModelfileError(f'unterminated """ block starting on line {lineno} of the Modelfile')
        return text[i + 3 : end], end + 3
    if i < n and text[i] == '"':
        j = i + 1
        buf = []
        while j < n and text[j] != '"':
            if text[j] == "\n":
                raise ModelfileError(f'unterminated "..." on line {lineno} of the Modelfile')
            if text[j] == "\\" and j + 1 < n:
                buf.append(text[j : j + 2])
                j += 2
                continue
            buf.append(text[j])
            j += 1
        if j >= n:
            raise ModelfileError(f'unterminated "..." on line {lineno} of the Modelfile')
        return _unescape("".join(buf)), j + 1
    end = text.find("\n", i)
    end = n if end < 0 else end
    return text[i:end].strip(), end


def parse_modelfile(text: str) -> dict:
    """Read a Modelfile: ``{"from", "adapters", "template", "system", "parameters", "messages", "license"}``.

    ``parameters["stop"]`` is a list; numeric parameters are converted to numbers.
    """
    out: dict[str, Any] = {"from": None, "adapters": [], "template": None, "system": None, "parameters": {},
                           "messages": [], "license": [], "requires": None}
    i, n = 0, len(text)
    while i < n:
        # start of a line
        line_end = text.find("\n", i)
        line_end = n if line_end < 0 else line_end
        line = text[i:line_end]
        lineno = text.count("\n", 0, i) + 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            i = line_end + 1
            continue
        m = re.match(r"\s*([A-Za-z]+)\b", line)
        if not m or m.group(1).lower() not in _COMMANDS:
            raise ModelfileError(
                f"unknown command {stripped.split()[0]!r} on line {lineno} of the Modelfile",
                hint="use FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER, MESSAGE, LICENSE or REQUIRES",
            )
        cmd = m.group(1).lower()
        j = i + m.end()
        if cmd == "parameter":
            pm = re.match(r"[ \t]+([A-Za-z_][A-Za-z0-9_]*)", text[j:])
            if not pm:
                raise ModelfileError(f"PARAMETER without a name on line {lineno} of the Modelfile", hint="write PARAMETER name value")
            name = pm.group(1).lower()
            value, j = _read_value(text, j + pm.end(), lineno)
            if name == "stop":
                out["parameters"].setdefault("stop", []).append(value)
            else:
                out["parameters"][name] = coerce_parameter(name, value)
        elif cmd == "message":
            rm = re.match(r"[ \t]+([A-Za-z]+)", text[j:])
            if not rm:
                raise ModelfileError(f"MESSAGE without a role on line {lineno} of the Modelfile", hint="write MESSAGE user|assistant|system text")
            value, j = _read_value(text, j + rm.end(), lineno)
            out["messages"].append({"role": rm.group(1).lower(), "content": value})
        else:
            value, j = _read_value(text, j, lineno)
            if cmd == "adapter":
                out["adapters"].append(value)
            elif cmd == "license":
                out["license"].append(value)
            else:
                out[cmd] = value
        # rest of the line after a quoted value must be empty
        k = text.find("\n", j)
        k = n if k < 0 else k
        if text[j:k].strip():
            raise ModelfileError(f"unexpected text {text[j:k].strip()!r} after the value on line {text.count(chr(10), 0, j) + 1} of the Modelfile")
        i = k + 1
    if not out["from"]:
        raise ModelfileError("the Modelfile has no FROM line", hint="add FROM ./model.gguf (or a model name)")
    return out
