"""What the TUI's screens read: the list of runs (store + run folders) and a follower of a run's
``events.jsonl``. Plain data and files, no Textual, so it is tested and reused without a terminal."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tui.jobs import LineTail
from workspace.settings import Settings

EVENTS_FILE = "events.jsonl"
# A run folder whose log has not moved for this long and never finished was killed or crashed.
STALE_AFTER_S = 120.0


@dataclass
class RunSummary:
    run_id: str
    status: str  # running | done | failed | stopped | whatever the store says
    steps: int | None
    final_loss: float | None
    evals: int
    started: datetime | None
    run_dir: Path | None  # None when the store knows the run but its folder is gone
    in_store: bool


@dataclass
class EventsSummary:
    status: str
    steps: int | None
    final_loss: float | None
    started: datetime | None


def summarize_events(events: Iterable[dict[str, Any]], *, stale: bool = False) -> EventsSummary:
    """Status, last training step and loss of a run, from its events alone."""
    status = "running"
    steps: int | None = None
    loss: float | None = None
    started: datetime | None = None
    seen_pipeline = False
    last_type = None
    for e in events:
        kind, stage = e.get("type"), e.get("stage")
        if started is None and isinstance(e.get("ts"), (int, float)):
            started = datetime.fromtimestamp(e["ts"], timezone.utc)
        if stage == "pipeline":
            seen_pipeline = True
            if kind == "start":
                status = "running"
            elif kind == "done":
                status = "done"
        if kind == "error":
            status = "failed"
        if kind == "metric" and isinstance(e.get("step"), int):
            steps = e["step"]
            if isinstance(e.get("loss"), (int, float)):
                loss = float(e["loss"])
        last_type = kind
    if not seen_pipeline and last_type == "done" and status != "failed":
        status = "done"  # a single-stage job (e.g. `ollatune finetune`) without pipeline events
    if status == "running" and stale:
        status = "stopped"
    return EventsSummary(status, steps, loss, started)


class EventTail:
    """Follows an events log: each :meth:`read_new` returns the events appended since the last call.

    A line without its newline yet (a job mid-write, or killed mid-write) is held back until it is
    complete; lines that are not JSON are skipped. A log that shrank (rewritten) is read again from
    the start.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lines = LineTail(self.path)

    def read_new(self) -> list[dict[str, Any]]:
        events = []
        for raw in self._lines.read():
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


def run_folders(settings: Settings) -> dict[str, Path]:
    """Run folders under ``runs_dir`` that hold an events log, by run id."""
    if not settings.runs_dir.is_dir():
        return {}
    return {p.name: p for p in settings.runs_dir.iterdir() if (p / EVENTS_FILE).is_file()}


# path -> (mtime_ns, size, summary of a log that is not stale): the runs screen refreshes every few
# seconds and should not re-read every finished run's log each time.
_SUMMARIES: dict[Path, tuple[int, int, EventsSummary]] = {}


def summarize_folder(run_dir: Path, now: float | None = None) -> EventsSummary:
    path = run_dir / EVENTS_FILE
    now = time.time() if now is None else now
    try:
        st = path.stat()
    except OSError:
        return EventsSummary("missing", None, None, None)
    cached = _SUMMARIES.get(path)
    if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
        summary = cached[2]
    else:
        summary = summarize_events(EventTail(path).read_new())
        _SUMMARIES[path] = (st.st_mtime_ns, st.st_size, summary)
    if summary.status == "running" and now - st.st_mtime > STALE_AFTER_S:
        return EventsSummary("stopped", summary.steps, summary.final_loss, summary.started)
    return summary


