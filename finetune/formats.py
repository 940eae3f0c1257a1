"""Row layouts the project reads, turned into chat messages. No heavy imports here: evals uses it too."""

from __future__ import annotations

from typing import Any

# KoAlpaca / Alpaca layout: instruction, optional input, output.
ALPACA_FIELDS = ("instruction", "input", "output")


def alpaca_user_message(instruction: str, input: str = "") -> str:
    """The user turn for an instruction row; the same text in training, in evaluation and in chat."""
    instruction = instruction.strip()
    input = (input or "").strip()
    return f"{instruction}\n\n{input}" if input else instruction


def alpaca_to_messages(row: dict[str, Any], system: str | None = None) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": alpaca_user_message(row["instruction"], row.get("input", ""))})
    messages.append({"role": "assistant", "content": str(row["output"]).strip()})
    return messages
