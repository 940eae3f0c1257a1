"""Post-processing of model output before scoring. The raw output is always stored next to the result.

Cleaning is what moved the NeMo SQuAD example from EM 0 to EM 93: a correct answer followed by
``<|end_of_text|>`` or a second, hallucinated turn is still a correct answer.
"""

from __future__ import annotations

import re

# Tokens that end a turn: everything from the first one on is not part of the answer.
END_TOKENS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "</s>",
    "<|end|>",
)
# Tokens that open a turn or a header. At the start (a broken template echoing the header) they are
# dropped; after some answer text they mean the model went on to write the next turn, so we cut there.
START_TOKENS = (
    "<|im_start|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|begin_of_text|>",
    "<start_of_turn>",
    "<s>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
)
SPECIAL_TOKENS = END_TOKENS + START_TOKENS

# A role header left at the start by a template mismatch: "assistant\n", "Assistant:", "### Response:".
_ROLE_HEADER = re.compile(
    r"^(?:#{1,6}\s*)?(?:assistant|model|gpt|bot|response|응답|답변|어시스턴트)"
    r"\s*(?:[:：]\s*|\n\s*|(?=<\|end_header_id\|>|<\|im_end\|>|\Z))",
    re.IGNORECASE,
)
_FENCE_LINE = re.compile(r"^\s*(?:```|~~~)[\w+\-.]*\s*$")


def _strip_leading(text: str) -> str:
    """Drop leading whitespace, special tokens and role headers, repeatedly (they come in any order)."""
    while True:
        before = text
        text = text.lstrip()
        for tok in SPECIAL_TOKENS:
            if text.startswith(tok):
                text = text[len(tok):]
        text = _ROLE_HEADER.sub("", text, count=1)
        if text == before:
            return text


def _cut_at_first(text: str, markers: list[str]) -> str:
    positions = [i for m in markers if m and (i := text.find(m)) >= 0]
    return text[: min(positions)] if positions else text


# One-line fence: only a well-known language tag is dropped ("```SELECT 1```" keeps SELECT).
_INLINE_FENCE = re.compile(
    r"^```(?:(?:sql|sqlite|mysql|python|py|json|text|txt|bash|sh|markdown|md)\s)?\s*(.*?)\s*```$",
    re.DOTALL | re.IGNORECASE,
)


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if "\n" not in stripped and (m := _INLINE_FENCE.match(stripped)):
        return m.group(1)
    lines = text.split("\n")
    if not any(_FENCE_LINE.match(line) for line in lines):
        return text
    return "\n".join(line for line in lines if not _FENCE_LINE.match(line))


def clean(raw: str, stop: list[str] | tuple[str, ...] = ()) -> str:
    """The answer inside a raw completion.

    1. drop leading whitespace, special tokens and a role header ("assistant", "### Response:");
    2. cut at the first end-of-turn/start-of-turn token or stop string;
    3. remove code-fence lines (```sql ... ```), keeping what they fence;
    4. strip surrounding whitespace.
    """
    text = _strip_leading(raw or "")
    text = _cut_at_first(text, list(SPECIAL_TOKENS) + [s for s in stop if s])
    text = _strip_fences(text)
    return text.strip()
