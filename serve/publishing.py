"""The serve stage: ``publish(request, endpoint, ctx) -> PublishResult``.

For one exported model: detect the chat template family from the tokenizer it was trained with (with that
tokenizer's real BOS/EOS, and the system prompt it was trained with), prove that the Modelfile TEMPLATE
renders every sample conversation exactly as that tokenizer does, write the Modelfile beside the GGUF,
register the model with Ollama and record it in the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from serve.chat_templates import RenderJinja, TemplateSpec, detect_template
from serve.client import OllamaEndpoint, register
from serve.errors import ServeError
from serve.parity import ParityReport, require_parity
from workspace.context import RunContext

__all__ = ["PublishRequest", "PublishResult", "publish", "registry_host", "spec_with_parity", "tokenizer_spec"]


class PublishRequest(BaseModel):
    role: str  # "tuned" | "vanilla" (any label, unique within a run)
    name: str  # the Ollama model name
    gguf: Path  # the file that gets registered
    hf_dir: Path  # a folder with the tokenizer the model was trained with (its chat template)
    system: str | None = None  # the system prompt the model was trained with (None: the template's own default)
    parameters: dict[str, Any] = Field(default_factory=dict)
    artifact_id: int | None = None  # the GGUF's store id, for lineage
    header: str = ""  # first comment line of the Modelfile


class PublishResult(BaseModel):
    role: str
    name: str  # as Ollama lists it (with its tag)
    digest: str
    modelfile: Path
    model_id: int  # RegisteredModel.id in the store
    family: str
    stop: list[str]
    system: str | None = None
    host: str


def tokenizer_spec(hf_dir: Path, system: str | None = None) -> tuple[TemplateSpec, ParityReport]:
    """The Modelfile TEMPLATE/SYSTEM/stops for the tokenizer in ``hf_dir``, and the parity proof.

    Prompts are rendered as in training: the tokenizer's own ``apply_chat_template``, with the trained
    ``system`` prompt in front of a conversation that has none. The tokenizer's real BOS and EOS go to the
    detector: a leading BOS in the rendering is left to the runtime, which adds it when tokenizing (Llama 3,
    Gemma, Phi-3 and BOS-prefixed ChatML templates start with it), and EOS becomes a stop."""
    from transformers import AutoTokenizer

    from workspace.quiet import quiet_libraries

    quiet_libraries()
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    if not tok.chat_template:
        raise ServeError(f"the tokenizer in {hf_dir} has no chat template",
                         "train with a chat template (a base model without one is trained with the Korean Alpaca "
                         "prompt, which the saved adapter's tokenizer carries)")

    def render_trained(messages: list[dict], add_generation_prompt: bool) -> str:
        if system and (not messages or messages[0].get("role") != "system"):
            messages = [{"role": "system", "content": system}, *messages]
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    return spec_with_parity(render_trained, tok.bos_token, tok.eos_token)


def spec_with_parity(render: RenderJinja, bos_token: str | None, eos_token: str | None) -> tuple[TemplateSpec,
                                                                                                 ParityReport]:
    spec = detect_template(render, bos_token=bos_token, eos_token=eos_token)
    return spec, require_parity(render, spec, bos_token=bos_token)


def registry_host(endpoint: OllamaEndpoint, ctx: RunContext) -> str:
    """Where registered models live: an embedded runtime keeps them in the workspace whatever port it got;
    a daemon is its URL."""
    return f"embedded:{ctx.settings.ollama_dir}" if endpoint.embedded else endpoint.host


def publish(request: PublishRequest, endpoint: OllamaEndpoint, ctx: RunContext) -> PublishResult:
    from workspace.store import RegisteredModel, session_scope

    events = ctx.events("serve")
    spec, report = tokenizer_spec(request.hf_dir, request.system)
    compared = sum(1 for c in report.cases if c.skipped is None)
    events.log(f"{request.role}: chat template family {spec.family}, stops {spec.stop}; template parity holds on "
               f"{compared} sample conversations", role=request.role, family=spec.family)
    info = register(endpoint, request.gguf, request.name, spec, dict(request.parameters), events,
                    header=request.header)
    host_key = registry_host(endpoint, ctx)
    with session_scope(ctx.store) as s:
        existing = s.scalar(select(RegisteredModel).where(
            RegisteredModel.name == info.name, RegisteredModel.host == host_key,
            RegisteredModel.digest == info.digest))
        if existing is None:
            existing = RegisteredModel(artifact_id=request.artifact_id, name=info.name, host=host_key,
                                       digest=info.digest, role=request.role, template_family=spec.family,
                                       modelfile_path=str(info.modelfile_path))
            s.add(existing)
            s.flush()
        model_id = existing.id
    return PublishResult(role=request.role, name=info.name, digest=info.digest, modelfile=info.modelfile_path,
                         model_id=model_id, family=spec.family, stop=list(spec.stop), system=spec.system,
                         host=host_key)


class ModelfilePreview(BaseModel):
    """What ``ollatune modelfile PATH`` prints: the Modelfile ollatune would register and its parity proof."""

    source: str
    family: str
    stop: list[str]
    system: str | None
    parity_ok: bool
    parity: list[str]  # one line (or a diff) per sample conversation
    modelfile: str


def preview_modelfile(path: Path, system: str | None = None, parameters: dict[str, Any] | None = None
                      ) -> ModelfilePreview:
    """The Modelfile for an HF model folder, a tokenizer folder or a GGUF file, by the code path the serve
    stage uses; parity is reported, not raised, so a mismatch can be shown whole."""
    from serve.chat_templates import detect_template, read_gguf_chat_info
    from serve.modelfile import render_modelfile
    from serve.parity import check_parity

    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        info = read_gguf_chat_info(path)
        base_render = info.renderer()
        bos = info.bos_token if info.add_bos else None
        eos = info.eos_token
        from_path = str(path)
    elif path.is_dir():
        from transformers import AutoTokenizer

        from workspace.quiet import quiet_libraries

        quiet_libraries()
        tok = AutoTokenizer.from_pretrained(str(path))
        if not tok.chat_template:
            raise ServeError(f"the tokenizer in {path} has no chat template",
                             "pass a folder whose tokenizer_config.json (or chat_template.jinja) has one")

        def base_render(messages: list[dict], add_generation_prompt: bool) -> str:
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

        bos, eos = tok.bos_token, tok.eos_token
        ggufs = sorted(path.glob("*.gguf"))
        from_path = str(ggufs[0]) if ggufs else "./model.gguf"
    else:
        raise ServeError(f"{path} is neither a model or tokenizer folder nor a .gguf file",
                         "pass an HF folder (config + tokenizer), a tokenizer folder or a GGUF file")

    def render(messages: list[dict], add_generation_prompt: bool) -> str:
        if system and (not messages or messages[0].get("role") != "system"):
            messages = [{"role": "system", "content": system}, *messages]
        return base_render(messages, add_generation_prompt)

    spec = detect_template(render, bos_token=bos, eos_token=eos)
    report = check_parity(render, spec, bos_token=bos)
    text = render_modelfile(from_path, spec, dict(parameters or {"temperature": 0.0}), f"ollatune modelfile {path}")
    return ModelfilePreview(source=str(path), family=spec.family, stop=list(spec.stop), system=spec.system,
                            parity_ok=report.ok, parity=[c.summary() for c in report.cases], modelfile=text)
