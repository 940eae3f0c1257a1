"""The data screen: choose a source (a shipped sample, a file, a hub dataset), see its rows as the model will
see them, the validation report (rejects by line, duplicates, token lengths) and the split, then take the
dataset into training.

Reading, validating and tokenizing run in a thread worker through the project's own code
(:func:`finetune.validate.validate`, :func:`finetune.validate.chat_template_lengths`,
:func:`finetune.base_model.resolve_base_model`, :func:`finetune.splits.split_examples`); the screen only
renders what comes back. Nothing heavy is imported when this module is.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.events import Resize
from textual.message import Message
from textual.suggester import Suggester
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label, Static, TabbedContent, TabPane, Tabs

from tui.screens.base import OllatuneScreen
from tui.widgets.tables import fit_cell
from workspace.samples import SAMPLES

DEFAULT_MODEL = "smollm2-135m-instruct"  # finetune.base_model.SMOLLM2_ALIAS: the shipped model
FORMATS = ("auto", "alpaca", "text2sql", "qa", "raft", "chat")  # auto: the sample's own, else alpaca
PREVIEW_ROWS = 500  # valid rows rendered for the preview (every row is validated and counted)
WIDE = 120  # from this many columns the preview shows the rows and the selected row side by side
PANES = ("pane-source", "pane-preview", "pane-rejects", "pane-lengths", "pane-split")
PROGRESS_EVERY_S = 0.25


class DataProblem(Exception):
    """The source cannot be read at all: what went wrong and the next step."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# ---------------------------------------------------------------------------------------------------------
# What the worker computes (plain data; no Textual)


@dataclass(frozen=True)
class DataRequest:
    source: str  # as the user wrote it: a sample name, a file path or hf:<id>
    task: str | None  # None: the sample's own format, else alpaca
    model: str  # whose tokenizer and chat template format the rows; "" for none
    max_seq_len: int  # the report's "over max_seq_len" share is against this


@dataclass
class PreviewRow:
    line: int | None
    id: str
    messages: list[dict[str, str]]
    prompt: str | None = None  # the chat template's text up to the answer (None without a tokenizer)
    answer: str | None = None  # the rest: the answer and its end-of-turn, what the loss is computed on
    tokens: int | None = None


@dataclass
class DataView:
    request: DataRequest
    source: str  # the file path or hf:<id> read
    task: str
    report: Any  # finetune.validate.Report
    examples: list[Any]  # the valid workspace.examples.Example rows, in source order
    rows: list[PreviewRow]
    tokenized: bool = False  # the tokenizer step has run (successfully or not)
    model_error: str | None = None
    specials: tuple[str, ...] = ()  # the tokenizer's special tokens, highlighted in the preview
    eos_appended: bool = False  # the tokenizer had no chat template: training appends EOS to answers


def hf_cache_dirs(env: dict[str, str] | None = None) -> tuple[Path, Path]:
    """(hub cache, datasets cache) where Hugging Face keeps downloaded datasets, from the same variables the
    libraries read."""
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    home = Path(env.get("HF_HOME") or Path(base) / "huggingface").expanduser()
    hub = Path(env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or home / "hub").expanduser()
    datasets = Path(env.get("HF_DATASETS_CACHE") or home / "datasets").expanduser()
    return hub, datasets


def hub_cached(ref: str, env: dict[str, str] | None = None) -> bool:
    """Whether ``hf:owner/name[:config]`` can be read without a network: in the hub or datasets cache."""
    name = ref[3:].partition(":")[0].strip().strip("/")
    if not name:
        return False
    if Path(name).expanduser().exists():  # a local dataset folder given by path
        return True
    hub, datasets = hf_cache_dirs(env)
    return (hub / ("datasets--" + name.replace("/", "--"))).is_dir() or (datasets / name.replace("/", "___")).is_dir()


def check_source(source: str) -> None:
    """Refuse a source that cannot be read before anything slow starts; the message names it."""
    from workspace.sources import SUFFIXES, is_hub_ref

    if is_hub_ref(source):
        if not source[3:].partition(":")[0].strip():
            raise DataProblem(f"{source!r} names no dataset", "write hf:owner/name (optionally hf:owner/name:config)")
        if not hub_cached(source):
            hub, datasets = hf_cache_dirs()
            raise DataProblem(f"{source} is not in the local Hugging Face cache ({hub}, {datasets})",
                              "datasets are read offline here: download it once on a machine with a network "
                              "(it is cached afterwards), or export it to a .jsonl/.parquet file and enter its path")
        return
    path = Path(source).expanduser()
    if not path.exists():
        samples = ", ".join(SAMPLES)
        raise DataProblem(f"{path} does not exist", f"check the path, or choose a shipped sample ({samples})")
    if path.is_dir():
        raise DataProblem(f"{path} is a folder", f"enter a file: {', '.join(SUFFIXES)}")
    if path.suffix.lower() not in SUFFIXES:
        raise DataProblem(f"{path}: unsupported file type {path.suffix or '(none)'}",
                          f"use one of {', '.join(SUFFIXES)}")


_TOKENIZERS: dict[tuple[str, str], tuple[Any, bool]] = {}
_TOKENIZERS_LOCK = threading.Lock()


