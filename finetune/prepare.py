"""The data stage: load and validate the rows, split off the held-out rows, record the dataset.

``prepare_data(recipe, ctx) -> PreparedData``. The training rows are written as conversational
prompt/completion rows; the held-out rows as normalised evaluation examples (:mod:`workspace.heldout`),
so that the evals stage asks each one exactly as the model was trained and scores it by its task.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import select

from finetune.data import DatasetError
from finetune.recipe import Recipe
from finetune.samples import open_records
from finetune.splits import split_examples
from finetune.validate import ValidationConfig, validate, write_rejects
from workspace.context import RunContext
from workspace.examples import to_eval_example
from workspace.files import sha256_file, write_jsonl_atomic
from workspace.heldout import write_eval_examples
from workspace.samples import resolve_source
from workspace.store import Dataset, session_scope


class PreparedData(BaseModel):
    """The data stage's result (and its stage marker)."""

    dataset_path: Path
    dataset_sha256: str
    dataset_id: int
    task: str
    train_path: Path  # conversational prompt/completion rows
    train_rows: int
    heldout_path: Path  # normalised evaluation examples (workspace.heldout)
    heldout_rows: int
    val_path: Path | None = None  # validation rows (prompt/completion) for the evaluation loss
    val_rows: int = 0

    def paths(self) -> list[Path]:
        return [p for p in (self.train_path, self.heldout_path, self.val_path) if p is not None]


def resolve_data_path(ref: str) -> Path:
    return Path(resolve_source(ref)[0]).expanduser()


def prepare_data(recipe: Recipe, ctx: RunContext) -> PreparedData:
    events = ctx.events("data")
    source, task = resolve_source(recipe.data.path, recipe.data.format)
    path = Path(source).expanduser()
    events.start(path=str(path), format=task)
    cfg = ValidationConfig(task=task, fields=dict(recipe.data.fields), system=recipe.model.system,
                           near_duplicates=False, max_seq_len=recipe.data.max_seq_len)
    if task == "text2sql":
        from workspace.samples import known_databases

        cfg.databases = known_databases(recipe.data.databases, ctx.settings.home / "databases")
    from workspace.sources import SourceError

    try:
        examples, report = validate(open_records(source), cfg, source=str(path))
    except SourceError as e:
        raise DatasetError(e.message, e.hint) from None
    if report.rejects:
        rejects = write_rejects(ctx.run_dir / "data" / "rejects.jsonl", report)
        first = report.rejects[0]
        raise DatasetError(f"{path}:{first.line}: {first.reason}" + (f" ({len(report.rejects) - 1} more rows rejected)"
                                                                     if len(report.rejects) > 1 else ""),
                           f"fix the rows listed in {rejects} (or check them with `ollatune data validate {path}`)")
    parts = split_examples(examples, validation=recipe.data.val_rows, test=recipe.data.eval_rows,
                           seed=recipe.data.seed)
    data_dir = ctx.run_dir / "data"
    train_path = write_jsonl_atomic(data_dir / "train.jsonl", (ex.prompt_completion() for ex in parts["train"]))
    heldout_path = write_eval_examples(data_dir / "heldout.jsonl", (to_eval_example(ex) for ex in parts["test"]))
    val_path = None
    if parts["validation"]:
        val_path = write_jsonl_atomic(data_dir / "validation.jsonl",
                                      (ex.prompt_completion() for ex in parts["validation"]))
    sha = sha256_file(path) if path.is_file() else ""
    with session_scope(ctx.store) as s:
        ds = s.scalar(select(Dataset).where(Dataset.sha256 == sha))
        if ds is None:
            ds = Dataset(name=path.stem, path=str(path.resolve()), sha256=sha, format=task, rows=report.total)
            s.add(ds)
            s.flush()
        dataset_id = ds.id
    events.artifact("dataset", path, sha256=sha, bytes=path.stat().st_size if path.is_file() else None)
    events.done(rows=report.total, train_rows=len(parts["train"]), val_rows=len(parts["validation"]),
                heldout_rows=len(parts["test"]), task=task)
    return PreparedData(dataset_path=path, dataset_sha256=sha, dataset_id=dataset_id, task=task,
                        train_path=train_path, train_rows=len(parts["train"]), heldout_path=heldout_path,
                        heldout_rows=len(parts["test"]), val_path=val_path, val_rows=len(parts["validation"]))
