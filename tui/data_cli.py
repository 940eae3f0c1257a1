"""``ollatune data``: inspect, validate, convert and split datasets (Rich tables, or JSON with --json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

data_app = typer.Typer(help="Inspect, validate, convert and split datasets (samples: ko-alpaca, ko-text2sql, ko-qa).",
                       no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

SourceArg = Annotated[str, typer.Argument(help="A shipped sample (ko-alpaca, ko-text2sql, ko-qa), a .jsonl/.json/"
                                               ".csv/.parquet file, or hf:<dataset id>.")]
FormatOpt = Annotated[Optional[str], typer.Option("--format", "-f", help="alpaca, text2sql, qa, raft or chat "
                                                                         "(default: the sample's, else alpaca).")]
FieldOpt = Annotated[Optional[list[str]], typer.Option("--field", help="Map a field to a column: output=answer "
                                                                       "(repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def _fields(items: list[str] | None) -> dict[str, str]:
    mapping = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"--field {item!r} is not FIELD=COLUMN")
        k, v = item.split("=", 1)
        mapping[k.strip()] = v.strip()
    return mapping


def _config(task: str, fields: list[str] | None, dbs: list[str] | None = None, **kw):  # noqa: ANN003, ANN202
    from finetune.validate import ValidationConfig
    from workspace.settings import get_settings

    cfg = ValidationConfig(task=task, fields=_fields(fields), **kw)
    if task == "text2sql":
        from workspace.samples import sample_databases

        cfg.databases = sample_databases(get_settings().home / "databases")
        for item in dbs or []:
            db_id, _, path = item.rpartition("=")
            if not Path(path).is_file():
                raise typer.BadParameter(f"--db {item!r}: {path} is not a file")
            cfg.databases[db_id or "*"] = Path(path)
    return cfg


def _tokenizer(model: str):  # noqa: ANN202
    from transformers import AutoTokenizer

    from finetune.base_model import resolve_base_model
    from workspace.quiet import quiet_libraries
    from workspace.settings import get_settings

    quiet_libraries()
    base = resolve_base_model(model, get_settings(), log=lambda m: err.print(f"[dim]{escape(m)}[/]"))
    return AutoTokenizer.from_pretrained(str(base.hf_dir))


def _load(source: str, fmt: str | None, fields, split: str, limit: int | None, model: str | None = None,  # noqa: ANN001
          max_seq_len: int = 2048, dbs: list[str] | None = None, **kw):  # noqa: ANN003, ANN202
    from finetune.samples import open_records
    from workspace.samples import resolve_source
    from finetune.validate import chat_template_lengths, validate

    src, task = resolve_source(source, fmt)
    cfg = _config(task, fields, dbs, max_seq_len=max_seq_len, **kw)
    render = chat_template_lengths(_tokenizer(model)) if model else None
    return validate(open_records(src, split=split, limit=limit), cfg, source=src, render=render)


@data_app.command("validate")
def validate_cmd(
    source: SourceArg,
    fmt: FormatOpt = None,
    field: FieldOpt = None,
    model: Annotated[Optional[str], typer.Option(help="Count tokens with this model's tokenizer and chat template "
                                                      "(e.g. smollm2-135m-instruct).")] = None,
    max_seq_len: Annotated[int, typer.Option(help="Report the share of rows longer than this.")] = 2048,
    min_chars: Annotated[int, typer.Option(help="Reject answers shorter than this.")] = 1,
    max_chars: Annotated[int, typer.Option(help="Reject rows longer than this (prompt + answer).")] = 20_000,
    near_threshold: Annotated[float, typer.Option(help="Jaccard similarity (char 3-grams) for near duplicates.")] = 0.9,
    reject_near: Annotated[bool, typer.Option("--reject-near-duplicates", help="Reject near duplicates too.")] = False,
    rejects: Annotated[Optional[Path], typer.Option(help="Write rejected rows (line, reason) to this JSONL file.")] = None,
    split: Annotated[str, typer.Option(help="Split of a hub dataset.")] = "train",
    limit: Annotated[Optional[int], typer.Option(help="Read at most this many rows.")] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when any row is rejected.")] = False,
    db: Annotated[Optional[list[str]], typer.Option(help="text2sql: run gold SQL on this SQLite file (PATH for "
                                                         "every row, or DB_ID=PATH; repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every row and report problems by line; valid rows are counted, rejects listed (and written)."""
    valid, report = _load(source, fmt, field, split, limit, model, max_seq_len, db, min_chars=min_chars,
                          max_chars=max_chars, near_threshold=near_threshold, reject_near_duplicates=reject_near)
    if rejects is not None:
        from finetune.validate import write_rejects

        write_rejects(rejects, report)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
    else:
        _print_report(report, rejects)
    if report.valid == 0 or (strict and report.rejects):
        raise typer.Exit(1)


