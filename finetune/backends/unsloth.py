"""Unsloth QLoRA on a CUDA GPU: ``FastLanguageModel`` with 4-bit base weights, ``get_peft_model`` with
Unsloth's offloaded gradient checkpointing (auto-tune may switch it off or to torch's), then TRL's
SFTTrainer (which Unsloth patches) with the same prompt/completion rows, completion-only loss, row order
and events as the hf backend.

Unsloth patches transformers, PEFT and TRL when it is imported, so it must be imported before them: the
training worker (``finetune.worker``) imports it first thing; nothing else in the project imports it.
"""

from __future__ import annotations

from typing import Any

from finetune.backends import BackendResult, TrainJob
from finetune.backends.common import (
    checkpointing_mode, compute_dtype, gradient_checkpointing, make_trainer, prepare_tokenizer, probe_length,
    token_lengths, train_and_save, tune_batches,
)


def load_model(job: TrainJob, dtype: Any) -> tuple[Any, Any]:
    from unsloth import FastLanguageModel

    t = job.recipe.train
    q, lo = t.quant, t.lora
    kwargs: dict[str, Any] = {}
    if q.load_in_4bit and (q.quant_type != "nf4" or not q.double_quant):
        # Unsloth's own 4-bit setting is nf4 + double quantization; anything else goes in explicitly.
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=dtype)
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(job.base_dir),
        max_seq_length=job.recipe.data.max_seq_len,
        dtype=dtype,
        load_in_4bit=q.load_in_4bit,
        **kwargs,
    )
    peft_kwargs: dict[str, Any] = {}
    if lo.loftq:
        peft_kwargs = {"init_lora_weights": "loftq", "loftq_config": {"loftq_bits": 4, "loftq_iter": 1}}
    model = FastLanguageModel.get_peft_model(
        model,
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=lo.target_modules,
        bias="none",
        # With auto-tune the model is always made with Unsloth's checkpointing (the switch below then turns it
        # off or to torch's): the mode the switch was measured from.
        use_gradient_checkpointing="unsloth" if t.auto_tune else gradient_checkpointing(job, "unsloth", True),
        random_state=t.seed,
        use_rslora=lo.use_rslora,
        **peft_kwargs,
    )
    return model, tokenizer


def checkpointing_switch(model: Any, seq_len: int, dtype: Any):  # noqa: ANN201
    """A function that switches the loaded PEFT model between no checkpointing, torch's and Unsloth's
    offloaded one, the way ``get_peft_model`` and ``for_training`` set it (below 512 tokens Unsloth itself
    uses torch's checkpointing for "unsloth")."""
    from unsloth import FastLanguageModel
    from unsloth.models._utils import apply_unsloth_gradient_checkpointing

    def switch(mode: str) -> None:
        value = apply_unsloth_gradient_checkpointing({"off": False, "on": True, "unsloth": "unsloth"}[mode],
                                                     seq_len, dtype)
        FastLanguageModel.for_training(model, use_gradient_checkpointing=value)
        model._unsloth_gradient_checkpointing = value  # what Unsloth's trainer keeps at train()

    return switch


def build_trainer(job: TrainJob):  # noqa: ANN201
    import torch

    from finetune.autotune import apply_cap

    t = job.recipe.train
    apply_cap(t.max_vram_gib, job.events.log)
    torch.manual_seed(t.seed)
    dtype = compute_dtype(job, True)
    model, tokenizer = load_model(job, dtype)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps the text tokenizer
    prepare_tokenizer(tokenizer, job)
    lengths = token_lengths(tokenizer, job)
    total = t.total_steps(len(job.train_rows))
    micro, accum = t.batch_size, t.grad_accum
    mode = checkpointing_mode(job, "unsloth", True)
    tuned = None
    if t.auto_tune:
        longest = probe_length(job, lengths)
        # Unsloth's offloaded checkpointing is torch's below 512 tokens: no need to probe both there.
        modes = ("off", "on", "unsloth") if job.recipe.data.max_seq_len >= 512 else ("off", "on")
        tuned = tune_batches(job, model, vocab=len(tokenizer), max_len=longest, backend="unsloth", modes=modes,
                             set_checkpointing=checkpointing_switch(model, job.recipe.data.max_seq_len, dtype),
                             default_mode=mode if mode in modes else "on")
        micro, accum, mode = tuned.chosen.micro, tuned.chosen.accum, tuned.chosen.checkpointing
        torch.manual_seed(t.seed)  # the probe drew random rows: training starts from the same state as without it
    trainer, callback = make_trainer(job, model, tokenizer, cuda=True, dtype=dtype, lengths=lengths,
                                     micro_batch=micro, grad_accum=accum, total_steps=total, hf_checkpointing=False)
    trainer.ollatune_tuned = tuned
    trainer.ollatune_checkpointing = mode
    return trainer, callback


def run(job: TrainJob) -> BackendResult:
    trainer, callback = build_trainer(job)
    micro, accum = trainer.ollatune_batch
    return train_and_save(trainer, job, callback, True, micro, accum, trainer.ollatune_checkpointing,
                          trainer.ollatune_tuned)
