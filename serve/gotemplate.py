"""A renderer for the subset of Go ``text/template`` that Ollama's model templates use.

Supported: text and ``{{ pipeline }}`` actions, ``{{-``/``-}}`` whitespace trimming, ``{{/* comments */}}``,
``if / else if / else / end``, ``range`` (with ``$i, $m :=`` and ``else``), ``with`` (and ``else with``),
``break``/``continue``, variables (``$x := ...``, ``$x = ...``, ``$``, ``$.Messages``, ``$m.Content``),
field chains on dicts and objects, parenthesised sub-pipelines (``(index .Messages 0).Role``), pipes
(``.Content | print``), string/raw-string/char/number/bool/nil literals, and the functions
``eq ne lt le gt ge and or not len slice index print printf println`` plus Ollama's ``json`` and
``toTypeScriptType``.

Data is plain Python: dicts (keys looked up as written, then lower-cased so ``.Role`` finds ``"role"``),
lists, strings, numbers, booleans and ``None``. As with Ollama (``missingkey=zero`` on struct fields), a
missing field or ``None`` prints as the empty string and is false.

Unknown syntax (``define``, ``template``, ``block``, unknown functions, stray ``end``...) raises
:class:`TemplateSyntaxError` naming the line and column.

:func:`render_ollama` emulates how Ollama executes a model TEMPLATE for a chat (``template.Execute``):
consecutive messages of one role are merged, system messages are joined into ``.System``, templates
that do not use ``.Messages`` are rendered turn by turn with ``.System/.Prompt/.Response``. Tool
definitions and tool calls reach the template as Ollama's Go types do: ``{{ . }}`` of a tool,
``{{ .Tools }}``, ``{{ .Function.Arguments }}`` and ``{{ .Function.Parameters.Properties }}`` print JSON
(encoding/json: struct fields in declaration order with ``omitempty``, map keys sorted, compact,
``<>&`` escaped), ``{{ .Function }}`` and ``{{ .Function.Parameters }}`` print as fmt prints a struct.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from serve.errors import TemplateRenderError, TemplateSyntaxError

__all__ = ["GoTemplate", "parse", "render", "render_ollama", "template_vars"]

_WS = " \t\r\n"
_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "define", "template", "block", "nil"}


def _where(src: str, pos: int) -> str:
    line = src.count("\n", 0, pos) + 1
    col = pos - (src.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {col}"


# --------------------------------------------------------------------------------------------- AST


@dataclass
class Text:
    text: str


@dataclass
class Pipeline:
    pos: int
    decl: list[str] = field(default_factory=list)  # variable names (without "$"), 0..2
    assign: bool = False  # "=" instead of ":="
    cmds: list[list[Any]] = field(default_factory=list)  # each command: list of expression nodes


@dataclass
class Action:
    pipe: Pipeline


@dataclass
class Branch:  # if / with
    kind: str  # "if" | "with"
    arms: list[tuple[Pipeline, list]]  # (condition, body), first is the "if", then "else if"s
    else_body: list | None
    # per arm: the kind ("if" or "with"), because Go allows "else with" after "with"
    arm_kinds: list[str] = field(default_factory=list)


@dataclass
class Range:
    pipe: Pipeline
    body: list
    else_body: list | None


@dataclass
class Break:
    pos: int


@dataclass
class Continue:
    pos: int


# expression nodes
@dataclass
class Field:  # .A.B relative to dot; names == [] means "."
    names: list[str]
    pos: int


@dataclass
class Var:  # $x.A.B ; name "" means "$"
    name: str
    names: list[str]
    pos: int


@dataclass
class Lit:
    value: Any
    pos: int


@dataclass
class Ident:  # function name
    name: str
    pos: int


@dataclass
class Sub:  # (pipeline).A.B
    pipe: Pipeline
    names: list[str]
    pos: int


# ------------------------------------------------------------------------------------------- lexing


@dataclass
class _Item:
    kind: str  # "text" | "action"
    text: str
    pos: int  # offset of the text, or of the action's content


def _lex(src: str) -> list[_Item]:
    items: list[_Item] = []
    i = 0
    trim_next = False
    n = len(src)
    while i < n:
        j = src.find("{{", i)
        if j < 0:
            text = src[i:]
            if trim_next:
                text = text.lstrip(_WS)
            if text:
                items.append(_Item("text", text, i))
            break
        text = src[i:j]
        if trim_next:
            text = text.lstrip(_WS)
        k = j + 2
        if k + 1 < n and src[k] == "-" and src[k + 1] in _WS:
            text = text.rstrip(_WS)
            k += 2
        if text:
            items.append(_Item("text", text, i))
        # comment (Go requires it right after the delimiter and its trim marker)
        if src.startswith("/*", k):
            end = src.find("*/", k + 2)
            if end < 0:
                raise TemplateSyntaxError(f"unclosed comment at {_where(src, j)} of the template")
            e = end + 2
            trim_next = False
            if src.startswith(" -}}", e) or src.startswith("\t-}}", e) or src.startswith("\n-}}", e):
                trim_next = True
                e += 4
            elif src.startswith("}}", e):
                e += 2
            else:
                raise TemplateSyntaxError(f"comment ends before closing delimiter at {_where(src, end)} of the template")
            i = e
            continue
        # scan to the closing delimiter, skipping quoted text
        p = k
        quote = None
        while True:
            if p >= n:
                raise TemplateSyntaxError(f"unclosed action (missing '}}}}') starting at {_where(src, j)} of the template")
            ch = src[p]
            if quote:
                if ch == "\\" and quote != "`":
                    p += 2
                    continue
                if ch == quote:
                    quote = None
                elif ch == "\n" and quote != "`":
                    raise TemplateSyntaxError(f"unterminated quoted string at {_where(src, p)} of the template")
                p += 1
                continue
            if ch in "\"'`":
                quote = ch
                p += 1
                continue
            if src.startswith("}}", p):
                break
            p += 1
        content_end = p
        trim_next = False
        if content_end - 2 >= k and src[content_end - 1] == "-" and src[content_end - 2] in _WS:
            trim_next = True
            content_end -= 2
        items.append(_Item("action", src[k:content_end], k))
        i = p + 2
    return items


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<pipe>\|)
  | (?P<comma>,)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)+')
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int
    space_before: bool


def _tokenize(src: str, content: str, base: int) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    space = True
    while i < len(content):
        m = _TOKEN_RE.match(content, i)
        if not m:
            raise TemplateSyntaxError(
                f"unexpected character {content[i]!r} in action at {_where(src, base + i)} of the template"
            )
        kind = m.lastgroup or ""
        if kind == "ws":
            space = True
        else:
            toks.append(_Tok(kind, m.group(), base + i, space))
            space = False
        i = m.end()
    return toks


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", "'": "'", '"': '"'}
_ESC_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)")


def _go_unescape(s: str, tok: _Tok, src: str) -> str:
    raw = bytearray()

    def flush_text(t: str) -> None:
        raw.extend(t.encode("utf-8"))

    last = 0
    for m in _ESC_RE.finditer(s):
        flush_text(s[last : m.start()])
        e = m.group(1)
        if e[0] == "x":
            raw.append(int(e[1:], 16))
        elif e[0] in "uU":
            flush_text(chr(int(e[1:], 16)))
        elif e[0] in "01234567" and len(e) == 3:
            raw.append(int(e, 8))
        elif e in _ESCAPES:
            flush_text(_ESCAPES[e])
        else:
            raise TemplateSyntaxError(f"unknown escape sequence \\{e} at {_where(src, tok.pos)} of the template")
        last = m.end()
    flush_text(s[last:])
    return raw.decode("utf-8", "replace")


def _unquote(tok: _Tok, src: str) -> Any:
    if tok.kind == "raw":
        return tok.text[1:-1].replace("\r", "")
    if tok.kind == "string":
        return _go_unescape(tok.text[1:-1], tok, src)
    if tok.kind == "char":
        s = _go_unescape(tok.text[1:-1], tok, src)
        if len(s) != 1:
            raise TemplateSyntaxError(f"malformed character constant {tok.text} at {_where(src, tok.pos)} of the template")
        return ord(s)
    raise AssertionError(tok.kind)


def _number(tok: _Tok, src: str) -> Any:
    t = tok.text.replace("_", "")
    try:
        if t.lower().lstrip("+-").startswith("0x"):
            return int(t, 16)
        if re.fullmatch(r"[-+]?\d+", t):
            return int(t)
        return float(t)
    except ValueError:
        raise TemplateSyntaxError(f"bad number syntax {tok.text!r} at {_where(src, tok.pos)} of the template") from None


# ------------------------------------------------------------------------------------------ parsing


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.items = _lex(src)
        self.i = 0

    def err(self, msg: str, pos: int) -> TemplateSyntaxError:
        return TemplateSyntaxError(f"{msg} at {_where(self.src, pos)} of the template")

    def parse(self) -> list:
        body, stop = self.parse_list(top=True)
        return body

    # A list runs until "end"/"else" (returned as stop = (keyword, tokens, pos)) or the end of input.
    def parse_list(self, top: bool = False, in_range: bool = False):
        nodes: list = []
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if item.kind == "text":
                nodes.append(Text(item.text))
                continue
            toks = _tokenize(self.src, item.text, item.pos)
            if not toks:
                raise self.err("missing value for command (empty action)", item.pos)
            head = toks[0]
            word = head.text if head.kind == "ident" else None
            if word in ("end", "else"):
                if top:
                    raise self.err(f"unexpected {{{{{word}}}}} (no open if/range/with)", head.pos)
                return nodes, (word, toks, head.pos)
            if word == "if" or word == "with":
                nodes.append(self.parse_branch(word, toks, in_range))
            elif word == "range":
                nodes.append(self.parse_range(toks))
            elif word in ("break", "continue"):
                if len(toks) != 1:
                    raise self.err(f"unexpected {toks[1].text!r} after {word}", toks[1].pos)
                if not in_range:
                    raise self.err(f"{{{{{word}}}}} outside {{{{range}}}}", head.pos)
                nodes.append(Break(head.pos) if word == "break" else Continue(head.pos))
            elif word in ("define", "template", "block"):
                raise self.err(f"{{{{{word}}}}} is not supported by ollatune's Go template renderer", head.pos)
            else:
                nodes.append(Action(self.parse_pipeline(toks, 0, item.pos, allow_decl=True)))
        if not top:
            raise TemplateSyntaxError(
                f"unexpected end of template: an if/range/with is missing its {{{{end}}}} "
                f"(template ends at {_where(self.src, len(self.src))})"
            )
        return nodes, None

    def parse_branch(self, kind: str, toks: list[_Tok], in_range: bool) -> Branch:
        arms: list[tuple[Pipeline, list]] = []
        arm_kinds: list[str] = []
        cond = self.parse_pipeline(toks, 1, toks[0].pos, allow_decl=True)
        else_body = None
        while True:
            body, stop = self.parse_list(in_range=in_range)
            arms.append((cond, body))
            arm_kinds.append(kind)
            word, stoks, spos = stop
            if word == "end":
                if len(stoks) > 1:
                    raise self.err(f"unexpected {stoks[1].text!r} in {{{{end}}}}", stoks[1].pos)
                break
            # else
            if len(stoks) > 1 and stoks[1].kind == "ident" and stoks[1].text in ("if", "with"):
                kind = stoks[1].text
                cond = self.parse_pipeline(stoks, 2, stoks[1].pos, allow_decl=True)
                continue
            if len(stoks) > 1:
                raise self.err(f"unexpected {stoks[1].text!r} after {{{{else}}}}", stoks[1].pos)
            else_body, stop = self.parse_list(in_range=in_range)
            word, stoks, spos = stop
            if word != "end":
                raise self.err("expected {{end}} after {{else}} block, found another {{else}}", spos)
            if len(stoks) > 1:
                raise self.err(f"unexpected {stoks[1].text!r} in {{{{end}}}}", stoks[1].pos)
            break
        return Branch(arm_kinds[0], arms, else_body, arm_kinds)

    def parse_range(self, toks: list[_Tok]) -> Range:
        pipe = self.parse_pipeline(toks, 1, toks[0].pos, allow_decl=True, range_decl=True)
        body, stop = self.parse_list(in_range=True)
        word, stoks, spos = stop
        else_body = None
        if word == "else":
            if len(stoks) > 1:
                raise self.err(f"unexpected {stoks[1].text!r} after {{{{else}}}} in range", stoks[1].pos)
            else_body, stop = self.parse_list(in_range=False)
            word, stoks, spos = stop
            if word != "end":
                raise self.err("expected {{end}} after range's {{else}} block", spos)
        if len(stoks) > 1:
            raise self.err(f"unexpected {stoks[1].text!r} in {{{{end}}}}", stoks[1].pos)
        return Range(pipe, body, else_body)

    def parse_pipeline(self, toks: list[_Tok], start: int, pos: int, allow_decl: bool, range_decl: bool = False) -> Pipeline:
        pipe = Pipeline(pos=pos)
        i = start
        # declarations: $x := / $x = / $i, $m :=
        if allow_decl and i < len(toks) and toks[i].kind == "var" and "." not in toks[i].text:
            j = i
            names = [toks[j].text[1:]]
            j += 1
            if range_decl and j < len(toks) and toks[j].kind == "comma":
                if j + 1 < len(toks) and toks[j + 1].kind == "var" and "." not in toks[j + 1].text:
                    names.append(toks[j + 1].text[1:])
                    j += 2
                else:
                    raise self.err("expected a second variable after ',' in range", toks[j].pos)
            if j < len(toks) and toks[j].kind in ("declare", "assign"):
                if any(n == "" for n in names):
                    raise self.err("cannot declare or assign to $", toks[i].pos)
                pipe.decl = names
                pipe.assign = toks[j].kind == "assign"
                i = j + 1
            elif len(names) == 2:
                raise self.err("range can only initialize variables with ':='", toks[j].pos if j < len(toks) else pos)
        if i >= len(toks):
            raise self.err("missing value for command", pos)
        cmd: list = []
        while i < len(toks):
            t = toks[i]
            if t.kind == "pipe":
                if not cmd:
                    raise self.err("missing command before '|'", t.pos)
                pipe.cmds.append(cmd)
                cmd = []
                i += 1
                continue
            if t.kind == "rparen":
                raise self.err("unexpected ')'", t.pos)
            node, i = self.parse_operand(toks, i)
            cmd.append(node)
        if not cmd:
            raise self.err("missing command after '|'", toks[-1].pos)
        pipe.cmds.append(cmd)
        for k, c in enumerate(pipe.cmds):
            if k > 0 and not isinstance(c[0], Ident):
                raise self.err("non-function command in pipeline stage", getattr(c[0], "pos", pos))
        return pipe

    def parse_operand(self, toks: list[_Tok], i: int):
        t = toks[i]
        k = t.kind
        if k == "field":
            return Field(t.text[1:].split("."), t.pos), i + 1
        if k == "dot":
            return Field([], t.pos), i + 1
        if k == "var":
            parts = t.text[1:].split(".")
            return Var(parts[0], parts[1:], t.pos), i + 1
        if k in ("string", "raw", "char"):
            return Lit(_unquote(t, self.src), t.pos), i + 1
        if k == "number":
            return Lit(_number(t, self.src), t.pos), i + 1
        if k == "ident":
            if t.text in ("true", "false"):
                return Lit(t.text == "true", t.pos), i + 1
            if t.text == "nil":
                return Lit(None, t.pos), i + 1
            if t.text in _KEYWORDS:
                raise self.err(f"unexpected keyword {t.text!r} inside an action", t.pos)
            if t.text not in _FUNCS:
                raise self.err(f'function "{t.text}" not defined', t.pos)
            return Ident(t.text, t.pos), i + 1
        if k == "lparen":
            depth = 0
            j = i
            while j < len(toks):
                if toks[j].kind == "lparen":
                    depth += 1
                elif toks[j].kind == "rparen":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            else:
                raise self.err("unclosed '(' ", t.pos)
            if j == i + 1:
                raise self.err("missing value for parenthesized pipeline", t.pos)
            inner = self.parse_pipeline(toks[i + 1 : j], 0, t.pos, allow_decl=False)
            names: list[str] = []
            j += 1
            if j < len(toks) and toks[j].kind == "field" and not toks[j].space_before:
                names = toks[j].text[1:].split(".")
                j += 1
            return Sub(inner, names, t.pos), j
        if k in ("declare", "assign"):
            raise self.err(f"unexpected {t.text!r} (variables are declared as '$name := value')", t.pos)
        raise self.err(f"unexpected {t.text!r}", t.pos)


# ---------------------------------------------------------------------------------------- execution


class _BreakSignal(Exception):
    pass


class _ContinueSignal(Exception):
    pass


def _truth(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (str, bytes, list, tuple, dict, set)):
        return len(v) > 0
    return True


def _float_digits(f: float) -> tuple[str, str, int]:
    """(sign, significant digits, decimal exponent of the first digit) of the shortest repr of a finite
    non-zero float - the digits Go's strconv picks with precision -1."""
    r = repr(f)
    mant, _, exp = r.partition("e")
    sign = "-" if mant.startswith("-") else ""
    mant = mant.lstrip("-")
    intpart, _, frac = mant.partition(".")
    if frac == "0":
        frac = ""
    digits = (intpart + frac).lstrip("0")
    e10 = int(exp or 0)
    if intpart.strip("0"):
        e10 += len(intpart.lstrip("0")) - 1
    else:
        e10 -= len(frac) - len(frac.lstrip("0")) + 1
    return sign, digits.rstrip("0") or "0", e10