def load_tokenizer(model: str, settings: Any, log: Callable[[str], None] = lambda m: None) -> tuple[Any, bool]:
    """The tokenizer the training would use for ``model`` and whether its answers get EOS appended (a
    tokenizer without a chat template gets the Korean Alpaca-style one, as in training). Loaded once."""
    where = Path(model).expanduser()
    key = (str(where.resolve()) if where.exists() else model, str(settings.home))
    with _TOKENIZERS_LOCK:
        if key in _TOKENIZERS:
            return _TOKENIZERS[key]
        from transformers import AutoTokenizer

        from finetune.base_model import resolve_base_model
        from finetune.lengths import ensure_chat_template
        from workspace.quiet import quiet_libraries

        quiet_libraries()
        base = resolve_base_model(model, settings, log=log)
        tokenizer = AutoTokenizer.from_pretrained(str(base.hf_dir))
        eos_appended = ensure_chat_template(tokenizer)
        _TOKENIZERS[key] = (tokenizer, eos_appended)
        return tokenizer, eos_appended


def _counting(records: Iterable[Any], progress: Callable[[str], None], name: str) -> Iterator[Any]:
    last = time.monotonic()
    for n, rec in enumerate(records, 1):
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S:
            progress(f"validating {name}: {n} rows read")
            last = now
        yield rec


def read_view(req: DataRequest, settings: Any, progress: Callable[[str], None] = lambda m: None) -> DataView:
    """Read and validate the source (no tokenizer yet): the report without token statistics, the rows as
    chat messages. Raises :class:`DataProblem` for a source that cannot be read."""
    from finetune.samples import open_records
    from finetune.validate import ValidationConfig, validate
    from workspace.errors import OllatuneError
    from workspace.samples import resolve_source

    source, task = resolve_source(req.source.strip(), req.task)
    check_source(source)
    cfg = ValidationConfig(task=task, max_seq_len=req.max_seq_len)
    try:
        if task == "text2sql":
            from workspace.samples import sample_databases

            progress("building the sample databases for the gold SQL checks")
            cfg.databases = sample_databases(settings.home / "databases")
        progress(f"validating {req.source}")
        records = _counting(open_records(source), progress, req.source)
        valid, report = validate(records, cfg, source=source)
    except OllatuneError as e:  # workspace.sources.SourceError and friends: the whole source is unreadable
        raise DataProblem(e.message, e.hint) from None
    rows = [PreviewRow(ex.line, ex.id, ex.messages()) for ex in valid[:PREVIEW_ROWS]]
    return DataView(req, source, task, report, valid, rows)


def render_row(example: Any, tokenizer: Any, eos_appended: bool = False) -> tuple[str, str]:
    """(prompt, answer): the chat template's text of one example, split where the answer starts."""
    messages = example.messages()
    if eos_appended:
        messages = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + tokenizer.eos_token}]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    try:
        prompt = tokenizer.apply_chat_template(example.prompt, tokenize=False, add_generation_prompt=True)
    except Exception:  # a template that cannot end on a prompt: show the whole text as one
        prompt = ""
    if prompt and full.startswith(prompt):
        return prompt, full[len(prompt):]
    return "", full


def tokenize_view(view: DataView, settings: Any, progress: Callable[[str], None] = lambda m: None) -> DataView:
    """Add the model's view to a validated source: token statistics (recommended max_seq_len) and each
    preview row rendered by the chat template. A model that cannot be loaded leaves ``model_error``."""
    from finetune.validate import chat_template_lengths, token_stats
    from workspace.errors import error_message

    view.tokenized = True
    model = view.request.model.strip()
    if not model:
        return view
    progress(f"loading the tokenizer of {model_name(model)}")  # resolving the model logs a first dequantization
    try:
        tokenizer, eos = load_tokenizer(model, settings, log=progress)
    except Exception as e:  # an unknown model, a hub id offline, a broken folder
        hint = getattr(e, "hint", "")
        view.model_error = f"model {model}: {error_message(e)}" + (f"; next: {hint}" if hint else "")
        return view
    view.eos_appended = eos
    specials = set(tokenizer.all_special_tokens) | {tokenizer.eos_token or ""}
    view.specials = tuple(sorted((t for t in specials if t), key=len, reverse=True))
    if not view.examples:
        return view
    progress(f"counting tokens of {len(view.examples)} rows with {model}'s chat template")
    try:
        # training appends EOS to every answer of a template without an end-of-turn token: one token more
        lengths = [n + (1 if eos else 0) for n in chat_template_lengths(tokenizer)(view.examples)]
        view.report.tokens = token_stats(lengths, view.request.max_seq_len)
        for row, ex, n in zip(view.rows, view.examples, lengths):
            row.prompt, row.answer = render_row(ex, tokenizer, eos)
            row.tokens = n
    except Exception as e:  # a chat template that fails on these messages (e.g. roles it refuses)
        view.model_error = f"model {model}: its chat template failed on these rows: {error_message(e)}"
    return view


@dataclass
class SplitCounts:
    train: int = 0
    validation: int = 0
    test: int = 0
    error: str | None = None


