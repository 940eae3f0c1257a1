"""The prompt that asks which recipe the pipeline job should run."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label

DEFAULT_RECIPE = "demo-ko"


def shipped_recipe_names() -> list[str]:
    try:  # light (yaml + pydantic); the prompt still works if the recipe module cannot load
        from finetune.recipe import shipped_recipes

        return list(shipped_recipes())
    except Exception:
        return []


class RecipePrompt(ModalScreen[str | None]):
    """Dismisses with the recipe name or YAML path, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    RecipePrompt { align: center middle; }
    RecipePrompt > Vertical { width: 70; height: auto; padding: 1 2; border: thick $primary; background: $surface; }
    RecipePrompt Label { width: 100%; margin-bottom: 1; }
    """

    def __init__(self, default: str = DEFAULT_RECIPE) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        names = shipped_recipe_names()
        shipped = f"shipped: {', '.join(names)}" if names else "a shipped recipe name"
        with Vertical():
            yield Label(f"Run the pipeline with which recipe? ({shipped}, or a YAML path)")
            yield Input(value=self.default, placeholder=DEFAULT_RECIPE, id="recipe",
                        suggester=SuggestFromList(names, case_sensitive=False) if names else None)
            yield Label("[dim]enter: start  ·  escape: cancel[/dim]")

    @on(Input.Submitted, "#recipe")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