def _plain_decimal(sign: str, digits: str, e10: int) -> str:
    if e10 >= len(digits) - 1:
        return sign + digits + "0" * (e10 - len(digits) + 1)
    if e10 >= 0:
        return sign + digits[: e10 + 1] + "." + digits[e10 + 1 :]
    return sign + "0." + "0" * (-e10 - 1) + digits


def _go_float(f: float) -> str:
    """A float64 as fmt's %v prints it (strconv 'g', shortest): 0.0001, 123456, 1e+06, 1.5e-05."""
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if math.isnan(f):
        return "NaN"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign, digits, e10 = _float_digits(f)
    if e10 < -4 or e10 >= 6:
        m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{m}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"
    return _plain_decimal(sign, digits, e10)


def _fmt(v: Any) -> str:
    if isinstance(v, _GoValue):
        return v._go_print()
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, (list, tuple)):
        return _fmt_list(v)
    if isinstance(v, dict):
        return "map[" + " ".join(f"{_fmt(k)}:{_fmt_nested(v[k])}" for k in sorted(v, key=str)) + "]"
    return str(v)


def _fmt_nested(v: Any) -> str:
    """A value inside a slice, map or struct, as fmt prints it there (nil is ``<nil>``)."""
    return "<nil>" if v is None else _fmt(v)


