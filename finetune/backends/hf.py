"""transformers + PEFT + TRL SFTTrainer: LoRA on CPU (fp32), bf16 LoRA on CUDA.

Loss is on the assistant turn only (TRL's completion-only loss on prompt/completion rows); the model's
own chat template closes the turn with its end-of-turn token, which is the EOS the model learns to emit.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from finetune.backends import BackendResult, TrainJob
from finetune.batching import bucketed_order
from workspace.files import atomic_path
from workspace.quiet import quiet_libraries


def _metric_callback(job: TrainJob, total_steps: int):  # noqa: ANN202
    from transformers import TrainerCallback

    events = job.events

    class EventCallback(TrainerCallback):
        """Turns the trainer's logs into metric events and its steps into progress events."""

        def __init__(self) -> None:
            self.t0 = time.monotonic()
            self.losses: list[float] = []
            self.last_tokens = 0.0
            self.last_t = self.t0

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
            done = state.global_step
            elapsed = time.monotonic() - self.t0
            eta = elapsed / done * (total_steps - done) if done else None
            events.progress(done, total_steps, "steps", round(eta, 1) if eta is not None else None)

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001, ANN201
            logs = logs or {}
            if "loss" not in logs:
                return
            now = time.monotonic()
            tokens = float(state.num_input_tokens_seen or 0)
            tps = (tokens - self.last_tokens) / (now - self.last_t) if now > self.last_t and tokens else None
            self.last_tokens, self.last_t = tokens, now
            loss = float(logs["loss"])
            self.losses.append(loss)
            gpu = None
            import torch

            if torch.cuda.is_available():
                gpu = round(torch.cuda.max_memory_reserved() / 2**30, 2)
            events.metric(
                state.global_step,
                loss=round(loss, 4),
                lr=logs.get("learning_rate"),
                grad_norm=round(float(logs["grad_norm"]), 4) if logs.get("grad_norm") is not None else None,
                eval_loss=logs.get("eval_loss"),
                tokens_per_s=round(tps, 1) if tps else None,
                gpu_mem_gib=gpu,
            )

    return EventCallback()


def last_checkpoint(checkpoints: Path) -> Path | None:
    if not checkpoints.exists():
        return None
    found = [p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def build_trainer(job: TrainJob, total_steps: int | None = None):  # noqa: ANN201
    """The SFTTrainer for a job (tests inspect its dataset and collator without training)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTConfig, SFTTrainer

    quiet_libraries()
    recipe, t = job.recipe, job.recipe.train
    cuda = torch.cuda.is_available()
    torch.manual_seed(t.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(job.base_dir))
    if not tokenizer.chat_template:
        # A base model without a chat template is trained with the Korean Alpaca-style prompt; the same
        # template family is what the Modelfile gets (the saved adapter's tokenizer carries it).
        from serve.chat_templates import template_for_family

        tokenizer.chat_template = template_for_family("alpaca-ko").jinja_template
        job.events.log("the tokenizer has no chat template: training with the Korean Alpaca-style prompt")
        # That prompt has no end-of-turn token of its own: append EOS to every answer so the model stops.
        job.train_rows = [{**r, "completion": [{**r["completion"][0],
                                                "content": r["completion"][0]["content"] + tokenizer.eos_token}]}
                          for r in job.train_rows]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(job.base_dir), dtype=dtype)
    if cuda:
        model = model.to("cuda")

    lora = LoraConfig(
        r=t.lora.r,
        lora_alpha=t.lora.alpha,
        lora_dropout=t.lora.dropout,
        target_modules=t.lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    checkpoints = job.output_dir / "checkpoints"
    config = SFTConfig(
        output_dir=str(checkpoints),
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps or max(t.max_steps // 2, 1),
        save_total_limit=2,
        seed=t.seed,
        data_seed=t.seed,
        bf16=cuda,
        gradient_checkpointing=cuda,  # recomputation only pays off for GPU memory
        use_cpu=not cuda,
        report_to="none",
        max_length=recipe.data.max_seq_len,
        completion_only_loss=True,
        packing=False,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="all",
        disable_tqdm=True,
        train_sampling_strategy="sequential",
    )
    # Rows in length-bucketed, shuffled batches, read in that order (the sampler stays sequential).
    lengths = [len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=False))
               for r in job.train_rows]
    order = bucketed_order(lengths, t.batch_size, t.seed, t.max_steps * t.batch_size * t.grad_accum)
    dataset = Dataset.from_list([job.train_rows[i] for i in order])
    callback = _metric_callback(job, t.max_steps)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[callback],
    )
    # The trainer's own printers would write dicts to stdout; progress goes out as events instead.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer, callback


def run(job: TrainJob) -> BackendResult:
    trainer, callback = build_trainer(job)
    tokenizer = trainer.processing_class
    checkpoints = job.output_dir / "checkpoints"
    resume = last_checkpoint(checkpoints)
    if resume is not None:
        job.events.log(f"resuming from {resume.name}")
    t0 = time.monotonic()
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.monotonic() - t0
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
    )
