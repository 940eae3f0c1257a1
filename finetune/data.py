"""The error the data stage raises: names the file, the line and the field, and what to do next."""

from __future__ import annotations


class DatasetError(ValueError):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint
