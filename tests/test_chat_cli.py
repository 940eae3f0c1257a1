"""`ollatune chat`: the conversation loop (multi-line input, /system, /reset, /exit) over any chat function,
and `ollatune serve` refusing a non-loopback address unless asked."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from types import SimpleNamespace

from tests.conftest import REPO
from tui.chat import ChatSession, converse


class FakeChat:
    """Records the messages of each call and streams a numbered answer in two pieces."""

    def __init__(self) -> None:
        self.calls: list[list[dict]] = []

    def __call__(self, model, messages, stream, options):  # noqa: ANN001, ANN204
        self.calls.append([dict(m) for m in messages])
        n = len(self.calls)
        return iter([SimpleNamespace(message=SimpleNamespace(content=f"answer {n}")),
                     SimpleNamespace(message=SimpleNamespace(content="."))])


def _lines(*lines):  # noqa: ANN002, ANN202
    it = iter(lines)

    def read(prompt: str) -> str:
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    return read


def test_a_conversation_keeps_its_history_and_streams_answers():
    chat = FakeChat()
    out = io.StringIO()
    session = ChatSession("m", chat, {}, system="be brief")
    converse(session, _lines("hello", '"""', "line one", "line two", '"""', "/reset", "again", "/exit", "never"), out)
    assert [m["content"] for m in chat.calls[0]] == ["be brief", "hello"]
    assert [m["content"] for m in chat.calls[1]] == ["be brief", "hello", "answer 1.", "line one\nline two"]
    assert [m["content"] for m in chat.calls[2]] == ["be brief", "again"]  # /reset forgot the history
    assert len(chat.calls) == 3  # /exit ended it
    assert "answer 1.\n" in out.getvalue() and "(conversation cleared)" in out.getvalue()


def test_system_prompt_can_be_changed_and_cleared_and_end_of_input_ends():
    chat = FakeChat()
    session = ChatSession("m", chat, {})
    converse(session, _lines("/system you are a poet", "hi", "/system", "hi again", "/nope"), io.StringIO())
    assert chat.calls[0][0] == {"role": "system", "content": "you are a poet"}
    assert chat.calls[1][0]["role"] == "user"


def test_a_failed_answer_leaves_no_unanswered_question_in_the_history():
    def broken(**kw):  # noqa: ANN003, ANN202
        raise ConnectionError("gone")

    session = ChatSession("m", broken, {})
    try:
        session.ask("hi", io.StringIO())
    except ConnectionError:
        pass
    assert session.history == []


def test_serve_refuses_a_public_address_without_expose():
    env = {**os.environ, "OLLAMA_HOST": "0.0.0.0:18765"}
    proc = subprocess.run([sys.executable, "-m", "tui.cli", "serve"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert "refusing to listen on 0.0.0.0" in proc.stderr and "--expose" in proc.stderr