def load_runs(settings: Settings) -> list[RunSummary]:
    """Every run the workspace knows, newest first: training runs in the store, plus run folders with an
    events log (runs that stopped before training, or whose store is elsewhere). Steps and loss come
    from the store when it has them; the status comes from the log when there is one."""
    folders = run_folders(settings)
    runs: dict[str, RunSummary] = {}
    if settings.db_path.exists():  # never create a database just by looking
        for row in _store_runs(settings):
            row.run_dir = folders.get(row.run_id)
            runs[row.run_id] = row
    for run_id, run_dir in folders.items():
        summary = summarize_folder(run_dir)
        row = runs.get(run_id)
        if row is None:
            runs[run_id] = RunSummary(run_id, summary.status, summary.steps, summary.final_loss, 0,
                                      summary.started, run_dir, in_store=False)
            continue
        if row.steps is None:
            row.steps = summary.steps
        if row.final_loss is None:
            row.final_loss = summary.final_loss
        # The store's status is the training's; the log tells the whole run's (a later stage may fail).
        row.status = summary.status
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(runs.values(), key=lambda r: (_aware(r.started) or epoch, r.run_id), reverse=True)


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)  # SQLite gives naive datetimes back
    return dt


def _store_runs(settings: Settings) -> list[RunSummary]:
    from sqlalchemy import func, select

    from workspace.store import EvalRun, TrainingRun, open_store, session_scope

    factory = open_store(settings.db_path)
    rows: list[RunSummary] = []
    with session_scope(factory) as s:
        # Finished evaluations: the ones a comparison can use.
        evals = dict(s.execute(select(EvalRun.run_id, func.count(EvalRun.id)).where(EvalRun.status == "done")
                               .group_by(EvalRun.run_id)).all())
        seen = set()
        for tr in s.scalars(select(TrainingRun)):
            seen.add(tr.run_id)
            rows.append(RunSummary(tr.run_id, tr.status, tr.steps, tr.final_loss, evals.get(tr.run_id, 0),
                                   _aware(tr.started_at), None, in_store=True))
        for run_id, count in evals.items():  # evaluated without a training run (e.g. vanilla only)
            if run_id and run_id not in seen:
                rows.append(RunSummary(run_id, "evaluated", None, None, count, None, None, in_store=True))
    return rows


def load_comparison(settings: Settings, run_id: str):  # noqa: ANN201 - evals.report.Comparison, imported lazily
    """The vanilla-vs-tuned comparison of a run's latest finished eval runs; LookupError when there is none."""
    if not settings.db_path.exists():
        raise LookupError(f"no database at {settings.db_path}: run `ollatune pipeline` first")
    from evals.report import compare
    from tui.report import latest_eval_ids
    from workspace.store import open_store

    ids = latest_eval_ids(settings, run_id)
    if not ids:
        raise LookupError(f"run {run_id!r} has no finished evaluation in {settings.db_path}")
    return compare(open_store(settings.db_path), ids)


# ------------------------------------------------------------------------------ a run's lineage (History)


@dataclass
class ArtifactInfo:
    kind: str  # adapter | merged | gguf | base-gguf
    quant: str | None
    bytes: int
    bits_per_weight: float | None
    path: str


@dataclass
class ModelInfo:
    name: str
    role: str  # vanilla | tuned | external
    host: str
    quant: str | None  # of the GGUF it was registered from, when the store links one


@dataclass
class EvalInfo:
    eval_id: int
    suite: str
    model: str
    role: str
    status: str
    started: datetime | None


@dataclass
class Lineage:
    """Where a run came from and what it produced, as the store and its folder record it."""

    run_id: str
    status: str
    recipe: str | None = None
    base_model: str | None = None
    backend: str | None = None
    dataset: str | None = None  # "name (N rows, sha256 abc123def456)"
    steps: int | None = None
    final_loss: float | None = None
    started: datetime | None = None
    duration_s: float | None = None  # the whole run, first to last event (or the training, from the store)
    train_s: float | None = None  # the training alone, from the store
    failed: str | None = None  # "stage: message" of the run's last error event
    hint: str | None = None
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    models: list[ModelInfo] = field(default_factory=list)
    evals: list[EvalInfo] = field(default_factory=list)
    in_store: bool = False
    batches: str | None = None  # "4 x 2, checkpointing off" as trained (from finetune/run.json)
    auto_tune: list[str] = field(default_factory=list)  # why auto-tune chose it, then one line per candidate

    @property
    def trained(self) -> bool:
        return any(a.kind == "adapter" for a in self.artifacts) or (self.steps is not None and self.status == "done")

    @property
    def exported(self) -> bool:
        return any(a.kind == "gguf" for a in self.artifacts)

    @property
    def tuned_model(self) -> ModelInfo | None:
        return next((m for m in self.models if m.role == "tuned"), None)

    def evaluated_roles(self) -> set[str]:
        return {e.role for e in self.evals if e.status == "done"}