def _fmt_list(v: Any) -> str:
    return "[" + " ".join(_fmt_nested(x) for x in v) + "]"


def _sprint(*args: Any) -> str:
    out = []
    for k, a in enumerate(args):
        if k > 0 and not isinstance(a, str) and not isinstance(args[k - 1], str):
            out.append(" ")
        out.append(_fmt(a) if a is not None else "<nil>")
    return "".join(out)


def _printf(fmt: str, *args: Any) -> str:
    it = iter(args)

    def sub(m: re.Match) -> str:
        verb = m.group(2)
        if verb == "%":
            return "%"
        try:
            a = next(it)
        except StopIteration:
            return f"%!{verb}(MISSING)"
        flags = m.group(1)
        if verb == "q":
            return json.dumps(a if isinstance(a, str) else _fmt(a), ensure_ascii=False)
        if verb in "dfeg" and isinstance(a, (int, float)) and not isinstance(a, bool):
            return ("%" + flags + verb) % a
        if verb == "x" and isinstance(a, int):
            return ("%" + flags + "x") % a
        s = _fmt(a)
        return ("%" + flags + "s") % s if flags else s

    return re.sub(r"%([-+ #0]*\d*(?:\.\d+)?)([a-zA-Z%])", sub, fmt)


class _MarshalError(Exception):
    pass


