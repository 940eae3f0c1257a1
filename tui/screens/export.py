"""The Export screen: pick a trained run and the quantization types, start ``ollatune export RUN --quant
...`` as a job, and read the quant report of the run's last export (size, bits per weight, perplexity and its
delta against f16, greedy agreement, end of turn, status and warnings; the f16 file against the HF model)
from the export stage's marker, ``runs/<run>/stages/export.json``. Nothing heavy is imported here."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, DataTable, SelectionList, Static

from tui.widgets.tables import fill_table
from tui.screens.base import JOB_STYLE, OllatuneScreen
from tui.screens.sources import load_runs

if TYPE_CHECKING:
    from tui.app import JobState
    from workspace.settings import Settings

# The llama.cpp file types offered; the first ticked is the one registered with Ollama.
QUANT_CHOICES = ("q4_0", "q4_k_s", "q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16", "bf16", "iq4_xs", "iq3_m")
DEFAULT_QUANTS = ("q4_k_m",)
MODELS = ("tuned", "vanilla")
STATUS_STYLE = {"done": "green", "failed": "red", "running": "yellow", "stopped": "magenta"}


# ------------------------------------------------------------------------------------------ what is read


@dataclass
class TrainedRun:
    run_id: str
    status: str
    steps: int | None
    run_dir: Path
    exported: list[str]  # the quantizations in its export marker, registered one first


def export_marker(run_dir: Path) -> Path:
    return run_dir / "stages" / "export.json"


def trained_runs(settings: Settings) -> list[TrainedRun]:
    """Runs with a trained adapter (``runs/<run>/finetune/adapter``), newest first."""
    out = []
    for r in load_runs(settings):
        if r.run_dir is None or not (r.run_dir / "finetune" / "adapter").exists():
            continue
        out.append(TrainedRun(r.run_id, r.status, r.steps, r.run_dir, _exported_quants(r.run_dir)))
    return out


def _exported_quants(run_dir: Path) -> list[str]:
    try:
        tuned = json.loads(export_marker(run_dir).read_text(encoding="utf-8"))["result"]["tuned"]
        first, quants = str(tuned["quant"]), [str(q) for q in tuned.get("quants") or {}]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [first, *(q for q in quants if q != first)]


class ReportError(Exception):
    """An export marker that cannot be read: the message names the file, the field and the next step."""


@dataclass
class QuantLine:
    model: str  # tuned | vanilla
    quant: str
    mib: float | None
    bits_per_weight: float | None
    ppl: float | None
    ppl_delta: float | None
    agreement: float | None
    eot: str
    status: str
    registered: bool
    warnings: list[str] = field(default_factory=list)


@dataclass
class ExportReport:
    run_id: str
    path: Path
    lines: list[QuantLine]
    checks: dict[str, str]  # model -> the f16 file against the HF model


def _num(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def f16_check(verify: dict[str, Any], f16_gguf: str | None) -> str:
    """One line: did the f16 GGUF decode the same greedy tokens as the HF model."""
    f16 = verify.get("f16") if isinstance(verify.get("f16"), dict) else {}
    name = Path(f16_gguf).name if f16_gguf else "f16"
    agreement = f16.get("agreement")
    if isinstance(agreement, (int, float)):
        ties = f", {f16['near_ties']} at a near-tie" if f16.get("near_ties") else ""
        return (f"{name}: greedy tokens equal to the HF model ({f16.get('reference') or '?'}) on "
                f"{agreement:.0%} of the probes (first {f16.get('tokens', '?')} tokens{ties})")
    return f"{name}: greedy tokens not compared with the HF model: {f16.get('reference_note') or '-'}"


def read_export_report(run_id: str, run_dir: Path) -> ExportReport | None:
    """The quant table of a run's export marker; None when the run was never exported."""
    path = export_marker(run_dir)
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ReportError(f"{path}: not readable ({exc.strerror or exc}): check the file's permissions") from None
    except ValueError as exc:
        raise ReportError(f"{path}: not JSON ({exc}): export again (s) to rewrite it") from None
    result = marker.get("result") if isinstance(marker, dict) else None
    if not isinstance(result, dict):
        raise ReportError(f"{path}: field result missing: export again (s) to rewrite it")
    lines: list[QuantLine] = []
    checks: dict[str, str] = {}
    for model in MODELS:
        exp = result.get(model)
        if not isinstance(exp, dict):
            raise ReportError(f"{path}: field result.{model} missing: export again (s) to rewrite it")
        quants = exp.get("quants")
        if not isinstance(quants, dict):
            raise ReportError(f"{path}: field result.{model}.quants missing: export again (s) to rewrite it")
        registered = exp.get("quant")
        for quant, row in quants.items():
            if not isinstance(row, dict):
                raise ReportError(f"{path}: field result.{model}.quants.{quant} is not a table row: export "
                                  "again (s) to rewrite it")
            size = _num(row, "bytes")
            warnings = row.get("warnings")
            lines.append(QuantLine(
                model, str(quant), None if size is None else size / 2**20, _num(row, "bits_per_weight"),
                _num(row, "ppl"), _num(row, "ppl_delta"), _num(row, "greedy_agreement"), str(row.get("eot") or "-"),
                str(row.get("status") or "-"), quant == registered,
                [str(w) for w in warnings] if isinstance(warnings, list) else [],
            ))
        verify = exp.get("verify") if isinstance(exp.get("verify"), dict) else {}
        checks[model] = f16_check(verify, exp.get("f16_gguf"))
    return ExportReport(run_id, path, lines, checks)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# ------------------------------------------------------------------------------------------ the screen


