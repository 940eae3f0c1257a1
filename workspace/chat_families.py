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
    """One family. ``pinned_date``/``date_format``: a family whose template writes a date (the Llama 3.1/3.2
    system header) carries that date as literal text in ``go_template`` (``pinned_date``, written with the
    strftime format ``date_format``). Ollama's template functions cannot write a date in that format
    (``currentDate`` ignores its format argument and writes YYYY-MM-DD), so a model whose template renders
    today's date is registered with the date its chat template renders when it is published
    (:meth:`go_template_for_date`)."""

    name: str
    go_template: str
    stop: list[str]
    jinja_template: str = ""
    description: str = ""
    pinned_date: str = ""
    date_format: str = ""

    def go_template_for_date(self, date_text: str) -> str:
        """``go_template`` with ``pinned_date`` replaced by ``date_text`` (unchanged for a family without a date)."""
        if not self.pinned_date or date_text == self.pinned_date:
            return self.go_template
        return self.go_template.replace(self.pinned_date, date_text)


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

# --- llama3 (Meta Llama 3) -------------------------------------------------------------
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

# --- phi3 (Phi-3.5 mini and the updated Phi-3 templates: the system message is kept) ---------------------
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

# --- llama3.1 (Llama 3.1 / 3.2 / 3.3: a system header is always written, with the knowledge cutoff and a date) --
_LLAMA31_DATE = "26 Jul 2024"
_LLAMA31_GO = (
    "<|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\n"
    "Today Date: " + _LLAMA31_DATE + "\n\n"
    "{{ if .Messages }}{{ with index .Messages 0 }}{{ if eq .Role \"system\" }}{{ .Content }}{{ end }}{{ end }}{{ end }}"
    "<|eot_id|>\n"
    "{{- range $i, $_ := .Messages }}\n"
    "{{- if or (ne $i 0) (ne .Role \"system\") }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>\n"
    "{{- end }}\n"
    "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_LLAMA31_JINJA = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = \"" + _LLAMA31_DATE + "\" %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = \"\" %}{%- endif %}"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}"
    "{{- system_message }}{{- \"<|eot_id|>\" }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# --- mistral-tekken (Mistral-Nemo: [INST] without spaces, system prompt in the last user turn) -------------
_MISTRAL_TEKKEN_GO = (
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    "{{- if eq .Role \"user\" }}[INST]{{ if and $.System $last }}{{ $.System }}\n\n"
    "{{ end }}{{ .Content }}[/INST]\n"
    "{{- else if eq .Role \"assistant\" }}{{ .Content }}</s>\n"
    "{{- end }}\n"
    "{{- end }}"
)
_MISTRAL_TEKKEN_JINJA = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.last and system_message is defined %}{{- '[INST]' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST]' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- message['content'] + '</s>' }}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}"
    "{%- endif %}{%- endfor %}"
)

# --- mistral-v1 (Mixtral-8x7B v0.1, the later Mistral-7B v0.1/v0.2: " [INST] ", system prompt in the first turn) -
_MISTRAL_V1_GO = (
    "{{- $first := true }}\n"
    "{{- range .Messages }}\n"
    "{{- if eq .Role \"user\" }} [INST] {{ if and $first $.System }}{{ $.System }}\n\n"
    "{{ end }}{{ .Content }} [/INST]{{ $first = false }}\n"
    "{{- else if eq .Role \"assistant\" }} {{ .Content }}</s>\n"
    "{{- end }}\n"
    "{{- end }}"
)
_MISTRAL_V1_JINJA = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system_message is defined %}{{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + '</s>' }}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}"
    "{%- endif %}{%- endfor %}"
)

# --- mistral-legacy / mistral-legacy-v0.1 (the first Mistral-7B-Instruct v0.2 and v0.1 templates: "[INST] ... [/INST]",
# no system role; a system prompt is put in front of the first user message, as Mistral's later templates do) --
def _mistral_legacy_go(after_eos: str) -> str:
    return (
        "{{- $first := true }}\n"
        "{{- range .Messages }}\n"
        "{{- if eq .Role \"user\" }}[INST] {{ if and $first $.System }}{{ $.System }}\n\n"
        "{{ end }}{{ .Content }} [/INST]{{ $first = false }}\n"
        "{{- else if eq .Role \"assistant\" }}{{ .Content }}</s>" + (f'{{{{ "{after_eos}" }}}}' if after_eos else "") + "\n"
        "{{- end }}\n"
        "{{- end }}"
    )


