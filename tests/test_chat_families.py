"""The chat families against the chat templates published models ship: each template, in a real tokenizer folder
with its model's BOS/EOS, is detected as its family by the serve stage's own code path and proves parity on
single- and multi-turn conversations with and without a system message; near families are told apart."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from serve.chat_templates import detect_template, jinja_renderer, spec_for_family, template_for_family
from serve.errors import TemplateDetectionError
from serve.gotemplate import render_ollama
from serve.parity import SAMPLE_CONVERSATIONS, check_parity, ollama_chat_messages
from serve.publishing import tokenizer_spec
from tests.published_templates import PUBLISHED
from tests.tokenizer_dirs import SPECIALS, make_tokenizer_dir
from workspace.chat_families import FAMILIES

USER_ONLY = {"single-turn", "multi-turn", "korean"}


def _granite_default() -> str:
    today = datetime.datetime.now().strftime("%B %d, %Y")
    return (f"Knowledge Cutoff Date: April 2024.\nToday's Date: {today}.\n"
            "You are Granite, developed by IBM. You are a helpful AI assistant.")


# published template -> (family, the default system prompt detection must find)
EXPECTED = {
    "openhermes-2.5": ("chatml", None),
    "nous-hermes-2-mixtral": ("chatml", None),
    "smollm2": ("chatml", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
    "qwen2.5": ("chatml", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
    "llama-3": ("llama3", None),
    "llama-3.1": ("llama3.1", None),
    "llama-3.2": ("llama3.1", None),
    "llama-3.3": ("llama3.1", None),
    "gemma-2": ("gemma", None),
    "gemma-3": ("gemma", None),
    "mistral-v0.1": ("mistral-legacy-v0.1", None),
    "mistral-v0.2": ("mistral-legacy", None),
    "mixtral-8x7b-v0.1": ("mistral-v1", None),
    "mistral-v0.3": ("mistral", None),
    "mistral-nemo": ("mistral-tekken", None),
    "phi-3-mini": ("phi3-legacy", None),
    "phi-3-medium": ("phi3-legacy", None),
    "phi-3-mini-updated": ("phi3", None),
    "phi-3.5-mini": ("phi3", None),
    "zephyr": ("zephyr", None),
    "llama-2-chat": ("llama2", None),
    "exaone-3.0": ("exaone", None),
    "exaone-3.5": ("exaone", None),
    "deepseek-v2": ("deepseek", None),
    "deepseek-v3": ("deepseek-v3", None),
    "granite-3.0": ("granite", None),
    "granite-3.1": ("granite", _granite_default),
    "granite-3.2": ("granite", _granite_default),
}
# templates that raise_exception on a system message: their system conversations are skipped, not compared
REFUSE_SYSTEM = {"gemma-2", "mistral-v0.1", "mistral-v0.2"}
# templates whose output no Go TEMPLATE can reproduce: refused with the reason
UNSUPPORTED = {"deepseek-v2.5"}


def _tokenizer_dir(tmp_path: Path, name: str) -> Path:
    p = PUBLISHED[name]
    return make_tokenizer_dir(tmp_path / name, "chatml", chat_template=p.jinja,
                              specials={"bos": p.bos, "eos": p.eos, "extra": list(p.extra)})


def _renderer(hf_dir: Path, system: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir))

    def render(messages, add_generation_prompt=True):
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    return tok, render


def test_every_published_template_has_an_expectation():
    assert set(EXPECTED) | UNSUPPORTED == set(PUBLISHED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_template_is_detected_with_parity(tmp_path, name):
    family, system = EXPECTED[name]
    system = system() if callable(system) else system
    p = PUBLISHED[name]
    hf_dir = _tokenizer_dir(tmp_path, name)
    tok, render = _renderer(hf_dir)
    assert (tok.bos_token, tok.eos_token) == (p.bos, p.eos)  # the detector sees the model's real BOS/EOS

    spec, report = tokenizer_spec(hf_dir)
    assert spec.family == family, report.summary()
    assert report.ok, report.summary()
    assert spec.system == system
    assert p.eos in spec.stop and set(FAMILIES[family].stop) <= set(spec.stop)
    compared = {c.name for c in report.cases if c.skipped is None}
    assert USER_ONLY <= compared
    if name not in REFUSE_SYSTEM:
        assert compared == set(SAMPLE_CONVERSATIONS)
    else:
        assert all("refused" in c.skipped for c in report.cases if c.name not in compared)

    # the Go rendering is the tokenizer's, less a BOS the template writes (the runtime adds it when tokenizing)
    for case in report.cases:
        if case.skipped:
            continue
        rendered = render(case.messages)
        assert case.go == render_ollama(spec.go_template, ollama_chat_messages(case.messages, spec.system))
        if p.bos and rendered.startswith(p.bos) and not case.go.startswith(p.bos):
            assert p.bos + case.go == rendered
        else:
            assert case.go == rendered


@pytest.mark.parametrize("name", ["llama-3", "llama-3.1", "gemma-3", "mistral-v0.3", "phi-3-mini", "llama-2-chat",
                                  "deepseek-v3", "nous-hermes-2-mixtral"])
def test_bos_written_by_the_template_is_left_to_the_runtime(tmp_path, name):
    p = PUBLISHED[name]
    hf_dir = _tokenizer_dir(tmp_path, name)
    _tok, render = _renderer(hf_dir)
    assert render([{"role": "user", "content": "hello"}]).startswith(p.bos)
    spec, report = tokenizer_spec(hf_dir)
    for case in (c for c in report.cases if c.skipped is None):
        assert not case.go.startswith(p.bos) and p.bos + case.go == render(case.messages)
    # without the BOS the detector could not match the template at all
    with pytest.raises(TemplateDetectionError):
        detect_template(render)


def test_llama_3_2_date_is_the_one_its_template_renders_now(tmp_path):
    """Llama 3.2 writes today's date (strftime_now) in its system header; Ollama has no function that writes a date
    in that format, so the registered TEMPLATE holds the date the tokenizer renders when the model is published.
    Llama 3.1/3.3 default to 26 Jul 2024, which the family's TEMPLATE carries."""
    fam = FAMILIES["llama3.1"]
    today = datetime.datetime.now().strftime("%d %b %Y")
    spec_31, _ = tokenizer_spec(_tokenizer_dir(tmp_path, "llama-3.1"))
    spec_32, report = tokenizer_spec(_tokenizer_dir(tmp_path, "llama-3.2"))
    assert spec_31.go_template == fam.go_template and "Today Date: 26 Jul 2024\n\n" in spec_31.go_template
    assert spec_32.family == "llama3.1" and report.ok
    assert spec_32.go_template == fam.go_template_for_date(today)
    assert f"Today Date: {today}\n\n" in spec_32.go_template
    if today != fam.pinned_date:
        assert spec_32.go_template != fam.go_template


