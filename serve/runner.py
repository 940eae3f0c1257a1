"""A model runner: one llama.cpp model in a process of its own (``python -m serve.runner CONFIG``), serving
the scheduler over its stdin/stdout, one JSON object a line.

Why a process: a model that crashes llama.cpp (a corrupt adapter, a bad file) takes down only its runner;
the scheduler answers the requests on it with an error and starts a fresh one for the next request.

Parallel decoding: the context holds ``parallel`` sequences (``n_seq_max``), each with its own KV cells
(``kv_unified`` off, so a sequence attends over exactly the cells it would have alone). A new request's
prompt is evaluated on its own, then every decode step takes one token from each active sequence in one
``llama_decode`` batch of at most ``MAX_BATCH`` sequences. llama.cpp picks some kernels by batch size and
those round differently (repacked weights at 4+ rows, tiled K-quant products at 8+), so repacking is off and
batches stay under the tiled threshold: each token's arithmetic is the same as when the request runs alone,
and greedy output does not depend on what else runs, or ran before (every prompt is evaluated whole). For
the quantizations that are never repacked (Q4_1, Q5_0/Q5_1 ...) one stream also computes exactly what a
direct llama-cpp-python call computes; for repacked ones (Q4_0, K-quants) the result differs from such a
call in rounding, and speed by about a tenth. Sampling is
llama-cpp-python's chain (penalties, then greedy, or top-k/typical/top-p/min-p/temperature/seeded draw).

Log-probabilities (``"logprobs": k`` on a generate request, k = 0..20 alternatives): the log-softmax of
the logits the token was sampled from, for the chosen token and the k most likely ones, as Ollama returns
them. They cost one pass over the vocabulary per token and only requests that ask pay it. Each entry
travels with the text piece that completes its token's bytes (a character can span tokens), the rest
with the final piece; the tokens of a stop string that cut the answer are dropped with their text.

Protocol (parent -> runner): ``{"op": "generate", "id", "prompt", "opts", "format", "logprobs"}``,
``{"op": "tokenize", "id", "text"}``, ``{"op": "embed", "id", "inputs", "truncate"}``,
``{"op": "cancel", "id"}``, ``{"op": "shutdown"}``.
Runner -> parent: ``{"event": "ready", ...}`` once loaded (or ``{"event": "failed", "message"}``), then per
request ``{"id", "text"[, "logprobs"]}`` pieces and one ``{"id", "done": true, ...stats}``, ``{"id", "tokens": n}``,
``{"id", "embeddings": [...]}`` or ``{"id", "error", "status"}``.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# llama.cpp's tiled K-quant matrix product takes over at 8 rows and rounds differently from the row-by-row
# one: a decode step holds at most this many sequences, so each computes what it would alone.
MAX_BATCH = 7

PROMPT_TOO_LONG = ("the prompt is longer than the context length currently available to the model; shorten the "
                   "prompt, adjust the context length in settings, or use a model with a longer context length")
INPUT_TOO_LONG = "the input length exceeds the context length"


def n_threads() -> int:
    """CPU threads llama.cpp decodes with."""
    return max(1, min(8, os.cpu_count() or 1))


class _Utf8:
    """Bytes of token pieces in, whole UTF-8 characters out (a character can span tokens)."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> str:
        self.buf += data
        for cut in range(len(self.buf), max(-1, len(self.buf) - 4), -1):
            try:
                text = self.buf[:cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
            self.buf = self.buf[cut:]
            return text
        text, self.buf = self.buf.decode("utf-8", "replace"), b""  # not UTF-8 at all: do not hold it forever
        return text


class _StopText:
    """Text out, up to (not including) the first stop string; the tail that may begin a stop string is held
    back until it is decided."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        pending = self.held + text
        hits = [pending.find(s) for s in self.stops if s in pending]
        if hits:
            self.held = ""
            return pending[: min(hits)], True
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(pending)), 0, -1):
                if pending.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        self.held = pending[len(pending) - keep:] if keep else ""
        return pending[: len(pending) - keep], False

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


@dataclass
class _Slot:
    seq: int
    rid: str = ""
    sampler: Any = None
    pos: int = 0
    last: int = -1
    max_tokens: int = 0
    generated: int = 0
    utf8: _Utf8 = field(default_factory=_Utf8)
    stop: _StopText | None = None
    t_start: float = 0.0
    t_prompt: float = 0.0
    prompt_tokens: int = 0
    top_logprobs: int | None = None  # None: no log-probabilities asked for
    unsent: list[list] = field(default_factory=list)  # [entry, bytes of its token not yet sent as text]

    @property
    def busy(self) -> bool:
        return bool(self.rid)


class Runner:
    def __init__(self, config: dict, send) -> None:  # noqa: ANN001
        import llama_cpp
        from llama_cpp import _internals as internals

        self.lc, self.I, self.send = llama_cpp, internals, send
        self.parallel = max(1, int(config.get("parallel", 1)))
        t0 = time.perf_counter()
        mp = llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = int(config.get("n_gpu_layers", 0))
        mp.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP
        # Repacked weights are multiplied by other kernels for 4+ rows than for one, which round
        # differently: a sequence's tokens would then depend on how many others share its decode step.
        mp.use_extra_bufts = False
        self.model = internals.LlamaModel(path_model=config["model_path"], params=mp, verbose=True)
        self.vocab = self.model.vocab
        self.n_ctx_train = int(self.model.n_ctx_train())
        self.n_ctx = max(4, min(int(config.get("num_ctx") or 2048), self.n_ctx_train or 1 << 30))
        self.threads = int(config.get("n_threads") or n_threads())
        self.ctx = self._context(self.n_ctx * self.parallel, self.parallel, embeddings=False)
        self.adapters = []
        for path in config.get("adapters") or []:
            adapter = llama_cpp.llama_adapter_lora_init(self.model.model, str(path).encode("utf-8"))
            if adapter is None:
                raise RuntimeError(f"llama.cpp could not load the adapter {path}")
            self.adapters.append(adapter)
        if self.adapters:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * len(self.adapters))(*self.adapters)
            scales = (llama_cpp.ctypes.c_float * len(self.adapters))(*([1.0] * len(self.adapters)))
            if llama_cpp.llama_set_adapters_lora(self.ctx.ctx, arr, len(self.adapters), scales) != 0:
                raise RuntimeError("llama.cpp could not apply the adapters to the model")
        self.n_batch = 512
        self.batch = internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=self.parallel, verbose=False)
        self.slots = [_Slot(seq=i) for i in range(self.parallel)]
        self.pending: list[dict] = []
        self.embed_ctx = None
        self.max_batch = min(self.parallel, MAX_BATCH)
        self.load_s = time.perf_counter() - t0

    def _context(self, n_ctx: int, n_seq: int, embeddings: bool):  # noqa: ANN202
        cp = self.lc.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = cp.n_ubatch = 512 if not embeddings else max(512, n_ctx)
        cp.n_seq_max = n_seq
        cp.n_threads = cp.n_threads_batch = self.threads
        cp.kv_unified = False
        # as llama-cpp-python's Llama: no flash attention (the same numerics as a direct call)
        cp.flash_attn_type = self.lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.yarn_attn_factor, cp.yarn_beta_fast, cp.yarn_beta_slow = 1.0, 32.0, 1.0
        if embeddings:
            cp.embeddings = True
            if self.model_pooling() is None:
                cp.pooling_type = self.lc.LLAMA_POOLING_TYPE_MEAN
        return self.I.LlamaContext(model=self.model, params=cp, verbose=True)

    def model_pooling(self) -> str | None:
        meta = self.model.metadata()
        arch = meta.get("general.architecture", "")
        return meta.get(f"{arch}.pooling_type")

    def ready(self) -> dict:
        return {"event": "ready", "n_ctx": self.n_ctx, "n_ctx_train": self.n_ctx_train, "parallel": self.parallel,
                "max_batch": self.max_batch, "load_s": round(self.load_s, 3), "pid": os.getpid()}


    # -------------------------------------------------------------------------------------------- tokens
    def tokenize(self, text: str) -> list[int]:
        toks = self.model.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        bos = self.model.token_bos()
        while len(toks) >= 2 and toks[0] == bos and toks[1] == bos:  # never a doubled BOS
            toks = toks[1:]
        return toks

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens as nothing, as llama-cpp-python detokenizes)."""
        size = 64
        buf = (self.lc.ctypes.c_char * size)()
        n = self.lc.llama_token_to_piece(self.vocab, token, buf, size, 0, False)
        if n < 0:
            size = -n
            buf = (self.lc.ctypes.c_char * size)()
            n = self.lc.llama_token_to_piece(self.vocab, token, buf, size, 0, False)
        return bytes(buf[:max(0, n)])

    # ------------------------------------------------------------------------------------------ sampling
    def _sampler(self, opts: dict, fmt: Any):  # noqa: ANN202
        s = self.I.LlamaSampler()
        s.add_penalties(n_vocab=self.model.n_vocab(), penalty_last_n=int(opts.get("repeat_last_n", 64)),
                        penalty_repeat=float(opts.get("repeat_penalty", 1.1)),
                        penalty_freq=float(opts.get("frequency_penalty", 0.0)),
                        penalty_present=float(opts.get("presence_penalty", 0.0)))
        if fmt:
            from llama_cpp.llama_grammar import LlamaGrammar

            schema = json.dumps(fmt) if isinstance(fmt, dict) else '{"type": "object"}'
            s.add_grammar(self.model, LlamaGrammar.from_json_schema(schema, verbose=False))
        temp = float(opts.get("temperature", 0.8))
        seed = int(opts.get("seed", -1))
        seed = seed if seed >= 0 else int.from_bytes(os.urandom(4), "little")
        if temp < 0:
            s.add_dist(seed)
        elif temp == 0:
            s.add_greedy()
        else:
            s.add_top_k(int(opts.get("top_k", 40)))
            s.add_typical(float(opts.get("typical_p", 1.0)), 1)
            s.add_top_p(float(opts.get("top_p", 0.9)), 1)
            s.add_min_p(float(opts.get("min_p", 0.0)), 1)
            s.add_temp(temp)
            s.add_dist(seed)
        return s

    # ---------------------------------------------------------------------------------------- generation
    def start(self, slot: _Slot, req: dict) -> None:
        rid = req["id"]
        opts = req.get("opts") or {}
        t0 = time.perf_counter()
        tokens = self.tokenize(req.get("prompt") or "")
        if len(tokens) >= self.n_ctx:
            self.send({"id": rid, "error": PROMPT_TOO_LONG, "status": 400})
            return
        num_predict = int(opts.get("num_predict", -1))
        room = self.n_ctx - len(tokens)
        max_tokens = room if num_predict < 0 else min(num_predict, room)
        if max_tokens == 0:
            self.send({"id": rid, "done": True, "done_reason": "length", "prompt_eval_count": len(tokens),
                       "prompt_eval_duration": 0, "eval_count": 0, "eval_duration": 0})
            return
        try:
            sampler = self._sampler(opts, req.get("format"))
        except Exception as e:  # noqa: BLE001 - a schema the grammar builder refuses
            self.send({"id": rid, "error": f"invalid format: {e}", "status": 400})
            return
        mem = self.lc.llama_get_memory(self.ctx.ctx)
        self.lc.llama_memory_seq_rm(mem, slot.seq, -1, -1)
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            self.batch.reset()
            b = self.batch.batch
            for i, t in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, start + i, 1, False
                b.seq_id[i][0] = slot.seq
            b.n_tokens = len(chunk)
            b.logits[len(chunk) - 1] = True
            rc = self.lc.llama_decode(self.ctx.ctx, b)
            if rc != 0:
                self.lc.llama_memory_seq_rm(mem, slot.seq, -1, -1)
                self.send({"id": rid, "error": f"llama.cpp could not evaluate the prompt (decode returned {rc})",
                           "status": 500})
                return
        slot.rid, slot.sampler, slot.pos, slot.generated = rid, sampler, len(tokens), 0
        slot.max_tokens, slot.prompt_tokens = max_tokens, len(tokens)
        slot.utf8, slot.stop = _Utf8(), _StopText(list(opts.get("stop") or []))
        slot.t_start, slot.t_prompt = t0, time.perf_counter()
        slot.top_logprobs, slot.unsent = req.get("logprobs"), []
        self._take(slot, sampler.sample(self.ctx, len(chunk) - 1), len(chunk) - 1)

    def _take(self, slot: _Slot, token: int, row: int) -> None:
        """A sampled token (from logits row ``row`` of the last decode): end the request at an end-of-turn
        token, else emit its text and go on."""
        if self.lc.llama_vocab_is_eog(self.vocab, token):
            self.finish(slot, "stop", eog=True)
            return
        slot.generated += 1
        piece = self.piece(token)
        if slot.top_logprobs is not None:
            slot.unsent.append([self.logprob_entry(row, token, piece, slot.top_logprobs), len(piece)])
        text = slot.utf8.feed(piece)
        out, stopped = slot.stop.feed(text) if slot.stop else (text, False)
        if out:
            self.emit(slot, out, cut=stopped)
        if stopped:
            self.finish(slot, "stop", eog=False, cut=True)
            return
        slot.last = token
        if slot.generated >= slot.max_tokens:
            self.finish(slot, "length", eog=False)

    def finish(self, slot: _Slot, reason: str, eog: bool, cut: bool = False) -> None:
        """End the request: what was held back is sent (unless a stop string cut it), then the stats."""
        done: dict[str, Any] = {}
        if not cut:
            tail = (slot.stop.flush() if slot.stop else "") + slot.utf8.buf.decode("utf-8", "replace")
            if tail:
                self.emit(slot, tail, rest=True)
            elif slot.unsent:  # tokens without text of their own (special tokens)
                done["logprobs"] = [entry for entry, _ in slot.unsent]
        now = time.perf_counter()
        self.send({"id": slot.rid, **done, "done": True, "done_reason": reason,
                   "prompt_eval_count": slot.prompt_tokens,
                   "prompt_eval_duration": int((slot.t_prompt - slot.t_start) * 1e9),
                   "eval_count": slot.generated + (1 if eog else 0),  # the end-of-turn token counts, as in Ollama
                   "eval_duration": int((now - slot.t_prompt) * 1e9)})
        self.release(slot)

    # ---------------------------------------------------------------------------------- log-probabilities
    def emit(self, slot: _Slot, text: str, cut: bool = False, rest: bool = False) -> None:
        """Send a text piece with the log-probabilities of the tokens it completes: every token whose last
        byte it carries; with ``cut`` (the piece a stop string ended) also the token it carries only part
        of, the later ones being the stop string's; with ``rest`` (the final flush) every token left."""
        msg: dict[str, Any] = {"id": slot.rid, "text": text}
        if slot.top_logprobs is not None:
            left = len(text.encode("utf-8"))
            entries = []
            while slot.unsent and (rest or slot.unsent[0][1] <= left):
                entry, size = slot.unsent.pop(0)
                left -= size
                entries.append(entry)
            if slot.unsent and left > 0:
                if cut:
                    entries.append(slot.unsent[0][0])
                else:
                    slot.unsent[0][1] -= left  # partly sent: it goes with the piece that completes it
            if cut:
                slot.unsent = []
            if entries:
                msg["logprobs"] = entries
        self.send(msg)

    def logprob_entry(self, row: int, token: int, piece: bytes, top: int) -> dict:
        """Ollama's entry for a sampled token: its log-probability under the raw logits of ``row`` (before
        penalties, grammar or temperature, as llama-cpp-python computes its own) and the ``top`` most likely tokens."""
        import numpy as np

        n_vocab = self.model.n_vocab()
        ptr = self.lc.llama_get_logits_ith(self.ctx.ctx, row)
        logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
        peak = logits.max()
        logprobs = logits - (peak + np.log(np.exp(logits - peak).sum()))
        entry: dict[str, Any] = {"token": piece.decode("utf-8", "replace"), "logprob": float(logprobs[token]),
                                 "bytes": list(piece)}
        if top > 0:
            best = np.argpartition(logprobs, -top)[-top:]
            best = best[np.argsort(-logprobs[best], kind="stable")]
            entry["top_logprobs"] = []
            for t in best:
                alt = self.piece(int(t))
                entry["top_logprobs"].append({"token": alt.decode("utf-8", "replace"),
                                              "logprob": float(logprobs[t]), "bytes": list(alt)})
        return entry

    def release(self, slot: _Slot) -> None:
        mem = self.lc.llama_get_memory(self.ctx.ctx)
        self.lc.llama_memory_seq_rm(mem, slot.seq, -1, -1)
        slot.rid, slot.sampler, slot.last, slot.unsent = "", None, -1, []

    def step(self) -> None:
        """One decode step: the last token of every active sequence, in batches of at most MAX_BATCH, then
        one sample each."""
        active = [s for s in self.slots if s.busy and s.last >= 0]
        if not active:
            return
        n = -(-len(active) // self.max_batch)  # batches of equal size
        size = -(-len(active) // n)
        for i in range(0, len(active), size):
            self._step(active[i:i + size])

    def _step(self, active: list[_Slot]) -> None:
        self.batch.reset()
        b = self.batch.batch
        for i, s in enumerate(active):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = s.last, s.pos, 1, True
            b.seq_id[i][0] = s.seq
            s.pos += 1
        b.n_tokens = len(active)
        rc = self.lc.llama_decode(self.ctx.ctx, b)
        if rc != 0:
            for s in active:
                self.send({"id": s.rid, "error": f"llama.cpp could not decode (returned {rc})", "status": 500})
                self.release(s)
            return
        for i, s in enumerate(active):
            self._take(s, s.sampler.sample(self.ctx, i), i)

    # ---------------------------------------------------------------------------------------- embeddings
    def embed(self, req: dict) -> None:
        import math

        rid = req["id"]
        if self.embed_ctx is None:
            self.embed_ctx = self._context(self.n_ctx, 1, embeddings=True)
        ctx = self.embed_ctx
        mem = self.lc.llama_get_memory(ctx.ctx)
        n_embd = self.lc.llama_model_n_embd(self.model.model)
        out, count = [], 0
        batch = self.I.LlamaBatch(n_tokens=self.n_ctx, embd=0, n_seq_max=1, verbose=False)
        for text in req.get("inputs") or []:
            tokens = self.tokenize(text)
            if len(tokens) > self.n_ctx:
                if not req.get("truncate", True):
                    self.send({"id": rid, "error": INPUT_TOO_LONG, "status": 400})
                    return
                tokens = tokens[: self.n_ctx]
            count += len(tokens)
            self.lc.llama_memory_clear(mem, True)
            batch.reset()
            b = batch.batch
            for i, t in enumerate(tokens):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, i, 1, True
                b.seq_id[i][0] = 0
            b.n_tokens = len(tokens)
            rc = self.lc.llama_decode(ctx.ctx, b) if tokens else 0
            if rc != 0:
                self.send({"id": rid, "error": f"llama.cpp could not embed the input (decode returned {rc})",
                           "status": 500})
                return
            ptr = self.lc.llama_get_embeddings_seq(ctx.ctx, 0) if tokens else None
            vec = [float(ptr[i]) for i in range(n_embd)] if ptr else [0.0] * n_embd
            norm = math.sqrt(sum(x * x for x in vec)) or 1.0
            out.append([x / norm for x in vec])
        self.send({"id": rid, "embeddings": out, "prompt_eval_count": count})

    # -------------------------------------------------------------------------------------------- loop
    def handle(self, msg: dict) -> bool:
        op = msg.get("op")
        if op == "shutdown":
            return False
        if op == "generate":
            self.pending.append(msg)
        elif op == "cancel":
            self.pending = [p for p in self.pending if p["id"] != msg["id"]]
            for s in self.slots:
                if s.rid == msg["id"]:
                    self.release(s)
        elif op == "tokenize":
            self.send({"id": msg["id"], "tokens": len(self.tokenize(msg.get("text") or ""))})
        elif op == "embed":
            self.embed(msg)
        return True

    def run(self, inbox: "queue.Queue[dict | None]") -> None:
        while True:
            idle = not self.pending and not any(s.busy for s in self.slots)
            try:
                msg = inbox.get() if idle else inbox.get_nowait()
            except queue.Empty:
                msg = None
            while msg is not None:
                if not self.handle(msg):
                    return
                try:
                    msg = inbox.get_nowait()
                except queue.Empty:
                    msg = None
            for slot in self.slots:
                if not slot.busy and self.pending:
                    self.start(slot, self.pending.pop(0))
            self.step()


def main(argv: list[str]) -> int:
    # The protocol owns the original stdout; llama.cpp and Python diagnostics go to stderr (the runner log).
    chan = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    lock = threading.Lock()

    def send(obj: dict) -> None:
        line = json.dumps(obj, ensure_ascii=False)
        with lock:
            chan.write(line + "\n")
            chan.flush()

    config = json.loads(argv[1])
    try:
        runner = Runner(config, send)
    except Exception as e:  # noqa: BLE001 - reported to the scheduler, which answers the request
        send({"event": "failed", "message": f"{type(e).__name__}: {e}"})
        return 1
    send(runner.ready())
    inbox: queue.Queue = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            try:
                inbox.put(json.loads(line))
            except ValueError:
                continue
        inbox.put({"op": "shutdown"})  # the scheduler went away

    threading.Thread(target=read, daemon=True).start()
    runner.run(inbox)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
