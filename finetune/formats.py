"""The user turn of an instruction row. No heavy imports here: evals builds the same prompt."""

from __future__ import annotations


def alpaca_user_message(instruction: str, input: str = "") -> str:
    """The user turn for an instruction row; the same text in training, in evaluation and in chat."""
    instruction = instruction.strip()
    input = (input or "").strip()
    return f"{instruction}\n\n{input}" if input else instruction
