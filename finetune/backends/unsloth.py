"""Unsloth QLoRA on a CUDA GPU: ``FastLanguageModel`` with 4-bit base weights, ``get_peft_model`` with
Unsloth's offloaded gradient checkpointing, then TRL's SFTTrainer (which Unsloth patches) with the same
prompt/completion rows, completion-only loss, row order and events as the hf backend.

Unsloth patches transformers, PEFT and TRL when it is imported, so it must be imported before them: the
training worker (``finetune.worker``) imports it first thing; nothing else in the project imports it.
"""

from __future__ import annotations

from typing import Any

from finetune.backends import BackendResult, TrainJob
from finetune.backends.common import (
    choose_micro_batch, compute_dtype, gradient_checkpointing, make_trainer, prepare_tokenizer, token_lengths,
    train_and_save,
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
        use_gradient_checkpointing=gradient_checkpointing(job, "unsloth", True),
        random_state=t.seed,
        use_rslora=lo.use_rslora,
        **peft_kwargs,
    )
    return model, tokenizer


def build_trainer(job: TrainJob):  # noqa: ANN201
    import torch

    t = job.recipe.train
    torch.manual_seed(t.seed)
    dtype = compute_dtype(job, True)
    model, tokenizer = load_model(job, dtype)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps the text tokenizer
    prepare_tokenizer(tokenizer, job)
    lengths = token_lengths(tokenizer, job)
    total = t.total_steps(len(job.train_rows))
    micro, accum = t.batch_size, t.grad_accum
    if t.auto_micro_batch:
        micro, accum = choose_micro_batch(model, job, max(lengths), len(tokenizer))
    return make_trainer(job, model, tokenizer, cuda=True, dtype=dtype, lengths=lengths, micro_batch=micro,
                        grad_accum=accum, total_steps=total, hf_checkpointing=False)


def run(job: TrainJob) -> BackendResult:
    trainer, callback = build_trainer(job)
    micro, accum = trainer.ollatune_batch
    return train_and_save(trainer, job, callback, True, micro, accum)
