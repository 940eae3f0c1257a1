"""Filling a DataTable with its columns sized up front.

Textual's DataTable measures auto-width columns when it next idles; a frame drawn before that is cached
at the header's widths, so a table refilled while the screen renders can show cut cells until the next
resize. Every table of the TUI is filled here instead: each column gets the width of its widest cell (by
display width, so Korean counts two columns a character) before any row is added."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable


def fit_cell(text: Any, width: int, style: str = "") -> Text:
    """One line of ``text`` (whitespace collapsed) no wider than ``width`` cells, cut with an ellipsis.
    Display width, not characters: a Korean syllable takes two cells. Never read as markup."""
    if text is None:
        return Text("-", style="dim")
    line = Text(" ".join(str(text).split()), style=style, no_wrap=True, overflow="ellipsis", end="")
    line.truncate(max(1, width), overflow="ellipsis")
    return line


def cell_width(cell: Any) -> int:
    """Display width of a cell: Rich markup in a str, a Text, or anything else by its str()."""
    if isinstance(cell, Text):
        return max((line.cell_len for line in cell.split()), default=0)
    if isinstance(cell, str):
        return max((line.cell_len for line in Text.from_markup(cell).split()), default=0)
    return Text(str(cell)).cell_len


def fill_table(table: DataTable, columns: Sequence[tuple[Any, str]], rows: Sequence[tuple[str, Sequence[Any]]],
               *, widths: Sequence[int | None] | None = None) -> None:
    """Replace the table's columns and rows. ``columns`` are (label, key); ``rows`` are (key, cells).
    ``widths`` fixes a column's width (None: its widest cell)."""
    sized = [cell_width(label) for label, _ in columns]
    for _, cells in rows:
        for i, cell in enumerate(cells):
            sized[i] = max(sized[i], cell_width(cell))
    if widths is not None:
        sized = [w if w is not None else s for w, s in zip(widths, sized)]
    table.clear(columns=True)
    for (label, key), width in zip(columns, sized):
        table.add_column(label, key=key, width=width)
    for key, cells in rows:
        table.add_row(*cells, key=key)
