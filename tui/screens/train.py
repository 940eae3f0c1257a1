"""The Train screen: a form over a recipe (base model, data, LoRA, batch, learning rate, steps, sequence
length, backend, the stage to stop after), validated by the recipe's own pydantic model before anything
starts, and the ``ollatune pipeline RECIPE --set ... --until STAGE`` job it starts.

The training-time estimate of a recipe is its optimizer steps times the seconds per step measured in this
workspace's past runs of the same base model, backend, batch and sequence length (the runs' own
``events.jsonl``); without such a run it says "unknown". Only yaml and pydantic are imported here.
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from tui.screens.base import JOB_STYLE, OllatuneScreen

if TYPE_CHECKING:
    from finetune.recipe import Recipe
    from tui.app import JobState
    from workspace.settings import Settings

DEFAULT_RECIPE = "demo-ko"
STAGES = ("data", "finetune", "export", "serve", "evals")


# ------------------------------------------------------------------------------------------ the form's fields


@dataclass(frozen=True)
class FormField:
    key: str  # the recipe field, dotted as `--set` takes it
    label: str
    kind: str = "number"  # number | text | choice
    nullable: bool = False  # an empty input means null (train.max_steps, train.epochs)

    @property
    def widget_id(self) -> str:
        return "f-" + self.key.replace(".", "-").replace("_", "-")

    @property
    def error_id(self) -> str:
        return "e-" + self.key.replace(".", "-").replace("_", "-")


FIELDS: tuple[FormField, ...] = (
    FormField("model.base", "base model", "text"),
    FormField("data.path", "data", "text"),
    FormField("data.format", "data format", "choice"),
    FormField("data.eval_rows", "eval rows"),
    FormField("train.lora.r", "LoRA r"),
    FormField("train.lora.alpha", "LoRA alpha"),
    FormField("train.lora.dropout", "LoRA dropout"),
    FormField("train.batch_size", "batch size"),
    FormField("train.grad_accum", "grad accum"),
    FormField("train.lr", "learning rate"),
    FormField("train.max_steps", "max steps", nullable=True),
    FormField("train.epochs", "epochs", nullable=True),
    FormField("data.max_seq_len", "max seq len"),
    FormField("train.backend", "backend", "choice"),
)
FIELD_BY_KEY = {f.key: f for f in FIELDS}


def field_choices(key: str) -> tuple[str, ...]:
    """The values a Literal field of the recipe model allows, read from the model itself."""
    from finetune.recipe import Recipe

    model: Any = Recipe
    *sections, name = key.split(".")
    for section in sections:
        model = model.model_fields[section].annotation
    return tuple(str(v) for v in typing.get_args(model.model_fields[name].annotation))


def dotted(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def format_value(value: Any) -> str:
    """A recipe value as the form shows it (and as `--set` would take it back)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def override_value(spec: FormField, text: str) -> str:
    """The right-hand side of ``--set key=value`` for what the user typed (values are read as YAML)."""
    text = text.strip()
    if text == "" and spec.nullable:
        return "null"
    if spec.kind == "text" and text:
        try:
            same = yaml.safe_load(text) == text
        except yaml.YAMLError:
            same = False
        if not same:  # a path with `: `, a leading `[`, "null" ...: quote it so it stays a string
            return json.dumps(text, ensure_ascii=False)
    return text


def build_overrides(initial: dict[str, str], values: dict[str, str]) -> list[str]:
    """``key=value`` for every field whose text differs from the recipe's own, in form order."""
    out = []
    for spec in FIELDS:
        text = values.get(spec.key, "").strip()
        if text != initial.get(spec.key, "").strip():
            out.append(f"{spec.key}={override_value(spec, text)}")
    return out


def extra_overrides(text: str) -> list[str]:
    """The "more --set" field: shell-like words, each ``key=value`` for a recipe field the form has no row
    for; a word without ``=`` is passed on as it is and the recipe model refuses it by name."""
    try:
        return shlex.split(text)
    except ValueError:  # an unclosed quote while typing: the words so far
        return text.split()