_JSON_ESC_RE = re.compile(r'["\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')
_JSON_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _json_esc(m: re.Match, short: dict[str, str] = _JSON_SHORT) -> str:
    ch = m.group()
    if ch in short:
        return short[ch]
    o = ord(ch)
    if 0xD800 <= o <= 0xDFFF:  # a lone surrogate: Go has no such string and writes U+FFFD for bad UTF-8
        return "\\ufffd"
    return f"\\u{o:04x}"


_EASYJSON_SHORT = {k: v for k, v in _JSON_SHORT.items() if k not in "\b\f"}


def _json_str(s: str, easyjson: bool = False) -> str:
    """A string as encoding/json writes it: HTML-safe (``<>&`` as ``\\u003c\\u003e\\u0026``), U+2028/9
    escaped, other non-ASCII as is. ``easyjson``: the key writer of the ordered maps Ollama keeps tool
    properties in, which writes ``\\b``/``\\f`` as ``\\u0008``/``\\u000c``."""
    if easyjson:
        return '"' + _JSON_ESC_RE.sub(lambda m: _json_esc(m, _EASYJSON_SHORT), s) + '"'
    return '"' + _JSON_ESC_RE.sub(_json_esc, s) + '"'


def _json_float(f: float) -> str:
    """A float64 as encoding/json writes it: 'f' format, 'e' below 1e-6 and from 1e21 (as 1e-7, 1e+21)."""
    if math.isinf(f) or math.isnan(f):
        raise _MarshalError(f"json: unsupported value: {_go_float(f)}")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign, digits, e10 = _float_digits(f)
    if abs(f) < 1e-6 or abs(f) >= 1e21:
        m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{m}e{'-' if e10 < 0 else '+'}{abs(e10) if e10 < 0 else f'{e10:02d}'}"
    return _plain_decimal(sign, digits, e10)


def _marshal(v: Any) -> str:
    """``json.Marshal`` of a template value: Go types by their tags, maps with sorted keys, compact."""
    if isinstance(v, _GoValue):
        return v._go_marshal()
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _json_float(v)
    if isinstance(v, str):
        return _json_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_marshal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{_json_str(_fmt(k))}:{_marshal(v[k])}" for k in sorted(v, key=str)) + "}"
    return _json_str(str(v))


def _go_json(v: Any) -> str:
    """Ollama's ``json`` template function (and the ``String`` methods of its tool types): the marshalled
    value, or the empty string when encoding/json refuses it (NaN, infinities)."""
    try:
        return _marshal(v)
    except _MarshalError:
        return ""


# ------------------------------------------------------------- Ollama's Go types for tools and tool calls
#
# Ollama hands templates its own types (template/template.go: templateTools, templateTool,
# templateToolFunction, templateToolFunctionParameters, templateProperties, templateToolCall,
# templateToolCallFunction, templateArgs; api/types.go: ToolProperty, PropertyType, ToolPropertiesMap).
# Some have a String method that returns their JSON, the others print as fmt prints a struct; all
# marshal by their json tags. The classes below are those values, built from the request's JSON as
# encoding/json decodes it into them (unknown keys dropped, keys matched case-insensitively, the
# last one winning, numbers in ``any`` as float64).


class _GoValue:
    """A value of one of Ollama's Go types: printed as fmt prints it, marshalled as encoding/json does."""

    __slots__ = ()

    def _go_print(self) -> str:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def _go_marshal(self) -> str:  # pragma: no cover
        raise NotImplementedError


class _GoSlice(list, _GoValue):
    """A Go slice: ``nil`` tells a nil slice (JSON ``null``) from an empty one (``[]``); ``stringer``: its
    type's String method returns its JSON (``templateTools``)."""

    __slots__ = ("nil", "stringer")

    def __init__(self, items: Any = (), nil: bool = False, stringer: bool = False) -> None:
        super().__init__(items)
        self.nil = nil and not self
        self.stringer = stringer

    def _go_print(self) -> str:
        return _go_json(self) if self.stringer else _fmt_list(self)

    def _go_marshal(self) -> str:
        return "null" if self.nil else "[" + ",".join(_marshal(x) for x in self) + "]"


class _PropertyType(_GoSlice):
    """api.PropertyType: a JSON type name or a list of them; one name prints and marshals as the string."""

    __slots__ = ()

    def _go_print(self) -> str:
        if not self:
            return ""
        return self[0] if len(self) == 1 else _fmt_list(self)

    def _go_marshal(self) -> str:
        return _json_str(self[0]) if len(self) == 1 else super()._go_marshal()


class _GoMap(dict, _GoValue):
    """A Go map whose String method returns its JSON (``templateArgs``, ``templateProperties``: keys
    sorted, a nil map prints as ``{}`` and marshals as ``null``), or with ``ordered`` an api
    ``ToolPropertiesMap`` (keys in the request's order)."""

    __slots__ = ("nil", "ordered")

    def __init__(self, items: Any = (), nil: bool = False, ordered: bool = False) -> None:
        super().__init__(items)
        self.nil = nil and not self
        self.ordered = ordered

    def _go_print(self) -> str:
        # an ordered map is held by pointer, which fmt prints as an address; its JSON is the useful stand-in
        return "{}" if self.nil else _go_json(self)

    def _go_marshal(self) -> str:
        if self.nil:
            return "null"
        keys = list(self) if self.ordered else sorted(self)
        return "{" + ",".join(f"{_json_str(k, easyjson=self.ordered)}:{_marshal(self[k])}" for k in keys) + "}"


