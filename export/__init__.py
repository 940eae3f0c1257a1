"""Export: merge adapter -> 16-bit HF safetensors -> GGUF (llama.cpp converter) -> quantize -> verify.

Public entry point: :func:`export.to_gguf`. Heavy imports happen inside the functions.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from export.errors import ExportError
from workspace.context import RunContext
from workspace.files import sha256_file, sha256_tree, tree_bytes
from workspace.store import Artifact, session_scope

__all__ = ["ExportError", "ExportResult", "ExportSource", "to_gguf"]


class ExportSource(BaseModel):
    """What to export: a base model folder, and the adapter to merge into it (none: the base itself)."""

    base_dir: Path  # HF folder of the base model
    adapter_dir: Path | None = None  # None: export the base model itself (the vanilla model)
    training_run_id: int | None = None  # store id, for lineage
    label: str = "tuned"  # file-name stem inside the export folder


class ExportResult(BaseModel):
    """One exported model (the export stage's marker holds one per model)."""

    hf_dir: Path  # merged model (or the base folder for vanilla)
    f16_gguf: Path
    gguf: Path  # the quantized file that gets registered
    quant: str
    sha256: str
    bytes: int
    artifact_id: int
    verify: dict = Field(default_factory=dict)


def to_gguf(source: ExportSource, ctx: RunContext, *, quant: str = "q4_k_m", verify_tokens: int = 8) -> ExportResult:
    from export.gguf_convert import convert_to_gguf, quantize
    from export.merge import merge_adapter
    from export.verify import verify_gguf

    events = ctx.events("export")
    out = ctx.run_dir / "export" / source.label  # each model in its own folder, with its own Modelfile
    out.mkdir(parents=True, exist_ok=True)
    events.start(source=str(source.adapter_dir or source.base_dir), quant=quant, label=source.label)
    steps = 4 if source.adapter_dir else 3
    done = 0

    hf_dir = source.base_dir
    if source.adapter_dir is not None:
        events.log(f"merging the adapter into a 16-bit copy of {source.base_dir.name}")
        merged = merge_adapter(source.base_dir, source.adapter_dir, out / "merged")
        hf_dir = merged.merged_dir
        events.log(f"merge changed {merged.changed_tensors} weight tensors (max |change| {merged.max_abs_change:.2e})")
        _record(ctx, source, "merged", None, hf_dir, events)
        done += 1
        events.progress(done, steps, "steps")

    f16 = out / f"{source.label}-f16.gguf"  # the label stays in the file name: Ollama shows it
    events.log(f"converting {hf_dir.name} to GGUF f16 with llama.cpp's converter")
    convert_to_gguf(hf_dir, f16, "f16")
    _record(ctx, source, "gguf", "f16", f16, events)
    done += 1
    events.progress(done, steps, "steps")

    events.log("verifying the f16 GGUF against the HF model (template, BOS/EOS, tokens, greedy tokens)")
    report = verify_gguf(f16, hf_dir, tokens=verify_tokens, strict=True)
    events.log(f"f16 verified: {report.summary()}")
    done += 1
    events.progress(done, steps, "steps")

    final = f16
    if quant != "f16":
        final = out / f"{source.label}-{quant}.gguf"
        events.log(f"quantizing to {quant} with llama.cpp's quantizer")
        quantize(f16, final, quant)
        qreport = verify_gguf(final, hf_dir, tokens=verify_tokens, strict=False)
        events.log(f"{quant} verified: {qreport.summary()}")
        report_dict = {"f16": report.summary(), quant: qreport.summary()}
    else:
        report_dict = {"f16": report.summary()}
    artifact_id = _record(ctx, source, "gguf", quant, final, events) if quant != "f16" else _last_id(ctx, f16)
    events.progress(steps, steps, "steps")
    sha = sha256_file(final)
    result = ExportResult(hf_dir=hf_dir, f16_gguf=f16, gguf=final, quant=quant, sha256=sha,
                          bytes=final.stat().st_size, artifact_id=artifact_id, verify=report_dict)
    events.done(gguf=str(final), quant=quant, bytes=result.bytes, verify=report_dict)
    return result


def _record(ctx: RunContext, source: ExportSource, kind: str, quant: str | None, path: Path, events) -> int:  # noqa: ANN001
    sha = sha256_tree(path)
    size = tree_bytes(path)
    with session_scope(ctx.store) as s:
        art = Artifact(training_run_id=source.training_run_id, kind=kind if source.adapter_dir or kind != "gguf"
                       else "base-gguf", quant=quant, path=str(path), sha256=sha, bytes=size)
        s.add(art)
        s.flush()
        art_id = art.id
    events.artifact(kind, path, sha256=sha, bytes=size, quant=quant)
    return art_id


def _last_id(ctx: RunContext, path: Path) -> int:
    from sqlalchemy import select

    with session_scope(ctx.store) as s:
        return s.scalar(select(Artifact.id).where(Artifact.path == str(path)).order_by(Artifact.id.desc()))
