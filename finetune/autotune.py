"""Auto-tune: the fastest (micro-batch, accumulation, gradient checkpointing) that fits the GPU.

Every candidate keeps the recipe's effective batch (``batch_size x grad_accum`` rows per optimizer step) and
the row order (rows are bucketed per optimizer step, not per micro-batch: ``common.ordered_rows``), so each
candidate computes the same gradients and the loss sequence does not depend on the choice. What differs is
memory and speed: keeping activations (checkpointing off) skips the recomputation of the forward pass, a
larger micro-batch fills the GPU better, Unsloth's offloaded checkpointing parks activations in host memory.

The probe runs a forward and backward pass of each candidate's micro-batch at the recipe's longest row, on
the loaded model, under the memory limit (``train.max_vram_gib`` or the GPU, less a headroom margin for the
optimizer states and fragmentation), and times it. Out-of-memory is an outcome, never fatal. It stops at its
time budget and trains with the fastest configuration that fitted, or the recipe's own when none did. The
result is cached per GPU, model, sequence length, LoRA shape, quantization, effective batch and cap.

The search logic here is pure Python: the backend hands it a :class:`Prober` (real: ``TorchProber``; tests:
a fake) that measures one candidate.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

GIB = 2**30
# Checkpointing modes from the most memory (and the least work) to the least memory.
MODES = ("off", "on", "unsloth")
MODE_RANK = {m: i for i, m in enumerate(MODES)}
MAX_MICRO = 64


class OutOfMemory(Exception):
    """A probe that did not fit (the prober turns the framework's out-of-memory error into this)."""


@dataclass(frozen=True)
class Candidate:
    micro: int
    accum: int
    checkpointing: str  # off | on | unsloth

    @property
    def label(self) -> str:
        return f"{self.micro} x {self.accum}, checkpointing {self.checkpointing}"


@dataclass
class Trial:
    candidate: Candidate
    status: str  # fits | over (the limit) | oom (out of memory) | skipped (known not to fit) | untimed (budget)
    peak_gib: float | None = None
    step_s: float | None = None  # seconds per optimizer step (micro-step time x accumulation)
    tokens_per_s: float | None = None
    note: str = ""
    probe_s: float | None = None  # wall time the probe of this candidate took

    def row(self) -> dict[str, Any]:
        return {"micro_batch": self.candidate.micro, "grad_accum": self.candidate.accum,
                "checkpointing": self.candidate.checkpointing, "status": self.status, "peak_gib": self.peak_gib,
                "step_s": self.step_s, "tokens_per_s": self.tokens_per_s, "note": self.note,
                "probe_s": self.probe_s}


@dataclass
class TuneResult:
    chosen: Candidate
    reason: str
    trials: list[Trial] = field(default_factory=list)
    limit_gib: float = 0.0
    seconds: float = 0.0
    cached: bool = False
    key: str = ""
    default: Candidate | None = None
    speedup_vs_default: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"chosen": asdict(self.chosen), "reason": self.reason, "limit_gib": self.limit_gib,
                "probe_seconds": round(self.seconds, 1), "cached": self.cached, "key": self.key,
                "default": asdict(self.default) if self.default else None,
                "speedup_vs_default": self.speedup_vs_default, "trials": [t.row() for t in self.trials]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TuneResult":
        trials = [Trial(Candidate(r["micro_batch"], r["grad_accum"], r["checkpointing"]), r["status"],
                        r.get("peak_gib"), r.get("step_s"), r.get("tokens_per_s"), r.get("note", ""), r.get("probe_s"))
                  for r in d.get("trials", [])]
        return cls(Candidate(**d["chosen"]), d["reason"], trials, d.get("limit_gib", 0.0), d.get("probe_seconds", 0.0),
                   True, d.get("key", ""), Candidate(**d["default"]) if d.get("default") else None,
                   d.get("speedup_vs_default"))

    def table(self) -> list[str]:
        """The probe as lines of text (under 70 columns, for an 80-column log): one per candidate, the chosen
        one marked."""
        lines = [f"{'':2}{'batches':>7}  {'ckpt':<8}{'GiB':>6} {'s/step':>6} {'tok/s':>7}  result"]
        for t in self.trials:
            c = t.candidate
            mark = "->" if c == self.chosen else ""
            lines.append(f"{mark:2}{f'{c.micro} x {c.accum}':>7}  {c.checkpointing:<8}{_num(t.peak_gib, 1):>6} "
                         f"{_num(t.step_s, 3):>6} {_num(t.tokens_per_s, 0):>7}  "
                         f"{t.status}{': ' + t.note if t.note else ''}")
        return lines


def _num(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


class Prober(Protocol):
    def limit_bytes(self) -> int:
        """Memory a training step may use: the cap or the GPU, less the headroom."""

    def measure(self, candidate: Candidate, seq_len: int) -> tuple[int, float]:
        """(peak bytes, seconds per micro-step) of one candidate's forward + backward; raises OutOfMemory."""


def candidates(effective: int, modes: tuple[str, ...] | list[str], max_micro: int = MAX_MICRO) -> list[Candidate]:
    """Every (micro, accumulation, checkpointing) with micro x accumulation == ``effective``, in probing order:
    modes from the most memory to the least, micro-batches from the largest down."""
    if effective < 1:
        raise ValueError("the effective batch must be at least 1")
    micros = [d for d in range(min(effective, max_micro), 0, -1) if effective % d == 0]
    ordered = sorted(dict.fromkeys(modes), key=lambda m: MODE_RANK.get(m, len(MODES)))
    return [Candidate(m, effective // m, mode) for mode in ordered for m in micros]


def cache_key(*, gpu: str, gpu_total_bytes: int, model: str, seq_len: int, lora: dict[str, Any],
              quant: dict[str, Any], effective_batch: int, backend: str, cap_gib: float | None,
              modes: tuple[str, ...] | list[str], versions: dict[str, str] | None = None,
              extra: dict[str, Any] | None = None) -> str:
    """A digest of everything the answer depends on: the GPU, the model, the sequence length, the LoRA shape,
    the quantization, the effective batch, the backend, the memory cap, the modes probed, the library versions
    and ``extra`` (batch layout, probe budget)."""
    lora_shape = {k: lora.get(k) for k in ("r", "target_modules", "dropout", "use_rslora")}
    lora_shape["target_modules"] = sorted(lora_shape.get("target_modules") or [])
    payload = {"gpu": gpu, "gpu_total": int(gpu_total_bytes), "model": model, "seq_len": int(seq_len),
               "lora": lora_shape, "quant": quant, "effective_batch": int(effective_batch), "backend": backend,
               "cap_gib": cap_gib, "modes": list(modes), "versions": versions or {}, "extra": extra or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def tune(prober: Prober, *, effective: int, modes: tuple[str, ...] | list[str], seq_len: int, default: Candidate,
         budget_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> TuneResult:
    """Probe the candidates and choose the fastest that fits.

    A candidate over the limit, or out of memory, rules out every larger micro-batch of its mode and of the
    modes that keep more activations (they would need more memory still); a probe that fits predicts the
    next larger micro-batch's peak from the memory per row, so one clearly over the limit is skipped without
    being run. A candidate that would end past ``budget_s`` (judged by the last probe's time) is not started:
the candidates left are listed as not timed."""
    t0 = clock()
    limit = prober.limit_bytes()
    cands = candidates(effective, modes)
    if default not in cands:
        cands.append(default)
    trials: dict[Candidate, Trial] = {}
    # the smallest micro-batch known not to fit, per mode
    no_fit: dict[str, int] = {}
    # (micro, peak) of fitting probes per mode, to predict larger ones
    fitted: dict[str, list[tuple[int, int]]] = {}

    def ruled_out(c: Candidate) -> str | None:
        for mode, m in no_fit.items():
            if MODE_RANK.get(c.checkpointing, 9) <= MODE_RANK.get(mode, 9) and c.micro >= m:
                return f"{m} x {effective // m} {mode} failed"
        pts = fitted.get(c.checkpointing, [])
        if len(pts) >= 2:
            (m1, p1), (m2, p2) = sorted(pts)[:2]
            per_row = (p2 - p1) / (m2 - m1) if m2 != m1 else 0
            predicted = p1 + per_row * (c.micro - m1)
            if per_row > 0 and predicted > 1.15 * limit:
                return f"predicted {predicted / GIB:.1f} GiB"
        return None

    # The recipe's own configuration first: the fallback and the baseline of the speed-up, timed even when
    # the budget runs out. Then each mode upwards (largest micro-batches first would waste out-of-memory
    # probes on a small card), so every fit predicts the next step.
    order = [default] + sorted((c for c in cands if c != default),
                               key=lambda c: (MODE_RANK.get(c.checkpointing, 9), c.micro))
    last_s = 0.0  # the last probe's time: the next one of a larger micro-batch takes at least that long
    for c in order:
        if c != default and clock() - t0 + last_s > budget_s:
            trials[c] = Trial(c, "untimed", note=f"the {budget_s:.0f} s budget was spent")
            continue
        why = ruled_out(c)
        if why:
            trials[c] = Trial(c, "skipped", note=why)
            continue
        started = clock()
        try:
            peak, micro_s = prober.measure(c, seq_len)
        except OutOfMemory:
            last_s = clock() - started
            no_fit[c.checkpointing] = min(no_fit.get(c.checkpointing, c.micro), c.micro)
            trials[c] = Trial(c, "oom", probe_s=round(last_s, 2))
            continue
        last_s = clock() - started
        step_s = micro_s * c.accum
        tps = effective * seq_len / step_s if step_s > 0 else None
        if peak > limit:
            no_fit[c.checkpointing] = min(no_fit.get(c.checkpointing, c.micro), c.micro)
            trials[c] = Trial(c, "over", peak / GIB, step_s, tps, note=f"limit {limit / GIB:.1f} GiB",
                              probe_s=round(last_s, 2))
        else:
            fitted.setdefault(c.checkpointing, []).append((c.micro, peak))
            trials[c] = Trial(c, "fits", peak / GIB, step_s, tps, probe_s=round(last_s, 2))
    fits = [t for t in trials.values() if t.status == "fits" and t.step_s]
    ordered_trials = [trials[c] for c in cands]
    base = trials.get(default)
    if not fits:
        result = TuneResult(default, "no candidate fitted under the limit: the recipe's configuration is used",
                            ordered_trials, round(limit / GIB, 2), clock() - t0, default=default)
    else:
        # the fastest; within 2% of it (timing noise) the one that needs the least memory
        fastest = min(t.step_s for t in fits)
        best = min((t for t in fits if t.step_s <= fastest * 1.02), key=lambda t: t.peak_gib or 0.0)
        speedup = (round(base.step_s / best.step_s, 3)
                   if base is not None and base.status == "fits" and base.step_s else None)
        reason = f"fastest of {len(fits)} that fit under {limit / GIB:.1f} GiB (least memory within 2%)"
        if speedup:
            reason += (f"; {speedup:.2f}x the recipe's {default.micro} x {default.accum}, "
                       f"checkpointing {default.checkpointing}")
        result = TuneResult(best.candidate, reason, ordered_trials, round(limit / GIB, 2), clock() - t0,
                            default=default, speedup_vs_default=speedup)
    for t in trials.values():  # rounded for the report only, after the choice
        t.peak_gib = None if t.peak_gib is None else round(t.peak_gib, 3)
        t.step_s = None if t.step_s is None else round(t.step_s, 4)
        t.tokens_per_s = None if t.tokens_per_s is None else round(t.tokens_per_s, 1)
    return result


# ---------------------------------------------------------------- the cache


def read_cache(path: Path, key: str) -> TuneResult | None:
    """The cached answer for ``key``; None when there is none or the file is missing or damaged (that only
    costs a probe)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entry = data.get(key) if isinstance(data, dict) else None
        return TuneResult.from_json(entry) if isinstance(entry, dict) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _update_cache(path: Path, change: Callable[[dict[str, Any]], None]) -> str | None:
    """Read, change and write the cache file under a temporary name of this process's own (two runs sharing
    one workspace never write the same temporary), replaced in one rename. Returns why it failed, or None."""
    import os
    import tempfile

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    change(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    return None


def write_cache(path: Path, key: str, result: TuneResult) -> str | None:
    entry = result.to_json()
    entry["key"] = key
    entry["cached"] = False
    entry["when"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return _update_cache(path, lambda data: data.__setitem__(key, entry))


def drop_cache(path: Path, key: str) -> bool:
    """Forget ``key``'s answer; True when there was one."""
    found = []
    _update_cache(path, lambda data: found.append(data.pop(key, None) is not None))
    return bool(found and found[0])


def is_out_of_memory(e: BaseException) -> bool:
    """torch's out-of-memory error, and the allocation failures that come as other errors (cuBLAS workspace,
    pinned host memory for offloaded activations)."""
    if e.__class__.__name__ == "OutOfMemoryError":
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(m in text for m in (
        "out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDA error: out of memory"))


# ---------------------------------------------------------------- the real prober


def headroom_bytes(limit: int) -> int:
    """Kept free under the limit: the optimizer's states, the allocator's fragmentation over uneven batches
    and the evaluation pass. 8% of the limit, at least 1 GiB."""
    return max(GIB, int(0.08 * limit))


class TorchProber:
    """Measures a candidate on the loaded PEFT model: a forward and backward pass of ``micro`` random rows of
    ``seq_len`` tokens (one untimed, then timed until at least 0.3 s), the peak reserved memory, and the time
    per micro-step after a device sync. ``set_checkpointing(mode)`` switches the model's checkpointing."""

    def __init__(self, model: Any, vocab: int, set_checkpointing: Callable[[str], None], cap_gib: float | None,
                 autocast: Any = None) -> None:
        import torch

        self.torch = torch
        self.autocast = autocast  # the trainer's mixed-precision dtype, for a model whose kernels do not cast
        self.model = model
        self.vocab = vocab
        self.set_checkpointing = set_checkpointing
        self.total = torch.cuda.get_device_properties(0).total_memory
        self.cap = int(cap_gib * GIB) if cap_gib else None
        self.mode: str | None = None
        self.warmed = False

    def limit_bytes(self) -> int:
        room = min(self.total, self.cap) if self.cap else self.total
        return room - headroom_bytes(room)

    def _step(self, micro: int, seq_len: int) -> None:
        import contextlib

        torch = self.torch
        ids = torch.randint(0, self.vocab, (micro, seq_len), device="cuda")
        cast = (torch.autocast("cuda", dtype=self.autocast) if self.autocast is not None
                else contextlib.nullcontext())
        with cast:
            out = self.model(input_ids=ids, labels=ids)
        out.loss.backward()
        del out, ids

    def _clear(self) -> None:
        import gc

        self.model.zero_grad(set_to_none=True)
        gc.collect()
        self.torch.cuda.empty_cache()

    def measure(self, candidate: Candidate, seq_len: int) -> tuple[int, float]:
        torch = self.torch
        if candidate.checkpointing != self.mode:
            self.set_checkpointing(candidate.checkpointing)
            self.mode = candidate.checkpointing
        self.model.train()
        self._clear()
        torch.cuda.reset_peak_memory_stats()
        failed = None
        try:
            if not self.warmed:  # kernels compile and autotune on the first pass: not part of any timing
                self._step(1, min(seq_len, 256))
                self.warmed = True
            self._step(candidate.micro, seq_len)
            torch.cuda.synchronize()
            reps, t0 = 0, time.perf_counter()
            # at least 0.3 s of steps (at most 20): one step of a small model is too short to time alone
            while reps < 20 and (reps == 0 or time.perf_counter() - t0 < 0.3):
                self._step(candidate.micro, seq_len)
                torch.cuda.synchronize()
                reps += 1
            seconds = (time.perf_counter() - t0) / reps
            peak = torch.cuda.max_memory_reserved()
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            failed = str(e).split("\n")[0][:120]
        # Out of the except block: the error (and the activations its traceback holds) is gone before the
        # memory is given back.
        self._clear()
        torch.cuda.reset_peak_memory_stats()  # the memory report measures training, not the probe
        if failed is not None:
            raise OutOfMemory(failed)
        return peak, seconds


def apply_cap(cap_gib: float | None, log: Callable[[str], None]) -> None:
    """Make ``train.max_vram_gib`` a hard limit for this process: allocations beyond it fail as out of memory."""
    if not cap_gib:
        return
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(1.0, cap_gib * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    log(f"GPU memory capped at {cap_gib:g} GiB of {total / GIB:.0f} GiB (train.max_vram_gib)")
