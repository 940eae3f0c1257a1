"""Verify a GGUF against the Hugging Face model it came from: architecture, chat template, BOS/EOS,
tokenization, and greedy continuations."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from export.errors import ExportError

SAMPLE_TEXT = "안녕하세요! 오늘 서울의 날씨는 맑습니다. The quick brown fox, 12345."
PROBE_QUESTIONS = ["대한민국의 수도는 어디인가요?", "What is the capital of France?"]


@dataclass
class VerifyReport:
    gguf: Path
    architecture: str
    chat_template_matches: bool
    bos_id: int | None
    eos_id: int | None
    tokenization_matches: bool
    greedy_agreement: list[float] = field(default_factory=list)  # matching-prefix fraction per probe
    strict: bool = True

    @property
    def ok(self) -> bool:
        return self.chat_template_matches and self.tokenization_matches

    def summary(self) -> dict:
        return {
            "architecture": self.architecture, "chat_template_matches": self.chat_template_matches,
            "bos_id": self.bos_id, "eos_id": self.eos_id, "tokenization_matches": self.tokenization_matches,
            "greedy_agreement": [round(x, 3) for x in self.greedy_agreement],
        }


def _int(meta: dict, key: str) -> int | None:
    value = meta.get(key)
    return int(value) if value not in (None, "") else None


def verify_gguf(gguf: Path, hf_dir: Path, *, tokens: int = 8, strict: bool = True, hf_model=None) -> VerifyReport:  # noqa: ANN001
    """``strict`` (for 16-bit files): the first greedy token must match the HF model on every probe.
    Quantized files only report their agreement. Raises ExportError on any mismatch that would make
    the model misbehave under Ollama."""
    import llama_cpp
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workspace.quiet import quiet_libraries

    quiet_libraries()

    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    try:
        llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=None, verbose=False, seed=0)
    except Exception as e:  # llama.cpp refuses the file
        raise ExportError(f"llama.cpp cannot load {gguf}: {e}", "re-run the export; the file may be truncated") from None
    meta = llm.metadata
    arch = meta.get("general.architecture", "")
    template = meta.get("tokenizer.chat_template")
    template_ok = template is not None and template == tok.chat_template
    if not template_ok:
        raise ExportError(f"{gguf.name}: the chat template in the GGUF differs from the tokenizer's",
                          "re-convert from a folder whose tokenizer_config.json has the training chat template")
    bos, eos = _int(meta, "tokenizer.ggml.bos_token_id"), _int(meta, "tokenizer.ggml.eos_token_id")
    if eos != tok.eos_token_id:
        raise ExportError(f"{gguf.name}: EOS id {eos} differs from the tokenizer's {tok.eos_token_id} "
                          f"({tok.eos_token!r})", "the model would never stop under Ollama; fix generation_config / "
                          "tokenizer eos_token before converting")
    if tok.bos_token_id is not None and bos is not None and bos != tok.bos_token_id:
        raise ExportError(f"{gguf.name}: BOS id {bos} differs from the tokenizer's {tok.bos_token_id}",
                          "re-convert the model")
    hf_ids = tok(SAMPLE_TEXT, add_special_tokens=False)["input_ids"]
    cpp_ids = llm.tokenize(SAMPLE_TEXT.encode("utf-8"), add_bos=False, special=True)
    tokenization_ok = list(hf_ids) == list(cpp_ids)
    if not tokenization_ok:
        raise ExportError(f"{gguf.name}: llama.cpp tokenizes text differently from the HF tokenizer "
                          f"({len(cpp_ids)} vs {len(hf_ids)} tokens)", "the vocabulary conversion is broken; "
                          "report the model and converter version")
    report = VerifyReport(gguf, arch, template_ok, bos, eos, tokenization_ok, strict=strict)
    if tokens <= 0:
        return report
    model = hf_model or AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    model.eval()
    for q in PROBE_QUESTIONS:
        prompt_ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False)
        if isinstance(prompt_ids, dict):
            prompt_ids = prompt_ids["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        hf_new = out[0, len(prompt_ids):].tolist()
        llm.reset()
        cpp_new: list[int] = []
        for t in llm.generate(list(prompt_ids), top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            cpp_new.append(int(t))
            if t == eos or len(cpp_new) >= len(hf_new):
                break
        prefix = 0
        for a, b in zip(hf_new, cpp_new):
            if a != b:
                break
            prefix += 1
        report.greedy_agreement.append(prefix / max(len(hf_new), 1))
        if strict and hf_new and prefix == 0:
            raise ExportError(f"{gguf.name}: first greedy token differs from the HF model for {q!r} "
                              f"({cpp_new[:1]} vs {hf_new[:1]})", "the GGUF does not compute what the model does; "
                              "re-export in f16 and report the architecture")
    return report


# ----------------------------------------------------------------------------- quantization report


@dataclass
class Reference:
    """What the f16 GGUF does on the probes: the yardstick every quantization is measured against."""

    continuations: list[list[int]]
    eot: list[bool]
    ppl: float | None


@dataclass
class QuantRow:
    quant: str
    path: Path
    bytes: int
    bits_per_weight: float
    ppl: float | None
    ppl_delta: float | None  # against the f16 file
    agreement: float  # share of probes whose first `agree_tokens` greedy tokens equal the f16 file's
    eot: int  # probes on which the end-of-turn token came within the budget
    eot_reference: int  # ... and on which the f16 file emitted it
    probes: int
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"quant": self.quant, "bytes": self.bytes, "bits_per_weight": round(self.bits_per_weight, 3),
                "ppl": None if self.ppl is None else round(self.ppl, 4),
                "ppl_delta": None if self.ppl_delta is None else round(self.ppl_delta, 4),
                "greedy_agreement": round(self.agreement, 3), "eot": f"{self.eot}/{self.probes}",
                "eot_f16": f"{self.eot_reference}/{self.probes}", "warnings": list(self.warnings),
                "status": "warning" if self.warnings else "ok"}


def _is_eog(llm, token: int) -> bool:  # noqa: ANN001
    import llama_cpp

    try:
        return bool(llama_cpp.llama_vocab_is_eog(llm._model.vocab, token))
    except (AttributeError, TypeError):
        return token == llm.token_eos()


def _measure(gguf: Path, probes: list[list[int]], texts: list[list[int]], budget: int) -> Reference:
    """Greedy continuations (up to ``budget`` tokens or the end-of-turn token) and the perplexity over
    ``texts`` (whole conversations, token ids), both through llama.cpp."""
    import math

    import llama_cpp
    import numpy as np

    n_ctx = max([len(p) + budget for p in probes] + [len(t) for t in texts] + [64]) + 8
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, logits_all=bool(texts), verbose=False, seed=0)
    conts, eots = [], []
    for ids in probes:
        llm.reset()
        out: list[int] = []
        hit = False
        for t in llm.generate(list(ids), top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            if _is_eog(llm, int(t)):
                hit = True
                break
            out.append(int(t))
            if len(out) >= budget:
                break
        conts.append(out)
        eots.append(hit)
    nll, count = 0.0, 0
    for ids in texts:
        if len(ids) < 2:
            continue
        llm.reset()
        llm.eval(list(ids))
        logits = np.asarray(llm.scores[: len(ids) - 1], dtype=np.float64)
        top = logits.max(axis=1, keepdims=True)
        logz = (top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))
        nll += float((logz - logits[np.arange(len(ids) - 1), ids[1:]]).sum())
        count += len(ids) - 1
    if hasattr(llm, "close"):
        llm.close()
    return Reference(conts, eots, math.exp(nll / count) if count else None)


def quant_row(quant: str, path: Path, ref: Reference, probes: list[list[int]], texts: list[list[int]], *,
              n_params: int, agree_tokens: int = 16, budget: int = 64, min_agreement: float = 0.5) -> QuantRow:
    """One line of the quantization table; warnings (never "verified") when the quantized file strays."""
    from export.gguf_convert import bits_per_weight

    got = _measure(path, probes, texts, budget)
    same = sum(1 for a, b in zip(ref.continuations, got.continuations) if a[:agree_tokens] == b[:agree_tokens])
    agreement = same / max(len(probes), 1)
    row = QuantRow(quant, path, path.stat().st_size, bits_per_weight(path, n_params), got.ppl,
                   None if got.ppl is None or ref.ppl is None else got.ppl - ref.ppl, agreement,
                   sum(got.eot), sum(ref.eot), len(probes))
    if probes and agreement < min_agreement:
        row.warnings.append(f"greedy agreement with f16 is {agreement:.2f} (first {agree_tokens} tokens, "
                            f"{len(probes)} probes): answers differ from the 16-bit model")
    lost = sum(1 for r, g in zip(ref.eot, got.eot) if r and not g)
    if lost:
        row.warnings.append(f"no end-of-turn token within {budget} tokens on {lost} probe(s) where f16 stops")
    return row


def probe_ids(hf_dir: Path, probes: list[tuple[list[dict], str]] | None) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of the probe prompts (chat template, generation prompt) and of the whole conversations with
    their reference answers (for perplexity), with the exported model's own tokenizer. Without probes, the
    built-in questions, and no perplexity."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir))

    def ids(messages: list[dict], gen: bool) -> list[int]:
        out = tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=True, return_dict=False)
        return list(out["input_ids"] if isinstance(out, dict) else out)

    if not probes:
        return [ids([{"role": "user", "content": q}], True) for q in PROBE_QUESTIONS], []
    prompts = [ids(list(m), True) for m, _ in probes]
    texts = [ids([*m, {"role": "assistant", "content": ref}], False) for m, ref in probes if ref]
    return prompts, texts