def split_counts(examples: list[Any], eval_rows: int, val_rows: int, seed: int) -> SplitCounts:
    """Rows of each part of the seeded split training will make (finetune.splits, as data preparation)."""
    from finetune.splits import SplitError, split_examples

    try:
        parts = split_examples(examples, validation=val_rows, test=eval_rows, seed=seed)
    except SplitError as e:
        return SplitCounts(error=e.message + (f"; next: {e.hint}" if e.hint else ""))
    return SplitCounts(len(parts["train"]), len(parts["validation"]), len(parts["test"]))


def recipe_data_defaults() -> dict[str, int]:
    """The recipe's defaults for the split and the sequence length."""
    from finetune.recipe import DataSection

    d = DataSection()
    return {"eval_rows": d.eval_rows, "val_rows": d.val_rows, "seed": d.seed, "max_seq_len": d.max_seq_len}


# ---------------------------------------------------------------------------------------------------------
# Rendering helpers (display width, never len())


def one_line(text: str) -> str:
    return " ".join(str(text).split())


EIGHTHS = " ▏▎▍▌▋▊▉"  # block elements U+258F..U+2589


def bar(count: int, peak: int, width: int) -> str:
    """A horizontal bar of full and partial blocks, ``width`` cells for ``peak``."""
    if count <= 0 or peak <= 0 or width <= 0:
        return ""
    eighths = max(1, round(8 * width * count / peak))
    full, part = divmod(eighths, 8)
    return "█" * full + (EIGHTHS[part] if part else "")


def histogram_lines(histogram: list[tuple[int, int, int]], width: int) -> list[str]:
    """``  from-to  bars  count`` lines that fit ``width`` cells."""
    if not histogram:
        return []
    left = max(6, max(len(f"{a}-{b}") for a, b, _ in histogram))
    right = max(len(str(c)) for _a, _b, c in histogram)
    bar_width = max(4, width - left - right - 6)
    peak = max(c for _a, _b, c in histogram) or 1
    head = f"  {'tokens':>{left}} rows"
    return [head] + [f"  {f'{a}-{b}':>{left}} {bar(c, peak, bar_width):<{bar_width}} {c:>{right}}"
                     for a, b, c in histogram]


def styled_template(text: str, specials: Iterable[str], style: str, special_style: str) -> Content:
    """``text`` in ``style``, each special token in it in ``special_style``."""
    content = Content.styled(text, style) if style else Content(text)
    marks = [s for s in specials if s]
    i = 0
    while marks and i < len(text):
        hit = min(((text.find(s, i), -len(s), s) for s in marks if text.find(s, i) >= 0), default=None)
        if hit is None:
            break
        pos, _neg, tok = hit
        content = content.stylize(special_style, pos, pos + len(tok))
        i = pos + len(tok)
    return content


def model_name(model: str) -> str:
    """A model reference as it is best shown: an alias or hub id as written, a path by its last part."""
    if model.startswith(("/", "~", ".")) or os.sep in model and Path(model).expanduser().exists():
        return Path(model).name or model
    return model


def row_summary(row: PreviewRow) -> str:
    """The row's last user turn (what it asks), one line."""
    users = [m["content"] for m in row.messages if m["role"] == "user"]
    return one_line(users[-1] if users else row.messages[0]["content"] if row.messages else "")


# ---------------------------------------------------------------------------------------------------------
# Messages from the worker


class DataProgress(Message):
    def __init__(self, serial: int, text: str) -> None:
        super().__init__()
        self.serial = serial
        self.text = text


class DataLoaded(Message):
    """The source was read and validated (``view.tokenized`` False), then tokenized (True)."""

    def __init__(self, serial: int, view: DataView) -> None:
        super().__init__()
        self.serial = serial
        self.view = view


class DataFailed(Message):
    def __init__(self, serial: int, request: DataRequest, message: str, hint: str = "") -> None:
        super().__init__()
        self.serial = serial
        self.request = request
        self.message = message
        self.hint = hint


# ---------------------------------------------------------------------------------------------------------
# Widgets


