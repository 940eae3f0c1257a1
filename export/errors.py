from workspace.errors import OllatuneError


class ExportError(OllatuneError, RuntimeError):
    """An export step failed; ``hint`` says what to do next."""
