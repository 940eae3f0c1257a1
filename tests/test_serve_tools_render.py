"""Tool definitions and tool calls in Go templates, printed as Ollama prints them.

Ollama hands a template its own Go types (template/template.go: templateTools, templateTool,
templateToolFunction, templateToolCall, templateArgs, templateProperties; api/types.go: ToolProperty,
PropertyType): ``{{ . }}`` of a tool, ``{{ .Tools }}``, ``{{ .Function.Arguments }}`` and
``{{ .Function.Parameters.Properties }}`` print JSON through String methods (encoding/json: fields in
declaration order with omitempty, map keys sorted, compact, ``<``/``>``/``&`` escaped, non-ASCII as is);
``{{ .Function }}`` and ``{{ .Function.Parameters }}`` have no String method and print as fmt prints a
struct. The expected strings below are written out by hand from those types.
"""

from __future__ import annotations

import pytest

from serve.errors import TemplateRenderError
from serve.gotemplate import render, render_ollama

# Templates shaped like Ollama's library templates for llama3.1, qwen2.5 and mistral (v0.3)
LLAMA31 = """{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

You are a helpful assistant with tool calling capabilities.
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools $last }}

Given the following functions, please respond with a JSON for a function call.

{{ range $.Tools }}
{{- . }}
{{ end }}
{{ .Content }}<|eot_id|>
{{- else }}

{{ .Content }}<|eot_id|>
{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}
{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

QWEN25 = """{{- if .Messages }}
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- else if .Tools }}
You are Qwen, created by Alibaba Cloud. You are a helpful assistant.
{{- end }}
{{- if .Tools }}

# Tools

<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""

MISTRAL = """{{- range $index, $_ := .Messages }}
{{- if eq .Role "system" }}[SYSTEM_PROMPT]{{ .Content }}[/SYSTEM_PROMPT]
{{- else if eq .Role "user" }}
{{- if and (le (len (slice $.Messages $index)) 2) $.Tools }}[AVAILABLE_TOOLS]{{ $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST]{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }}{{ .Content }}
{{- if not (eq (len (slice $.Messages $index)) 1) }}</s>
{{- end }}
{{- else if .ToolCalls }}[TOOL_CALLS][
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}
{{- end }}]</s>
{{- end }}
{{- else if eq .Role "tool" }}[TOOL_RESULTS]{"content": {{ .Content }}}[/TOOL_RESULTS]
{{- end }}
{{- end }}"""

# The request, as a client sends it (properties in the client's order, keys Ollama's structs lack)
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city <b>now</b> & later",
        "parameters": {
            "type": "object",
            "properties": {
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit",
                         "default": "celsius"},
                "city": {"type": "string", "description": "도시 이름, e.g. 서울"},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}]
CALL = {"function": {"name": "get_weather", "arguments": {
    "unit": "celsius", "city": "서울", "options": {"hourly": [6, 12, 18], "detail": {"wind": True, "note": "a<b & c>d"}}}}}
MESSAGES = [
    {"role": "system", "content": "You are concise."},
    {"role": "user", "content": "What's the weather in 서울?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": '{"temperature": 21, "condition": "맑음"}', "tool_name": "get_weather"},
    {"role": "assistant", "content": "It is 21°C and clear."},
    {"role": "user", "content": "And tomorrow?"},
]

# What Ollama prints. templateTool: type, items (omitempty), function; templateToolFunction: name,
# description (always), parameters; parameters: type, $defs, items, required (omitempty), properties;
# ToolProperty: anyOf, type, items, description, enum, properties, required (all omitempty). The
# properties map's keys are sorted; "default" and "additionalProperties" are not in the structs.
PROPERTIES_JSON = ('{"city":{"type":"string","description":"도시 이름, e.g. 서울"},'
                   '"unit":{"type":"string","description":"Temperature unit","enum":["celsius","fahrenheit"]}}')
FUNCTION_JSON = ('{"name":"get_weather",'
                 '"description":"Get the current weather for a city \\u003cb\\u003enow\\u003c/b\\u003e \\u0026 later",'
                 '"parameters":{"type":"object","required":["city"],"properties":' + PROPERTIES_JSON + '}}')