class SourceSuggester(Suggester):
    """Completes shipped sample names and file paths."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        for name in SAMPLES:
            if name.startswith(value) and name != value:
                return name
        if not value.startswith(("/", "~", ".")) and "/" not in value:
            return None
        folder, _, stem = value.rpartition("/")
        base = Path(folder or "/").expanduser()
        try:
            names = sorted(p.name + ("/" if p.is_dir() else "") for p in base.iterdir() if p.name.startswith(stem)
                           and not p.name.startswith("."))
        except OSError:
            return None
        return f"{folder}/{names[0]}" if names and names[0] != stem else None


class TokenHistogram(Static):
    """The token-length histogram as text bars, as wide as the pane."""

    DEFAULT_CSS = "TokenHistogram { height: auto; }"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.histogram: list[tuple[int, int, int]] = []

    def show(self, histogram: list[tuple[int, int, int]]) -> None:
        self.histogram = list(histogram)
        self.refresh(layout=True)

    def render(self) -> Content:
        width = self.content_region.width or (self.app.size.width - 4 if self.is_attached else 76)
        lines = histogram_lines(self.histogram, width)
        return Content("\n".join(lines)) if lines else Content("")

    def get_content_height(self, container: Any, viewport: Any, width: int) -> int:
        return len(self.histogram) + 1 if self.histogram else 0


class DataScreen(OllatuneScreen):
    NAV = "data"
    HELP = (
        "[b]Data[/b]: choose what to train on and see it as the model will.\n\n"
        "[b]Source[/b]: a shipped sample (enter on the list), a .jsonl/.json/.csv/.parquet file, or hf:owner/name "
        "(read from the local Hugging Face cache; nothing is downloaded). [b]e[/b] edits the source, "
        "[b]m[/b] the model whose tokenizer and chat template format the rows, [b]f[/b] cycles the format "
        "(auto: the sample's own, else alpaca); enter or [b]v[/b] validates.\n"
        "[b]Preview[/b]: each valid row as the chat template writes it; the answer (what the loss is computed "
        "on) is highlighted, special tokens such as the end-of-turn token too.\n"
        "[b]Rejects[/b]: every rejected row by line with its reason (unreadable rows, missing fields, exact "
        "duplicates) and the near-duplicate pairs. [b]Lengths[/b]: tokens per row under the chat template and "
        "the recommended max_seq_len.\n"
        "[b]Split[/b]: rows held out for evaluation (eval rows, never trained on) and for the evaluation loss "
        "(val rows), and the seed; the counts follow. [b]t[/b] takes the source and split to the Train screen. "
        "[b]n[/b] moves to the next pane, esc leaves a field."
    )
    BINDINGS = [
        Binding("v", "validate", "Validate"),
        Binding("t", "train", "Train"),
        Binding("e", "edit_source", "Source"),
        Binding("m", "edit_model", "Model"),
        Binding("f", "cycle_format", "Format"),
        Binding("n", "next_pane", "Pane"),
        Binding("shift+n", "next_pane(-1)", "Previous pane", show=False),
        Binding("escape", "leave_field", "Done"),
    ]
    DEFAULT_CSS = """
    DataScreen .data-line { height: 1; padding: 0 1; }
    DataScreen .data-line Label { width: auto; color: $text-muted; }
    DataScreen .data-line Input { width: 1fr; }
    DataScreen #data-format { width: auto; padding: 0 0 0 1; }
    DataScreen #data-status { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    DataScreen #data-status.-error { color: $error; }
    DataScreen #data-status.-busy { color: $warning; }
    DataScreen #data-tabs { height: 1fr; }
    DataScreen TabPane { padding: 0 1; }
    DataScreen .hint { color: $text-muted; height: auto; }
    DataScreen #samples { height: auto; max-height: 8; margin-bottom: 1; }
    DataScreen #preview-body { height: 1fr; }
    DataScreen #rows { height: 7; }
    DataScreen #row-scroll { height: 1fr; border-top: solid $primary; }
    DataScreen.-wide #preview-body { layout: horizontal; }
    DataScreen.-wide #rows { height: 1fr; width: 2fr; }
    DataScreen.-wide #row-scroll { width: 3fr; border-top: none; border-left: solid $primary; padding-left: 1; }
    DataScreen #rejects-summary { height: auto; }
    DataScreen #rejects { height: 1fr; }
    DataScreen #reject-detail { height: auto; max-height: 3; color: $text-muted; }
    DataScreen #lengths-scroll { height: 1fr; }
    DataScreen #split-form { height: auto; }
    DataScreen .split-line { height: 1; margin-bottom: 1; }
    DataScreen .split-line Label { width: 14; }
    DataScreen .split-line Input { width: 10; }
    DataScreen .split-line .hint { width: 1fr; padding-left: 2; }
    DataScreen #split-counts { height: auto; margin-top: 1; }
    DataScreen #split-counts.-error { color: $error; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_view: DataView | None = None
        self.data_format: str | None = None  # None: auto
        self.split_result = SplitCounts()
        self.load_error: str | None = None  # the last load's error (message; next step)
        self._serial = 0
        self._defaults = recipe_data_defaults()

    # layout

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(classes="data-line"):
            yield Label("Source ")
            yield Input(placeholder="sample name, file path or hf:owner/name; enter validates", id="data-source",
                        compact=True, suggester=SourceSuggester(), select_on_focus=False)
        with Horizontal(classes="data-line"):
            yield Label("Model  ")
            yield Input(DEFAULT_MODEL, placeholder="empty: no tokenizer (no token counts)", id="data-model",
                        compact=True, select_on_focus=False)
            yield Static(self._format_label(), id="data-format")
        yield Static("choose a sample (enter), or press e and type a file path or hf:owner/name; v validates",
                     id="data-status")
        with TabbedContent(id="data-tabs"):
            with TabPane("Source", id="pane-source"):
                yield DataTable(id="samples", cursor_type="row", zebra_stripes=True)
                yield Static(Content(
                    "A file: e, then its path (.jsonl .json .csv .parquet; SQuAD/KorQuAD JSON too); enter validates.\n"
                    "A hub dataset: hf:owner/name[:config], read from the local Hugging Face cache only.\n"
                    "f: the format (alpaca, text2sql, qa, raft, chat); m: the model whose chat template "
                    "formats the rows."), classes="hint", id="source-help")
            with TabPane("Preview", id="pane-preview"):
                with Vertical(id="preview-body"):
                    yield DataTable(id="rows", cursor_type="row", zebra_stripes=True)
                    with VerticalScroll(id="row-scroll"):
                        yield Static("validate a source to see its rows", id="row-text")
            with TabPane("Rejects", id="pane-rejects"):
                yield Static("no report yet", id="rejects-summary")
                yield DataTable(id="rejects", cursor_type="row", zebra_stripes=True)
                yield Static("", id="reject-detail")
            with TabPane("Lengths", id="pane-lengths"):
                with VerticalScroll(id="lengths-scroll"):
                    yield Static("no token counts yet", id="lengths-summary")
                    yield TokenHistogram(id="histogram")
            with TabPane("Split", id="pane-split"):
                with Vertical(id="split-form"):
                    for key, label, hint in (
                        ("eval_rows", "eval rows", "held out for evaluation, never trained on"),
                        ("val_rows", "val rows", "held out for the evaluation loss"),
                        ("seed", "seed", "same seed, same split"),
                        ("max_seq_len", "max seq len", "empty: the recommended length"),
                    ):
                        with Horizontal(classes="split-line"):
                            yield Label(label)
                            value = "" if key == "max_seq_len" else str(self._defaults[key])
                            yield Input(value, type="integer", id=f"split-{key}", compact=True)
                            yield Static(hint, classes="hint")
                yield Static("validate a source to see the split", id="split-counts")

    def on_mount(self) -> None:
        super().on_mount()
        self._fill_samples()
        self._fill_rows(keep_cursor=False)
        self._fill_rejects()
        chosen = getattr(self.app, "selected_data", None)
        if isinstance(chosen, dict) and chosen.get("source"):
            self._restore(chosen)
        self.query_one("#samples", DataTable).focus()

    def _restore(self, chosen: dict[str, Any]) -> None:
        self.query_one("#data-source", Input).value = str(chosen["source"])
        if chosen.get("model"):
            self.query_one("#data-model", Input).value = str(chosen["model"])
        task = chosen.get("task")
        self.data_format = task if task in FORMATS[1:] else None
        self.query_one("#data-format", Static).update(self._format_label())
        for key in ("eval_rows", "val_rows", "seed", "max_seq_len"):
            if chosen.get(key) is not None:
                self.query_one(f"#split-{key}", Input).value = str(chosen[key])

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width >= WIDE, "-wide")
        self._fill_samples()
        self._fill_rows(keep_cursor=True)
        self._fill_rejects()

    # cell widths: what is left of the pane after the fixed columns (each column has 2 cells of padding)

    def _pane_width(self, share: float = 1.0) -> int:
        """Cells of a pane (or of ``share`` of it), less its padding and a vertical scrollbar."""
        return int(((self.size.width or 80) - 2) * share) - 2

    def _fill_samples(self) -> None:
        table = self.query_one("#samples", DataTable)
        table.clear(columns=True)
        name_w = max(len(n) for n in SAMPLES)
        file_w = max(len(s.path.name) for s in SAMPLES.values())
        table.add_column("sample", key="name", width=name_w)
        table.add_column("format", key="format", width=8)
        table.add_column("file", key="file", width=file_w)
        width = max(16, self._pane_width() - name_w - 8 - file_w - 8)
        table.add_column("what it is", key="description", width=width)
        for s in SAMPLES.values():
            table.add_row(s.name, s.task, s.path.name, fit_cell(s.description, width), key=s.name)

    # inputs

    def _format_label(self) -> str:
        shown = self.data_format or "auto"
        if self.data_format is None and self.data_view is not None:
            shown = f"auto: {self.data_view.task}"
        return f"format {shown}"

    def _request(self) -> DataRequest:
        max_len = self._int("max_seq_len")
        return DataRequest(self.query_one("#data-source", Input).value.strip(), self.data_format,
                           self.query_one("#data-model", Input).value.strip(),
                           max_len if max_len and max_len > 0 else self._defaults["max_seq_len"])

    def _int(self, key: str) -> int | None:
        text = self.query_one(f"#split-{key}", Input).value.strip()
        try:
            return int(text)
        except ValueError:
            return None

    def action_edit_source(self) -> None:
        self.query_one("#data-source", Input).focus()

    def action_edit_model(self) -> None:
        self.query_one("#data-model", Input).focus()

    def action_leave_field(self) -> None:
        if isinstance(self.focused, Input):
            self._focus_pane()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "leave_field":  # shown (and working) only while a field has the focus
            return isinstance(self.focused, Input)
        return True

    def action_cycle_format(self) -> None:
        i = FORMATS.index(self.data_format or "auto")
        nxt = FORMATS[(i + 1) % len(FORMATS)]
        self.data_format = None if nxt == "auto" else nxt
        self.query_one("#data-format", Static).update(self._format_label())
        if self.query_one("#data-source", Input).value.strip():
            self.action_validate()

    def action_next_pane(self, step: int = 1) -> None:
        tabs = self.query_one("#data-tabs", TabbedContent)
        i = PANES.index(tabs.active) if tabs.active in PANES else 0
        self.show_pane(PANES[(i + step) % len(PANES)])

    def show_pane(self, pane: str) -> None:
        tabs = self.query_one("#data-tabs", TabbedContent)
        if tabs.active != pane:
            # Out of the pane first: a focused widget that gets hidden hands the focus to a sibling in its pane,
            # and that pane would become the active one again.
            self.set_focus(tabs.query_one(Tabs))
            tabs.active = pane
        self.call_after_refresh(self._focus_pane)

    def _focus_pane(self) -> None:
        pane = self.query_one("#data-tabs", TabbedContent).active
        target = {"pane-source": "#samples", "pane-preview": "#rows", "pane-rejects": "#rejects",
                  "pane-lengths": "#lengths-scroll"}.get(pane)
        if target:
            self.set_focus(self.query_one(target))
        else:  # the split's fields: the tab bar keeps the keys working; tab enters the fields
            self.set_focus(self.query_one("#data-tabs", TabbedContent).query_one(Tabs))

    @on(Input.Submitted, "#data-source, #data-model")
    def _submitted(self, event: Input.Submitted) -> None:
        self.action_validate()

    @on(Input.Submitted, "#pane-split Input")
    def _split_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "split-max_seq_len":
            self._focus_pane()
        else:
            self.focus_next()

    @on(Input.Changed, "#pane-split Input")
    def _split_changed(self, event: Input.Changed) -> None:
        self._update_split()

    @on(DataTable.RowSelected, "#samples")
    def _sample_chosen(self, event: DataTable.RowSelected) -> None:
        self.query_one("#data-source", Input).value = str(event.row_key.value)
        self.action_validate()

    @on(DataTable.RowHighlighted, "#rows")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_row(event.cursor_row)

    @on(DataTable.RowHighlighted, "#rejects")
    def _reject_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_reject(event.cursor_row)

    # loading

    def action_validate(self) -> None:
        req = self._request()
        if not req.source:
            self._show_status("enter a source first: press e and type a sample name, a file path or hf:owner/name",
                              error=True)
            return
        self._serial += 1
        self.load_error = None
        self._show_status(f"reading {req.source}", busy=True)
        self._load(self._serial, req)

    @work(thread=True, exclusive=True, group="data", exit_on_error=False, description="validate dataset")
    def _load(self, serial: int, req: DataRequest) -> None:
        settings = self.app.settings  # type: ignore[attr-defined]

        def progress(text: str) -> None:
            self.post_message(DataProgress(serial, text))

        try:
            view = read_view(req, settings, progress)
        except DataProblem as e:
            self.post_message(DataFailed(serial, req, e.message, e.hint))
            return
        except Exception as e:  # an unexpected failure of a reader is shown, not raised
            from workspace.errors import error_message

            self.post_message(DataFailed(serial, req, f"{req.source}: {error_message(e)}"))
            return
        self.post_message(DataLoaded(serial, view))
        # the screen keeps the first view: the tokens go into a copy
        tokenized = replace(view, rows=[replace(r) for r in view.rows], report=copy.copy(view.report))
        self.post_message(DataLoaded(serial, tokenize_view(tokenized, settings, progress)))

    def on_data_progress(self, message: DataProgress) -> None:
        if message.serial == self._serial:
            self._show_status(message.text + " ...", busy=True)

    def on_data_failed(self, message: DataFailed) -> None:
        if message.serial != self._serial:
            return
        self.data_view = None
        self.load_error = message.message + (f"; next: {message.hint}" if message.hint else "")
        self._show_status(self.load_error, error=True)
        self._clear_report(f"{message.request.source}: not read")
        self.query_one("#data-format", Static).update(self._format_label())

    def on_data_loaded(self, message: DataLoaded) -> None:
        if message.serial != self._serial:
            return
        first = self.data_view is None or self.data_view.request != message.view.request or not message.view.tokenized
        self.data_view = message.view
        self.query_one("#data-format", Static).update(self._format_label())
        self._show_status(self._summary(), busy=not self.data_view.tokenized)
        self._fill_rows(keep_cursor=not first)
        self._fill_rejects()
        self._fill_lengths()
        self._update_split()
        tabs = self.query_one("#data-tabs", TabbedContent)
        if first and tabs.active == "pane-source":
            self.show_pane("pane-rejects" if self.data_view.report.rejects else "pane-preview")

    # rendering

    def _show_status(self, text: str, *, error: bool = False, busy: bool = False) -> None:
        status = self.query_one("#data-status", Static)
        status.set_class(error, "-error")
        status.set_class(busy and not error, "-busy")
        status.update(Content(text))

    def _summary(self) -> str:
        view = self.data_view
        assert view is not None
        r = view.report
        exact = sum(1 for x in r.rejects if x.reason.startswith("exact duplicate"))
        parts = [f"{view.request.source} ({view.task}): {r.total} rows, {r.valid} valid, "
                 + (f"{len(r.rejects)} rejected" if r.rejects else "clean")]
        if exact or r.near_duplicates:
            parts.append(f"duplicates: {exact} exact, {len(r.near_duplicates)} near pairs")
        if r.tokens is not None:
            parts.append(f"p95 {r.tokens.p95} tokens, recommended max_seq_len {r.tokens.recommended_max_seq_len}")
        text = "; ".join(parts)
        if not view.tokenized:
            text += "; counting tokens ..."
        elif view.model_error:
            text += f"\n{view.model_error}"
        return text

    def _clear_report(self, reason: str) -> None:
        self.query_one("#rows", DataTable).clear()
        self.query_one("#row-text", Static).update(Content(reason))
        self.query_one("#rejects", DataTable).clear()
        self.query_one("#rejects-summary", Static).update(Content(reason))
        self.query_one("#reject-detail", Static).update("")
        self.query_one("#lengths-summary", Static).update(Content(reason))
        self.query_one("#histogram", TokenHistogram).show([])
        self.split_result = SplitCounts(error=reason)
        counts = self.query_one("#split-counts", Static)
        counts.set_class(True, "-error")
        counts.update(Content(reason))

    def _fill_rows(self, keep_cursor: bool) -> None:
        view = self.data_view
        table = self.query_one("#rows", DataTable)
        cursor = table.cursor_row if keep_cursor else 0
        table.clear(columns=True)
        asks = max(12, self._pane_width(0.4 if self.has_class("-wide") else 1.0) - 5 - 5 - 6)
        table.add_column("line", key="line", width=5)
        table.add_column("tok", key="tokens", width=5)
        table.add_column("asks", key="asks", width=asks)
        if view is None:
            return
        limit = view.request.max_seq_len
        for i, row in enumerate(view.rows):
            tokens = Text("-" if row.tokens is None else str(row.tokens),
                          style="bold" if row.tokens is not None and row.tokens > limit else "")
            table.add_row(str(row.line or "-"), tokens, fit_cell(row_summary(row), asks), key=str(i))
        if view.rows:
            table.move_cursor(row=min(max(cursor, 0), len(view.rows) - 1))
            self._show_row(table.cursor_row)
        else:
            self.query_one("#row-text", Static).update(Content("no valid rows to show"))

    def _show_row(self, index: int) -> None:
        view = self.data_view
        if view is None or not 0 <= index < len(view.rows):
            return
        row = view.rows[index]
        head = f"line {row.line or '-'} · id {row.id}"
        if row.tokens is not None:
            head += f" · {row.tokens} tokens"
        if len(view.examples) > len(view.rows) and index == len(view.rows) - 1:
            head += f" · first {len(view.rows)} of {len(view.examples)} rows shown"
        parts: list[Content] = [Content.styled(head, "bold"), Content("\n")]
        if row.answer is not None:
            legend = f"{model_name(view.request.model)}'s chat template; highlighted: the answer (trained on)"
            if view.eos_appended:
                legend += "; no chat template of its own: the Korean Alpaca-style prompt, EOS appended"
            parts += [Content.styled(legend, "$text-muted"), Content("\n")]
            parts.append(styled_template(row.prompt or "", view.specials, "", "bold $accent"))
            parts.append(styled_template(row.answer, view.specials, "bold $success", "bold $accent"))
        else:
            why = ("still counting tokens" if not view.tokenized else
                   "no model: the chat template is not applied" if not view.request.model else
                   "the model's tokenizer did not load: the chat template is not applied")
            parts += [Content.styled(f"the row as chat messages ({why})", "$text-muted"), Content("\n")]
            for m in row.messages:
                style = "bold $success" if m["role"] == "assistant" else ""
                parts += [Content.styled(m["role"] + ": ", "bold"), Content.styled(m["content"], style),
                          Content("\n")]
        self.query_one("#row-text", Static).update(Content.assemble(*parts))

    def _fill_rejects(self) -> None:
        view = self.data_view
        if view is None:
            self.query_one("#rejects", DataTable).clear(columns=True)
            return
        r = view.report
        table = self.query_one("#rejects", DataTable)
        table.clear(columns=True)
        reason_width = max(16, self._pane_width() - 5 - 12 - 6)
        table.add_column("line", key="line", width=5)
        table.add_column("field", key="field", width=12)
        table.add_column("reason", key="reason", width=reason_width)
        for i, rej in enumerate(r.rejects):
            table.add_row(str(rej.line or "-"), fit_cell(rej.field or "", 12), fit_cell(rej.reason, reason_width), key=str(i))
        exact = sum(1 for x in r.rejects if x.reason.startswith("exact duplicate"))
        lines = [f"{len(r.rejects)} of {r.total} rows rejected" if r.rejects else f"all {r.total} rows valid",
                 f"duplicates: {exact} exact (rejected)"]
        if r.near_duplicates:
            shown = ", ".join(f"{a}~{b} ({s:.2f})" for a, b, s in r.near_duplicates[:8])
            more = f", {len(r.near_duplicates) - 8} more" if len(r.near_duplicates) > 8 else ""
            lines[1] += f"; {len(r.near_duplicates)} near-duplicate pairs (lines): {shown}{more}"
        else:
            lines[1] += "; no near duplicates"
        self.query_one("#rejects-summary", Static).update(Content("\n".join(lines)))
        if r.rejects:
            self._show_reject(table.cursor_row)
        else:
            self.query_one("#reject-detail", Static).update("")

    def _show_reject(self, index: int) -> None:
        view = self.data_view
        if view is None or not 0 <= index < len(view.report.rejects):
            return
        rej = view.report.rejects[index]
        where = f"line {rej.line}" if rej.line is not None else "a row"
        self.query_one("#reject-detail", Static).update(
            Content(f"{where}" + (f" ({rej.field})" if rej.field else "") + f": {rej.reason}"))

    def _fill_lengths(self) -> None:
        view = self.data_view
        if view is None:
            return
        summary = self.query_one("#lengths-summary", Static)
        hist = self.query_one("#histogram", TokenHistogram)
        tk = view.report.tokens
        if tk is None:
            hist.show([])
            why = ("counting tokens ..." if not view.tokenized else view.model_error or
                   ("no model: enter one (m) to count tokens" if not view.request.model else "no valid rows"))
            summary.update(Content(why))
            return
        text = (f"tokens per row under {model_name(view.request.model)}'s chat template: mean {tk.mean}, p50 {tk.p50}, "
                f"p95 {tk.p95}, max {tk.max}\n"
                f"{tk.over_max_seq_len:.1%} of rows over max_seq_len {tk.max_seq_len}; "
                f"recommended max_seq_len {tk.recommended_max_seq_len}\n")
        summary.update(Content(text))
        hist.show(tk.histogram)

    def _update_split(self) -> None:
        counts = self.query_one("#split-counts", Static)
        view = self.data_view
        if view is None:
            return
        values = {k: self._int(k) for k in ("eval_rows", "val_rows", "seed")}
        bad = [k.replace("_", " ") for k, v in values.items() if v is None or v < 0]
        if bad:
            self.split_result = SplitCounts(error=f"{', '.join(bad)}: enter a whole number >= 0")
        else:
            self.split_result = split_counts(view.examples, values["eval_rows"], values["val_rows"], values["seed"])
        counts.set_class(self.split_result.error is not None, "-error")
        if self.split_result.error:
            counts.update(Content(self.split_result.error))
            return
        s = self.split_result
        text = (f"train {s.train} + val {s.validation} + eval {s.test} = {s.train + s.validation + s.test} "
                f"of {view.report.valid} valid rows")
        seq = self._max_seq_len()
        text += f"\nmax_seq_len {seq}" if seq else ""
        if view.task in ("qa", "raft"):
            text += "\nrows that share a context paragraph stay on one side"
        text += "\nt: train on this"
        counts.update(Content(text))

    def _max_seq_len(self) -> int | None:
        typed = self._int("max_seq_len")
        if typed and typed > 0:
            return typed
        tk = self.data_view.report.tokens if self.data_view is not None else None
        return tk.recommended_max_seq_len if tk is not None else None

    # into training

    def selected_data(self) -> dict[str, Any]:
        """What the Train screen reads (``app.selected_data``): the source as the recipe's data section takes
        it, the split, and the same as ``--set`` overrides."""
        view = self.data_view
        assert view is not None
        source = view.request.source
        if source not in SAMPLES and not source.startswith(("hf:", "builtin:")):
            source = str(Path(source).expanduser().resolve())
        values = {k: self._int(k) for k in ("eval_rows", "val_rows", "seed")}
        data: dict[str, Any] = {"source": source, "task": view.task, "fields": {}, **values,
                                "max_seq_len": self._max_seq_len(), "model": view.request.model or None,
                                "rows": view.report.valid,
                                "counts": {"train": self.split_result.train, "validation": self.split_result.validation,
                                           "test": self.split_result.test}}
        overrides = [f"data.path={source}", f"data.format={view.task}", f"data.eval_rows={values['eval_rows']}",
                     f"data.val_rows={values['val_rows']}", f"data.seed={values['seed']}"]
        if data["max_seq_len"]:
            overrides.append(f"data.max_seq_len={data['max_seq_len']}")
        data["overrides"] = overrides
        return data

    def action_train(self) -> None:
        view = self.data_view
        req = self._request()
        if view is None or (view.request.source, view.request.task) != (req.source, req.task):
            self.notify("validate the source first (v)", severity="warning")
            return
        r = view.report
        if r.valid == 0:
            self.notify(f"{req.source} has no valid rows to train on", severity="error", markup=False)
            return
        if r.rejects:
            first = r.rejects[0]
            self.notify(f"{len(r.rejects)} rows are rejected (first: line {first.line}, {first.reason}); training "
                        "refuses a dataset with rejected rows. Fix them in the file, or write the valid rows with "
                        f"`ollatune data convert {req.source} clean.jsonl` and use that (format chat)",
                        title="rejected rows", severity="error", timeout=20, markup=False)
            self.show_pane("pane-rejects")
            return
        if self.split_result.error:
            self.notify(self.split_result.error, title="split", severity="error", markup=False)
            self.show_pane("pane-split")
            return
        data = self.selected_data()
        setattr(self.app, "selected_data", data)
        from textual.app import UnknownModeError

        try:
            self.app.switch_mode("train")
        except UnknownModeError:
            self.notify("dataset chosen; this app has no Train screen: run `ollatune pipeline RECIPE "
                        + " ".join(f"--set {o}" for o in data["overrides"]) + "`", severity="warning", timeout=20,
                        markup=False)
