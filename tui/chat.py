"""``ollatune chat NAME``: a streaming conversation with a registered model through the official ``ollama``
client - the quick check before ``ollama run``.

Input: one line is one message; a line of three double quotes starts a multi-line message and the next
such line ends it. Commands: ``/system TEXT`` sets the system prompt (``/system`` alone clears it),
``/reset`` forgets the conversation, ``/exit`` or ``/bye`` (or Ctrl-D) ends it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

HELP = ('type a message; """ on a line of its own starts and ends a multi-line message; /system TEXT, /reset, '
        "/exit")


@dataclass
class ChatSession:
    model: str
    chat: Callable[..., Iterable[Any]]  # ollama.Client.chat
    options: dict = field(default_factory=dict)
    system: str | None = None
    history: list[dict] = field(default_factory=list)

    def messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def ask(self, text: str, out: TextIO) -> str:
        """Send one user message, stream the answer to ``out``, keep both in the history."""
        self.history.append({"role": "user", "content": text})
        pieces = []
        try:
            for part in self.chat(model=self.model, messages=self.messages(), stream=True, options=self.options):
                piece = part.message.content or ""
                pieces.append(piece)
                out.write(piece)
                out.flush()
        except BaseException:
            self.history.pop()  # the question stays unanswered: not part of the conversation
            raise
        out.write("\n")
        answer = "".join(pieces)
        self.history.append({"role": "assistant", "content": answer})
        return answer

    def command(self, line: str, out: TextIO) -> bool:
        """Handle a /command; False when the conversation ends."""
        cmd, _, arg = line.strip().partition(" ")
        if cmd in ("/exit", "/bye"):
            return False
        if cmd == "/reset":
            self.history.clear()
            out.write("(conversation cleared)\n")
        elif cmd == "/system":
            self.system = arg.strip() or None
            out.write(f"(system prompt {'set' if self.system else 'cleared'})\n")
        else:
            out.write(f"unknown command {cmd}; {HELP}\n")
        return True


def read_messages(read_line: Callable[[str], str]) -> Iterator[str]:
    """Messages from lines (``input``-like ``read_line(prompt)``): single lines, or blocks between lines of
    three double quotes. Ends at end of input."""
    while True:
        try:
            line = read_line(">>> ")
        except EOFError:
            return
        if line.strip() == '"""':
            block = []
            while True:
                try:
                    more = read_line("... ")
                except EOFError:
                    break
                if more.strip() == '"""':
                    break
                block.append(more)
            yield "\n".join(block)
        elif line.strip():
            yield line


def converse(session: ChatSession, read_line: Callable[[str], str], out: TextIO) -> None:
    for text in read_messages(read_line):
        if text.startswith("/") and "\n" not in text:
            if not session.command(text, out):
                return
            continue
        session.ask(text, out)
