"""What both backends share: tokenizer preparation, row order, the SFT configuration, metric events,
auto-tune (``finetune.autotune``) on the loaded model, the memory report and saving the adapter."""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Any

from finetune.backends import BackendResult, TrainJob
from finetune.batching import bucketed_order
from finetune.troubleshoot import flat_loss_hint, nan_loss_problem
from workspace.files import atomic_path

GIB = 2**30


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def compute_dtype(job: TrainJob, cuda: bool):  # noqa: ANN201
    """torch dtype of the trained (non-quantized) weights and activations."""
    import torch

    if not cuda:
        return torch.float32
    want = job.recipe.train.quant.compute_dtype
    if want == "fp16":
        return torch.float16
    if want == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def optimizer_name(job: TrainJob, cuda: bool) -> str:
    import importlib.util

    opt = job.recipe.train.optimizer
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if opt == "auto":
        return "adamw_8bit" if cuda and has_bnb else "adamw_torch"
    if opt in ("adamw_8bit", "paged_adamw_8bit") and not (cuda and has_bnb):
        job.events.log(f"train.optimizer={opt} needs bitsandbytes on a CUDA GPU: using adamw_torch", "warning")
        return "adamw_torch"
    return opt


def prepare_tokenizer(tokenizer: Any, job: TrainJob) -> None:
    """Chat template fallback (Korean Alpaca-style prompt + EOS) and a pad token."""
    from finetune.lengths import ensure_chat_template

    if ensure_chat_template(tokenizer):
        # A base model without a chat template is trained with the Korean Alpaca-style prompt; the same
        # template family is what the Modelfile gets (the saved adapter's tokenizer carries it).
        job.events.log("the tokenizer has no chat template: training with the Korean Alpaca-style prompt")

        # That prompt has no end-of-turn token of its own: append EOS to every answer so the model stops.
        def with_eos(rows: list[dict]) -> list[dict]:
            return [{**r, "completion": [{**r["completion"][0],
                                          "content": r["completion"][0]["content"] + tokenizer.eos_token}]}
                    for r in rows]

        job.train_rows = with_eos(job.train_rows)
        job.val_rows = with_eos(job.val_rows)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def token_lengths(tokenizer: Any, job: TrainJob) -> list[int]:
    """Tokens of each training row after the cut at data.max_seq_len. Rows whose prompt alone fills the
    window train nothing and are dropped here (the stage refused the run before when that was every row)."""
    from finetune.lengths import check, measure

    max_len = job.recipe.data.max_seq_len
    report = measure(tokenizer, job.train_rows, max_len)
    check(report)
    if report.dropped:
        job.events.log(f"{report.dropped} training rows dropped: their prompt alone fills data.max_seq_len={max_len}",
                       "warning")
        job.train_rows = [r for r, keep in zip(job.train_rows, report.keep) if keep]
    return [n for n, keep in zip(report.lengths, report.keep) if keep]


def ordered_rows(job: TrainJob, lengths: list[int], micro_batch: int, grad_accum: int,
                 total_steps: int) -> tuple[list[dict], list[int]]:
    """Rows in length-bucketed, shuffled micro-batches (read in that order by a sequential sampler), and the
    non-padding tokens of each optimizer step, for tokens/s without a device sync."""
    per_step = micro_batch * grad_accum
    # Bucketed per optimizer step, not per micro-batch: every split of the same effective batch (auto-tune's
    # candidates) sees the same rows in each step, so the loss sequence does not depend on the split.
    order = bucketed_order(lengths, per_step, job.recipe.train.seed, total_steps * per_step)
    step_tokens = [sum(lengths[i] for i in order[k:k + per_step]) for k in range(0, len(order), per_step)]
    return [job.train_rows[i] for i in order], step_tokens


def gradient_checkpointing(job: TrainJob, backend: str, cuda: bool) -> bool | str:
    gc = job.recipe.train.gradient_checkpointing
    if gc == "off":
        return False
    if gc == "on":
        return True
    if backend == "unsloth":
        return "unsloth"
    return cuda  # recomputation only pays off for GPU memory