TOOL_JSON = '{"type":"function","function":' + FUNCTION_JSON + "}"
# templateToolFunction as fmt's %v: {Name Description {Type Defs Items Required Properties}}
FUNCTION_STRUCT = ("{get_weather Get the current weather for a city <b>now</b> & later "
                   "{object <nil> <nil> [city] " + PROPERTIES_JSON + "}}")
ARGS_JSON = '{"city":"서울","options":{"detail":{"note":"a\\u003cb \\u0026 c\\u003ed","wind":true},"hourly":[6,12,18]},"unit":"celsius"}'


class TestOllamaToolTemplates:
    def test_llama31(self):
        assert render_ollama(LLAMA31, MESSAGES, tools=TOOLS) == (
            "<|start_header_id|>system<|end_header_id|>\n\nYou are concise.\n\n"
            "You are a helpful assistant with tool calling capabilities.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat's the weather in 서울?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
            '{"name": "get_weather", "parameters": ' + ARGS_JSON + "}<|eot_id|>"
            "<|start_header_id|>ipython<|end_header_id|>\n\n"
            '{"temperature": 21, "condition": "맑음"}<|eot_id|>'
            "<|start_header_id|>assistant<|end_header_id|>\n\nIt is 21°C and clear.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\n"
            "Given the following functions, please respond with a JSON for a function call.\n\n"
            + TOOL_JSON + "\n\nAnd tomorrow?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        )

    def test_qwen25_function_prints_as_a_go_struct(self):
        # templateToolFunction has no String method in Ollama's current release, so qwen2.5's
        # {"type": "function", "function": {{ .Function }}} is not JSON there either
        assert render_ollama(QWEN25, MESSAGES, tools=TOOLS) == (
            "<|im_start|>system\nYou are concise.\n\n# Tools\n\n<tools>\n"
            '{"type": "function", "function": ' + FUNCTION_STRUCT + "}\n</tools><|im_end|>\n"
            "<|im_start|>user\nWhat's the weather in 서울?<|im_end|>\n"
            "<|im_start|>assistant\n<tool_call>\n"
            '{"name": "get_weather", "arguments": ' + ARGS_JSON + "}\n</tool_call><|im_end|>\n"
            "<|im_start|>user\n<tool_response>\n"
            '{"temperature": 21, "condition": "맑음"}\n</tool_response><|im_end|>\n'
            "<|im_start|>assistant\nIt is 21°C and clear.<|im_end|>\n"
            "<|im_start|>user\nAnd tomorrow?<|im_end|>\n<|im_start|>assistant\n"
        )

    def test_mistral_tools_list_and_json_of_arguments(self):
        assert render_ollama(MISTRAL, MESSAGES, tools=TOOLS) == (
            "[SYSTEM_PROMPT]You are concise.[/SYSTEM_PROMPT][INST]What's the weather in 서울?[/INST]"
            '[TOOL_CALLS][{"name": "get_weather", "arguments": ' + ARGS_JSON + "}]</s>"
            '[TOOL_RESULTS]{"content": {"temperature": 21, "condition": "맑음"}}[/TOOL_RESULTS]'
            "It is 21°C and clear.</s>"
            "[AVAILABLE_TOOLS][" + TOOL_JSON + "][/AVAILABLE_TOOLS][INST]And tomorrow?[/INST]"
        )

    def test_without_tools(self):
        msgs = [{"role": "user", "content": "hi"}]
        assert render_ollama(QWEN25, msgs) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        # .Tools is a nil templateTools: false, and its String method marshals it as null;
        # a message's nil []templateToolCall prints as fmt prints an empty slice
        t = "{{ range .Messages }}{{ .ToolCalls }}|{{ json .ToolCalls }}|{{ end }}{{ if .Tools }}T{{ end }}{{ .Tools }}"
        assert render_ollama(t, msgs) == "[]|null|null"


def _one(template: str, tools: list | None = None, messages: list | None = None) -> str:
    """A template that also mentions .Messages, so Ollama hands it .Tools."""
    return render_ollama("{{ range .Messages }}{{ end }}" + template, messages or [{"role": "user", "content": "u"}],
                         tools=tools)


def _with_call(template: str, call: dict) -> str:
    return render_ollama("{{ range .Messages }}{{ range .ToolCalls }}" + template + "{{ end }}{{ end }}",
                         [{"role": "assistant", "content": "", "tool_calls": [call]}])


class TestToolDefinitions:
    def test_each_printing_of_a_tool(self):
        assert _one("{{ range .Tools }}{{ . }}{{ end }}", TOOLS) == TOOL_JSON
        assert _one("{{ range .Tools }}{{ json . }}{{ end }}", TOOLS) == TOOL_JSON
        assert _one("{{ .Tools }}", TOOLS) == "[" + TOOL_JSON + "]"
        assert _one("{{ json .Tools }}", TOOLS) == "[" + TOOL_JSON + "]"
        assert _one("{{ with .Tools }}{{ . }}{{ end }}", TOOLS + TOOLS) == "[" + TOOL_JSON + "," + TOOL_JSON + "]"
        assert _one("{{ slice .Tools 0 1 }}", TOOLS + TOOLS) == "[" + TOOL_JSON + "]"
        assert _one("{{ range .Tools }}{{ .Function }}{{ end }}", TOOLS) == FUNCTION_STRUCT
        assert _one("{{ range .Tools }}{{ json .Function }}{{ end }}", TOOLS) == FUNCTION_JSON
        assert _one("{{ range .Tools }}{{ .Function.Parameters }}{{ end }}", TOOLS) == (
            "{object <nil> <nil> [city] " + PROPERTIES_JSON + "}")
        assert _one("{{ range .Tools }}{{ .Function.Parameters.Properties }}{{ end }}", TOOLS) == PROPERTIES_JSON
        assert _one("{{ range .Tools }}{{ .Type }} {{ .Function.Name }} {{ .Function.Parameters.Required }} "
                    "{{ json .Function.Parameters.Required }}{{ end }}", TOOLS) == 'function get_weather [city] ["city"]'

    def test_ranging_over_properties(self):
        # command-r's template: a Go map ranges in key order; PropertyType prints its one name
        t = ("{{ range .Tools }}{{ range $name, $p := .Function.Parameters.Properties }}"
             "{{ $name }}: {{ $p.Type }} ({{ $p.Description }}) {{ $p.Enum }} {{ toTypeScriptType $p }}; {{ end }}{{ end }}")
        assert _one(t, TOOLS) == ("city: string (도시 이름, e.g. 서울) [] string; "
                                  "unit: string (Temperature unit) [celsius fahrenheit] string; ")
        # api.ToolProperty has no String method either: {AnyOf Type Items Description Enum Properties Required}
        t = "{{ range .Tools }}{{ range .Function.Parameters.Properties }}{{ . }}|{{ json . }}\n{{ end }}{{ end }}"
        assert _one(t, TOOLS) == (
            '{[] string <nil> 도시 이름, e.g. 서울 [] <nil> []}|{"type":"string","description":"도시 이름, e.g. 서울"}\n'
            '{[] string <nil> Temperature unit [celsius fahrenheit] <nil> []}|'
            '{"type":"string","description":"Temperature unit","enum":["celsius","fahrenheit"]}\n'
        )

    def test_schemas_decoded_into_ollamas_structs(self):
        tool = {"type": "function", "items": {"b": 1, "a": None}, "function": {"name": "f", "parameters": {
            "type": "object",
            "$defs": {"Unit": {"type": "string", "enum": ["c", "f"]}},
            "required": [],
            "properties": {
                "when": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}], "description": ""},
                "filters": {"type": "object", "properties": {"zeta": {"type": "integer", "minimum": 0},
                                                             "alpha": {"type": ["number", "null"]}},
                            "required": ["zeta"]},
                "tags": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "limit": {"type": "integer", "enum": [10, 2.5, 1e21, 12345678901234567890, 1e-7]},
            },
        }}}
        # function.description is always written; an empty required is left out; $defs and items are
        # any-typed maps (sorted); a nested properties object keeps the request's order (Ollama keeps it
        # in an ordered map), the top level is a Go map (sorted); numbers are float64
        assert _one("{{ json .Tools }}", [tool]) == (
            '[{"type":"function","items":{"a":null,"b":1},"function":{"name":"f","description":"","parameters":'
            '{"type":"object","$defs":{"Unit":{"enum":["c","f"],"type":"string"}},"properties":{'
            '"filters":{"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":["number","null"]}},'
            '"required":["zeta"]},'
            '"limit":{"type":"integer","enum":[10,2.5,1e+21,12345678901234567000,1e-7]},'
            '"tags":{"type":"array","items":{"minLength":1,"type":"string"}},'
            '"when":{"anyOf":[{"type":"string"},{"type":"null"}]}}}}}]'
        )
        t = ("{{ range .Tools }}{{ .Function.Parameters.Defs }}|{{ .Items }}|"
             "{{ range $k, $p := .Function.Parameters.Properties }}{{ $k }}={{ toTypeScriptType $p }} {{ $p.Type }} "
             "{{ $p.Enum }};{{ end }}{{ end }}")
        assert _one(t, [tool]) == ("map[Unit:map[enum:[c f] type:string]]|map[a:<nil> b:1]|"
                                   "filters=Record<string, any> object [];"
                                   "limit=number integer [10 2.5 1e+21 1.2345678901234567e+19 1e-07];"
                                   "tags=any[] array [];when=string | null  [];")

    def test_a_tool_without_parameters(self):
        tool = {"type": "function", "function": {"name": "now"}}
        # a nil templateProperties: its String method prints {}, encoding/json writes null
        assert _one("{{ range .Tools }}{{ . }}|{{ .Function.Parameters.Properties }}|{{ .Function }}{{ end }}",
                    [tool]) == (
            '{"type":"function","function":{"name":"now","description":"","parameters":{"type":"","properties":null}}}'
            "|{}|{now  { <nil> <nil> [] {}}}")

    def test_keys_match_case_insensitively_and_unknown_fields_are_errors(self):
        tool = {"Type": "function", "FUNCTION": {"Name": "f", "name": "g", "Description": "d"}}
        assert _one("{{ range .Tools }}{{ . }}{{ end }}", [tool]) == (
            '{"type":"function","function":{"name":"g","description":"d","parameters":{"type":"","properties":null}}}')
        with pytest.raises(TemplateRenderError, match="can't evaluate field Foo in type template.templateToolFunction"):
            _one("{{ range .Tools }}{{ .Function.Foo }}{{ end }}", TOOLS)
        with pytest.raises(TemplateRenderError, match="can't evaluate field name in type template.templateToolFunction"):
            _one("{{ range .Tools }}{{ .Function.name }}{{ end }}", TOOLS)