def test_a_trained_system_prompt_replaces_the_default_one(tmp_path):
    system = "당신은 간결하게 답합니다."
    for name in ("llama-3.2", "exaone-3.5", "granite-3.1", "qwen2.5", "zephyr", "mistral-v0.3", "deepseek-v3"):
        hf_dir = _tokenizer_dir(tmp_path, name)
        spec, report = tokenizer_spec(hf_dir, system=system)
        assert spec.family == EXPECTED[name][0] and report.ok and spec.system == system, name
        _tok, render = _renderer(hf_dir, system)
        msgs = [{"role": "user", "content": "what is the capital of france"}]
        go = render_ollama(spec.go_template, ollama_chat_messages(msgs, spec.system))
        bos = PUBLISHED[name].bos
        trained = render(msgs)
        assert go == (trained[len(bos):] if bos and trained.startswith(bos) else trained), name


def test_deepseek_v2_5_system_rendering_is_refused(tmp_path):
    """DeepSeek-V2.5's template emits the whitespace between its tags (eight spaces before BOS when there is a
    system message): no Go TEMPLATE renders that as a prompt the runtime tokenizes the same way, so detection
    refuses it rather than registering a prompt that differs."""
    with pytest.raises(TemplateDetectionError) as e:
        tokenizer_spec(_tokenizer_dir(tmp_path, "deepseek-v2.5"))
    assert "deepseek-v3: single-turn-system" in e.value.message


def _published_renderer(name: str):
    p = PUBLISHED[name]
    return jinja_renderer(p.jinja, p.bos or "", p.eos), p.bos


