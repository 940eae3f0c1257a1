"""Verify a GGUF against the Hugging Face model it came from: architecture, chat template, BOS/EOS,
tokenization, and greedy continuations."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from export.errors import ExportError

SAMPLE_TEXT = "안녕하세요! 오늘 서울의 날씨는 맑습니다. The quick brown fox, 12345."
PROBE_QUESTIONS = ["대한민국의 수도는 어디인가요?", "What is the capital of France?"]


F16_MIN_AGREEMENT = 0.9  # share of probes whose greedy tokens must equal the HF model's, for 16-bit files
NEAR_TIE = 0.02  # logit margin (nats) under which two tokens are a tie that float rounding may break either way


@dataclass
class VerifyReport:
    gguf: Path
    architecture: str
    chat_template_matches: bool
    bos_id: int | None
    eos_id: int | None
    tokenization_matches: bool
    greedy_agreement: list[float] = field(default_factory=list)  # matching-prefix fraction per probe
    agreement: float | None = None  # share of probes equal to the HF model on the compared tokens
    near_ties: int = 0  # probes that part at a near-tie of the HF model's logits (counted as agreeing)
    reference: str = ""  # where the HF model ran ("cpu-float32" ...), "" when it was not loaded
    reference_note: str = ""
    tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.chat_template_matches and self.tokenization_matches

    def summary(self) -> dict:
        return {
            "architecture": self.architecture, "chat_template_matches": self.chat_template_matches,
            "bos_id": self.bos_id, "eos_id": self.eos_id, "tokenization_matches": self.tokenization_matches,
            "greedy_agreement": [round(x, 3) for x in self.greedy_agreement],
            "agreement": None if self.agreement is None else round(self.agreement, 3),
            "near_ties": self.near_ties, "tokens": self.tokens, "reference": self.reference,
            "reference_note": self.reference_note,
        }


def _int(meta: dict, key: str) -> int | None:
    value = meta.get(key)
    return int(value) if value not in (None, "") else None


def check_gguf(gguf: Path, hf_dir: Path, log: Path | None = None) -> VerifyReport:
    """What a converted file must keep from the HF folder, read with llama.cpp's vocabulary only (no weights
    loaded): the chat template, EOS and BOS ids, and the tokenization of mixed Korean/English text. Raises
    ExportError on any mismatch that would make the model misbehave under Ollama."""
    import llama_cpp
    from transformers import AutoTokenizer

    from workspace.quiet import quiet_libraries

    quiet_libraries()
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    from export.gguf_convert import native_output_to

    try:
        with native_output_to(log):
            llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=64, verbose=False, vocab_only=True)
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
    if hasattr(llm, "close"):
        llm.close()
    tokenization_ok = list(hf_ids) == list(cpp_ids)
    if not tokenization_ok:
        raise ExportError(f"{gguf.name}: llama.cpp tokenizes text differently from the HF tokenizer "
                          f"({len(cpp_ids)} vs {len(hf_ids)} tokens)", "the vocabulary conversion is broken; "
                          "report the model and converter version")
    return VerifyReport(gguf, arch, template_ok, bos, eos, tokenization_ok)


@dataclass
class HFContinuation:
    tokens: list[int]  # greedy tokens, the end-of-turn token excluded
    top2: list[tuple[int, int, float]]  # per step: best token, runner-up, their logit margin


def hf_greedy(hf_dir: Path, prompts: list[list[int]], tokens: int, where: str = "cpu-float32",
              model=None) -> list[HFContinuation]:  # noqa: ANN001
    """Greedy continuations of ``prompts`` (token ids) by the HF model, ``tokens`` at most, with the logit
    margin of each step. ``where`` is ``<device>-<dtype>`` (export.preflight chooses it within the memory
    there is); ``model`` reuses a loaded one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, dtype = where.split("-", 1)
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=getattr(torch, dtype),
                                                     device_map=device if device == "cuda" else None,
                                                     low_cpu_mem_usage=True)
    model.eval()
    gen_eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    stops = {tok.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])} - {None}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[HFContinuation] = []
    # all probes in one generate call, left-padded (the attention mask and the position ids skip the padding)
    width = max((len(p) for p in prompts), default=0)
    x = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
    if prompts:
        with torch.no_grad():
            g = model.generate(x, attention_mask=mask, max_new_tokens=tokens, do_sample=False, output_logits=True,
                               return_dict_in_generate=True, pad_token_id=pad, eos_token_id=sorted(stops) or None)
        for row in range(len(prompts)):
            new = g.sequences[row, width:].tolist()
            top2 = []
            for step in g.logits:
                v, i = torch.topk(step[row].float(), 2)
                top2.append((int(i[0]), int(i[1]), float(v[0] - v[1])))
            cut = next((k for k, t in enumerate(new) if t in stops), len(new))
            out.append(HFContinuation(new[:cut], top2[:cut + 1]))
    del model
    return out