class _GoStruct(_GoValue):
    """A Go struct: ``FIELDS`` are (Go field, json key, omitempty: "" never, "empty" for a zero string,
    slice or map, "nil" for a nil interface or pointer). Without a String method (``STRINGER``) fmt prints
    ``{field field ...}``; a template can read only the declared fields."""

    GO_TYPE = ""
    FIELDS: tuple[tuple[str, str, str], ...] = ()
    STRINGER = False

    def __init__(self, **values: Any) -> None:
        for name, _, _ in self.FIELDS:
            setattr(self, name, values[name])

    def has_field(self, name: str) -> bool:
        return any(name == f for f, _, _ in self.FIELDS)

    def _go_print(self) -> str:
        if self.STRINGER:
            return _go_json(self)
        return "{" + " ".join(_fmt_nested(getattr(self, f)) for f, _, _ in self.FIELDS) + "}"

    def _go_marshal(self) -> str:
        parts = []
        for name, key, omit in self.FIELDS:
            v = getattr(self, name)
            if (omit == "nil" and v is None) or (omit == "empty" and (v is None or v == "" or (
                    isinstance(v, (list, dict)) and not v))):
                continue
            parts.append(f"{_json_str(key)}:{_marshal(v)}")
        return "{" + ",".join(parts) + "}"

    def __repr__(self) -> str:
        return f"{self.GO_TYPE}{self._go_print()}"


class _Tool(_GoStruct):
    GO_TYPE = "template.templateTool"
    FIELDS = (("Type", "type", ""), ("Items", "items", "nil"), ("Function", "function", ""))
    STRINGER = True


class _ToolFunction(_GoStruct):
    GO_TYPE = "template.templateToolFunction"
    FIELDS = (("Name", "name", ""), ("Description", "description", ""), ("Parameters", "parameters", ""))


class _ToolParameters(_GoStruct):
    GO_TYPE = "template.templateToolFunctionParameters"
    FIELDS = (("Type", "type", ""), ("Defs", "$defs", "nil"), ("Items", "items", "nil"),
              ("Required", "required", "empty"), ("Properties", "properties", ""))


class _ToolProperty(_GoStruct):
    GO_TYPE = "api.ToolProperty"
    FIELDS = (("AnyOf", "anyOf", "empty"), ("Type", "type", "empty"), ("Items", "items", "nil"),
              ("Description", "description", "empty"), ("Enum", "enum", "empty"),
              ("Properties", "properties", "nil"), ("Required", "required", "empty"))


class _ToolCall(_GoStruct):  # no json tags: marshalled with the Go field names
    GO_TYPE = "template.templateToolCall"
    FIELDS = (("ID", "ID", ""), ("Function", "Function", ""))


class _ToolCallFunction(_GoStruct):
    GO_TYPE = "template.templateToolCallFunction"
    FIELDS = (("Index", "Index", ""), ("Name", "Name", ""), ("Arguments", "Arguments", ""))


_ABSENT = object()


def _key(obj: Any, name: str) -> Any:
    """The value encoding/json decodes into the struct field tagged ``name``: keys match it exactly or
    case-insensitively, and the last match wins."""
    found: Any = _ABSENT
    if isinstance(obj, dict):
        low = name.lower()
        for k, v in obj.items():
            if isinstance(k, str) and k.lower() == low:
                found = v
    return found


def _str_field(obj: Any, name: str) -> str:
    v = _key(obj, name)
    if v is _ABSENT or v is None:  # null leaves a string field as it is
        return ""
    return v if isinstance(v, str) else _fmt(v)


def _obj_field(obj: Any, name: str) -> dict:
    v = _key(obj, name)
    return v if isinstance(v, dict) else {}


def _any_value(v: Any) -> Any:
    """A JSON value decoded into ``any``: objects become maps, numbers float64."""
    if isinstance(v, dict):
        return {str(k): _any_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_any_value(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool):
        try:
            return float(v)
        except OverflowError:
            return v
    return v


def _any_field(obj: Any, name: str) -> Any:
    v = _key(obj, name)
    return None if v is _ABSENT else _any_value(v)


def _slice_field(obj: Any, name: str, elem: Any) -> _GoSlice:
    v = _key(obj, name)
    if not isinstance(v, list):
        return _GoSlice(nil=True)
    return _GoSlice([elem(x) for x in v])


def _string_elem(x: Any) -> str:
    return "" if x is None else x if isinstance(x, str) else _fmt(x)


def _property_type(obj: Any) -> _PropertyType:
    v = _key(obj, "type")
    if v is _ABSENT:
        return _PropertyType(nil=True)
    if isinstance(v, list):
        return _PropertyType([_string_elem(x) for x in v])
    return _PropertyType([_string_elem(v)])  # its UnmarshalJSON makes null [""]


def _tool_property(obj: Any) -> _ToolProperty:
    props = _key(obj, "properties")
    return _ToolProperty(
        AnyOf=_slice_field(obj, "anyOf", _tool_property),
        Type=_property_type(obj),
        Items=_any_field(obj, "items"),
        Description=_str_field(obj, "description"),
        Enum=_slice_field(obj, "enum", _any_value),
        Properties=_GoMap({str(k): _tool_property(v) for k, v in props.items()}, ordered=True)
        if isinstance(props, dict) else None,
        Required=_slice_field(obj, "required", _string_elem),
    )


def _template_tool(obj: Any) -> _Tool:
    fn = _obj_field(obj, "function")
    params = _obj_field(fn, "parameters")
    props = _key(params, "properties")
    return _Tool(
        Type=_str_field(obj, "type"),
        Items=_any_field(obj, "items"),
        Function=_ToolFunction(
            Name=_str_field(fn, "name"),
            Description=_str_field(fn, "description"),
            Parameters=_ToolParameters(
                Type=_str_field(params, "type"),
                Defs=_any_field(params, "$defs"),
                Items=_any_field(params, "items"),
                Required=_slice_field(params, "required", _string_elem),
                Properties=_GoMap({str(k): _tool_property(v) for k, v in props.items()})
                if isinstance(props, dict) else _GoMap(nil=True),
            ),
        ),
    )


def _template_tools(tools: Any) -> _GoSlice:
    """``.Tools``: Ollama's templateTools, a nil one (printing ``null``) when the request has none."""
    if tools is None:
        return _GoSlice(nil=True, stringer=True)
    if isinstance(tools, dict):
        tools = [tools]
    return _GoSlice([_template_tool(t) for t in tools], stringer=True)


def _template_tool_call(obj: Any) -> _ToolCall:
    fn = _obj_field(obj, "function")
    args = _key(fn, "arguments")
    if isinstance(args, str):  # OpenAI-style arguments: a JSON text
        try:
            args = json.loads(args)
        except ValueError:
            args = None
    index = _key(fn, "index")
    return _ToolCall(
        ID=_str_field(obj, "id"),
        Function=_ToolCallFunction(
            Index=int(index) if isinstance(index, (int, float)) and not isinstance(index, bool) else 0,
            Name=_str_field(fn, "name"),
            Arguments=_GoMap({str(k): _any_value(v) for k, v in args.items()}) if isinstance(args, dict)
            else _GoMap(nil=True),
        ),
    )


def _template_tool_calls(calls: Any) -> _GoSlice:
    """A message's ``.ToolCalls``: Ollama's []templateToolCall, nil when the message has none."""
    if isinstance(calls, dict):
        calls = [calls]
    if not isinstance(calls, (list, tuple)) or not calls:
        return _GoSlice(nil=True)
    return _GoSlice([_template_tool_call(c) for c in calls])


_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
             "array": "any[]", "object": "Record<string, any>", "null": "null"}