@pytest.mark.parametrize(("template", "right", "wrong"), [
    ("phi-3-mini", "phi3-legacy", "phi3"),
    ("phi-3.5-mini", "phi3", "phi3-legacy"),
    ("mistral-v0.1", "mistral-legacy-v0.1", "mistral"),
    ("mistral-v0.3", "mistral", "mistral-legacy-v0.1"),
    ("mistral-v0.1", "mistral-legacy-v0.1", "mistral-legacy"),
    ("mistral-v0.2", "mistral-legacy", "llama2"),
    ("mixtral-8x7b-v0.1", "mistral-v1", "mistral-legacy"),
    ("mistral-nemo", "mistral-tekken", "mistral"),
    ("llama-3.1", "llama3.1", "llama3"),
    ("zephyr", "zephyr", "phi3"),
    ("deepseek-v3", "deepseek-v3", "deepseek"),
])
def test_near_families_are_not_confused(template, right, wrong):
    render, bos = _published_renderer(template)
    assert detect_template(render, bos_token=bos).family == right
    assert check_parity(render, spec_for_family(right), bos_token=bos).ok
    report = check_parity(render, spec_for_family(wrong), bos_token=bos)
    assert not report.ok


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_exactly_one_family_renders_each_published_template(name):
    """Detection does not depend on the order of FAMILIES: no other family passes parity on a published template."""
    p = PUBLISHED[name]
    render = jinja_renderer(p.jinja, p.bos or "", p.eos, strip_bos=False)
    matching = []
    for family in FAMILIES:
        try:
            detect_template(render, bos_token=p.bos, eos_token=p.eos, families=[family])
        except TemplateDetectionError:
            continue
        matching.append(family)
    assert matching == ([] if name in UNSUPPORTED else [EXPECTED[name][0]])


def test_phi3_versions_differ_exactly_on_the_system_message():
    """The first Phi-3-mini template drops a system message, Phi-3.5 keeps it: user-only chats render alike."""
    for template, wrong in (("phi-3-mini", "phi3"), ("phi-3.5-mini", "phi3-legacy")):
        render, bos = _published_renderer(template)
        report = check_parity(render, spec_for_family(wrong), bos_token=bos)
        failed = {c.name for c in report.cases if not c.ok}
        assert failed == set(SAMPLE_CONVERSATIONS) - USER_ONLY, template


def test_mistral_v0_3_puts_the_system_prompt_in_the_last_user_turn_and_v1_in_the_first():
    msgs = SAMPLE_CONVERSATIONS["multi-turn-system"]
    system, first, last = msgs[0]["content"], msgs[1]["content"], msgs[3]["content"]
    v03 = render_ollama(FAMILIES["mistral"].go_template, msgs)
    v1 = render_ollama(FAMILIES["mistral-v1"].go_template, msgs)
    assert f"[INST] {system}\n\n{last}[/INST]" in v03 and f"[INST] {first}[/INST]" in v03
    assert v1.startswith(f" [INST] {system}\n\n{first} [/INST]") and v1.endswith(f" [INST] {last} [/INST]")


def test_exaone_writes_an_empty_system_turn_without_a_default_prompt():
    out = render_ollama(FAMILIES["exaone"].go_template, [{"role": "user", "content": "안녕하세요"}])
    assert out == "[|system|][|endofturn|]\n[|user|]안녕하세요\n[|assistant|]"
    out = render_ollama(FAMILIES["exaone"].go_template, SAMPLE_CONVERSATIONS["single-turn-system"])
    assert out.startswith("[|system|]You are a concise assistant.[|endofturn|]\n[|user|]") and out.count("[|system|]") == 1


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"llama3", "gemma", "chatml"}))
def test_each_family_reference_template_in_a_tokenizer_folder(tmp_path, family):
    """The families' own reference templates (what a base model is trained with) through a real tokenizer."""
    hf_dir = make_tokenizer_dir(tmp_path / family, family)
    spec, report = tokenizer_spec(hf_dir)
    assert spec.family == family and report.ok and spec.system is None
    assert SPECIALS[family]["eos"] in spec.stop
    assert all(c.skipped is None for c in report.cases)


def test_aliases_and_existing_names():
    for name in ("chatml", "llama3", "gemma", "mistral", "phi3", "alpaca-ko"):
        assert template_for_family(name).name == name
    aliases = {"phi-3": "phi3", "phi3.5": "phi3", "qwen": "chatml", "smollm2": "chatml", "gemma3": "gemma",
               "llama3.2": "llama3.1", "llama3.3": "llama3.1", "mistral-nemo": "mistral-tekken", "mixtral": "mistral-v1",
               "tinyllama": "zephyr", "llama2-chat": "llama2", "exaone3.5": "exaone", "deepseek-v2": "deepseek",
               "deepseek3": "deepseek-v3", "koalpaca": "alpaca-ko"}
    for alias, name in aliases.items():
        assert template_for_family(alias).name == name, alias


def test_dated_family_variants():
    fam = FAMILIES["llama3.1"]
    assert fam.go_template_for_date(fam.pinned_date) == fam.go_template
    dated = fam.go_template_for_date("01 Jan 2030")
    assert "Today Date: 01 Jan 2030\n\n" in dated and fam.pinned_date not in dated
    assert FAMILIES["chatml"].go_template_for_date("01 Jan 2030") == FAMILIES["chatml"].go_template
