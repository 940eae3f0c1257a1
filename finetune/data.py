"""The error the data stage raises: names the file, the line and the field, and what to do next."""

from __future__ import annotations

from workspace.errors import OllatuneError


class DatasetError(OllatuneError, ValueError):
    """Rows that cannot be used: file, line and field are in the message."""