class TestToolCalls:
    def test_each_printing_of_a_call(self):
        call = {"id": "call_1", "function": {"index": 0, **CALL["function"]}}
        assert _with_call("{{ .Function.Arguments }}", call) == ARGS_JSON
        assert _with_call("{{ json .Function.Arguments }}", call) == ARGS_JSON
        assert _with_call("{{ .Function.Name }} {{ .Function.Index }} {{ .ID }}", call) == "get_weather 0 call_1"
        # templateToolCall and templateToolCallFunction have no json tags nor String methods
        assert _with_call("{{ . }}", call) == "{call_1 {0 get_weather " + ARGS_JSON + "}}"
        assert _with_call("{{ .Function }}", call) == "{0 get_weather " + ARGS_JSON + "}"
        assert _with_call("{{ json . }}", call) == (
            '{"ID":"call_1","Function":{"Index":0,"Name":"get_weather","Arguments":' + ARGS_JSON + "}}")
        msgs = [{"role": "assistant", "content": "", "tool_calls": [call, {"function": {"name": "now"}}]}]
        assert render_ollama("{{ range .Messages }}{{ .ToolCalls }}{{ end }}", msgs) == (
            "[{call_1 {0 get_weather " + ARGS_JSON + "}} { {0 now {}}}]")
        assert render_ollama("{{ range .Messages }}{{ json .ToolCalls }}{{ end }}", msgs) == (
            '[{"ID":"call_1","Function":{"Index":0,"Name":"get_weather","Arguments":' + ARGS_JSON + "}},"
            '{"ID":"","Function":{"Index":0,"Name":"now","Arguments":null}}]')

    def test_ranging_over_arguments(self):
        # a Go map: keys in order; the values are what encoding/json decodes into any (float64, maps)
        call = {"function": {"name": "f", "arguments": {"n": 1000000, "x": 2.5, "s": "a<b", "m": {"k": [1, None]},
                                                        "b": False}}}
        assert _with_call("{{ range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }} {{ end }}", call) == (
            "b=false m=map[k:[1 <nil>]] n=1e+06 s=a<b x=2.5 ")
        assert _with_call("{{ index .Function.Arguments \"s\" }}|{{ .Function.Arguments.x }}", call) == "a<b|2.5"
        assert _with_call("{{ .Function.Arguments }}", call) == '{"b":false,"m":{"k":[1,null]},"n":1000000,"s":"a\\u003cb","x":2.5}'

    def test_arguments_given_as_a_json_string(self):
        call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"q": "서울", "n": 3}'}}
        assert _with_call("{{ .Function.Arguments }}", call) == '{"n":3,"q":"서울"}'

    def test_a_tool_result_names_its_tool(self):
        msgs = [{"role": "tool", "content": "21", "tool_name": "get_weather", "tool_call_id": "call_1"}]
        assert render_ollama("{{ range .Messages }}{{ .ToolName }}:{{ .ToolCallID }}:{{ .Content }}{{ end }}",
                             msgs) == "get_weather:call_1:21"