def compare_greedy(report: VerifyReport, hf: list[HFContinuation], cpp: list[list[int]], tokens: int,
                   strict: bool = True) -> VerifyReport:
    """Agreement of the GGUF's greedy tokens with the HF model's on the first ``tokens`` of each probe. A
    probe that parts where the HF model's two best tokens were within NEAR_TIE of each other, and the GGUF
    took the runner-up, is a near-tie (rounding, not a conversion fault) and counts as agreeing. ``strict``:
    below F16_MIN_AGREEMENT is an ExportError."""
    same = 0
    report.tokens = tokens
    for h, c in zip(hf, cpp):
        want, got = h.tokens[:tokens], c[:tokens]
        prefix = 0
        for a, b in zip(want, got):
            if a != b:
                break
            prefix += 1
        report.greedy_agreement.append(prefix / max(len(want), 1))
        if want == got:
            same += 1
            continue
        if prefix < len(h.top2):
            best, second, margin = h.top2[prefix]
            if prefix < len(got) and got[prefix] == second and margin < NEAR_TIE:
                report.near_ties += 1
                same += 1
    report.agreement = same / max(len(hf), 1)
    if strict and hf and report.agreement < F16_MIN_AGREEMENT:
        worst = min(range(len(hf)), key=lambda i: report.greedy_agreement[i])
        raise ExportError(f"{report.gguf.name}: greedy tokens agree with the HF model on {report.agreement:.0%} "
                          f"of {len(hf)} probes (first {tokens} tokens; at least {F16_MIN_AGREEMENT:.0%} needed); "
                          f"probe {worst + 1} parts after {round(report.greedy_agreement[worst] * tokens)} tokens",
                          "the GGUF does not compute what the model does: re-export in f16 and report the "
                          "architecture and converter version")
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


MAX_ROWS = 16  # probes decoded together per step; the f16 file and each quantization are measured alike


