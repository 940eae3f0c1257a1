"""Errors of the serve stage: each says what went wrong, where, and what to do next (``hint``)."""

from __future__ import annotations

from workspace.errors import OllatuneError


class ServeError(OllatuneError):
    """Base class of every error ``serve`` raises on purpose."""


class TemplateSyntaxError(ServeError):
    """A Go template that the renderer cannot parse (position in the message)."""

    default_hint = "fix the TEMPLATE at the position shown; ollatune renders the subset of Go text/template Ollama's templates use"


class TemplateRenderError(ServeError):
    """A Go template that parsed but failed while rendering (bad function call, bad index...)."""

    default_hint = "check the TEMPLATE action at the position shown against the data it receives (.Messages, .System, ...)"


class TemplateDetectionError(ServeError):
    default_hint = (
        "pass the chat family explicitly (one of chatml, llama3, gemma, mistral, phi3, alpaca-ko) "
        "or train with one of these chat templates"
    )


class TemplateParityError(ServeError):
    default_hint = (
        "the Modelfile TEMPLATE would prompt the model differently from how it was trained; "
        "pick the family the model was trained with, or fix the model's chat template, then re-run"
    )


class ModelfileError(ServeError):
    default_hint = "check the Modelfile syntax (FROM, TEMPLATE \"\"\"...\"\"\", SYSTEM, PARAMETER name value)"


class OllamaUnavailable(ServeError):
    default_hint = "start Ollama (`ollama serve`) or the embedded runtime (`ollatune serve`), then re-run"


class OllamaRequestError(ServeError):
    default_hint = "see the message from the Ollama server above; fix the request or the model and re-run"


class RuntimeStartError(ServeError):
    default_hint = "choose another port (OLLAMA_HOST=127.0.0.1:<port>) or stop the process that holds it"
