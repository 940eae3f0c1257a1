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
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableLambda

from evals.suites import Suite

def render_prompt(suite: Suite, question: str) -> list[dict[str, str]]:
    """The messages one question becomes under the suite's prompt (system, few-shot turns, user template,
    chain-of-thought instruction), as role/content dicts: what is sent and what the cache key covers."""
    from evals.suites import _apply_prompt

    return _apply_prompt(suite, [{"role": "user", "content": question}], None)


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


def answer_of(message: Any) -> dict[str, Any]:
    """The output parser of every suite chain: the answer text with what the runtime counted (generated and
    prompt tokens), so the store keeps them next to the raw output."""
    text = StrOutputParser().invoke(message)
    usage = getattr(message, "usage_metadata", None) or {}
    meta = getattr(message, "response_metadata", None) or {}
    return {
        "text": text,
        "tokens": usage.get("output_tokens", meta.get("eval_count")),
        "prompt_tokens": usage.get("input_tokens", meta.get("prompt_eval_count")),
        "done_reason": meta.get("done_reason"),
    }


def build_chain(suite: Suite, model_name: str, base_url: str, llm: BaseChatModel | None = None) -> Runnable:
    """``prompt | llm | parser``; invoke with ``{"messages": example.messages}``, get ``answer_of``'s dict.

    ``llm`` replaces ChatOllama (tests pass a LangChain fake chat model)."""
    model = llm if llm is not None else ollama_chat_model(suite, model_name, base_url)
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("messages")])
    return prompt | model | RunnableLambda(answer_of, name="answer")
