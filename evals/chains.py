"""LangChain chains for a suite: ``ChatPromptTemplate | ChatOllama | StrOutputParser()``.

Every example is a list of chat messages: for a suite over ``alpaca`` rows the suite's prompt template
(system + ``{question}``) makes them; held-out examples (``format: examples``) carry the exact messages the
model was trained on. The chain's prompt passes them through a messages placeholder, and the chat model's
own template (the Modelfile TEMPLATE, built from the training template) turns them into the prompt, so the
eval prompt is the training prompt.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
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

    from workspace.settings import api_headers

    p = suite.params
    headers = api_headers()
    return ChatOllama(
        model=model_name,
        base_url=base_url,
        client_kwargs={"headers": headers} if headers else {},
        temperature=p.temperature,
        seed=p.seed,
        num_predict=p.num_predict,
        stop=list(p.stop) or None,
        num_ctx=p.num_ctx,
    )


def build_chain(suite: Suite, model_name: str, base_url: str, llm: BaseChatModel | None = None) -> Runnable:
    """``prompt | llm | StrOutputParser()``; invoke with ``{"messages": example.messages}``, get the raw
    answer text.

    ``llm`` replaces ChatOllama (tests pass a LangChain fake chat model)."""
    model = llm if llm is not None else ollama_chat_model(suite, model_name, base_url)
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("messages")])
    return prompt | model | StrOutputParser()
