"""The Go text/template subset renderer, against Ollama's own model templates and Go semantics."""

from __future__ import annotations

import pytest

from serve.errors import ServeError, TemplateRenderError, TemplateSyntaxError
from serve.gotemplate import render, render_ollama, template_vars

# Ollama's templates, written out (template/*.gotmpl in the ollama repository)
OLLAMA_CHATML = (
    "{{- if .Messages }}\n{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\n"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
    "{{ else }}\n{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n"
    "{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n{{- end }}"
)
OLLAMA_LLAMA3 = (
    "{{- if .Messages }}\n{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>\n"
    "{{- end }}\n{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>\n"
    "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ else -}}\n{{ if .System }}<|start_header_id|>system"
    "<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n"
    "{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>\n{{- end -}}"
)
OLLAMA_GEMMA = (
    "{{- if .Messages }}\n{{- range $index, $_ := .Messages }}<start_of_turn>\n{{- if eq .Role \"user\" }}user\n"
    "{{- if and $.System (eq $index 0) }}\n{{ $.System }}\n{{- end }}\n{{- else if eq .Role \"assistant\" }}model\n"
    "{{- end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n{{ else -}}\n<start_of_turn>user\n"
    "{{ if .System }}{{ .System }}\n{{ end }}{{ .Prompt }}<end_of_turn>\n<start_of_turn>model\n{{ .Response }}<end_of_turn>\n{{ end -}}"
)
OLLAMA_MISTRAL = (
    "{{- if .Messages }}\n{{- range $index, $_ := .Messages }}\n{{- if eq .Role \"user\" }}[INST] "
    "{{ if and $.System (eq (len (slice $.Messages $index)) 1) }}{{ $.System }}\n{{ end }}{{ .Content }}\n"
    "{{- else if eq .Role \"assistant\" }}[/INST] {{ .Content }}</s>\n{{- end }}\n{{- end }}[/INST]\n{{- else -}}\n"
    "[INST] {{ if .System }}{{ .System }} {{ end }}{{ .Prompt }}[/INST] {{ .Response }}</s>\n{{- end -}}"
)
OLLAMA_PHI3 = (
    "{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}{{ if .Prompt }}<|user|>\n{{ .Prompt }}<|end|>\n"
    "{{ end }}<|assistant|>\n{{ .Response }}<|end|>"
)