def pipeline_args(recipe: str, overrides: list[str], until: str) -> list[str]:
    args = ["pipeline", recipe]
    for item in overrides:
        args += ["--set", item]
    return args + ["--until", until]


@dataclass
class Validation:
    recipe: Recipe | None
    field_errors: dict[str, str] = field(default_factory=dict)  # form field key -> pydantic's message
    error: str | None = None  # a problem no field of the form shows (other recipe fields, a YAML error)


def validate_form(recipe: str, overrides: list[str]) -> Validation:
    """``load_recipe(recipe, overrides)``; when it refuses, every pydantic error, each under its field."""
    from finetune.recipe import RecipeError, load_recipe

    try:
        return Validation(load_recipe(recipe, overrides))
    except RecipeError as exc:
        first = str(exc)
    errors, others = _all_errors(recipe, overrides)
    if not errors and not others:
        others = [first]
    return Validation(None, errors, "; ".join(others) or None)


def _all_errors(recipe: str, overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    from pydantic import ValidationError

    from finetune.recipe import Recipe, RecipeError, apply_overrides, resolve_recipe_path

    try:
        data = yaml.safe_load(resolve_recipe_path(recipe).read_text(encoding="utf-8")) or {}
        data = apply_overrides(data, overrides)
        Recipe.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        others: list[str] = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"])
            key = where if where in FIELD_BY_KEY else next((k for k in FIELD_BY_KEY if k in err["msg"]), None)
            if key is not None and key not in errors:
                errors[key] = err["msg"]
            elif key is None:
                others.append(f"{where}: {err['msg']}")
        return errors, others
    except (RecipeError, OSError, yaml.YAMLError) as exc:
        return {}, [str(exc)]
    return {}, []


# ------------------------------------------------------------------------------------------ the estimate


@dataclass
class PastRun:
    """A finished training in this workspace and its measured seconds per optimizer step."""

    run_id: str
    shape: tuple[Any, ...]  # what the step time depends on: see training_shape
    data: dict[str, Any]
    s_per_step: float
    steps: int
    train_rows: int | None
    last_ts: float


def training_shape(recipe: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(dotted(recipe, k) for k in ("model.base", "train.backend", "train.batch_size", "train.grad_accum",
                                             "data.max_seq_len", "train.packing"))


def seconds_per_step(events: Iterable[dict[str, Any]]) -> tuple[float, int, float] | None:
    """The median seconds per optimizer step between consecutive training-loss events, the last step, and
    the time of the last one; None with fewer than two such events."""
    rates: list[float] = []
    prev: tuple[int, float] | None = None
    last_step, last_ts = 0, 0.0
    for e in events:
        if e.get("stage") != "finetune" or e.get("type") != "metric" or "loss" not in e:
            continue
        step, ts = e.get("step"), e.get("ts")
        if not isinstance(step, int) or not isinstance(ts, (int, float)):
            continue
        if prev is not None and step > prev[0] and ts > prev[1]:
            rates.append((ts - prev[1]) / (step - prev[0]))
        prev = (step, float(ts))
        last_step, last_ts = max(last_step, step), float(ts)
    if not rates:
        return None
    return statistics.median(rates), last_step, last_ts


def load_history(settings: Settings) -> list[PastRun]:
    """Every run folder with a saved recipe and at least two logged training steps."""
    runs_dir = settings.runs_dir
    if not runs_dir.is_dir():
        return []
    out = []
    for run_dir in runs_dir.iterdir():
        try:
            recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
            events = _read_events(run_dir / "events.jsonl")
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(recipe, dict):
            continue
        measured = seconds_per_step(events)
        if measured is None:
            continue
        out.append(PastRun(run_dir.name, training_shape(recipe), dict(recipe.get("data") or {}), measured[0],
                           measured[1], _train_rows(run_dir), measured[2]))
    return out


def _read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
    return events


def _train_rows(run_dir: Path) -> int | None:
    try:
        marker = json.loads((run_dir / "stages" / "data.json").read_text(encoding="utf-8"))
        rows = marker["result"]["train_rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rows if isinstance(rows, int) else None


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m"


@dataclass
class Estimate:
    seconds: float | None
    short: str  # for the recipe list
    detail: str  # how it was derived


def estimate_training(recipe: Recipe, history: list[PastRun]) -> Estimate:
    data = recipe.model_dump(mode="json")
    shape = training_shape(data)
    matches = sorted((p for p in history if p.shape == shape), key=lambda p: p.last_ts, reverse=True)
    if not matches:
        return Estimate(None, "time unknown",
                        "training time unknown: no past run here with this base model, backend, batch and "
                        "sequence length")
    best = matches[0]
    t = recipe.train
    steps: int | None = t.max_steps
    if steps is None:
        rows = next((p.train_rows for p in matches if p.data == data["data"] and p.train_rows), None)
        if rows is None:
            return Estimate(None, "time unknown",
                            f"training time unknown: {t.epochs} epochs of rows not counted yet "
                            f"({best.s_per_step:.1f} s/step measured in run {best.run_id})")
        per_epoch = max(1, math.ceil(rows / (t.batch_size * t.grad_accum)))
        steps = max(1, math.ceil(per_epoch * float(t.epochs or 1)))
    total = steps * best.s_per_step
    return Estimate(total, f"train ~{format_duration(total)}",
                    f"training ~{format_duration(total)}: {steps} steps x {best.s_per_step:.2f} s/step measured "
                    f"in run {best.run_id} (model loading and the other stages not included)")


# ------------------------------------------------------------------------------------------ the screen


@dataclass
class RecipeEntry:
    name: str
    description: str
    values: dict[str, Any]  # the recipe, validated and dumped
    estimate: Estimate | None
    error: str | None = None


class RecipesLoaded(Message):
    def __init__(self, entries: list[RecipeEntry], history: list[PastRun], error: str | None) -> None:
        super().__init__()
        self.entries = entries
        self.history = history
        self.error = error


def load_entries(settings: Settings) -> tuple[list[RecipeEntry], list[PastRun], str | None]:
    from finetune.recipe import RecipeError, load_recipe, shipped_recipes

    try:
        history = load_history(settings)
        history_error = None
    except Exception as exc:  # an unreadable workspace still lists the recipes
        history, history_error = [], f"past runs in {settings.runs_dir} not read ({exc}): estimates unknown"
    entries = []
    for name, path in shipped_recipes().items():
        try:
            rec = load_recipe(path)
        except RecipeError as exc:
            entries.append(RecipeEntry(name, "", {}, None, str(exc)))
            continue
        entries.append(RecipeEntry(name, rec.description, rec.model_dump(mode="json"),
                                   estimate_training(rec, history)))
    return entries, history, history_error


def describe_job(job: JobState | None) -> Text:
    """The current or last job, with its error and next step when it failed."""
    if job is None:
        return Text("no job yet: fill the form and press s", style="dim")
    state = "cancelling" if job.running and job.cancel_requested else job.state
    text = Text.assemble(("job ", "dim"), (job.label, "bold"), " ", (state, JOB_STYLE.get(job.state, "")))
    if job.run_id:
        text.append(f"  run {job.run_id}", style="dim")
    if job.state == "failed":  # the error event's message and hint, or the exit code and stderr tail
        text.append(f"\n{job.failure_text()}", style="red")
        text.append("  R: resume", style="dim")
    elif job.state == "cancelled":
        text.append("  R: resume", style="dim")
    return text


class TrainScreen(OllatuneScreen):
    NAV = "train"
    TITLE_TEXT = "Train"
    HELP = (
        "Pick a recipe on the left, change its fields, press [b]s[/b] (or Start) to run "
        "`ollatune pipeline RECIPE --set ... --until STAGE` as a job.\n"
        "Fields are checked by the recipe's own model as you type; a bad value is shown in red under its "
        "field and nothing starts. Only fields you change become `--set` overrides.\n"
        "The time is the recipe's steps x the seconds per step measured in a past run here with the same "
        "base model, backend, batch and sequence length; \"unknown\" without one.\n"
        "Data chosen on the Data screen (2) fills the data fields.\n"
        "While a field has the focus, letters go into it: [b]ctrl+s[/b] starts from there, [b]esc[/b] leaves the "
        "field (then s, 1-7 and q work again).\n"
        "[b]x[/b] cancels the running job, [b]R[/b] resumes the last one, [b]j[/b] shows its live view."
    )
    BINDINGS = [
        Binding("s", "start", "Start"),
        Binding("ctrl+s", "start", "Start", key_display="^s", priority=True),
        Binding("escape", "leave_field", "Done"),
    ]
    DEFAULT_CSS = """
    TrainScreen #train-body { height: 1fr; }
    TrainScreen #train-recipes { width: 40%; max-width: 56; min-width: 24; border-right: solid $primary; }
    TrainScreen #train-recipes > .pane-title { height: 1; padding: 0 1; text-style: bold; background: $boost; }
    TrainScreen #recipe-list { height: 1fr; border: none; }
    TrainScreen #train-main { width: 1fr; }
    TrainScreen #train-form { height: 1fr; padding: 0 1; }
    TrainScreen #recipe-info { height: auto; margin-bottom: 1; }
    TrainScreen .field-row { height: 1; }
    TrainScreen .field-label { width: 15; color: $text-muted; }
    TrainScreen .field-row > Input, TrainScreen .field-row > Select { width: 1fr; max-width: 64; }
    TrainScreen .field-error { height: auto; padding-left: 15; color: $error; display: none; }
    TrainScreen .field-error.-shown { display: block; }
    TrainScreen #form-error { height: auto; color: $error; display: none; }
    TrainScreen #form-error.-shown { display: block; }
    TrainScreen #train-command { height: auto; margin-top: 1; color: $text-muted; }
    TrainScreen #train-actions { height: auto; max-height: 5; padding: 0 1; border-top: solid $primary; }
    TrainScreen #start { margin-right: 2; }
    TrainScreen #train-job { width: 1fr; height: auto; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, RecipeEntry] = {}
        self.history: list[PastRun] = []
        self.recipe: str | None = None
        self.initial: dict[str, str] = {}  # field key -> the text the recipe itself gives it
        self.validation: Validation | None = None
        self._applied_data: dict[str, Any] | None = None
        self._checked: tuple[str, list[str], str] | None = None  # what the shown validation is of
        self._note = ""  # where the data fields came from, when not from the recipe

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="train-body"):
            with Vertical(id="train-recipes"):
                yield Static("Recipes", classes="pane-title")
                yield OptionList(id="recipe-list", compact=True)
            with Vertical(id="train-main"):
                with VerticalScroll(id="train-form"):
                    yield Static("loading recipes…", id="recipe-info")
                    for spec in FIELDS:
                        with Horizontal(classes="field-row"):
                            yield Label(spec.label, classes="field-label")
                            if spec.kind == "choice":
                                options = [(c, c) for c in field_choices(spec.key)]
                                yield Select(options, allow_blank=False, compact=True, id=spec.widget_id)
                            else:
                                yield Input(compact=True, id=spec.widget_id, select_on_focus=False,
                                            placeholder="null" if spec.nullable else "")
                        yield Static("", classes="field-error", id=spec.error_id)
                    with Horizontal(classes="field-row"):
                        yield Label("stop after", classes="field-label")
                        yield Select([(s, s) for s in STAGES], value="evals", allow_blank=False, compact=True,
                                     id="f-until")
                    with Horizontal(classes="field-row"):
                        yield Label("more --set", classes="field-label")
                        yield Input(compact=True, id="f-extra", select_on_focus=False,
                                    placeholder="key=value ... (any recipe field, e.g. eval.limit=8)")
                    yield Static("", id="form-error")
                    yield Static("", id="train-command")
                with Horizontal(id="train-actions"):
                    yield Button("Start", id="start", variant="primary", compact=True)
                    yield Static(describe_job(getattr(self.app, "job", None)), id="train-job")

    def on_mount(self) -> None:
        super().on_mount()
        self.load_recipes()

    def on_screen_resume(self) -> None:
        self._show_job(getattr(self.app, "job", None))
        if self.recipe is not None and self._data_choice() != self._applied_data:
            self._apply_data()

    # -- loading the recipes and past runs

    @work(thread=True, exclusive=True, group="train-recipes", exit_on_error=False, description="load recipes")
    def load_recipes(self) -> None:
        try:
            entries, history, error = load_entries(self.app.settings)  # type: ignore[attr-defined]
        except Exception as exc:
            self.post_message(RecipesLoaded([], [], f"recipes not loaded: {exc} (check finetune/recipes/*.yaml)"))
            return
        self.post_message(RecipesLoaded(entries, history, error))

    def on_recipes_loaded(self, message: RecipesLoaded) -> None:
        self.entries = {e.name: e for e in message.entries}
        self.history = message.history
        if message.error:
            self.notify(message.error, title="train", severity="warning", markup=False)
        listing = self.query_one("#recipe-list", OptionList)
        listing.clear_options()
        for i, entry in enumerate(message.entries):
            if i:
                listing.add_option(None)  # a separator line between recipes
            prompt = Text(entry.name, style="bold")
            if entry.error:
                prompt.append(f"\n{entry.error}", style="red")
            else:
                prompt.append(f"\n{entry.description}", style="dim")
                prompt.append(f"\n{entry.estimate.short if entry.estimate else 'time unknown'}")
            listing.add_option(Option(prompt, id=entry.name))
        if not message.entries:
            self.query_one("#recipe-info", Static).update(Text("no recipes found in finetune/recipes", style="red"))
            return
        names = [e.name for e in message.entries]
        current = self.recipe if self.recipe in names else DEFAULT_RECIPE if DEFAULT_RECIPE in names else names[0]
        listing.highlighted = listing.get_option_index(current)
        if current != self.recipe:
            self._fill(current)
        else:  # reloaded after a job: new estimates, and the user's edits stay
            self.revalidate(force=True)

    @on(OptionList.OptionHighlighted, "#recipe-list")
    def _recipe_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        name = event.option.id
        if name and name != self.recipe and name in self.entries:
            self._fill(name)

    # -- the form

    def _data_choice(self) -> dict[str, Any] | None:
        chosen = getattr(self.app, "selected_data", None)
        return dict(chosen) if isinstance(chosen, dict) else None

    def _fill(self, name: str) -> None:
        """Put a recipe's values in the form, then the data chosen on the Data screen over them."""
        entry = self.entries[name]
        self.recipe = name
        self.initial = {spec.key: format_value(dotted(entry.values, spec.key)) for spec in FIELDS}
        self._set_fields(self.initial)
        self._apply_data()

    def _apply_data(self) -> None:
        """The data chosen on the Data screen (``app.selected_data``) into the data fields; the rest stays."""
        chosen, before = self._data_choice(), self._applied_data
        self._applied_data = chosen
        values: dict[str, str] = {}
        if before and not chosen:  # the choice was withdrawn: the recipe's own data again
            values = {k: v for k, v in self.initial.items() if k.startswith("data.")}
        if chosen:
            source = chosen.get("source") or chosen.get("path")
            if source:
                values["data.path"] = str(source)
            task = chosen.get("task") or chosen.get("format")
            if task and str(task) in field_choices("data.format"):
                values["data.format"] = str(task)
            for key in ("eval_rows", "val_rows", "max_seq_len"):
                if chosen.get(key) is not None and f"data.{key}" in FIELD_BY_KEY:
                    values[f"data.{key}"] = format_value(chosen[key])
        self._set_fields(values)
        self._extra_from_data(chosen)
        self._note = f"\ndata from the Data screen: {values['data.path']}" if "data.path" in values else ""
        self.revalidate(force=True)

    def _extra_from_data(self, chosen: dict[str, Any] | None) -> None:
        """The Data screen's settings that have no row in the form (val rows, seed) go into "more --set",
        replacing the same keys there."""
        items = [str(o) for o in (chosen or {}).get("overrides") or []
                 if "=" in str(o) and str(o).split("=", 1)[0] not in FIELD_BY_KEY]
        if not items:
            return
        box = self.query_one("#f-extra", Input)
        keys = {o.split("=", 1)[0] for o in items}
        kept = [o for o in extra_overrides(box.value) if o.split("=", 1)[0] not in keys]
        box.value = shlex.join(kept + items)

    def _set_fields(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            spec = FIELD_BY_KEY[key]
            if spec.kind == "choice":
                if value:
                    self.query_one(f"#{spec.widget_id}", Select).value = value
            else:
                self.query_one(f"#{spec.widget_id}", Input).value = value

    def form_values(self) -> dict[str, str]:
        values = {}
        for spec in FIELDS:
            if spec.kind == "choice":
                value = self.query_one(f"#{spec.widget_id}", Select).value
                values[spec.key] = "" if value is Select.BLANK else str(value)
            else:
                values[spec.key] = self.query_one(f"#{spec.widget_id}", Input).value
        return values

    @property
    def until(self) -> str:
        value = self.query_one("#f-until", Select).value
        return "evals" if value is Select.BLANK else str(value)

    def overrides(self) -> list[str]:
        return build_overrides(self.initial, self.form_values()) + extra_overrides(
            self.query_one("#f-extra", Input).value)

    def job_args(self) -> list[str]:
        assert self.recipe is not None
        return pipeline_args(self.recipe, self.overrides(), self.until)

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self) -> None:
        self.revalidate()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.focus_next()

    def revalidate(self, force: bool = False) -> Validation | None:
        """Check the form with the recipe model; show each error under its field."""
        if self.recipe is None:
            return None
        overrides = self.overrides()
        checked = (self.recipe, overrides, self.until)
        if not force and checked == self._checked and self.validation is not None:
            return self.validation
        self._checked = checked
        result = self.validation = validate_form(self.recipe, overrides)
        for spec in FIELDS:
            message = result.field_errors.get(spec.key)
            error = self.query_one(f"#{spec.error_id}", Static)
            error.update(Text(message or ""))
            error.set_class(bool(message), "-shown")
            self.query_one(f"#{spec.widget_id}").set_class(bool(message), "-invalid")
        form_error = self.query_one("#form-error", Static)
        form_error.update(Text(result.error or ""))
        form_error.set_class(bool(result.error), "-shown")
        info = Text(self.recipe, style="bold")
        entry = self.entries.get(self.recipe)
        if entry is not None and entry.error:
            info.append(f"\n{entry.error}", style="red")
        if result.recipe is not None:
            info.append(f"\n{estimate_training(result.recipe, self.history).detail}", style="dim")
        else:
            count = len(result.field_errors) + (1 if result.error else 0)
            info.append(f"\n{count} problem(s) to fix before starting", style="red")
        if self._note:
            info.append(self._note, style="dim")
        self.query_one("#recipe-info", Static).update(info)
        command = " ".join(_shell_word(a) for a in ["ollatune", *pipeline_args(self.recipe, overrides, self.until)])
        self.query_one("#train-command", Static).update(Text(command))
        return result

    # -- starting, and the job's state

    def _in_field(self) -> bool:
        return isinstance(self.focused, Input)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The footer shows s outside a field and ctrl+s / esc inside one, where letters are typed.
        if action == "leave_field":
            return self._in_field()
        return True

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()

    def on_descendant_blur(self) -> None:
        self.refresh_bindings()

    def action_leave_field(self) -> None:
        self.query_one("#start", Button).focus()

    @on(Button.Pressed, "#start")
    def _start_pressed(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        if self.recipe is None:
            self.notify("the recipes are still loading", severity="warning")
            return
        result = self.revalidate(force=True)
        if result is None or result.recipe is None:
            problems = [f"{FIELD_BY_KEY[k].label}: {m}" for k, m in (result.field_errors.items() if result else ())]
            if result and result.error:
                problems.append(result.error)
            self.notify("\n".join(problems) or "the form does not validate", title="not started",
                        severity="error", markup=False)
            return
        self.app.start_job(self.recipe, self.job_args())  # type: ignore[attr-defined]

    def job_changed(self, job: JobState, event: dict[str, Any] | None) -> None:
        if event is None or event.get("type") in ("error", "done"):
            self._show_job(job)
        if event is None and not job.running:
            self.load_recipes()  # a finished training is a new measurement for the estimates

    def _show_job(self, job: JobState | None) -> None:
        self.query_one("#train-job", Static).update(describe_job(job))


def _shell_word(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_.=/:,+@" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"