class TestGoJson:
    def test_escaping_as_encoding_json(self):
        s = "<a href='x'>&</a> \"q\" \\ \n\r\t\b\f\x01\x7f 한국어 é 😀 \u2028\u2029"
        assert render("{{ json .S }}", {"S": s}) == (
            '"\\u003ca href=\'x\'\\u003e\\u0026\\u003c/a\\u003e \\"q\\" \\\\ \\n\\r\\t\\b\\f\\u0001\x7f 한국어 é 😀 '
            '\\u2028\\u2029"')
        # keys of the ordered properties map go through easyjson's writer: \b as \u0008
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
            "o": {"type": "object", "properties": {"a\bb<": {"type": "string"}}}}}}}
        assert _one("{{ range .Tools }}{{ .Function.Parameters.Properties }}{{ end }}", [tool]) == (
            '{"o":{"type":"object","properties":{"a\\u0008b\\u003c":{"type":"string"}}}}')

    def test_numbers_maps_and_refusals(self):
        assert render("{{ json .V }}", {"V": {"b": [1, 2.0, 1e20, 1e21, 1e-6, 1e-7, -0.0, True, None], "a": "x"}}) == (
            '{"a":"x","b":[1,2,100000000000000000000,1e+21,0.000001,1e-7,-0,true,null]}')
        # encoding/json refuses NaN and infinities; the json function then writes nothing
        assert render("{{ json .V }}|{{ .V }}", {"V": [float("nan")]}) == "|[NaN]"

    def test_fmt_prints_floats_as_go(self):
        # %v of a float64 is strconv's shortest 'g': an exponent from 1e+06 up and below 1e-04
        assert render("{{ .A }} {{ .B }} {{ .C }} {{ .D }} {{ .E }} {{ .F }}",
                      {"A": 123456.0, "B": 1e6, "C": 1234567.5, "D": 0.0001, "E": 0.00001, "F": -0.0}) == (
            "123456 1e+06 1.2345675e+06 0.0001 1e-05 -0")