def _mistral_legacy_jinja(after_eos: str) -> str:
    return (
        "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
        "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
        "{{- bos_token }}"
        "{%- for message in loop_messages %}"
        "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}"
        "{%- if message['role'] == 'user' %}"
        "{%- if loop.first and system_message is defined %}{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
        "{%- else %}{{- '[INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
        "{%- elif message['role'] == 'assistant' %}{{- message['content'] + '</s>" + after_eos + "' }}"
        "{%- else %}{{- raise_exception('Only user and assistant roles are supported!') }}"
        "{%- endif %}{%- endfor %}"
    )


# --- phi3-legacy (the first Phi-3-mini/medium templates: the system message is dropped) -----------------------
_PHI3_LEGACY_GO = (
    "{{- range .Messages }}\n"
    "{{- if eq .Role \"user\" }}<|user|>\n"
    "{{ .Content }}<|end|>\n"
    "<|assistant|>\n"
    "{{ else if eq .Role \"assistant\" }}{{ .Content }}<|end|>\n"
    "{{ end }}\n"
    "{{- end }}"
)
_PHI3_LEGACY_JINJA = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}"
    "{{'<|user|>' + '\\n' + message['content'] + '<|end|>' + '\\n' + '<|assistant|>' + '\\n'}}"
    "{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\\n'}}{% endif %}{% endfor %}"
)

# --- zephyr (Zephyr, TinyLlama-Chat: <|role|>, a newline, the content and </s>) ---------------------------------
_ZEPHYR_GO = (
    "{{- range .Messages }}<|{{ .Role }}|>\n"
    "{{ .Content }}</s>\n"
    "{{ end }}<|assistant|>\n"
)
_ZEPHYR_JINJA = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + '</s>' }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + '</s>' }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + '</s>' }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)

# --- llama2 (Llama-2-chat: <<SYS>> in the first [INST], <s> in front of every later [INST]) -------------------
_LLAMA2_GO = (
    "{{- $first := true }}\n"
    "{{- range .Messages }}\n"
    "{{- if eq .Role \"user\" }}{{ if not $first }}<s>{{ end }}[INST] {{ if and $first $.System }}<<SYS>>\n"
    "{{ $.System }}\n"
    "<</SYS>>\n\n"
    "{{ end }}{{ .Content }} [/INST]{{ $first = false }}\n"
    "{{- else if eq .Role \"assistant\" }} {{ .Content }} </s>\n"
    "{{- end }}\n"
    "{{- end }}"
)
_LLAMA2_JINJA = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ (bos_token if loop.first else '<s>') + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' </s>' }}{% endif %}{% endfor %}"
)

# --- exaone (EXAONE 3.0 / 3.5: [|role|]content; an empty system turn when the chat opens without one) --------
_EXAONE_GO = (
    "{{- if or (not .Messages) (ne (index .Messages 0).Role \"system\") }}[|system|][|endofturn|]\n"
    "{{ end }}\n"
    "{{- range .Messages }}[|{{ .Role }}|]{{ .Content }}\n"
    "{{- if eq .Role \"user\" }}\n"
    "{{ else }}[|endofturn|]\n"
    "{{ end }}\n"
    "{{- end }}[|assistant|]"
)
_EXAONE_JINJA = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}{{ '[|system|][|endofturn|]\\n' }}{% endif %}"
    "{{ '[|' + message['role'] + '|]' + message['content'] }}"
    "{% if message['role'] == 'user' %}{{ '\\n' }}{% else %}{{ '[|endofturn|]\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"
)

