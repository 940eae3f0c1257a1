"""The characters the TUI may draw: those Windows Terminal's default font (Cascadia Mono) has, so that
nothing renders as a box or a fallback glyph of another width. User text (Korean answers, file names) is
shown as it is; this is about what the TUI itself draws."""

from __future__ import annotations

SAFE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0020, 0x007E),  # ASCII
    (0x00A0, 0x00FF),  # Latin-1 (middle dot, non-breaking space)
    (0x2010, 0x2027),  # dashes, quotes, bullet, ellipsis
    (0x2030, 0x205E),  # per mille, primes
    (0x2190, 0x2199),  # arrows
    (0x2212, 0x2212),  # minus sign
    (0x2500, 0x257F),  # box drawing
    (0x2580, 0x259F),  # block elements (bars, plot quadrants)
    (0x25A0, 0x25FF),  # geometric shapes (radio buttons, check marks of Textual's widgets)
    (0x1100, 0x11FF),  # Hangul jamo (user text)
    (0x3130, 0x318F),  # Hangul compatibility jamo (user text)
    (0xAC00, 0xD7A3),  # Hangul syllables (user text)
)


def is_safe(char: str) -> bool:
    code = ord(char)
    return char in "\n\t" or any(lo <= code <= hi for lo, hi in SAFE_RANGES)


def unsafe_chars(text: str) -> set[str]:
    """Characters of ``text`` outside :data:`SAFE_RANGES`."""
    return {c for c in text if not is_safe(c)}