def load_lineage(settings: Settings, run_id: str) -> Lineage:
    """The lineage of ``run_id``: recipe, base model, backend, dataset, duration, artifacts, registered models
    and eval runs. Reads the store (when there is one) and the run's folder; LookupError when neither knows it."""
    run_dir = settings.runs_dir / run_id
    events: list[dict[str, Any]] = []
    if (run_dir / EVENTS_FILE).is_file():
        events = EventTail(run_dir / EVENTS_FILE).read_new()
    lineage: Lineage | None = None
    if settings.db_path.exists():  # never create a database just by looking
        lineage = _store_lineage(settings, run_id)
    if lineage is None:
        if not events and not run_dir.is_dir():
            raise LookupError(f"run {run_id!r} is neither in {settings.db_path} nor in {settings.runs_dir}")
        summary = summarize_events(events)
        lineage = Lineage(run_id, summary.status, steps=summary.steps, final_loss=summary.final_loss,
                          started=summary.started)
    if events:
        summary = summarize_folder(run_dir)
        lineage.status = summary.status
        if lineage.steps is None:
            lineage.steps = summary.steps
        if lineage.final_loss is None:
            lineage.final_loss = summary.final_loss
        if lineage.started is None:
            lineage.started = summary.started
        stamps = [e["ts"] for e in events if isinstance(e.get("ts"), (int, float))]
        if len(stamps) >= 2:
            lineage.duration_s = max(stamps) - min(stamps)
        for e in events:
            if e.get("type") == "start" and e.get("stage") == "pipeline" and e.get("recipe") and not lineage.recipe:
                lineage.recipe = str(e["recipe"])
            if e.get("type") == "error":
                lineage.failed = f"{e.get('stage', '?')}: {e.get('message') or 'error'}"
                lineage.hint = e.get("hint") or None
        if lineage.status == "done":
            lineage.failed = lineage.hint = None  # an earlier attempt failed; a later one finished
    if lineage.recipe is None:
        lineage.recipe = _recipe_name(run_dir)
    lineage.batches, lineage.auto_tune = trained_batches(run_dir)
    if lineage.train_s is not None and (lineage.duration_s is None or lineage.duration_s < lineage.train_s):
        lineage.duration_s = lineage.train_s  # the log of a re-run that skipped training spans less
    return lineage