# --- deepseek (deepseek-llm-chat, DeepSeek-V2-Chat, DeepSeek-Coder-V2: "User: ...\n\nAssistant:") ---------------
_DEEPSEEK_EOS = "<｜end▁of▁sentence｜>"
_DEEPSEEK_GO = (
    "{{- range .Messages }}\n"
    "{{- if eq .Role \"user\" }}User: {{ .Content }}\n\n"
    "{{ else if eq .Role \"assistant\" }}Assistant: {{ .Content }}" + _DEEPSEEK_EOS + "\n"
    "{{- else if eq .Role \"system\" }}{{ .Content }}\n\n"
    "{{ end }}\n"
    "{{- end }}Assistant:"
)
_DEEPSEEK_JINJA = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + '" + _DEEPSEEK_EOS + "' }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# --- deepseek-v3 (DeepSeek-V3: system prompts first, then <｜User｜> / <｜Assistant｜> turns) ---------------------
_DEEPSEEK_V3_GO = (
    "{{- .System }}\n"
    "{{- range .Messages }}\n"
    "{{- if eq .Role \"user\" }}<｜User｜>{{ .Content }}\n"
    "{{- else if eq .Role \"assistant\" }}<｜Assistant｜>{{ .Content }}" + _DEEPSEEK_EOS + "\n"
    "{{- end }}\n"
    "{{- end }}<｜Assistant｜>"
)
_DEEPSEEK_V3_JINJA = (
    "{% set ns = namespace(system_prompt='', is_first_sp=true) %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}"
    "{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' %}{{ '<｜Assistant｜>' + message['content'] + '" + _DEEPSEEK_EOS + "' }}"
    "{%- endif %}{%- endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}"
)

# --- granite (IBM Granite 3.x: <|start_of_role|>role<|end_of_role|>content<|end_of_text|>; from 3.1 on the model's
# template injects a default system prompt with today's date, which detection turns into the Modelfile SYSTEM) --
_GRANITE_GO = (
    "{{- range .Messages }}<|start_of_role|>{{ .Role }}<|end_of_role|>{{ .Content }}<|end_of_text|>\n"
    "{{ end }}<|start_of_role|>assistant<|end_of_role|>"
)
_GRANITE_JINJA = (
    "{%- for message in messages %}"
    "{{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content'] + '<|end_of_text|>\\n' }}"
    "{%- if loop.last and add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}{%- endif %}"
    "{%- endfor %}"
)

