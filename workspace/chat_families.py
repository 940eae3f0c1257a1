"""Chat template families as data: the Go TEMPLATE Ollama executes, every end-of-turn string (``stop``) and a
reference Jinja chat template in the style of Hugging Face's. Training (a base model without a chat template
is trained with the Korean Alpaca-style prompt) and serving (the Modelfile TEMPLATE) both use these, so they
live below both."""

from __future__ import annotations

from dataclasses import dataclass

from workspace.errors import OllatuneError

__all__ = ["ChatFamily", "ChatFamilyError", "FAMILIES", "template_for_family"]


class ChatFamilyError(OllatuneError):
    """An unknown chat template family name."""


@dataclass(frozen=True)
class ChatFamily:
    name: str
    go_template: str
    stop: list[str]
    jinja_template: str = ""
    description: str = ""



# --- chatml (SmolLM2, Qwen, many fine-tunes) -------------------------------------------------------------
_CHATML_GO = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)
_CHATML_JINJA = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# --- llama3 (Meta Llama 3 / 3.2 without tools) -------------------------------------------------------------
_LLAMA3_GO = (
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>\n"
    "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_LLAMA3_JINJA = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# --- gemma (Gemma 2/3: no system role; a system prompt is put in front of the first user turn) -------------
_GEMMA_GO = (
    "{{- $first := true }}\n"
    "{{- range .Messages }}\n"
    "{{- if ne .Role \"system\" }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}{{ .Role }}{{ end }}\n"
    "{{ if $first }}{{ if $.System }}{{ $.System }}\n\n"
    "{{ end }}{{ $first = false }}{{ end }}{{ .Content }}<end_of_turn>\n"
    "{{ end }}\n"
    "{{- end }}<start_of_turn>model\n"
)
_GEMMA_JINJA = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\\n'}}{%- endif -%}"
)

# --- mistral (Mistral-7B-Instruct v0.3: system prompt goes into the last user turn) -----------------------
_MISTRAL_GO = (
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    "{{- if eq .Role \"user\" }}[INST] {{ if and $.System $last }}{{ $.System }}\n\n"
    "{{ end }}{{ .Content }}[/INST]\n"
    "{{- else if eq .Role \"assistant\" }} {{ .Content }}</s>\n"
    "{{- end }}\n"
    "{{- end }}"
)
_MISTRAL_JINJA = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.last and system_message is defined %}{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}"
    "{%- endif %}{%- endfor %}"
)

# --- phi3 (Phi-3 / Phi-3.5 mini) ------------------------------------------------------------------------
_PHI3_GO = (
    "{{- range .Messages }}<|{{ .Role }}|>\n"
    "{{ .Content }}<|end|>\n"
    "{{ end }}<|assistant|>\n"
)
_PHI3_JINJA = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# --- alpaca-ko (KoAlpaca style: "### 질문:" / "### 답변:") ----------------------------------------------------
_ALPACA_KO_GO = (
    "{{- range .Messages }}\n"
    "{{- if eq .Role \"system\" }}{{ .Content }}\n\n"
    "{{ else if eq .Role \"user\" }}### 질문: {{ .Content }}\n\n"
    "{{ else if eq .Role \"assistant\" }}### 답변: {{ .Content }}\n\n"
    "{{ end }}\n"
    "{{- end }}### 답변:"
)
_ALPACA_KO_JINJA = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' %}{{ '### 질문: ' + message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'assistant' %}{{ '### 답변: ' + message['content'] + '\\n\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '### 답변:' }}{%- endif %}"
)

FAMILIES: dict[str, ChatFamily] = {
    f.name: f
    for f in (
        ChatFamily("chatml", _CHATML_GO, ["<|im_start|>", "<|im_end|>"], _CHATML_JINJA, "ChatML (<|im_start|>role ... <|im_end|>)"),
        ChatFamily("llama3", _LLAMA3_GO, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], _LLAMA3_JINJA, "Llama 3 headers"),
        ChatFamily("gemma", _GEMMA_GO, ["<start_of_turn>", "<end_of_turn>"], _GEMMA_JINJA, "Gemma turns (system merged into the first user turn)"),
        ChatFamily("mistral", _MISTRAL_GO, ["[INST]", "[/INST]", "</s>"], _MISTRAL_JINJA, "Mistral [INST] (v0.3 layout)"),
        ChatFamily("phi3", _PHI3_GO, ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<|endoftext|>"], _PHI3_JINJA, "Phi-3 <|role|> ... <|end|>"),
        ChatFamily("alpaca-ko", _ALPACA_KO_GO, ["### 질문:", "### 답변:"], _ALPACA_KO_JINJA, "Korean Alpaca prompt (### 질문: / ### 답변:)"),
    )
}

_ALIASES = {"phi-3": "phi3", "phi3.5": "phi3", "llama-3": "llama3", "llama3-instruct": "llama3", "gemma2": "gemma",
            "gemma3": "gemma", "koalpaca": "alpaca-ko", "alpaca_ko": "alpaca-ko", "qwen": "chatml", "smollm2": "chatml"}


def template_for_family(name: str) -> ChatFamily:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return FAMILIES[key]
    except KeyError:
        raise ChatFamilyError(f"unknown chat template family {name!r}", hint=f"use one of: {', '.join(FAMILIES)}") from None