def test_the_chat_endpoint_renders_tools_and_tool_calls(tmp_path, monkeypatch):
    """/api/chat hands the request's tools and messages to the template as they came; the Modelfile
    SYSTEM is prepended when the chat has none."""
    from starlette.testclient import TestClient

    from serve.api import OllamaApi
    from serve.names import ApiError
    from serve.runtime import create_app
    from serve.store import ModelRecord

    rec = ModelRecord(name="tools:latest", digest="0" * 64, manifest={}, modified_at=0.0,
                      model_path=tmp_path / "model.gguf", size=0, template=QWEN25, system="You are concise.",
                      params={}, messages=[], adapters=[], config={})
    prompts: list[str] = []

    async def start(self, rec, opts, keep_alive, make_prompt, fmt, logprobs=None):
        prompts.append(await make_prompt(None))
        raise ApiError(503, "no runner here")

    monkeypatch.setattr(OllamaApi, "record", lambda self, data, missing="": rec)
    monkeypatch.setattr(OllamaApi, "start", start)
    with TestClient(create_app(tmp_path / "store"), base_url="http://127.0.0.1") as client:
        r = client.post("/api/chat", json={"model": "tools", "messages": MESSAGES[1:], "tools": TOOLS,
                                           "stream": False, "truncate": False})
    assert r.status_code == 503
    assert prompts == [render_ollama(QWEN25, MESSAGES, tools=TOOLS)]
    assert '{"name": "get_weather", "arguments": ' + ARGS_JSON + "}" in prompts[0]
    assert FUNCTION_STRUCT in prompts[0]