# Detection tries the families in this order and takes the first whose TEMPLATE renders every sample conversation
# as the model's template does; a family that differs from another only in what it adds (Llama 3.1's dated
# system header over Llama 3) comes first.
FAMILIES: dict[str, ChatFamily] = {
    f.name: f
    for f in (
        ChatFamily("chatml", _CHATML_GO, ["<|im_start|>", "<|im_end|>"], _CHATML_JINJA, "ChatML (<|im_start|>role ... <|im_end|>)"),
        ChatFamily("llama3.1", _LLAMA31_GO,
                   ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"],
                   _LLAMA31_JINJA, "Llama 3.1/3.2/3.3 headers with the dated system header",
                   pinned_date=_LLAMA31_DATE, date_format="%d %b %Y"),
        ChatFamily("llama3", _LLAMA3_GO, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"],
                   _LLAMA3_JINJA, "Llama 3 headers"),
        ChatFamily("gemma", _GEMMA_GO, ["<start_of_turn>", "<end_of_turn>", "<eos>"], _GEMMA_JINJA,
                   "Gemma turns (system merged into the first user turn)"),
        ChatFamily("mistral", _MISTRAL_GO, ["[INST]", "[/INST]", "</s>"], _MISTRAL_JINJA, "Mistral [INST] (v0.3 layout)"),
        ChatFamily("mistral-tekken", _MISTRAL_TEKKEN_GO, ["[INST]", "[/INST]", "</s>"], _MISTRAL_TEKKEN_JINJA,
                   "Mistral-Nemo [INST] without spaces (tekken layout)"),
        ChatFamily("mistral-v1", _MISTRAL_V1_GO, ["[INST]", "[/INST]", "</s>"], _MISTRAL_V1_JINJA,
                   "Mistral ' [INST] ' with the system prompt in the first turn (v1 layout)"),
        ChatFamily("mistral-legacy", _mistral_legacy_go(""), ["[INST]", "[/INST]", "</s>"], _mistral_legacy_jinja(""),
                   "the first Mistral-7B-Instruct-v0.2 [INST] template (no system role)"),
        ChatFamily("mistral-legacy-v0.1", _mistral_legacy_go(" "), ["[INST]", "[/INST]", "</s>"], _mistral_legacy_jinja(" "),
                   "the first Mistral-7B-Instruct-v0.1 [INST] template ('</s> ' between turns)"),
        ChatFamily("phi3", _PHI3_GO, ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<|endoftext|>"], _PHI3_JINJA,
                   "Phi-3 <|role|> ... <|end|>"),
        ChatFamily("phi3-legacy", _PHI3_LEGACY_GO, ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<|endoftext|>"],
                   _PHI3_LEGACY_JINJA, "the first Phi-3-mini/medium template (system message dropped)"),
        ChatFamily("zephyr", _ZEPHYR_GO, ["</s>", "<|user|>", "<|assistant|>", "<|system|>"], _ZEPHYR_JINJA,
                   "Zephyr <|role|> ... </s>"),
        ChatFamily("llama2", _LLAMA2_GO, ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "</s>"], _LLAMA2_JINJA,
                   "Llama 2 chat [INST] <<SYS>>"),
        ChatFamily("exaone", _EXAONE_GO, ["[|endofturn|]", "[|user|]", "[|assistant|]", "[|system|]"], _EXAONE_JINJA,
                   "EXAONE 3.0/3.5 [|role|] ... [|endofturn|]"),
        ChatFamily("deepseek", _DEEPSEEK_GO, [_DEEPSEEK_EOS, "User:", "Assistant:"], _DEEPSEEK_JINJA,
                   "DeepSeek LLM/V2 'User: ... Assistant:'"),
        ChatFamily("deepseek-v3", _DEEPSEEK_V3_GO, [_DEEPSEEK_EOS, "<｜User｜>", "<｜Assistant｜>", "<｜begin▁of▁sentence｜>"],
                   _DEEPSEEK_V3_JINJA, "DeepSeek V3 <｜User｜> / <｜Assistant｜>"),
        ChatFamily("granite", _GRANITE_GO, ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>"], _GRANITE_JINJA,
                   "IBM Granite 3.x <|start_of_role|>role<|end_of_role|>"),
        ChatFamily("alpaca-ko", _ALPACA_KO_GO, ["### 질문:", "### 답변:"], _ALPACA_KO_JINJA, "Korean Alpaca prompt (### 질문: / ### 답변:)"),
    )
}

_ALIASES = {"phi-3": "phi3", "phi3.5": "phi3", "phi-3.5": "phi3", "llama-3": "llama3", "llama3-instruct": "llama3",
            "llama-3.1": "llama3.1", "llama3.2": "llama3.1", "llama-3.2": "llama3.1", "llama3.3": "llama3.1",
            "llama-3.3": "llama3.1", "gemma2": "gemma", "gemma3": "gemma", "gemma-2": "gemma", "gemma-3": "gemma",
            "mistral-v0.3": "mistral", "mistral-nemo": "mistral-tekken", "tekken": "mistral-tekken",
            "mixtral": "mistral-v1", "tinyllama": "zephyr", "llama-2": "llama2", "llama2-chat": "llama2",
            "exaone3": "exaone", "exaone3.5": "exaone", "exaone-3.5": "exaone", "deepseek-llm": "deepseek",
            "deepseek-v2": "deepseek", "deepseek3": "deepseek-v3", "granite3": "granite", "koalpaca": "alpaca-ko",
            "alpaca_ko": "alpaca-ko", "qwen": "chatml", "qwen2.5": "chatml", "smollm2": "chatml"}


def template_for_family(name: str) -> ChatFamily:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return FAMILIES[key]
    except KeyError:
        raise ChatFamilyError(f"unknown chat template family {name!r}", hint=f"use one of: {', '.join(FAMILIES)}") from None