def _print_report(report, rejects_path) -> None:  # noqa: ANN001
    status = "[green]clean[/]" if report.ok else f"[yellow]{len(report.rejects)} rejected[/]"
    out.print(f"{escape(report.source)} ({report.task}): {report.total} rows, {report.valid} valid, {status} "
              f"in {report.seconds:.1f}s")
    if report.rejects:
        t = Table(title="rejected rows")
        for col in ("line", "field", "reason"):
            t.add_column(col)
        for r in report.rejects[:30]:
            t.add_row(str(r.line or "-"), r.field or "", escape(r.reason))
        out.print(t)
        if len(report.rejects) > 30:
            out.print(f"... {len(report.rejects) - 30} more" + ("" if rejects_path else " (write them all with --rejects FILE)"))
    if rejects_path:
        out.print(f"rejects written to {rejects_path}")
    if report.near_duplicates:
        shown = ", ".join(f"{a}~{b} ({s:.2f})" for a, b, s in report.near_duplicates[:10])
        out.print(f"[yellow]{len(report.near_duplicates)} near-duplicate pair(s)[/] (lines): {shown}")
    tk = report.tokens
    if tk:
        out.print(f"tokens: mean {tk.mean}, p50 {tk.p50}, p95 {tk.p95}, max {tk.max}; "
                  f"{tk.over_max_seq_len:.1%} over max_seq_len {tk.max_seq_len}; "
                  f"recommended max_seq_len {tk.recommended_max_seq_len}")
        peak = max(c for _a, _b, c in tk.histogram) or 1
        for a, b, c in tk.histogram:
            out.print(f"  {a:>6}-{b:<6} {'█' * max(1 if c else 0, round(40 * c / peak)):<40} {c}")


@data_app.command("inspect")
def inspect_cmd(
    source: SourceArg,
    fmt: FormatOpt = None,
    field: FieldOpt = None,
    n: Annotated[int, typer.Option("-n", help="How many examples to show.")] = 3,
    model: Annotated[Optional[str], typer.Option(help="Also show the exact text the model is trained on.")] = None,
    split: Annotated[str, typer.Option(help="Split of a hub dataset.")] = "train",
    as_json: JsonOpt = False,
) -> None:
    """Show the first examples as the chat messages the model will see (and the rendered template)."""
    valid, report = _load(source, fmt, field, split, None, None)
    shown = valid[:n]
    tok = _tokenizer(model) if model else None
    if as_json:
        rows = [{"id": ex.id, "line": ex.line, "messages": ex.messages(), "metadata": ex.metadata,
                 **({"rendered": tok.apply_chat_template(ex.messages(), tokenize=False)} if tok else {})}
                for ex in shown]
        sys.stdout.write(json.dumps({"report": report.to_dict(), "examples": rows}, ensure_ascii=False) + "\n")
        return
    out.print(f"{escape(report.source)} ({report.task}): {report.total} rows, {report.valid} valid, "
              f"{len(report.rejects)} rejected")
    for ex in shown:
        out.print(f"[bold]line {ex.line}[/] id {escape(ex.id)}" + (f" metadata {escape(str(ex.metadata))}"
                                                                   if ex.metadata else ""))
        for m in ex.messages():
            out.print(f"  [cyan]{m['role']}[/]: {escape(m['content'])}")
        if tok:
            out.print("  [dim]rendered:[/]")
            out.print(escape(tok.apply_chat_template(ex.messages(), tokenize=False)))


@data_app.command("convert")
def convert_cmd(
    source: SourceArg,
    output: Annotated[Path, typer.Argument(help="Output .jsonl file.")],
    fmt: FormatOpt = None,
    field: FieldOpt = None,
    to: Annotated[str, typer.Option(help="messages, prompt-completion, or raft (from qa rows).")] = "messages",
    distractors: Annotated[int, typer.Option(help="raft: distractor documents per row.")] = 3,
    golden_share: Annotated[float, typer.Option(help="raft: share of rows that keep the golden document.")] = 0.8,
    seed: Annotated[int, typer.Option(help="raft: seed for distractors.")] = 0,
) -> None:
    """Convert valid rows to another layout (rejected rows are reported, not converted)."""
    from workspace.files import write_jsonl_atomic

    valid, report = _load(source, fmt, field, "train", None, None)
    if to == "raft":
        from finetune.raft import build_raft

        rows = build_raft(valid, distractors=distractors, golden_share=golden_share, seed=seed)
    elif to == "messages":
        rows = [{"id": ex.id, "messages": ex.messages(), **ex.metadata} for ex in valid]
    elif to == "prompt-completion":
        rows = [{"id": ex.id, **ex.prompt_completion()} for ex in valid]
    else:
        raise typer.BadParameter(f"--to {to!r}: use messages, prompt-completion or raft")
    write_jsonl_atomic(output, rows)
    err.print(f"{len(rows)} rows -> {output} ({len(report.rejects)} rejected)")


@data_app.command("split")
def split_cmd(
    source: SourceArg,
    out_dir: Annotated[Path, typer.Argument(help="Folder for train.jsonl, validation.jsonl, test.jsonl.")],
    fmt: FormatOpt = None,
    field: FieldOpt = None,
    validation: Annotated[int, typer.Option(help="Rows in the validation split.")] = 0,
    test: Annotated[int, typer.Option(help="Rows in the test split.")] = 24,
    seed: Annotated[int, typer.Option(help="Shuffle seed: same seed, same split.")] = 0,
) -> None:
    """Seeded train/validation/test split of the valid rows, written in their source layout."""
    from finetune.splits import split_examples, write_split

    valid, report = _load(source, fmt, field, "train", None, None)
    parts = split_examples(valid, validation=validation, test=test, seed=seed)
    for name, exs in parts.items():
        write_split(out_dir / f"{name}.jsonl", exs)
    err.print(", ".join(f"{k} {len(v)}" for k, v in parts.items()) + f" -> {out_dir} ({len(report.rejects)} rejected)")