USER = [{"role": "user", "content": "Hello friend!"}]
UAU = [
    {"role": "user", "content": "Hello, how are you?"},
    {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
    {"role": "user", "content": "I'd like to show off how chat templating works!"},
]
SUAU = [{"role": "system", "content": "You are a helpful assistant."}, *UAU]


class TestOllamaTemplates:
    def test_chatml_user(self):
        assert render_ollama(OLLAMA_CHATML, USER) == "<|im_start|>user\nHello friend!<|im_end|>\n<|im_start|>assistant\n"

    def test_chatml_user_assistant_user(self):
        assert render_ollama(OLLAMA_CHATML, UAU) == (
            "<|im_start|>user\nHello, how are you?<|im_end|>\n"
            "<|im_start|>assistant\nI'm doing great. How can I help you today?<|im_end|>\n"
            "<|im_start|>user\nI'd like to show off how chat templating works!<|im_end|>\n<|im_start|>assistant\n"
        )

    def test_llama3(self):
        assert render_ollama(OLLAMA_LLAMA3, USER) == (
            "<|start_header_id|>user<|end_header_id|>\n\nHello friend!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )
        # .System comes from the collated system messages (and the range sees the system message too)
        out = render_ollama(OLLAMA_LLAMA3, [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
        assert out == (
            "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        )

    def test_gemma(self):
        assert render_ollama(OLLAMA_GEMMA, UAU) == (
            "<start_of_turn>user\nHello, how are you?<end_of_turn>\n"
            "<start_of_turn>model\nI'm doing great. How can I help you today?<end_of_turn>\n"
            "<start_of_turn>user\nI'd like to show off how chat templating works!<end_of_turn>\n<start_of_turn>model\n"
        )

    def test_mistral(self):
        assert render_ollama(OLLAMA_MISTRAL, UAU) == (
            "[INST] Hello, how are you?[/INST] I'm doing great. How can I help you today?</s>"
            "[INST] I'd like to show off how chat templating works![/INST]"
        )
        out = render_ollama(OLLAMA_MISTRAL, [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
        assert out == "[INST] S\nU[/INST]"

    def test_phi3_legacy_template_rendered_turn_by_turn(self):
        # no .Messages: Ollama renders each turn with .System/.Prompt/.Response and cuts after the last .Response
        assert render_ollama(OLLAMA_PHI3, SUAU) == (
            "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello, how are you?<|end|>\n"
            "<|assistant|>\nI'm doing great. How can I help you today?<|end|>"
            "<|user|>\nI'd like to show off how chat templating works!<|end|>\n<|assistant|>\n"
        )

    def test_prompt_only_default_template(self):
        assert render_ollama("{{ .Prompt }}", USER) == "Hello friend!"

    def test_consecutive_messages_of_one_role_are_merged(self):
        msgs = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
        assert render_ollama("{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ end }}", msgs) == "[user:a\n\nb]"

    def test_vars(self):
        assert "messages" in template_vars(OLLAMA_CHATML)
        assert "messages" not in template_vars(OLLAMA_PHI3)


class TestSemantics:
    def test_fields_and_trim(self):
        assert render("a  {{- .X -}}  b", {"X": 1}) == "a1b"
        assert render("a {{.X}} b", {"X": "x"}) == "a x b"
        assert render("{{ .Missing }}|{{ .A.B }}", {"A": {"B": "deep"}}) == "|deep"
        assert render("{{ .Role }}", {"role": "user"}) == "user"  # lower-case keys found too

    def test_comment_and_literals(self):
        assert render("x{{/* hidden */}}y{{- /* trimmed */ -}} z", {}) == "xyz"
        assert render('{{ "a\\tb\\n" }}{{ `raw\\n` }}{{ 3 }}{{ 1.5 }}{{ true }}', {}) == "a\tb\nraw\\n31.5true"

    def test_if_else_chain(self):
        t = '{{ if eq .N 1 }}one{{ else if eq .N 2 }}two{{ else }}many{{ end }}'
        assert [render(t, {"N": n}) for n in (1, 2, 3)] == ["one", "two", "many"]

    def test_truthiness(self):
        t = "{{ if .V }}T{{ else }}F{{ end }}"
        assert [render(t, {"V": v}) for v in ("", "x", 0, 2, [], [1], {}, None, False, True)] == list("FTFTFTFFFT")

    def test_range_variants(self):
        data = {"Messages": [{"Role": "user", "Content": "a"}, {"Role": "assistant", "Content": "b"}]}
        assert render("{{ range .Messages }}{{ .Role }};{{ end }}", data) == "user;assistant;"
        assert render("{{ range $i, $m := .Messages }}{{ $i }}={{ $m.Content }},{{ end }}", data) == "0=a,1=b,"
        assert render("{{ range $m := .Messages }}{{ $m.Role }}{{ end }}", data) == "userassistant"
        assert render("{{ range .Empty }}x{{ else }}none{{ end }}", {"Empty": []}) == "none"
        assert render("{{ range $i, $_ := .Messages }}{{ if eq $i 1 }}{{ break }}{{ end }}{{ .Content }}{{ end }}", data) == "a"
        assert render("{{ range .Messages }}{{ if eq .Role \"user\" }}{{ continue }}{{ end }}{{ .Content }}{{ end }}", data) == "b"
        assert render("{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}", {"M": {"b": 2, "a": 1}}) == "a1b2"

    def test_last_message_idiom(self):
        t = "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}{{ if $last }}LAST:{{ end }}{{ .Content }} {{ end }}"
        assert render(t, {"Messages": [{"Content": "a"}, {"Content": "b"}]}) == "a LAST:b "

    def test_variables_scope_and_assignment(self):
        t = '{{ $x := "outer" }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}'
        assert render(t, {"L": ["a", "b"]}) == "b"
        t = '{{ if true }}{{ $y := 1 }}{{ $y }}{{ end }}'
        assert render(t, {}) == "1"
        with pytest.raises(TemplateRenderError, match="undefined variable"):
            render('{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}', {})

    def test_with(self):
        assert render("{{ with .A }}[{{ . }}]{{ else }}none{{ end }}", {"A": "x"}) == "[x]"
        assert render("{{ with .A }}[{{ . }}]{{ else with .B }}b={{ . }}{{ else }}none{{ end }}", {"B": 2}) == "b=2"
        assert render("{{ with .A }}[{{ . }}]{{ else }}none{{ end }}", {}) == "none"

    def test_functions(self):
        d = {"L": ["a", "b", "c"], "S": "héllo", "N": 3}
        assert render("{{ len .L }} {{ len .S }} {{ index .L 1 }} {{ slice .L 1 }} {{ slice .L 0 2 }}", d) == "3 6 b [b c] [a b]"
        assert render("{{ eq .N 1 2 3 }} {{ ne .N 3 }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt 1 2 }} {{ ge 2 3 }}", d) == "true false true true false false"
        assert render('{{ and 1 0 }} {{ and 1 "x" }} {{ or 0 "" }} {{ or 0 "y" }} {{ not 0 }}', d) == '0 x  y true'
        # short-circuit: the failing index is never evaluated
        assert render("{{ if and .Missing (index .L 99) }}x{{ else }}ok{{ end }}", d) == "ok"
        assert render('{{ print "a" 1 2 "b" }}|{{ printf "%s-%d-%q" "x" 5 "y" }}|{{ println 1 "z" }}', d) == 'a1 2b|x-5-"y"|1 z\n'
        assert render("{{ (index .Messages 0).Role }}", {"Messages": [{"Role": "system"}]}) == "system"
        assert render('{{ .S | len }} {{ "abc" | printf "%s!" }}', d) == "6 abc!"
        assert render("{{ json .V }}", {"V": {"a": "<b>", "n": [1, 2]}}) == '{"a":"\\u003cb\\u003e","n":[1,2]}'

    def test_printing_values(self):
        assert render("{{ .F }} {{ .G }} {{ .H }} {{ .L }} {{ .M }}", {"F": 0.7, "G": 1e21, "H": 2.0, "L": [1, "a"], "M": {"k": 1}}) == "0.7 1e+21 2 [1 a] map[k:1]"


class TestErrors:
    @pytest.mark.parametrize(
        "template, fragment",
        [
            ("hello {{ .X ", "unclosed action"),
            ("{{ if .X }}x", "missing its {{end}}"),
            ("x{{ end }}", "unexpected {{end}}"),
            ("{{ frobnicate .X }}", 'function "frobnicate" not defined'),
            ('{{ define "x" }}{{ end }}', "not supported"),
            ("{{ .X ) }}", "unexpected ')'"),
            ("{{ }}", "empty action"),
            ("{{ break }}", "outside {{range}}"),
            ("a\nb {{ .X # }}", "line 2, column"),
        ],
    )
    def test_syntax_errors_name_the_position(self, template, fragment):
        with pytest.raises(TemplateSyntaxError) as e:
            render(template, {})
        assert fragment in str(e.value)
        assert "line" in str(e.value)
        assert isinstance(e.value, ServeError) and e.value.hint

    def test_render_errors(self):
        with pytest.raises(TemplateRenderError, match=r"index out of range.*line 1"):
            render("{{ index .L 5 }}", {"L": [1]})
        with pytest.raises(TemplateRenderError, match="incompatible types"):
            render('{{ eq 1 "a" }}', {})
        with pytest.raises(TemplateRenderError, match="can't evaluate field"):
            render("{{ .S.Foo }}", {"S": "str"})