def _measure(gguf: Path, probes: list[list[int]], texts: list[list[int]], budget: int,
             log: Path | None = None) -> Reference:
    """Greedy continuations (up to ``budget`` tokens or the end-of-turn token) and the perplexity of
    ``texts`` (``(token ids, first scored position)``: a conversation and where its reference answer starts;
    plain id lists are scored whole), both through llama.cpp. The probes decode together, one
    token of each per step in one batch, each in its own KV cells, which is several times faster than one
    after another; the f16 file and every quantization are measured the same way, so their greedy tokens
    compare like with like."""
    import ctypes
    import math

    import llama_cpp as lc
    import numpy as np
    from llama_cpp import _internals as internals

    from export.gguf_convert import native_output_to

    groups = max(1, -(-len(probes) // MAX_ROWS))
    n_seq = max(1, -(-len(probes) // groups))  # groups of equal size, each at most MAX_ROWS
    per_seq = max([len(p) + budget for p in probes] + [len(t[0] if isinstance(t, tuple) else t) for t in texts]
                  + [64]) + 8
    per_seq = -(-per_seq // 256) * 256  # llama.cpp sizes each sequence's cells in steps of 256
    with native_output_to(log):
        mp = lc.llama_model_default_params()
        mp.use_extra_bufts = False
        model = internals.LlamaModel(path_model=str(gguf), params=mp, verbose=False)
        cp = lc.llama_context_default_params()
        cp.n_ctx = per_seq * n_seq
        cp.n_batch = cp.n_ubatch = 512
        cp.n_seq_max = n_seq
        cp.kv_unified = False
        cp.n_threads = cp.n_threads_batch = max(1, os.cpu_count() or 1)
        cp.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = internals.LlamaContext(model=model, params=cp, verbose=False)
        batch = internals.LlamaBatch(n_tokens=512, embd=0, n_seq_max=n_seq, verbose=False)
    vocab, n_vocab = model.vocab, int(model.n_vocab())
    mem = lc.llama_get_memory(ctx.ctx)

    def decode(items: list[tuple[int, int, int, bool]]) -> None:  # (token, pos, seq, wants logits)
        batch.reset()
        b = batch.batch
        for i, (t, pos, seq, want) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, pos, 1, want
            b.seq_id[i][0] = seq
        b.n_tokens = len(items)
        rc = lc.llama_decode(ctx.ctx, b)
        if rc != 0:
            raise ExportError(f"llama.cpp could not evaluate {gguf.name} (decode returned {rc})",
                              "re-run the export; the file may be truncated")

    def row(i: int) -> np.ndarray:
        ptr = lc.llama_get_logits_ith(ctx.ctx, i)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))

    def prefill(ids: list[int], seq: int) -> np.ndarray:
        """Evaluate a prompt; the logits of its last token."""
        for start in range(0, len(ids), 512):
            chunk = ids[start:start + 512]
            last = start + len(chunk) == len(ids)
            decode([(t, start + i, seq, last and i == len(chunk) - 1) for i, t in enumerate(chunk)])
        return row(len(chunk) - 1)

    def text_nll(ids: list[int], first: int) -> tuple[float, int]:
        """Negative log-likelihood of the tokens ``ids[first:]`` given what precedes each (the answer after
        its prompt), one decode per 512 tokens with logits only where a scored token is predicted; the
        log-softmax is taken over a chunk's logits block at once (float32, max subtracted)."""
        total, count = 0.0, 0
        first = max(1, first)
        for start in range(0, len(ids) - 1, 512):
            chunk = ids[start:start + 512]
            wanted = [start + i for i in range(len(chunk)) if first - 1 <= start + i < len(ids) - 1]
            decode([(t, start + i, 0, first - 1 <= start + i < len(ids) - 1) for i, t in enumerate(chunk)])
            if not wanted:
                continue
            ptr = lc.llama_get_logits(ctx.ctx)
            block = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                          shape=(len(wanted), n_vocab))
            targets = np.asarray([ids[i + 1] for i in wanted], dtype=np.int64)
            top = block.max(axis=1, keepdims=True)
            logz = top[:, 0].astype(np.float64) + np.log(np.exp(block - top).sum(axis=1, dtype=np.float64))
            total += float((logz - block[np.arange(len(targets)), targets]).sum())
            count += len(targets)
        return total, count

    conts: list[list[int]] = [[] for _ in probes]
    eots = [False for _ in probes]
    try:
        for lo in range(0, len(probes), n_seq):
            group = list(range(lo, min(lo + n_seq, len(probes))))
            last: dict[int, int] = {}
            pos: dict[int, int] = {}
            for seq, k in enumerate(group):
                lc.llama_memory_seq_rm(mem, seq, -1, -1)
                last[k] = int(np.argmax(prefill(list(probes[k]), seq)))
                pos[k] = len(probes[k])
            active = list(group)
            while active:
                still = []
                for k in active:
                    t = last[k]
                    if lc.llama_vocab_is_eog(vocab, t):
                        eots[k] = True
                        continue
                    conts[k].append(t)
                    if len(conts[k]) < budget:
                        still.append(k)
                active = still
                if not active:
                    break
                decode([(last[k], pos[k], group.index(k), True) for k in active])
                for i, k in enumerate(active):
                    last[k] = int(np.argmax(row(i)))
                    pos[k] += 1
        nll, count = 0.0, 0
        for text in texts:
            ids, first = (list(text[0]), int(text[1])) if isinstance(text, tuple) else (list(text), 1)
            if len(ids) < 2 or first >= len(ids):
                continue
            lc.llama_memory_seq_rm(mem, 0, -1, -1)
            part, n = text_nll(ids, first)
            nll += part
            count += n
    finally:
        batch.close()
        ctx.close()
        model.close()
    return Reference(conts, eots, math.exp(nll / count) if count else None)


def quant_row(quant: str, path: Path, ref: Reference, probes: list[list[int]], texts: list[list[int]], *,
              n_params: int, agree_tokens: int = 16, budget: int = 64, min_agreement: float = 0.5,
              log: Path | None = None) -> QuantRow:
    """One line of the quantization table; warnings (never "verified") when the quantized file strays."""
    from export.gguf_convert import bits_per_weight

    got = _measure(path, probes, texts, budget, log=log)
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


def probe_ids(hf_dir: Path, probes: list[tuple[list[dict], str]] | None
              ) -> tuple[list[list[int]], list[tuple[list[int], int]]]:
    """Token ids of the probe prompts (chat template, generation prompt) and of the whole conversations with
    their reference answers, each with the position where the answer starts (perplexity scores the answer
    given its prompt), with the exported model's own tokenizer. Without probes, the
    built-in questions, and no perplexity."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir))

    def ids(messages: list[dict], gen: bool) -> list[int]:
        out = tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=True, return_dict=False)
        return list(out["input_ids"] if isinstance(out, dict) else out)

    if not probes:
        return [ids([{"role": "user", "content": q}], True) for q in PROBE_QUESTIONS], []
    prompts = [ids(list(m), True) for m, _ in probes]
    texts = []
    for (m, ref), prompt in zip(probes, prompts):
        if not ref:
            continue
        whole = ids([*m, {"role": "assistant", "content": ref}], False)
        start = next((i for i, (a, b) in enumerate(zip(prompt, whole)) if a != b), min(len(prompt), len(whole)))
        texts.append((whole, start))  # the answer (and its end-of-turn token) is what perplexity scores
    return prompts, texts
