"""The one error type every stage raises on purpose: what went wrong (``message``, which may span several
lines, e.g. a template diff) and what to do next (``hint``). Only the pipeline layer turns it into an
``error`` event; stages never write error events themselves."""

from __future__ import annotations


class OllatuneError(Exception):
    """Base of every deliberate error. ``str(e)`` is the message; the hint is separate."""

    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


def error_hint(exc: BaseException) -> str:
    """The next step for any exception: its own hint, or one for the common system failures."""
    hint = getattr(exc, "hint", "") or ""
    if not hint and isinstance(exc, MemoryError):
        hint = "not enough memory: lower train.batch_size or data.max_seq_len"
    if not hint and isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        hint = "the disk is full: free space or set OLLATUNE_HOME to a larger disk, then re-run"
    return hint or "fix the cause and re-run the same command: finished stages are skipped"


def error_message(exc: BaseException) -> str:
    """The whole message of an exception (every line), or its class name when it has none."""
    text = getattr(exc, "message", None) or str(exc)
    return text.strip() or exc.__class__.__name__