class RunsRead(Message):
    def __init__(self, runs: list[TrainedRun], error: str | None = None) -> None:
        super().__init__()
        self.runs = runs
        self.error = error


class ReportRead(Message):
    def __init__(self, run_id: str, report: ExportReport | None, error: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.report = report
        self.error = error


# (label, key, width, numeric): fixed widths, 75 cells with the padding, so the table fits 80 columns
REPORT_COLUMNS = (("model", "model", 7, False), ("quant", "quant", 7, False), ("MiB", "mib", 7, True),
                  ("bits/w", "bpw", 6, True), ("ppl", "ppl", 6, True), ("vs f16", "delta", 7, True),
                  ("agree", "agree", 5, True), ("eot", "eot", 5, True), ("status", "status", 7, False))


RUN_TABLE = [("run", "run"), ("status", "status"), ("steps", "steps"), ("exported", "exported")]


class ExportScreen(OllatuneScreen):
    NAV = "export"
    TITLE_TEXT = "Export"
    HELP = (
        "Pick a trained run (one with runs/<run>/finetune/adapter), tick the quantization types "
        "(space), press [b]s[/b] (or Export) to run `ollatune export RUN --quant ...` as a job. The first type "
        "ticked is the one registered with Ollama.\n"
        "The table is the run's last export, read from runs/<run>/stages/export.json: file size, bits per "
        "weight, perplexity of the held-out answers and its change against f16, greedy agreement with f16, end "
        "of turn within the budget, and warnings; below it, whether the f16 file decodes as the HF model does.\n"
        "i-quants (iq4_xs, iq3_m) need llama.cpp's programs, built once on the first use.\n"
        "[b]r[/b] reloads; [b]x[/b] cancels the running job, [b]R[/b] resumes the last one."
    )
    BINDINGS = [
        Binding("s", "start", "Export"),
        Binding("r", "reload", "Reload"),
    ]
    DEFAULT_CSS = """
    ExportScreen #export-top { height: 45%; min-height: 8; max-height: 14; }
    ExportScreen .pane-title { height: 1; padding: 0 1; text-style: bold; background: $boost; }
    ExportScreen #export-runs { width: 1fr; }
    ExportScreen #export-run-table { height: 1fr; }
    ExportScreen #export-quants { width: 24; border-left: solid $primary; }
    ExportScreen #quant-list { height: 1fr; border: none; }
    ExportScreen #export-actions { height: auto; max-height: 4; padding: 0 1; border-top: solid $primary; }
    ExportScreen #export-start { margin-right: 2; }
    ExportScreen #export-job { width: 1fr; height: auto; }
    ExportScreen #export-report { height: 1fr; padding: 0 1; }
    ExportScreen #report-title { height: auto; }
    ExportScreen #quant-table { height: auto; max-height: 14; }
    ExportScreen #report-notes { height: auto; }
    ExportScreen #report-error { height: auto; color: $error; display: none; }
    ExportScreen #report-error.-shown { display: block; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[TrainedRun] = []
        self.selected: str | None = None
        self.report: ExportReport | None = None
        self._runs_error: str | None = None

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="export-top"):
            with Vertical(id="export-runs"):
                yield Static("Trained runs", classes="pane-title")
                yield DataTable(id="export-run-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="export-quants"):
                yield Static("Quant types", classes="pane-title")
                yield SelectionList[str](*((q, q, q in DEFAULT_QUANTS) for q in QUANT_CHOICES), id="quant-list",
                                         compact=True)
        with Horizontal(id="export-actions"):
            yield Button("Export", id="export-start", variant="primary", compact=True)
            yield Static("", id="export-job")
        with VerticalScroll(id="export-report"):
            yield Static("loading runs…", id="report-title")
            yield Static("", id="report-error")
            yield DataTable(id="quant-table", cursor_type="row", zebra_stripes=True, show_cursor=False)
            yield Static("", id="report-notes")

    def on_mount(self) -> None:
        super().on_mount()
        fill_table(self.query_one("#export-run-table", DataTable), RUN_TABLE, [])
        table = self.query_one("#quant-table", DataTable)
        for label, key, width, numeric in REPORT_COLUMNS:
            table.add_column(Text(label, justify="right" if numeric else "left"), key=key, width=width)
        self._show_job()
        self.reload()

    def on_screen_resume(self) -> None:
        self._show_job()
        self.reload()

    def action_reload(self) -> None:
        self.reload()

    # -- the runs

    @work(thread=True, exclusive=True, group="export-runs", exit_on_error=False, description="load trained runs")
    def reload(self) -> None:
        try:
            runs = trained_runs(self.app.settings)  # type: ignore[attr-defined]
        except Exception as exc:  # a locked or broken store must not take the screen down
            self.post_message(RunsRead([], f"runs not read: {exc} (check {self.app.settings.db_path})"))  # type: ignore[attr-defined]
            return
        self.post_message(RunsRead(runs))

    def on_runs_read(self, message: RunsRead) -> None:
        if message.error and message.error != self._runs_error:
            self.notify(message.error, title="export", severity="error", markup=False)
        self._runs_error = message.error
        if message.error:
            self._title(Text(message.error, style="red"))
            return
        self.runs = message.runs
        table = self.query_one("#export-run-table", DataTable)
        keep = self.selected
        fill_table(table, RUN_TABLE, [
            (r.run_id, [Text(r.run_id), Text(r.status, style=STATUS_STYLE.get(r.status, "")),
                        "-" if r.steps is None else str(r.steps), ",".join(r.exported) or "-"])
            for r in message.runs])
        if not message.runs:
            self.selected = None
            self.report = None
            self._title(Text.assemble("no trained run yet: train one on the Train screen (3), then export it here",
                                      style="dim"))
            self._show_report(None)
            return
        ids = [r.run_id for r in message.runs]
        index = ids.index(keep) if keep in ids else 0
        table.move_cursor(row=index)
        self._select(ids[index])

    @on(DataTable.RowHighlighted, "#export-run-table")
    def _run_highlighted(self, event: DataTable.RowHighlighted) -> None:
        run_id = event.row_key.value
        if run_id and run_id != self.selected:
            self._select(run_id)

    def _select(self, run_id: str) -> None:
        self.selected = run_id
        run = next((r for r in self.runs if r.run_id == run_id), None)
        if run is not None:
            self.load_report(run.run_id, run.run_dir)

    # -- the report

    @work(thread=True, exclusive=True, group="export-report", exit_on_error=False, description="read export report")
    def load_report(self, run_id: str, run_dir: Path) -> None:
        try:
            self.post_message(ReportRead(run_id, read_export_report(run_id, run_dir)))
        except ReportError as exc:
            self.post_message(ReportRead(run_id, None, str(exc)))
        except Exception as exc:
            self.post_message(ReportRead(run_id, None, f"{export_marker(run_dir)}: {exc!r}: export again (s)"))

    def on_report_read(self, message: ReportRead) -> None:
        if message.run_id != self.selected:
            return  # the user moved on meanwhile
        self.report = message.report
        error = self.query_one("#report-error", Static)
        error.update(Text(message.error or ""))
        error.set_class(bool(message.error), "-shown")
        if message.error:
            self._title(Text.assemble(("quant report ", "bold"), message.run_id))
        elif message.report is None:
            self._title(Text.assemble(("quant report ", "bold"), message.run_id, ("  not exported yet: tick the "
                                      "types and press s", "dim")))
        else:
            self._title(Text.assemble(("quant report ", "bold"), message.run_id, ("  (* registered)", "dim")))
        self._show_report(message.report)

    def _title(self, text: Text) -> None:
        self.query_one("#report-title", Static).update(text)

    def _show_report(self, report: ExportReport | None) -> None:
        table = self.query_one("#quant-table", DataTable)
        table.clear()
        notes = Text()
        if report is not None:
            for line in report.lines:
                numbers = (_fmt(line.mib, ".1f"), _fmt(line.bits_per_weight, ".2f"), _fmt(line.ppl, ".3f"),
                           _fmt(line.ppl_delta, "+.3f"), _fmt(line.agreement, ".2f"), line.eot)
                table.add_row(
                    Text(line.model),
                    Text(line.quant + ("*" if line.registered else ""), style="bold" if line.registered else ""),
                    *(Text(n, justify="right") for n in numbers),
                    Text(line.status, style="green" if line.status == "ok" else "yellow"),
                )
            for line in report.lines:
                for warning in line.warnings:
                    notes.append("warning ", style="yellow")
                    notes.append(f"{line.model} {line.quant}: {warning}\n")
            for model, check in report.checks.items():
                notes.append(f"{model} ", style="bold")
                notes.append(f"{check}\n")
            home = self.app.settings.home  # type: ignore[attr-defined]
            try:
                where = report.path.relative_to(home)
            except ValueError:
                where = report.path
            notes.append(f"from {where}", style="dim")
        table.display = report is not None and bool(report.lines)
        self.query_one("#report-notes", Static).update(notes)

    # -- starting, and the job's state

    def quants(self) -> list[str]:
        return list(self.query_one("#quant-list", SelectionList).selected)

    @on(SelectionList.SelectedChanged, "#quant-list")
    def _quants_changed(self) -> None:
        self._show_job()

    @on(Button.Pressed, "#export-start")
    def _start_pressed(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        if self.selected is None:
            self.notify("no trained run to export: train one on the Train screen (3)", severity="warning")
            return
        quants = self.quants()
        if not quants:
            self.notify("tick at least one quantization type (space)", severity="error")
            return
        self.app.start_job(f"export {self.selected}",  # type: ignore[attr-defined]
                           ["export", self.selected, "--quant", ",".join(quants)])

    def job_changed(self, job: JobState, event: dict[str, Any] | None) -> None:
        if event is None or event.get("type") in ("error", "done"):
            self._show_job(job)
        if event is None and job.state in ("done", "failed", "cancelled"):
            self.reload()

    def _show_job(self, job: JobState | None = None) -> None:
        job = job if job is not None else getattr(self.app, "job", None)
        quants = self.quants()
        text = Text()
        if quants:
            text.append(f"--quant {','.join(quants)}", style="bold")
            text.append(f" (registers {quants[0]})  ", style="dim")
        else:
            text.append("no type ticked  ", style="red")
        if job is not None:
            text.append(f"{job.label} ", style="dim")
            text.append(job.state, style=JOB_STYLE.get(job.state, ""))
            if job.state == "failed":  # the error and its next step, or the exit code and stderr tail
                text.append(f"\n{job.failure_text()}", style="red")
        self.query_one("#export-job", Static).update(text)