def _to_typescript_type(v: Any) -> str:
    """Ollama's ``toTypeScriptType``: a tool property's type as TypeScript (``any`` for other values)."""
    if not isinstance(v, _ToolProperty):
        return "any"
    if v.AnyOf:
        return " | ".join(_to_typescript_type(p) for p in v.AnyOf)
    if not v.Type:
        return "any"
    return " | ".join(_TS_TYPES.get(t, "any") for t in v.Type)


def _cmp_ok(a: Any, b: Any, name: str) -> None:
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        if not (isinstance(a, bool) and isinstance(b, bool)) and name not in ("eq", "ne"):
            raise TypeError(f"incompatible types for comparison: {type(a).__name__} and {type(b).__name__}")
        return
    if isinstance(a, num) and isinstance(b, num):
        return
    if isinstance(a, str) and isinstance(b, str):
        return
    if a is None or b is None:
        if name in ("eq", "ne"):
            return
    raise TypeError(f"incompatible types for comparison: {type(a).__name__} and {type(b).__name__}")


def _eq(a: Any, *bs: Any) -> bool:
    if not bs:
        raise TypeError("missing argument for comparison")
    for b in bs:
        _cmp_ok(a, b, "eq")
        if a == b:
            return True
    return False


def _ne(a: Any, b: Any) -> bool:
    _cmp_ok(a, b, "ne")
    return a != b


def _order(name: str):
    def f(a: Any, b: Any) -> bool:
        _cmp_ok(a, b, name)
        if a is None or b is None or isinstance(a, bool):
            raise TypeError(f"invalid type for comparison: {type(a).__name__}")
        return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[name]

    return f


def _len(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, str):
        return len(v.encode("utf-8"))  # Go's len counts bytes
    if isinstance(v, (list, tuple, dict, bytes, set)):
        return len(v)
    raise TypeError(f"len of type {type(v).__name__}")


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if v is None:
            return None
        if isinstance(v, dict):
            v = v.get(k)
        elif isinstance(v, (list, tuple, str)):
            if not isinstance(k, int) or isinstance(k, bool):
                raise TypeError(f"cannot index slice/array with type {type(k).__name__}")
            if isinstance(v, str):
                b = v.encode("utf-8")
                if not 0 <= k < len(b):
                    raise IndexError(f"index out of range: {k}")
                v = b[k]
                continue
            if not 0 <= k < len(v):
                raise IndexError(f"index out of range: {k}")
            v = v[k]
        else:
            raise TypeError(f"can't index item of type {type(v).__name__}")
    return v


def _slice(v: Any, *idx: Any) -> Any:
    if len(idx) > 3:
        raise TypeError("too many slice indexes")
    if v is None:
        if any(idx):
            raise IndexError("slice of nil with non-zero index")
        return None
    seq = v.encode("utf-8") if isinstance(v, str) else v
    if not isinstance(seq, (list, tuple, bytes)):
        raise TypeError(f"can't slice item of type {type(v).__name__}")
    n = len(seq)
    lo = idx[0] if len(idx) > 0 else 0
    hi = idx[1] if len(idx) > 1 else n
    if not (0 <= lo <= hi <= n):
        raise IndexError(f"slice index out of range: [{lo}:{hi}] with length {n}")
    out = seq[lo:hi]
    if isinstance(v, _GoSlice):  # a slice keeps its type (a slice of .Tools still prints as JSON)
        return type(v)(out, stringer=v.stringer)
    return out.decode("utf-8", "replace") if isinstance(v, str) else list(out)


_FUNCS: dict[str, Any] = {
    "eq": _eq,
    "ne": _ne,
    "lt": _order("lt"),
    "le": _order("le"),
    "gt": _order("gt"),
    "ge": _order("ge"),
    "and": None,  # lazy, handled in _call
    "or": None,
    "not": lambda v: not _truth(v),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": _sprint,
    "println": lambda *a: " ".join(_fmt(x) if x is not None else "<nil>" for x in a) + "\n",
    "printf": _printf,
    "json": _go_json,
    "toTypeScriptType": _to_typescript_type,
}


def _get_field(obj: Any, name: str, pos: int, src: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, _GoStruct):
        if not obj.has_field(name):
            raise TemplateRenderError(
                f"can't evaluate field {name} in type {obj.GO_TYPE} at {_where(src, pos)} of the template"
            )
        return getattr(obj, name)
    if isinstance(obj, _GoMap):  # a Go map: the key as written
        return obj.get(name)
    if isinstance(obj, dict):
        if name in obj:
            return obj[name]
        low = name[:1].lower() + name[1:]
        if low in obj:
            return obj[low]
        lower = name.lower()
        if lower in obj:
            return obj[lower]
        # snake_case of CamelCase (ToolCalls -> tool_calls)
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        return obj.get(snake)
    if isinstance(obj, (str, int, float, bool, list, tuple)):
        raise TemplateRenderError(
            f"can't evaluate field {name} in type {type(obj).__name__} at {_where(src, pos)} of the template"
        )
    return getattr(obj, name, None)


MAX_STEPS = 200_000  # actions, text pieces and range iterations of one execution
MAX_OUTPUT = 4_000_000  # characters of one rendered prompt


class _Scope:
    def __init__(self, root: Any, max_steps: int = MAX_STEPS, max_output: int = MAX_OUTPUT) -> None:
        self.frames: list[dict[str, Any]] = [{"": root}]
        self.steps_left = max_steps
        self.max_steps = max_steps
        self.output_left = max_output
        self.max_output = max_output

    def tick(self, out_chars: int = 0) -> None:
        """Count one step (and the characters it wrote): a template that would run away - a range over
        millions, a prompt of gigabytes - stops with an error instead of taking the server's time."""
        self.steps_left -= 1
        self.output_left -= out_chars
        if self.steps_left < 0:
            raise TemplateRenderError(f"the template ran more than {self.max_steps} steps; it is not a chat "
                                      "template (a range over a large number?)")
        if self.output_left < 0:
            raise TemplateRenderError(f"the template wrote more than {self.max_output} characters")

    def push(self) -> None:
        self.frames.append({})

    def pop(self) -> None:
        self.frames.pop()

    def declare(self, name: str, value: Any) -> None:
        self.frames[-1][name] = value

    def lookup(self, name: str, pos: int, src: str) -> Any:
        for f in reversed(self.frames):
            if name in f:
                return f[name]
        raise TemplateRenderError(f"undefined variable ${name} at {_where(src, pos)} of the template")

    def assign(self, name: str, value: Any, pos: int, src: str) -> None:
        for f in reversed(self.frames):
            if name in f:
                f[name] = value
                return
        raise TemplateRenderError(f"undefined variable ${name} (assigned before ':=') at {_where(src, pos)} of the template")


