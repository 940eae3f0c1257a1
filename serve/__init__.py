"""Serve: Modelfile rendering, template parity, the Ollama client and the embedded Ollama-compatible runtime.

Light modules (errors, gotemplate, chat_templates, parity, modelfile) load on first use of their names;
``runtime`` (starlette, uvicorn, llama_cpp on model load) and ``client`` (ollama, httpx) too, so
``import serve`` stays cheap.
"""

from __future__ import annotations

from workspace.lazy import lazy_exports

_EXPORTS = {
    # errors
    "ServeError": "serve.errors",
    "TemplateSyntaxError": "serve.errors",
    "TemplateRenderError": "serve.errors",
    "TemplateDetectionError": "serve.errors",
    "TemplateParityError": "serve.errors",
    "ModelfileError": "serve.errors",
    "OllamaUnavailable": "serve.errors",
    "OllamaRequestError": "serve.errors",
    "RuntimeStartError": "serve.errors",
    # go templates
    "render": "serve.gotemplate",
    "render_ollama": "serve.gotemplate",
    "GoTemplate": "serve.gotemplate",
    # chat templates
    "ChatFamily": "serve.chat_templates",
    "TemplateSpec": "serve.chat_templates",
    "FAMILIES": "serve.chat_templates",
    "template_for_family": "serve.chat_templates",
    "spec_for_family": "serve.chat_templates",
    "detect_template": "serve.chat_templates",
    "jinja_renderer": "serve.chat_templates",
    "read_gguf_chat_info": "serve.chat_templates",
    "spec_from_gguf": "serve.chat_templates",
    # parity
    "ParityCase": "serve.parity",
    "ParityReport": "serve.parity",
    "check_parity": "serve.parity",
    "require_parity": "serve.parity",
    "SAMPLE_CONVERSATIONS": "serve.parity",
    # modelfile
    "render_modelfile": "serve.modelfile",
    "parse_modelfile": "serve.modelfile",
    # runtime
    "create_app": "serve.runtime",
    "EmbeddedRuntime": "serve.runtime",
    "serve_forever": "serve.runtime",
    # the serve stage
    "PublishRequest": "serve.publishing",
    "PublishResult": "serve.publishing",
    "publish": "serve.publishing",
    "tokenizer_spec": "serve.publishing",
    # client
    "OllamaEndpoint": "serve.client",
    "RegisteredModelInfo": "serve.client",
    "ensure_ollama": "serve.client",
    "register": "serve.client",
    "chat_once": "serve.client",
    "ollama_endpoint": "serve.client",
    "model_digest": "serve.client",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
