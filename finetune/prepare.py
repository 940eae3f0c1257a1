"""The data stage: load and validate the rows, split off the held-out rows, record the dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from finetune.data import DatasetError
from finetune.recipe import Recipe
from finetune.samples import open_records, resolve_source
from finetune.splits import split_examples, write_split
from finetune.validate import ValidationConfig, validate, write_rejects
from workspace.context import RunContext
from workspace.files import sha256_file, write_jsonl_atomic
from workspace.store import Dataset, session_scope


@dataclass
class PreparedData:
    dataset_path: Path
    dataset_sha256: str
    dataset_id: int
    train_path: Path  # conversational prompt/completion rows
    heldout_path: Path  # test rows in the dataset's own layout, for evaluation
    train_rows: int
    heldout_rows: int
    val_path: Path | None = None  # validation rows (prompt/completion) for the evaluation loss
    val_rows: int = 0


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
        from finetune.samples import sample_databases

        cfg.databases = sample_databases(ctx.settings.home / "databases")
    from finetune.sources import SourceError

    try:
        examples, report = validate(open_records(source), cfg, source=str(path))
    except SourceError as e:
        raise DatasetError(str(e), e.hint) from None
    if report.rejects:
        rejects = write_rejects(ctx.run_dir / "data" / "rejects.jsonl", report)
        first = report.rejects[0]
        raise DatasetError(f"{path}:{first.line}: {first.reason}" + (f" ({len(report.rejects) - 1} more rows rejected)"
                                                                     if len(report.rejects) > 1 else ""),
                           f"fix the rows listed in {rejects} (or check them with `ollatune data validate {path}`)")
    parts = split_examples(examples, validation=recipe.data.val_rows, test=recipe.data.eval_rows,
                           seed=recipe.data.seed)
    train_path = ctx.run_dir / "data" / "train.jsonl"
    heldout_path = ctx.run_dir / "data" / "heldout.jsonl"
    write_jsonl_atomic(train_path, (ex.prompt_completion() for ex in parts["train"]))
    write_split(heldout_path, parts["test"])
    val_path = None
    if parts["validation"]:
        val_path = write_jsonl_atomic(ctx.run_dir / "data" / "validation.jsonl",
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
                heldout_rows=len(parts["test"]))
    return PreparedData(path, sha, dataset_id, train_path, heldout_path, len(parts["train"]), len(parts["test"]),
                        val_path, len(parts["validation"]))