class GoTemplate:
    """A parsed template; :meth:`render` it with any number of data dicts."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.nodes = _Parser(source).parse()

    # -- public
    def render(self, data: Any, max_steps: int = MAX_STEPS, max_output: int = MAX_OUTPUT) -> str:
        out: list[str] = []
        scope = _Scope(data, max_steps, max_output)
        try:
            self._walk(self.nodes, data, scope, out)
        except (_BreakSignal, _ContinueSignal):  # pragma: no cover - parser forbids this
            raise TemplateRenderError("break/continue outside range") from None
        return "".join(out)

    def vars(self) -> list[str]:
        """Identifiers the template refers to, lower-cased (as Ollama's ``Template.Vars``)."""
        found: set[str] = set()

        def expr(e: Any) -> None:
            if isinstance(e, Field):
                found.update(n.lower() for n in e.names)
            elif isinstance(e, Var):
                found.add(("$" + e.name).lower())
                found.update(n.lower() for n in e.names)
            elif isinstance(e, Sub):
                pipe(e.pipe)
                found.update(n.lower() for n in e.names)

        def pipe(p: Pipeline) -> None:
            for c in p.cmds:
                for a in c:
                    expr(a)

        def walk(nodes: list) -> None:
            for n in nodes:
                if isinstance(n, Action):
                    pipe(n.pipe)
                elif isinstance(n, Branch):
                    for cond, body in n.arms:
                        pipe(cond)
                        walk(body)
                    if n.else_body:
                        walk(n.else_body)
                elif isinstance(n, Range):
                    pipe(n.pipe)
                    walk(n.body)
                    if n.else_body:
                        walk(n.else_body)

        walk(self.nodes)
        return sorted(found)

    # -- execution
    def _walk(self, nodes: list, dot: Any, scope: _Scope, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, Text):
                scope.tick(len(node.text))
                out.append(node.text)
            elif isinstance(node, Action):
                v = self._pipeline(node.pipe, dot, scope)
                if not node.pipe.decl:
                    text = _fmt(v)
                    scope.tick(len(text))
                    out.append(text)
            elif isinstance(node, Branch):
                self._branch(node, dot, scope, out)
            elif isinstance(node, Range):
                self._range(node, dot, scope, out)
            elif isinstance(node, Break):
                raise _BreakSignal()
            elif isinstance(node, Continue):
                raise _ContinueSignal()

    def _branch(self, node: Branch, dot: Any, scope: _Scope, out: list[str]) -> None:
        scope.push()
        try:
            for (cond, body), kind in zip(node.arms, node.arm_kinds):
                v = self._pipeline(cond, dot, scope)
                if _truth(v):
                    self._walk(body, v if kind == "with" else dot, scope, out)
                    return
            if node.else_body is not None:
                self._walk(node.else_body, dot, scope, out)
        finally:
            scope.pop()

    def _range(self, node: Range, dot: Any, scope: _Scope, out: list[str]) -> None:
        decl = node.pipe.decl
        pipe = Pipeline(node.pipe.pos, [], False, node.pipe.cmds)
        scope.push()
        try:
            v = self._pipeline(pipe, dot, scope)
            if v is None:
                pairs: Any = []
            elif isinstance(v, dict):
                pairs = [(k, v[k]) for k in sorted(v, key=str)]
            elif isinstance(v, (list, tuple)):
                pairs = list(enumerate(v))
            elif isinstance(v, int) and not isinstance(v, bool):
                pairs = ((i, i) for i in range(v)) if v > 0 else []  # lazily: the step budget bounds it
            elif isinstance(v, str):
                raise TemplateRenderError(
                    f"range can't iterate over a string at {_where(self.source, node.pipe.pos)} of the template"
                )
            else:
                raise TemplateRenderError(
                    f"range can't iterate over {type(v).__name__} at {_where(self.source, node.pipe.pos)} of the template"
                )
            if not pairs:
                if node.else_body is not None:
                    self._walk(node.else_body, dot, scope, out)
                return
            for k, elem in pairs:
                scope.tick()
                scope.push()
                try:
                    if len(decl) == 1:
                        scope.declare(decl[0], elem)
                    elif len(decl) == 2:
                        scope.declare(decl[0], k)
                        scope.declare(decl[1], elem)
                    self._walk(node.body, elem, scope, out)
                except _ContinueSignal:
                    pass
                except _BreakSignal:
                    break
                finally:
                    scope.pop()
        finally:
            scope.pop()

    def _pipeline(self, pipe: Pipeline, dot: Any, scope: _Scope) -> Any:
        value: Any = _NOTHING
        for cmd in pipe.cmds:
            value = self._command(cmd, dot, scope, value)
        if pipe.decl:
            if pipe.assign:
                scope.assign(pipe.decl[0], value, pipe.pos, self.source)
            else:
                scope.declare(pipe.decl[0], value)
        return value

    def _command(self, cmd: list, dot: Any, scope: _Scope, final: Any) -> Any:
        head = cmd[0]
        if isinstance(head, Ident):
            return self._call(head, cmd[1:], dot, scope, final)
        if len(cmd) > 1:
            raise TemplateRenderError(
                f"can't give argument to non-function at {_where(self.source, getattr(head, 'pos', 0))} of the template"
            )
        if final is not _NOTHING:
            raise TemplateRenderError(
                f"can't give argument to non-function at {_where(self.source, getattr(head, 'pos', 0))} of the template"
            )
        return self._arg(head, dot, scope)

    def _arg(self, node: Any, dot: Any, scope: _Scope) -> Any:
        if isinstance(node, Lit):
            return node.value
        if isinstance(node, Field):
            v = dot
            for name in node.names:
                v = _get_field(v, name, node.pos, self.source)
            return v
        if isinstance(node, Var):
            v = scope.lookup(node.name, node.pos, self.source)
            for name in node.names:
                v = _get_field(v, name, node.pos, self.source)
            return v
        if isinstance(node, Sub):
            v = self._pipeline(node.pipe, dot, scope)
            for name in node.names:
                v = _get_field(v, name, node.pos, self.source)
            return v
        if isinstance(node, Ident):
            return self._call(node, [], dot, scope, _NOTHING)
        raise AssertionError(node)

    def _call(self, fn: Ident, args: list, dot: Any, scope: _Scope, final: Any) -> Any:
        name = fn.name
        where = f"{_where(self.source, fn.pos)} of the template"
        thunks = [lambda a=a: self._arg(a, dot, scope) for a in args]
        if final is not _NOTHING:
            thunks.append(lambda: final)
        if name in ("and", "or"):
            if not thunks:
                raise TemplateRenderError(f"wrong number of args for {name}: want at least 1 got 0 at {where}")
            v = None
            for t in thunks:
                v = t()
                if (name == "and" and not _truth(v)) or (name == "or" and _truth(v)):
                    return v
            return v
        values = [t() for t in thunks]
        try:
            return _FUNCS[name](*values)
        except TemplateRenderError:
            raise
        except (TypeError, IndexError, ValueError) as e:
            raise TemplateRenderError(f"error calling {name}: {e} at {where}") from None


_NOTHING = object()


@functools.lru_cache(maxsize=64)
def parse(template: str) -> GoTemplate:
    """Parse (and cache) a Go template."""
    return GoTemplate(template)


def render(template: str, data: dict) -> str:
    """Render a Go template with ``data`` (a dict of Ollama's template values)."""
    return parse(template).render(data)


def template_vars(template: str) -> list[str]:
    return parse(template).vars()


# ------------------------------------------------------------------------- Ollama's Template.Execute


def _norm_message(m: Any) -> dict:
    if not isinstance(m, dict):
        m = dict(m)
    out = {
        "Role": m.get("role", m.get("Role", "")),
        "Content": m.get("content", m.get("Content", "")) or "",
    }
    for src_key, dst in (("images", "Images"), ("thinking", "Thinking"), ("tool_name", "ToolName"),
                         ("tool_call_id", "ToolCallID"), ("name", "Name")):
        if m.get(src_key) is not None:
            out[dst] = m[src_key]
    out["ToolCalls"] = _template_tool_calls(m.get("tool_calls", m.get("ToolCalls")))
    return out


def _collate(messages: list[dict]) -> tuple[str, list[dict]]:
    system: list[str] = []
    collated: list[dict] = []
    for m in messages:
        if m["Role"] == "system":
            system.append(m["Content"])
        if collated and collated[-1]["Role"] == m["Role"] and m["Role"] != "tool":
            collated[-1] = dict(collated[-1], Content=collated[-1]["Content"] + "\n\n" + m["Content"])
        else:
            collated.append(dict(m))
    return "\n\n".join(system), collated


def _cut_after_response(nodes: list) -> list:
    """Ollama's deleteNode: keep everything up to the first ``.Response`` action, drop what follows."""
    state = {"cut": False}

    def walk_list(ns: list) -> list:
        kept = []
        for n in ns:
            if state["cut"]:
                continue
            r = walk(n)
            if r is not None:
                kept.append(r)
        return kept

    def walk_pipe(p: Pipeline) -> Pipeline | None:
        cmds = []
        for c in p.cmds:
            args = []
            for a in c:
                if state["cut"]:
                    continue
                if isinstance(a, Field) and "Response" in a.names:
                    state["cut"] = True
                args.append(a)
            if args:
                cmds.append(args)
        if not cmds:
            return None
        return Pipeline(p.pos, p.decl, p.assign, cmds)

    def walk(n: Any) -> Any:
        if isinstance(n, Text):
            return n
        if isinstance(n, Action):
            p = walk_pipe(n.pipe)
            return Action(p) if p else None
        if isinstance(n, Branch):
            arms = [(c, walk_list(b)) for c, b in n.arms]
            els = walk_list(n.else_body) if n.else_body is not None else None
            return Branch(n.kind, arms, els, n.arm_kinds)
        if isinstance(n, Range):
            body = walk_list(n.body)
            els = walk_list(n.else_body) if n.else_body is not None else None
            return Range(n.pipe, body, els)
        return n

    return walk_list(nodes)


def render_ollama(template: str, messages: list[dict], tools: list | None = None, think: bool = False) -> str:
    """Render a chat prompt as Ollama's ``template.Execute`` does for ``/api/chat``.

    ``messages`` use Ollama's JSON shape (``{"role": ..., "content": ...}``, an assistant's
    ``tool_calls`` as ``[{"function": {"name": ..., "arguments": {...}}}]``, a tool result's
    ``tool_name``); the caller has already prepended the model's SYSTEM when the chat has no system
    message (Ollama's chat handler does that). ``tools`` is the request's list of tool definitions
    (``[{"type": "function", "function": {"name", "description", "parameters"}}]``). Both reach the
    template as Ollama's Go values, so ``{{ . }}`` in ``range .Tools``, ``{{ .Function.Arguments }}`` and
    ``json`` print what Ollama prints.
    """
    tmpl = parse(template)
    msgs = [_norm_message(m) for m in messages]
    system, msgs = _collate(msgs)
    names = tmpl.vars()
    if "messages" in names or "document" in names:
        return tmpl.render(
            {"System": system, "Messages": msgs, "Tools": _template_tools(tools), "Response": "", "Think": think,
             "IsThinkSet": False, "Query": "", "Document": "", "Instruction": ""}
        )
    # legacy template: rendered turn by turn with .System/.Prompt/.Response
    if "response" not in names:
        nodes = tmpl.nodes + [Action(Pipeline(len(template), [], False, [[Field(["Response"], len(template))]]))]
    else:
        nodes = tmpl.nodes
    legacy = GoTemplate.__new__(GoTemplate)
    legacy.source, legacy.nodes = template, nodes
    out: list[str] = []
    cur = {"System": "", "Prompt": "", "Response": ""}

    def execute() -> None:
        out.append(legacy.render(dict(cur, Think=think, IsThinkSet=False)))
        cur.update(System="", Prompt="", Response="")

    for m in msgs:
        role = m["Role"]
        if role == "system":
            if cur["Prompt"] or cur["Response"]:
                execute()
            cur["System"] = m["Content"]
        elif role == "user":
            if cur["Response"]:
                execute()
            cur["Prompt"] = m["Content"]
        elif role == "assistant":
            cur["Response"] = m["Content"]
    last = GoTemplate.__new__(GoTemplate)
    last.source, last.nodes = template, _cut_after_response(nodes)
    out.append(last.render(dict(cur, Think=think, IsThinkSet=False)))
    return "".join(out)
