"""LangChain chains for a suite: ``ChatPromptTemplate | ChatOllama | StrOutputParser()``.

The chat model's own template (the Modelfile TEMPLATE, built from the training template) turns these
messages into the prompt, so the eval prompt is the training prompt.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable

from evals.suites import Suite

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def build_prompt(suite: Suite) -> ChatPromptTemplate:
    messages: list[Any] = []
    if suite.prompt.system:
        # A literal message, not a template: braces in a system prompt stay braces.
        messages.append(SystemMessage(content=suite.prompt.system))
    messages.append(("human", suite.prompt.user))
    return ChatPromptTemplate.from_messages(messages)


def render_prompt(suite: Suite, question: str) -> list[dict[str, str]]:
    """The messages exactly as they will be sent to the model (role/content dicts), e.g. for cache keys."""
    return [
        {"role": _ROLES.get(m.type, m.type), "content": str(m.content)}
        for m in build_prompt(suite).format_messages(question=question)
    ]


def ollama_chat_model(suite: Suite, model_name: str, base_url: str) -> BaseChatModel:
    """ChatOllama with the suite's parameters (imported here: only runs that reach Ollama need it)."""
    from langchain_ollama import ChatOllama

    p = suite.params
    return ChatOllama(
        model=model_name,
        base_url=base_url,
        temperature=p.temperature,
        seed=p.seed,
        num_predict=p.num_predict,
        stop=list(p.stop) or None,
        num_ctx=p.num_ctx,
    )


def build_chain(suite: Suite, model_name: str, base_url: str, llm: BaseChatModel | None = None) -> Runnable:
    """``prompt | llm | StrOutputParser()``; invoke with ``{"question": ...}``, get the raw answer text.

    ``llm`` replaces ChatOllama (tests pass a LangChain fake chat model)."""
    model = llm if llm is not None else ollama_chat_model(suite, model_name, base_url)
    return build_prompt(suite) | model | StrOutputParser()