def trained_batches(run_dir: Path) -> tuple[str | None, list[str]]:
    """How the run trained (micro-batch x accumulation, checkpointing) and, when auto-tune chose it, its
    reason and the candidates it tried, compact: from ``finetune/run.json``."""
    try:
        info = json.loads((run_dir / "finetune" / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, []
    trained = info.get("trained") if isinstance(info, dict) else None
    if not isinstance(trained, dict) or not trained.get("micro_batch"):
        return None, []
    batches = f"{trained['micro_batch']} x {trained.get('grad_accum', 1)}"
    if trained.get("checkpointing"):
        batches += f", checkpointing {trained['checkpointing']}"
    tune = info.get("auto_tune")
    if not isinstance(tune, dict):
        return batches, []
    lines = [("cached: " if tune.get("cached") else "") + str(tune.get("reason", ""))]
    chosen = tune.get("chosen") or {}
    for t in tune.get("trials") or []:
        mine = (t.get("micro_batch"), t.get("grad_accum"), t.get("checkpointing")) == (
            chosen.get("micro"), chosen.get("accum"), chosen.get("checkpointing"))
        peak = f"{t['peak_gib']:.1f} GiB" if t.get("peak_gib") is not None else "-"
        tps = f"{t['tokens_per_s']:,.0f} tok/s" if t.get("tokens_per_s") else "-"
        lines.append(f"{'>' if mine else ' '} {t.get('micro_batch')} x {t.get('grad_accum')} "
                     f"{t.get('checkpointing', ''):<7} {peak:>9} {tps:>13}  {t.get('status', '')}")
    return batches, lines


def _recipe_name(run_dir: Path) -> str | None:
    path = run_dir / "recipe.yaml"
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("name:"):
                return line.split(":", 1)[1].strip().strip("'\"") or None
    except OSError:
        pass
    return None


def _store_lineage(settings: Settings, run_id: str) -> Lineage | None:
    from sqlalchemy import select

    from workspace.store import Artifact, EvalRun, TrainingRun, open_store, session_scope

    factory = open_store(settings.db_path)
    with session_scope(factory) as s:
        tr = s.scalars(select(TrainingRun).where(TrainingRun.run_id == run_id)).one_or_none()
        eval_rows = s.scalars(select(EvalRun).where(EvalRun.run_id == run_id).order_by(EvalRun.id)).all()
        if tr is None and not eval_rows:
            return None
        lineage = Lineage(run_id, "evaluated", in_store=True)
        models: dict[int, ModelInfo] = {}
        if tr is not None:
            lineage.status = tr.status
            lineage.recipe = (tr.config or {}).get("name") if isinstance(tr.config, dict) else None
            lineage.base_model, lineage.backend = tr.base_model, tr.backend
            lineage.steps, lineage.final_loss = tr.steps, tr.final_loss
            lineage.started = _aware(tr.started_at)
            if tr.started_at is not None and tr.finished_at is not None:
                lineage.train_s = (_aware(tr.finished_at) - _aware(tr.started_at)).total_seconds()
            if tr.dataset is not None:
                d = tr.dataset
                lineage.dataset = f"{d.name} ({d.rows} rows, sha256 {d.sha256[:12]})"
            arts = s.scalars(select(Artifact).where(Artifact.training_run_id == tr.id).order_by(Artifact.id)).all()
            for a in arts:
                lineage.artifacts.append(ArtifactInfo(a.kind, a.quant, a.bytes, a.bits_per_weight, a.path))
                for m in a.registered_models:
                    models[m.id] = ModelInfo(m.name, m.role, m.host, a.quant)
        for er in eval_rows:
            m = er.model
            if m.id not in models:
                models[m.id] = ModelInfo(m.name, m.role, m.host, m.artifact.quant if m.artifact else None)
            lineage.evals.append(EvalInfo(er.id, er.suite, m.name, m.role, er.status, _aware(er.started_at)))
        lineage.models = sorted(models.values(), key=lambda m: (m.role != "tuned", m.name))
    return lineage


# ------------------------------------------------------------------------------ the Home screen's data


@dataclass
class RegisteredSummary:
    name: str
    role: str
    host: str
    run_id: str | None  # the training run whose artifact it was registered from
    created: datetime | None


def load_models(settings: Settings, limit: int | None = None) -> list[RegisteredSummary]:
    """Registered models, newest first; none when the workspace has no database yet."""
    if not settings.db_path.exists():
        return []
    from sqlalchemy import select

    from workspace.store import RegisteredModel, open_store, session_scope

    factory = open_store(settings.db_path)
    out: list[RegisteredSummary] = []
    seen: set[tuple[str, str]] = set()
    with session_scope(factory) as s:
        query = select(RegisteredModel).order_by(RegisteredModel.created_at.desc(), RegisteredModel.id.desc())
        for m in s.scalars(query):
            # A name registered again (a new digest) is one model: the newest registration counts.
            if (m.name, m.host) in seen:
                continue
            seen.add((m.name, m.host))
            tr = m.artifact.training_run if m.artifact is not None else None
            out.append(RegisteredSummary(m.name, m.role, m.host, tr.run_id if tr else None, _aware(m.created_at)))
            if limit is not None and len(out) >= limit:
                break
    return out


@dataclass
class HomeState:
    """What the Home screen shows of the workspace: recent runs, the newest run's lineage, models."""

    runs: list[RunSummary]
    latest: Lineage | None
    models: list[RegisteredSummary]
    train_s_per_step: float | None = None  # measured on this machine by an earlier demo-ko run


def load_home(settings: Settings, runs_limit: int = 5, models_limit: int = 5) -> HomeState:
    runs = load_runs(settings)
    latest = None
    for run in runs:  # the newest run the user trained (an eval-only entry has no lineage to continue)
        if run.status != "evaluated":
            latest = load_lineage(settings, run.run_id)
            break
    return HomeState(runs[:runs_limit], latest, load_models(settings, models_limit),
                     measured_step_seconds(settings, DEFAULT_RECIPE))


DEFAULT_RECIPE = "demo-ko"


def measured_step_seconds(settings: Settings, recipe: str) -> float | None:
    """Seconds per training step of the newest finished run of ``recipe`` in this workspace, from the time
    stamps of its metric events (loading the model is left out: it is counted once per run)."""
    best: tuple[float, float] | None = None  # (started, s/step)
    for run_id, run_dir in run_folders(settings).items():
        if not (run_id == recipe or run_id.startswith(recipe + "-")):
            continue
        steps = [(e["step"], e["ts"]) for e in EventTail(run_dir / EVENTS_FILE).read_new()
                 if e.get("type") == "metric" and e.get("stage") == "finetune"
                 and isinstance(e.get("step"), int) and isinstance(e.get("ts"), (int, float))]
        if len(steps) < 2 or steps[-1][0] <= steps[0][0]:
            continue
        rate = (steps[-1][1] - steps[0][1]) / (steps[-1][0] - steps[0][0])
        if rate > 0 and (best is None or steps[0][1] > best[0]):
            best = (steps[0][1], rate)
    return None if best is None else best[1]


# ------------------------------------------------------------------------------ the environment (Home)

DoctorCheck = tuple[str, str, str]  # name, ok|warn|fail, detail: tui.doctor's checks
PROBE_TIMEOUT_S = 90.0

# Run in a child process: the doctor imports torch to look at the GPU, which the TUI process never does.
_PROBE_SCRIPT = """
import json, sys
from workspace.settings import Settings
from tui.doctor import run_checks
for check in run_checks(Settings.model_validate_json(sys.argv[1])):
    print(json.dumps(list(check), ensure_ascii=False), flush=True)
"""


_PROBES: set = set()  # doctor children still running (subprocess.Popen), so that they can be stopped


def kill_probes() -> None:
    """Stop every environment check still running (its screen went away, or a newer one replaces it):
    its reader thread then ends at once instead of holding the app's exit until the check is done."""
    for proc in list(_PROBES):
        if proc.poll() is None:
            proc.kill()


def probe_environment(settings: Settings) -> Iterable[DoctorCheck]:
    """The doctor's checks of this machine for ``settings``, each as soon as the doctor has made it. The
    doctor runs in a child process (it imports torch and asks the Ollama host, which may take seconds)."""
    import subprocess
    import sys
    import tempfile

    root = Path(__file__).resolve().parents[2]
    # stderr to a file: a pipe read only after stdout ends would block a doctor that writes more than the
    # pipe holds (library banners and warnings)
    err = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
    try:
        proc = subprocess.Popen([sys.executable, "-c", _PROBE_SCRIPT, settings.model_dump_json()], cwd=root,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                text=True, encoding="utf-8", errors="replace")
    except OSError as exc:
        err.close()
        yield ("doctor", "fail", f"could not start {sys.executable}: {exc}; run `ollatune doctor` in a shell")
        return
    _PROBES.add(proc)
    import threading

    timer = threading.Timer(PROBE_TIMEOUT_S, proc.kill)
    timer.start()
    got = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                check = json.loads(line)
            except ValueError:
                continue
            if isinstance(check, list) and len(check) == 3:
                got += 1
                yield (str(check[0]), str(check[1]), str(check[2]))
        code = proc.wait()
        err.seek(0)
        stderr = err.read()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _PROBES.discard(proc)
        err.close()
    if code != 0:
        last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or [f"exit code {code}"]
        what = "stopped early" if got else "failed"
        yield ("doctor", "fail", f"the environment check {what} ({last[0]}); run `ollatune doctor` for details")


@dataclass(frozen=True)
class EnvLine:
    label: str
    status: str  # ok | warn | fail | pending
    text: str


STAGES = ("data", "finetune", "export", "serve", "evals")


def environment_lines(checks: dict[str, tuple[str, str]], done: bool, ollama_host: str = "") -> list[EnvLine]:
    """The Home screen's environment lines from the doctor's checks so far (name -> (status, detail)); a line
    whose check has not come yet reads "checking…" until ``done``."""
    def get(name: str, pending: str = "checking…", missing: str = "unknown") -> EnvLine:
        if name in checks:
            status, detail = checks[name]
            return EnvLine(name, status, detail)
        return EnvLine(name, "pending" if not done else "warn", pending if not done else missing)

    lines: list[EnvLine] = []
    gpus = [(k, v) for k, v in checks.items() if k.startswith("gpu ")]
    if gpus:
        lines.append(EnvLine("gpu", "ok", "; ".join(detail for _, (_, detail) in gpus)))
    elif "cuda" in checks:
        lines.append(EnvLine("gpu", checks["cuda"][0], checks["cuda"][1]))
    elif "torch" in checks and checks["torch"][0] == "fail":
        lines.append(EnvLine("gpu", "fail", "unknown: torch " + checks["torch"][1]))
    else:
        lines.append(EnvLine("gpu", *("pending", "checking…") if not done else ("warn", "unknown")))
    unsloth = get("unsloth")
    if "unsloth" not in checks and "torch" in checks and checks["torch"][0] == "fail":
        unsloth = EnvLine("unsloth", "warn", "unavailable: torch is not installed")
    lines.append(unsloth)
    asking = f"asking {ollama_host}…" if ollama_host else "checking…"
    lines.append(get("ollama", pending=asking))
    lines.append(get("workspace"))
    disk = get("free disk")
    lines.append(EnvLine("disk", disk.status, disk.text.split(" (", 1)[0]))
    stages = [(s, checks.get(f"stage {s}")) for s in STAGES]
    if any(c is not None for _, c in stages):
        parts = [f"{s} {'ok' if c and c[0] == 'ok' else ('!!' if c and c[0] == 'fail' else '--')}" for s, c in stages]
        worst = "fail" if any(c and c[0] == "fail" for _, c in stages) else (
            "warn" if any(not c or c[0] != "ok" for _, c in stages) else "ok")
        lines.append(EnvLine("stages", worst, " · ".join(parts)))
    else:
        lines.append(EnvLine("stages", "pending" if not done else "warn", "checking…" if not done else "unknown"))
    if "doctor" in checks:
        lines.append(EnvLine("doctor", *checks["doctor"]))
    return lines


def on_gpu(checks: dict[str, tuple[str, str]]) -> bool:
    return any(k.startswith("gpu ") and v[0] == "ok" for k, v in checks.items())


def cpu_threads(checks: dict[str, tuple[str, str]]) -> int | None:
    import re

    found = re.search(r"(\d+) CPU threads", checks.get("torch", ("", ""))[1])
    return int(found.group(1)) if found else None