def sft_config(job: TrainJob, *, cuda: bool, dtype: Any, micro_batch: int, grad_accum: int, total_steps: int,
               optim: str, hf_checkpointing: bool):  # noqa: ANN201
    import torch
    from trl import SFTConfig

    t, recipe = job.recipe.train, job.recipe
    has_eval = bool(job.val_rows) and t.eval_steps is not None
    extra: dict[str, Any] = {}
    if t.padding_free is not None:
        extra["padding_free"] = t.padding_free
    if t.tensorboard:
        extra["logging_dir"] = str(job.output_dir / "tensorboard")
    return SFTConfig(
        output_dir=str(job.output_dir / "checkpoints"),
        max_steps=total_steps,
        per_device_train_batch_size=micro_batch,
        per_device_eval_batch_size=micro_batch,
        gradient_accumulation_steps=grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=optim,
        logging_steps=t.logging_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps if has_eval else None,
        save_strategy="steps",
        save_steps=t.save_steps or max(total_steps // 2, 1),
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        data_seed=t.seed,
        bf16=cuda and dtype == torch.bfloat16,
        fp16=cuda and dtype == torch.float16,
        gradient_checkpointing=hf_checkpointing,
        use_cpu=not cuda,
        report_to=["tensorboard"] if t.tensorboard else "none",
        max_length=recipe.data.max_seq_len,
        completion_only_loss=True,
        packing=t.packing,
        dataloader_num_workers=0,
        dataset_num_proc=1,
        include_num_input_tokens_seen="no",
        disable_tqdm=True,
        train_sampling_strategy="sequential",
        **extra,
    )


def make_trainer(job: TrainJob, model: Any, tokenizer: Any, *, cuda: bool, dtype: Any, lengths: list[int],
                 micro_batch: int, grad_accum: int, total_steps: int, hf_checkpointing: bool,
                 peft_config: Any = None):  # noqa: ANN201
    """TRL's SFTTrainer (Unsloth's patched one in an Unsloth worker) over the ordered rows, with the event
    callback; returns (trainer, callback)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTTrainer

    rows, step_tokens = ordered_rows(job, lengths, micro_batch, grad_accum, total_steps)
    callback = metric_callback(job, total_steps, step_tokens, cuda)
    config = sft_config(job, cuda=cuda, dtype=dtype, micro_batch=micro_batch, grad_accum=grad_accum,
                        total_steps=total_steps, optim=optimizer_name(job, cuda), hf_checkpointing=hf_checkpointing)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(job.val_rows) if config.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback],
    )
    # The trainer's own printers would write dicts to stdout; progress goes out as events instead.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.ollatune_batch = (micro_batch, grad_accum)
    write_training_examples(job, trainer, rows, tokenizer)
    return trainer, callback


def write_training_examples(job: TrainJob, trainer: Any, rows: list[dict], tokenizer: Any, n: int = 3) -> Path | None:
    """The first ``n`` rows exactly as the trainer will feed them (token ids after the collator, which of them
    carry the loss) beside the rows they came from, to ``<run>/finetune/training_examples.json``: what the
    model learns is checked there, not assumed (the served prompt must be these prompt tokens, one BOS at
    most)."""
    from workspace.files import write_json_atomic

    ds = trainer.train_dataset
    if ds is None or not hasattr(ds, "__len__"):
        return None
    out = []
    for i in range(min(n, len(ds), len(rows))):
        ex = ds[i]
        batch = trainer.data_collator([ex])  # what a step sees: the collator decides which tokens carry loss
        ids = [int(t) for t in batch["input_ids"][0].tolist()]
        mask = [int(lab != -100) for lab in batch["labels"][0].tolist()]
        out.append({"prompt": rows[i].get("prompt"), "completion": rows[i].get("completion"), "input_ids": ids,
                    "completion_mask": mask, "text": tokenizer.decode(ids)})
    bos = tokenizer.bos_token_id
    doubled = sum(1 for ex in out if len(ex["input_ids"]) > 1 and bos is not None
                  and ex["input_ids"][0] == ex["input_ids"][1] == bos)
    if doubled:
        job.events.log(f"{doubled} of the first {len(out)} training rows start with BOS twice", "warning")
    return write_json_atomic(job.output_dir / "training_examples.json", {
        "bos_token": tokenizer.bos_token, "bos_token_id": bos, "eos_token": tokenizer.eos_token,
        "eos_token_id": tokenizer.eos_token_id, "examples": out})


def metric_callback(job: TrainJob, total_steps: int, step_tokens: list[int], cuda: bool):  # noqa: ANN201
    from transformers import TrainerCallback

    events = job.events
    recipe = job.recipe

    class EventCallback(TrainerCallback):
        """Turns the trainer's logs into metric events and its steps into progress events; stops on a NaN
        loss and warns once about a loss that does not move."""

        def __init__(self) -> None:
            self.losses: list[float] = []
            self.t0 = time.monotonic()
            self.first_step = 0
            self.last_step = 0
            self.last_t = self.t0
            self.warned_flat = False
            self.start_reserved = 0

        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN201
            self.t0 = self.last_t = time.monotonic()
            self.first_step = self.last_step = state.global_step
            if cuda:
                import torch

                self.start_reserved = torch.cuda.max_memory_reserved()

        def _eta(self, step: int) -> float | None:
            done = step - self.first_step
            if done <= 0:
                return None
            return round((time.monotonic() - self.t0) / done * (total_steps - step), 1)

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
            events.progress(state.global_step, total_steps, "steps", self._eta(state.global_step))

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001, ANN201
            logs = logs or {}
            step = state.global_step
            epoch = round(float(state.epoch), 3) if state.epoch is not None else None
            if "eval_loss" in logs and "loss" not in logs:
                events.metric(step, total_steps=total_steps, epoch=epoch, eval_loss=round(float(logs["eval_loss"]), 4))
                return
            if "loss" not in logs:
                return
            loss = float(logs["loss"])
            if not math.isfinite(loss):
                raise nan_loss_problem(step, loss, recipe)
            now = time.monotonic()
            tokens = sum(step_tokens[self.last_step:step])
            tps = tokens / (now - self.last_t) if now > self.last_t and tokens else None
            self.last_step, self.last_t = step, now
            self.losses.append(loss)
            fields: dict[str, Any] = {}
            if cuda:
                import torch

                fields["gpu_reserved_gib"] = round(torch.cuda.memory_reserved() / GIB, 2)
                fields["gpu_peak_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
            grad_norm = logs.get("grad_norm")
            events.metric(
                step,
                total_steps=total_steps,
                epoch=epoch,
                loss=round(loss, 4),
                lr=logs.get("learning_rate"),
                grad_norm=round(float(grad_norm), 4) if grad_norm is not None else None,
                tokens=tokens,
                tokens_per_s=round(tps, 1) if tps else None,
                eta_s=self._eta(step),
                **fields,
            )
            self._check_flat(step)

        def _check_flat(self, step: int) -> None:
            if self.warned_flat or len(self.losses) < 8 or step - self.first_step < max(10, total_steps // 4):
                return
            hint = flat_loss_hint(self.losses, recipe)
            if hint:
                self.warned_flat = True
                events.log(hint, "warning")

    return EventCallback()


def checkpointing_mode(job: TrainJob, backend: str, cuda: bool) -> str:
    """The recipe's gradient checkpointing as an auto-tune mode: off, on or unsloth."""
    gc = gradient_checkpointing(job, backend, cuda)
    return "off" if gc is False else ("unsloth" if gc == "unsloth" else "on")


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def probe_length(job: TrainJob, lengths: list[int]) -> int:
    """Tokens a row of the probe has: the longest training row, or the whole window when rows are packed
    (a packed row fills data.max_seq_len)."""
    if job.recipe.train.packing:
        return job.recipe.data.max_seq_len
    return max(lengths)


def tune_batches(job: TrainJob, model: Any, *, vocab: int, max_len: int, backend: str, modes: tuple[str, ...],
                 set_checkpointing: Any, default_mode: str, autocast: Any = None) -> Any:
    """Auto-tune (``finetune.autotune``) on the loaded model, or its cached answer: switches the model to the
    chosen checkpointing mode, logs the table of what was tried, writes ``<run>/finetune/auto_tune.json`` and
    returns the TuneResult."""
    import torch

    from finetune import autotune as at
    from workspace.files import write_json_atomic

    t = job.recipe.train
    effective = t.batch_size * t.grad_accum
    default = at.Candidate(t.batch_size, t.grad_accum, default_mode)
    props = torch.cuda.get_device_properties(0)
    key = at.cache_key(gpu=props.name, gpu_total_bytes=props.total_memory, model=job.model_id or str(job.base_dir),
                       seq_len=max_len, lora=t.lora.model_dump(), quant=t.quant.model_dump(),
                       effective_batch=effective, backend=backend, cap_gib=t.max_vram_gib, modes=modes,
                       versions=package_versions(("torch", "transformers", "peft", "bitsandbytes", "unsloth")),
                       extra={"packing": t.packing, "padding_free": t.padding_free, "budget_s": t.auto_tune_seconds})
    result = at.read_cache(job.autotune_cache, key) if job.autotune_cache else None
    if result is not None:
        job.events.log(f"auto-tune: the answer probed before for this GPU, model, length {max_len}, LoRA shape and "
                       f"quantization (cache {job.autotune_cache}, key {key}; delete the file to probe again)")
    else:
        n = len(at.candidates(effective, modes))
        job.events.log(f"auto-tune: probing up to {n} configurations of {effective} rows a step at {max_len} tokens a "
                       f"row, checkpointing {'/'.join(modes)} (at most {t.auto_tune_seconds:g} s)")
        prober = at.TorchProber(model, vocab, set_checkpointing, t.max_vram_gib, autocast=autocast)
        result = at.tune(prober, effective=effective, modes=modes, seq_len=max_len, default=default,
                         budget_s=t.auto_tune_seconds)
        result.key = key
        # nothing fitting is most likely another process holding the memory now: not worth remembering
        if job.autotune_cache and any(tr.status == "fits" for tr in result.trials):
            problem = at.write_cache(job.autotune_cache, key, result)
            if problem:
                job.events.log(f"auto-tune: the cache was not written ({problem}); the next run probes again",
                               "warning")
    set_checkpointing(result.chosen.checkpointing)
    for line in result.table():
        job.events.log("auto-tune | " + line)
    job.events.log(f"auto-tune chose {result.chosen.label}: {result.reason}")
    write_json_atomic(job.output_dir / "auto_tune.json", result.to_json())
    return result


def forget_tuning(job: TrainJob, tuned: Any) -> None:
    """A tuned configuration that ran out of memory in training is dropped from the cache, so the next run
    probes again instead of repeating it."""
    from finetune.autotune import drop_cache

    if tuned is None or not tuned.key or not job.autotune_cache:
        return

    if drop_cache(job.autotune_cache, tuned.key):
        job.events.log(f"auto-tune's choice {tuned.chosen.label} ran out of memory in training: its cached "
                       "answer is dropped", "warning")


def memory_report(cuda: bool, start_reserved: int) -> dict[str, Any]:
    """Peak reserved memory, its share of the GPU and the share taken by training itself (the model was
    already loaded at ``start_reserved``). On CPU: the peak resident set of the training process."""
    if not cuda:
        return {"device": "cpu", "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    import torch

    props = torch.cuda.get_device_properties(0)
    peak = torch.cuda.max_memory_reserved()
    training = max(0, peak - start_reserved)
    return {
        "device": props.name,
        "gpu_total_gib": round(props.total_memory / GIB, 2),
        "peak_reserved_gib": round(peak / GIB, 2),
        "model_gib": round(start_reserved / GIB, 2),
        "training_gib": round(training / GIB, 2),
        "peak_share_pct": round(100 * peak / props.total_memory, 1),
        "training_share_pct": round(100 * training / props.total_memory, 1),
    }


def memory_line(m: dict[str, Any]) -> str:
    if m.get("device") == "cpu":
        return f"memory: peak resident set {m['peak_rss_gib']} GiB (CPU)"
    line = (f"memory on {m['device']}: peak reserved {m['peak_reserved_gib']} GiB of {m['gpu_total_gib']} GiB "
            f"({m['peak_share_pct']}%); the model took {m['model_gib']} GiB, training {m['training_gib']} GiB "
            f"({m['training_share_pct']}%)")
    if m.get("cap_gib"):
        line += f"; capped at {m['cap_gib']:g} GiB"
    if m.get("auto_tune"):
        line += f"; auto-tuned to {m['batches']}, checkpointing {m['checkpointing']}"
    return line


def last_checkpoint(checkpoints: Path) -> Path | None:
    if not checkpoints.exists():
        return None
    found = [p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def batch_layout(trainer: Any) -> str:
    args = trainer.args
    if getattr(args, "packing", False):
        return "packed sequences (no attention across rows)"
    if getattr(args, "padding_free", False):
        return "padding-free (rows concatenated, no pad tokens)"
    return "padded to the longest row of each micro-batch (rows length-bucketed)"


def train_and_save(trainer: Any, job: TrainJob, callback: Any, cuda: bool, micro_batch: int,
                   grad_accum: int, checkpointing: str = "", tuned: Any = None) -> BackendResult:
    tokenizer = trainer.processing_class
    gc = f", gradient checkpointing {checkpointing}" if checkpointing else ""
    job.events.log(f"batches: {micro_batch} x {grad_accum} (micro-batch x accumulation), {batch_layout(trainer)}{gc}")
    resume = last_checkpoint(job.output_dir / "checkpoints")
    if resume is not None:
        job.events.log(f"resuming from {resume.name}")
    t0 = time.monotonic()
    try:
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except Exception as e:
        from finetune.autotune import is_out_of_memory

        if tuned is not None and is_out_of_memory(e):
            forget_tuning(job, tuned)
        raise
    seconds = time.monotonic() - t0
    memory = memory_report(cuda, callback.start_reserved)
    if tuned is not None:
        memory["batches"] = f"{micro_batch} x {grad_accum}"
        memory["checkpointing"] = checkpointing
        memory["auto_tune"] = tuned.reason
        if job.recipe.train.max_vram_gib:
            memory["cap_gib"] = job.recipe.train.max_vram_gib
    job.events.log(memory_line(memory))
    adapter_dir = job.output_dir / "adapter"
    with atomic_path(adapter_dir) as tmp:
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    final = callback.losses[-1] if callback.losses else float(output.training_loss)
    return BackendResult(
        adapter_dir=adapter_dir,
        steps=int(trainer.state.global_step),
        final_loss=None if math.isnan(final) else final,
        losses=callback.losses,
        chat_template=tokenizer.chat_template,
        eos_token=tokenizer.eos_token,
        train_seconds=round(seconds, 1),
        micro_batch=micro_batch,
        grad_accum=grad_accum,
        memory=memory,
        checkpointing=checkpointing,
        auto_tune=tuned.to_json() if tuned is not None else {},
    )
