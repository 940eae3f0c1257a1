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
    quants: dict[str, dict] = Field(default_factory=dict)  # every quantization: file, sha256 and its table row


def to_gguf(source: ExportSource, ctx: RunContext, *, quant: str | list[str] = "q4_k_m", verify_tokens: int = 16,
            probes: list[tuple[list[dict], str]] | None = None, calibration: list[str] | None = None,
            tools_sdist: Path | None = None) -> ExportResult:
    """Check the architecture, the disk and the memory first (the estimate goes to the events), merge (when
    there is an adapter), convert to f16 and check it against the HF model: template, special tokens,
    tokenization, and greedy agreement on the first ``verify_tokens`` tokens of the probes (at least 90%;
    the HF model is loaded only where the memory plan allows, on the GPU when there is one). Then quantize
    to each of ``quant`` (``"q4_k_m,q8_0"`` or a list; the first is the one registered) and measure each
    against the f16 file through llama.cpp: size, bits per weight, perplexity of the probes' reference answers and
    its delta, greedy agreement, end-of-turn within the budget. ``probes`` are (messages, reference answer)
    pairs, e.g. from the validation split; without them built-in questions are used and no perplexity is
    computed. The i-quants (iq4_xs, ...) are made with an importance matrix computed by llama.cpp's imatrix
    program over ``calibration`` (e.g. the training rows' text; the probes' when none), its programs built once
    (``export.llama_tools``). Every file is written under a temporary name and renamed when complete, so an
    interrupted export leaves no final file and a rerun starts the missing steps again."""
    from export.gguf_convert import convert_to_gguf, gguf_params, needs_imatrix, parse_quants, quantize
    from export.merge import merge_adapter
    from export.preflight import plan_export
    from export.verify import _measure, check_gguf, compare_greedy, hf_greedy, probe_ids, quant_row

    quants = parse_quants(quant)
    events = ctx.events("export")
    out = ctx.run_dir / "export" / source.label  # each model in its own folder, with its own Modelfile
    native_log = ctx.run_dir / "export" / "llama.cpp.log"  # the quantizer's per-tensor chatter
    events.start(source=str(source.adapter_dir or source.base_dir), quant=",".join(quants), label=source.label)
    plan = plan_export(source.base_dir, out, quants, merge=source.adapter_dir is not None,
                       reference=verify_tokens > 0)
    events.log(f"export plan: {plan.summary()}", **{"plan": plan.as_dict()})
    quantized = [q for q in quants if q != "f16"]
    steps = (1 if source.adapter_dir else 0) + 2 + len(quantized)
    done = 0

    hf_dir = source.base_dir
    if source.adapter_dir is not None:
        events.log(f"merging the adapter into a 16-bit copy of {source.base_dir.name}, tensor by tensor")
        merged = merge_adapter(source.base_dir, source.adapter_dir, out / "merged")
        hf_dir = merged.merged_dir
        events.log(f"merge changed {merged.changed_tensors} of {merged.targeted_tensors} LoRA-targeted weight "
                   f"tensors (max |change| {merged.max_abs_change:.2e})")
        _record(ctx, source, "merged", None, hf_dir, events)
        done += 1
        events.progress(done, steps, "steps")

    f16 = out / f"{source.label}-f16.gguf"  # the label stays in the file name: Ollama shows it
    events.log(f"converting {hf_dir.name} to GGUF f16 with llama.cpp's converter")
    convert_to_gguf(hf_dir, f16, "f16", log=native_log)
    n_params = gguf_params(f16)
    _record(ctx, source, "gguf", "f16", f16, events, n_params)
    done += 1
    events.progress(done, steps, "steps")

    report = check_gguf(f16, hf_dir, log=native_log)
    prompts, texts = probe_ids(hf_dir, probes)
    ref = _measure(f16, prompts, texts, 64, log=native_log)
    if verify_tokens > 0 and plan.reference:
        hf = hf_greedy(hf_dir, prompts, verify_tokens, plan.reference)
        compare_greedy(report, hf, ref.continuations, verify_tokens, strict=True)
        report.reference = plan.reference
        ties = f", {report.near_ties} parting at a near-tie" if report.near_ties else ""
        events.log(f"f16 matches the HF model ({plan.reference}): template, BOS/EOS, tokenization; greedy tokens "
                   f"equal on {report.agreement:.0%} of {len(prompts)} probes (first {verify_tokens} tokens{ties})")
    else:
        report.reference_note = plan.reference_note or "export.verify_tokens is 0"
        events.log(f"f16 matches the HF model: template, BOS/EOS, tokenization; greedy tokens not compared: "
                   f"{report.reference_note}", "warning" if verify_tokens > 0 else "info")
    ppl = "" if ref.ppl is None else f", perplexity of the {len(texts)} reference answers {ref.ppl:.3f}"
    events.log(f"f16 reference: {f16.stat().st_size / 2**20:.1f} MiB, "
               f"{f16.stat().st_size * 8 / n_params:.2f} bits per weight{ppl}, end of turn "
               f"{sum(ref.eot)}/{len(prompts)}")
    done += 1
    events.progress(done, steps, "steps")

    rows: dict[str, dict] = {}
    artifact_id: int | None = None
    imatrix = None
    if any(needs_imatrix(q) for q in quantized):
        from export.llama_tools import compute_imatrix, ensure_tools

        tools = ensure_tools(ctx.settings.home, events, sdist=tools_sdist)
        texts_for_matrix = calibration or [m["content"] for msgs, ref in (probes or []) for m in
                                           [*msgs, {"content": ref}]]
        events.log(f"computing the importance matrix of {f16.name} over {len(texts_for_matrix)} texts "
                   f"with llama.cpp's imatrix")
        imatrix = compute_imatrix(tools, f16, texts_for_matrix, out / f"{source.label}-imatrix.gguf", native_log)
    for q in quantized:
        final = out / f"{source.label}-{q}.gguf"
        events.log(f"quantizing to {q} with llama.cpp's quantizer (its log: {native_log.name})")
        if needs_imatrix(q):
            from export.llama_tools import quantize_with_imatrix

            quantize_with_imatrix(tools, f16, final, q, imatrix, native_log)
        else:
            quantize(f16, final, q, log=native_log)
        row = quant_row(q, final, ref, prompts, texts, n_params=n_params, log=native_log)
        art = _record(ctx, source, "gguf", q, final, events, n_params)
        artifact_id = artifact_id or art
        rows[q] = {"path": str(final), "sha256": sha256_file(final), **row.summary()}
        ppl = "" if row.ppl is None else f", perplexity {row.ppl:.3f} ({row.ppl_delta:+.3f} vs f16)"
        line = (f"{q}: {row.bytes / 2**20:.1f} MiB, {row.bits_per_weight:.2f} bits per weight{ppl}, greedy "
                f"agreement with f16 {row.agreement:.2f}, end of turn {row.eot}/{row.probes}")
        events.log(line + ("; WARNING: " + "; ".join(row.warnings) if row.warnings else ""), quant=q,
                   status="warning" if row.warnings else "ok")
        done += 1
        events.progress(done, steps, "steps")
    if "f16" in quants:
        rows["f16"] = {"path": str(f16), "sha256": sha256_file(f16), "quant": "f16", "bytes": f16.stat().st_size,
                       "bits_per_weight": round(f16.stat().st_size * 8 / n_params, 3),
                       "ppl": None if ref.ppl is None else round(ref.ppl, 4), "ppl_delta": 0.0,
                       "greedy_agreement": 1.0, "eot": f"{sum(ref.eot)}/{len(prompts)}", "warnings": [],
                       "status": "ok"}
    first = quants[0]
    final = f16 if first == "f16" else Path(rows[first]["path"])
    if first == "f16":
        artifact_id = _last_id(ctx, f16)
    events.progress(steps, steps, "steps")
    sha = rows[first]["sha256"]
    report_dict = {"f16": report.summary(), "plan": plan.as_dict(),
                   **{q: r for q, r in rows.items() if q != "f16"}}
    result = ExportResult(hf_dir=hf_dir, f16_gguf=f16, gguf=final, quant=first, sha256=sha,
                          bytes=final.stat().st_size, artifact_id=artifact_id, verify=report_dict, quants=rows)
    events.done(gguf=str(final), quant=first, bytes=result.bytes, quants=",".join(quants))
    return result


def _record(ctx: RunContext, source: ExportSource, kind: str, quant: str | None, path: Path, events,  # noqa: ANN001
            n_params: int | None = None) -> int:
    sha = sha256_tree(path)
    size = tree_bytes(path)
    bpw = round(size * 8 / n_params, 4) if n_params else None
    with session_scope(ctx.store) as s:
        art = Artifact(training_run_id=source.training_run_id, kind=kind if source.adapter_dir or kind != "gguf"
                       else "base-gguf", quant=quant, path=str(path), sha256=sha, bytes=size, bits_per_weight=bpw)
        s.add(art)
        s.flush()
        art_id = art.id
    events.artifact(kind, path, sha256=sha, bytes=size, quant=quant)
    return art_id


def _last_id(ctx: RunContext, path: Path) -> int:
    from sqlalchemy import select

    with session_scope(ctx.store) as s:
        return s.scalar(select(Artifact.id).where(Artifact.path == str(path)).order_by(Artifact.id.desc()))
