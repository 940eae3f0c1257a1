"""transformers + PEFT + TRL SFTTrainer: plain LoRA on CPU (fp32); on CUDA QLoRA with bitsandbytes 4-bit
base weights (nf4/fp4, double quantization, bf16/fp16 compute) or bf16 LoRA.

Loss is on the assistant turn only (TRL's completion-only loss on prompt/completion rows); the model's
own chat template closes the turn with its end-of-turn token, which is the EOS the model learns to emit.
"""

from __future__ import annotations

from typing import Any

from finetune.backends import BackendResult, TrainJob
from finetune.backends.common import (
    checkpointing_mode, compute_dtype, cuda_available, gradient_checkpointing, make_trainer, prepare_tokenizer,
    probe_length, token_lengths, train_and_save, tune_batches,
)
from workspace.quiet import quiet_libraries


def lora_config(job: TrainJob) -> Any:
    from peft import LoftQConfig, LoraConfig

    lo = job.recipe.train.lora
    extra: dict[str, Any] = {}
    if lo.loftq:
        extra = {"init_lora_weights": "loftq", "loftq_config": LoftQConfig(loftq_bits=4)}
    return LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=lo.target_modules,
                      use_rslora=lo.use_rslora, bias="none", task_type="CAUSAL_LM", **extra)


def load_model(job: TrainJob, cuda: bool, dtype: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    q = job.recipe.train.quant
    if not cuda:
        if q.load_in_4bit:
            job.events.log("no CUDA GPU: plain LoRA on fp32 weights (4-bit quantization needs CUDA)")
        return AutoModelForCausalLM.from_pretrained(str(job.base_dir), dtype=torch.float32)
    if q.load_in_4bit:
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type,
                                 bnb_4bit_use_double_quant=q.double_quant, bnb_4bit_compute_dtype=dtype)
        return AutoModelForCausalLM.from_pretrained(str(job.base_dir), quantization_config=bnb,
                                                    device_map={"": 0}, dtype=dtype)
    return AutoModelForCausalLM.from_pretrained(str(job.base_dir), dtype=dtype).to("cuda")


def build_trainer(job: TrainJob, total_steps: int | None = None):  # noqa: ANN201
    """The SFTTrainer for a job (tests inspect its dataset and collator without training)."""
    import torch
    from transformers import AutoTokenizer

    quiet_libraries()
    t = job.recipe.train
    cuda = cuda_available()
    torch.manual_seed(t.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(job.base_dir))
    prepare_tokenizer(tokenizer, job)
    lengths = token_lengths(tokenizer, job)  # before the model loads: a run that trains nothing stops here
    total = total_steps or t.total_steps(len(job.train_rows))
    if cuda:
        from finetune.autotune import apply_cap

        apply_cap(t.max_vram_gib, job.events.log)
    dtype = compute_dtype(job, cuda)
    model = load_model(job, cuda, dtype)
    checkpointing = bool(gradient_checkpointing(job, "hf", cuda))
    micro, accum = t.batch_size, t.grad_accum
    tuned = None
    if t.auto_tune and cuda:
        # Auto-tune probes the PEFT model itself, so it is made here rather than by the trainer, and made as
        # TRL makes it from a peft_config: no prepare_model_for_kbit_training (it would upcast the embeddings
        # and norms to fp32), input gradients only under checkpointing, and on a 4-bit base the trained LoRA
        # weights in bf16 (what SFTTrainer does to a quantized model's adapter; done here so the probe
        # measures them as they train).
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(job))
        if t.quant.load_in_4bit:
            for _name, param in model.named_parameters():
                if param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)

        def switch(mode: str) -> None:
            if mode == "off":
                model.gradient_checkpointing_disable()
                try:
                    model.disable_input_require_grads()
                except AttributeError:  # never enabled (older transformers keep one hook attribute)
                    pass
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                model.enable_input_require_grads()

        tuned = tune_batches(job, model, vocab=len(tokenizer), max_len=probe_length(job, lengths), backend="hf",
                             modes=("off", "on"), set_checkpointing=switch,
                             default_mode=checkpointing_mode(job, "hf", cuda), autocast=dtype)
        micro, accum = tuned.chosen.micro, tuned.chosen.accum
        checkpointing = tuned.chosen.checkpointing != "off"
        torch.manual_seed(t.seed)
        peft_config = None
    else:
        peft_config = lora_config(job)
    trainer, callback = make_trainer(job, model, tokenizer, cuda=cuda, dtype=dtype, lengths=lengths,
                                     micro_batch=micro, grad_accum=accum, total_steps=total,
                                     hf_checkpointing=checkpointing, peft_config=peft_config)
    trainer.ollatune_tuned = tuned
    trainer.ollatune_checkpointing = "on" if checkpointing else "off"
    return trainer, callback


def run(job: TrainJob) -> BackendResult:
    trainer, callback = build_trainer(job)
    micro, accum = trainer.ollatune_batch
    return train_and_save(trainer, job, callback, cuda_available(), micro, accum, trainer.ollatune_checkpointing,
                          trainer.ollatune_tuned)
