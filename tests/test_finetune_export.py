"""The finetune and export stage functions on the real SmolLM2-135M, with a tiny step budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export import ExportSource, to_gguf
from export.errors import ExportError
from finetune.backends import TrainJob
from finetune.prepare import prepare_data
from finetune.recipe import load_recipe
from finetune.training import train
from workspace.context import RunContext
from workspace.events import null_events, read_events
from workspace.settings import Settings

pytestmark = pytest.mark.slow

TINY = ["train.max_steps=2", "train.batch_size=2", "data.eval_rows=4", "data.max_seq_len=448",
        "train.lora.r=4", "train.lr=0.01", "export.verify_tokens=4"]


@pytest.fixture(scope="module")
def trained(session_home, smollm2_base):
    settings = Settings(home=session_home).ensure()
    recipe = load_recipe("demo-ko", TINY + ["name=stage-test"])
    ctx = RunContext.create("stage-test", settings)
    data = prepare_data(recipe, ctx)
    result = train(recipe, data, ctx, base=smollm2_base)
    return settings, recipe, ctx, data, result


def test_data_stage_writes_split_and_records_dataset(trained):
    from finetune.prepare import PreparedData
    from workspace.heldout import read_eval_examples

    _settings, recipe, ctx, data, _ = trained
    assert isinstance(data, PreparedData) and data.task == "alpaca" and data.dataset_id > 0
    held = read_eval_examples(data.heldout_path)
    train_rows = [json.loads(x) for x in data.train_path.read_text(encoding="utf-8").splitlines()]
    assert len(held) == data.heldout_rows == 4 and len(train_rows) == data.train_rows
    assert train_rows[0]["completion"][0]["role"] == "assistant"
    # each held-out example is asked exactly as the training rows are: the same message layout
    assert all(ex.task == "alpaca" and ex.messages[-1].role == "user" and ex.reference for ex in held)
    assert [m["role"] for m in train_rows[0]["prompt"]] == [m.role for m in held[0].messages]
    # never trained on
    train_prompts = {r["prompt"][-1]["content"] for r in train_rows}
    assert not {ex.question() for ex in held} & train_prompts


def test_train_emits_metric_per_step_and_writes_adapter(trained):
    from finetune.training import TrainResult

    _settings, recipe, ctx, _data, result = trained
    assert isinstance(result, TrainResult) and result.steps == 2 and result.backend == "hf"
    assert result.training_run_id > 0 and len(result.adapter_sha256) == 64 and result.final_loss > 0
    assert (result.adapter_dir / "adapter_config.json").exists()
    assert (result.adapter_dir / "adapter_model.safetensors").exists()
    events = list(read_events(ctx.run_dir / "events.jsonl"))
    metrics = [e for e in events if e["stage"] == "finetune" and e["type"] == "metric"]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["loss"] > 0 for m in metrics)
    assert any(e["type"] == "artifact" and e["kind"] == "adapter" for e in events)
    ckpts = list((ctx.run_dir / "finetune" / "checkpoints").glob("checkpoint-*"))
    assert ckpts and all((c / "optimizer.pt").exists() and (c / "scheduler.pt").exists() for c in ckpts)
    assert any(list(c.glob("rng_state*.pth")) for c in ckpts)


def test_loss_is_on_the_answer_only_and_ends_with_eos(trained, smollm2_base):
    from finetune.backends.hf import build_trainer

    _settings, recipe, ctx, data, _ = trained
    rows = [json.loads(x) for x in data.train_path.read_text(encoding="utf-8").splitlines()][:2]
    trainer, _cb = build_trainer(TrainJob(recipe, smollm2_base.hf_dir, rows, ctx.run_dir / "probe", null_events("finetune")))
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    supervised = [i for i, lab in zip(ids, labels) if lab != -100]
    answer = rows[0]["completion"][0]["content"]
    text = tok.decode(supervised)
    assert answer in text
    assert rows[0]["prompt"][-1]["content"] not in text  # the question is not trained on
    assert tok.eos_token_id in supervised  # the end-of-turn token is learned, so generation stops
    first_supervised = labels.index(next(lab for lab in labels if lab != -100))
    assert tok.decode(ids[:first_supervised]).rstrip().endswith("assistant")


def test_export_merges_converts_quantizes_and_verifies(trained, smollm2_base, capfd):
    _settings, recipe, ctx, data, result = trained
    from export import ExportResult
    from workspace.heldout import read_eval_examples

    probes = [(ex.chat(), ex.reference) for ex in read_eval_examples(data.heldout_path)[:3]]
    out = to_gguf(ExportSource(base_dir=smollm2_base.hf_dir, adapter_dir=result.adapter_dir,
                               training_run_id=result.training_run_id, label="tuned"), ctx,
                  quant="q4_k_m,q8_0", verify_tokens=4, probes=probes)
    assert isinstance(out, ExportResult) and out.quant == "q4_k_m" and out.artifact_id > 0
    assert out.gguf.exists() and out.f16_gguf.exists() and out.bytes == out.gguf.stat().st_size
    assert out.gguf.stat().st_size < out.f16_gguf.stat().st_size / 2
    assert out.verify["f16"]["chat_template_matches"] and out.verify["f16"]["tokenization_matches"]
    assert out.verify["f16"]["reference"] == "cpu-float32" and out.verify["f16"]["tokens"] == 4
    assert out.verify["f16"]["agreement"] >= 0.9 and len(out.verify["f16"]["greedy_agreement"]) == 3
    plan = out.verify["plan"]
    assert plan["architecture"] == "LlamaForCausalLM" and 100e6 < plan["params"] < 200e6
    assert plan["disk_needed"] > out.f16_gguf.stat().st_size and set(plan["phases"]) >= {"merge", "convert"}
    from sqlalchemy import select

    from workspace.store import Artifact, session_scope

    with session_scope(ctx.store) as s:
        stored = {a.quant: a for a in s.scalars(select(Artifact).where(Artifact.kind == "gguf"))}
        for q in ("q4_k_m", "q8_0"):
            assert stored[q].bits_per_weight == pytest.approx(out.quants[q]["bits_per_weight"], abs=1e-3)
            assert stored[q].sha256 == out.quants[q]["sha256"] and stored[q].bytes == out.quants[q]["bytes"]
    assert not list(out.gguf.parent.glob(".*.partial"))
    import llama_cpp

    for q, ftype in (("q4_k_m", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M), ("q8_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0)):
        row = out.quants[q]
        llm = llama_cpp.Llama(model_path=row["path"], n_ctx=256, verbose=False, vocab_only=True)
        assert llm.metadata["general.file_type"] == str(ftype)
        assert row["bytes"] == Path(row["path"]).stat().st_size and len(row["sha256"]) == 64
        assert row["eot"].endswith("/3") and row["status"] in ("ok", "warning")
        assert row["ppl"] > 1 and row["ppl_delta"] is not None
    # more bits per weight for q8_0 (on 3 short conversations either file may land nearer f16's perplexity)
    assert out.quants["q8_0"]["bits_per_weight"] > out.quants["q4_k_m"]["bits_per_weight"] > 4
    # the quantizer's per-tensor lines went to the run's log, not to the terminal
    assert "falling back" not in capfd.readouterr().err
    assert (ctx.run_dir / "export" / "llama.cpp.log").exists()


def test_a_straying_quantization_is_a_warning_not_verified(tmp_path, monkeypatch):
    import export.verify as v

    ref = v.Reference(continuations=[[1, 2, 3], [4, 5, 6]], eot=[True, True], ppl=10.0)

    def fake_measure(path, probes, texts, budget, log=None):  # noqa: ANN001, ANN202
        return v.Reference(continuations=[[1, 2, 3], [9, 9, 9]], eot=[True, False], ppl=12.5)

    f = tmp_path / "x.gguf"
    f.write_bytes(b"0" * 1000)
    monkeypatch.setattr(v, "_measure", fake_measure)
    row = v.quant_row("q2_k", f, ref, [[0], [0]], [[0, 1]], n_params=4000, agree_tokens=3, min_agreement=0.9)
    assert row.agreement == 0.5 and row.ppl_delta == pytest.approx(2.5) and row.bits_per_weight == 2.0
    assert row.summary()["status"] == "warning" and len(row.warnings) == 2
    assert "end-of-turn" in row.warnings[1] and row.summary()["eot"] == "1/2"


def test_an_interrupted_export_leaves_no_final_file_and_a_rerun_completes(trained, smollm2_base, monkeypatch):
    """Ctrl-C while the quantizer writes: no file under the final name, no temporary left; a file left by a
    killed process (a stale temporary) is replaced by the rerun, which completes."""
    import llama_cpp

    _settings, _recipe, ctx, _data, result = trained
    real = llama_cpp.llama_model_quantize

    def interrupted(src, dst, params):  # noqa: ANN001, ANN202
        Path(dst.decode()).write_bytes(b"GGUF half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", interrupted)
    source = ExportSource(base_dir=smollm2_base.hf_dir, adapter_dir=result.adapter_dir, label="interrupted")
    with pytest.raises(KeyboardInterrupt):
        to_gguf(source, ctx, quant="q8_0", verify_tokens=0)
    folder = ctx.run_dir / "export" / "interrupted"
    assert not (folder / "interrupted-q8_0.gguf").exists()
    assert [p.name for p in folder.iterdir() if "partial" in p.name] == []
    from workspace.files import partial_name

    stale = partial_name(folder / "interrupted-q8_0.gguf")
    stale.write_bytes(b"left by a killed process")
    monkeypatch.setattr(llama_cpp, "llama_model_quantize", real)
    out = to_gguf(source, ctx, quant="q8_0", verify_tokens=0)
    assert out.gguf == folder / "interrupted-q8_0.gguf" and out.gguf.read_bytes()[:4] == b"GGUF"
    assert not stale.exists() and out.verify["f16"]["reference"] == ""
    assert "verify_tokens is 0" in out.verify["f16"]["reference_note"]


def test_each_listed_quant_type_is_made_and_loads(smollm2_base, tmp_path):
    """Every file type the export offers by name comes out of llama.cpp's quantizer as that type, and
    llama.cpp loads it and computes a token."""
    import llama_cpp

    from export.gguf_convert import QUANT_TYPES, bits_per_weight, convert_to_gguf, gguf_params, quantize

    f16 = convert_to_gguf(smollm2_base.hf_dir, tmp_path / "source-f16.gguf", "f16")
    n = gguf_params(f16)
    sizes = {}
    for q in ("q4_0", "q4_k_s", "q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16", "bf16"):
        out = quantize(f16, tmp_path / f"base-{q}.gguf", q, log=tmp_path / "quant.log")
        llm = llama_cpp.Llama(model_path=str(out), n_ctx=64, verbose=False, logits_all=True)
        assert llm.metadata["general.file_type"] == str(getattr(llama_cpp, QUANT_TYPES[q]))
        llm.eval(llm.tokenize("안녕하세요".encode()))
        assert llm.scores[llm.n_tokens - 1].max() > llm.scores[llm.n_tokens - 1].min()
        llm.close()
        sizes[q] = bits_per_weight(out, n)
        out.unlink()
    assert sizes["q4_0"] < sizes["q5_k_m"] < sizes["q6_k"] < sizes["q8_0"] < sizes["f16"] == sizes["bf16"]


def test_an_i_quant_is_made_with_an_importance_matrix_over_the_training_text(trained, smollm2_base):
    """iq4_xs: llama.cpp's imatrix and quantize programs (built once from the installed llama-cpp-python's
    source) compute the matrix over the training rows and quantize with it; the file loads, is an IQ4_XS
    file and is measured like every other quantization."""
    import llama_cpp

    _settings, _recipe, ctx, data, result = trained
    rows = [json.loads(x) for x in data.train_path.read_text(encoding="utf-8").splitlines() if x.strip()]
    calibration = ["\n".join(m["content"] for m in [*r["prompt"], *r["completion"]]) for r in rows]
    source = ExportSource(base_dir=smollm2_base.hf_dir, adapter_dir=result.adapter_dir, label="iquant")
    out = to_gguf(source, ctx, quant="iq4_xs", verify_tokens=0, calibration=calibration)
    row = out.quants["iq4_xs"]
    llm = llama_cpp.Llama(model_path=row["path"], n_ctx=64, verbose=False, vocab_only=True)
    assert llm.metadata["general.file_type"] == str(llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_XS)
    assert (ctx.run_dir / "export" / "iquant" / "iquant-imatrix.gguf").stat().st_size > 0
    assert 4 < row["bits_per_weight"] < 8 and row["status"] in ("ok", "warning")
    assert out.gguf.stat().st_size < out.f16_gguf.stat().st_size / 2


def test_a_failing_f16_check_is_reported_as_failing(tmp_path):
    """Fewer than 90% of the probes equal to the HF model: an error that says so; a parting at a near-tie
    (the HF model's two best tokens within rounding of each other) counts as agreeing and is named."""
    from export.verify import HFContinuation, VerifyReport, compare_greedy

    def report():  # noqa: ANN202
        return VerifyReport(tmp_path / "m-f16.gguf", "llama", True, 1, 2, True)

    same = HFContinuation([5, 6, 7], [(5, 9, 3.0), (6, 9, 3.0), (7, 9, 3.0)])
    tie = HFContinuation([5, 6, 7], [(5, 9, 3.0), (6, 8, 0.001), (7, 9, 3.0)])
    wrong = HFContinuation([5, 6, 7], [(5, 9, 3.0), (6, 8, 2.5), (7, 9, 3.0)])
    ok = compare_greedy(report(), [same, tie], [[5, 6, 7], [5, 8, 1]], tokens=3)
    assert ok.agreement == 1.0 and ok.near_ties == 1 and ok.greedy_agreement == [1.0, 1 / 3]
    with pytest.raises(ExportError, match="agree with the HF model on 50% of 2 probes") as e:
        compare_greedy(report(), [same, wrong], [[5, 6, 7], [5, 8, 1]], tokens=3)
    assert "probe 2 parts after 1 tokens" in e.value.message
    quiet = compare_greedy(report(), [same, wrong], [[5, 6, 7], [5, 8, 1]], tokens=3, strict=False)
    assert quiet.agreement == 0.5


def test_quant_types_are_checked_by_name():
    from export.gguf_convert import parse_quants

    assert parse_quants("q4_k_m, Q8_0,q4_k_m") == ["q4_k_m", "q8_0"]
    assert parse_quants("IQ4_XS,q4_k_m") == ["iq4_xs", "q4_k_m"]  # i-quants: made with an importance matrix
    with pytest.raises(ExportError, match="unknown quantization 'q9'"):
        parse_quants("q4_k_m,q9")


def test_merge_that_changes_nothing_is_refused(trained, smollm2_base, tmp_path):
    """A fresh LoRA adapter has zero B matrices: merging it is a no-op and must not pass silently."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from export.merge import merge_adapter

    model = AutoModelForCausalLM.from_pretrained(str(smollm2_base.hf_dir))
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(str(tmp_path / "empty-adapter"))
    with pytest.raises(ExportError, match="changed no weight"):
        merge_adapter(smollm2_base.hf_dir, tmp_path / "empty-adapter", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("task,row", [
    ("text2sql", {"question": "가장 비싼 상품은?", "context": "CREATE TABLE products (name TEXT, price INT)",
                  "sql": "SELECT name FROM products ORDER BY price DESC LIMIT 1"}),
    ("qa", {"context": "솔마루 마을은 1832년에 세워졌다.", "question": "언제 세워졌나?",
            "answers": [{"text": "1832년", "answer_start": 7}]}),
])
def test_every_format_trains_on_the_answer_plus_eos_only(trained, smollm2_base, task, row):
    from finetune.backends.hf import build_trainer
    from workspace.examples import adapt

    _settings, recipe, ctx, _data, _ = trained
    ex = adapt(row, task)
    trainer, _cb = build_trainer(TrainJob(recipe, smollm2_base.hf_dir, [ex.prompt_completion()] * 2,
                                          ctx.run_dir / f"probe-{task}", null_events("finetune")))
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    supervised = [i for i, lab in zip(ids, labels) if lab != -100]
    assert tok.decode(supervised).strip() == ex.response + tok.eos_token


def test_model_without_chat_template_gets_the_korean_alpaca_prompt_and_eos(trained, smollm2_base, tmp_path):
    """A base model with no chat template: the Alpaca-style Korean prompt, EOS appended to the answer."""
    import shutil

    from finetune.backends.hf import build_trainer

    base = tmp_path / "base-no-template"
    shutil.copytree(smollm2_base.hf_dir, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    _settings, recipe, ctx, data, _ = trained
    rows = [json.loads(x) for x in data.train_path.read_text(encoding="utf-8").splitlines()][:2]
    trainer, _cb = build_trainer(TrainJob(recipe, base, rows, ctx.run_dir / "probe-alpaca", null_events("finetune")))
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    first = labels.index(next(lab for lab in labels if lab != -100))
    assert tok.decode(ids[:first]).rstrip().endswith("### 답변:")
    supervised = tok.decode([i for i, lab in zip(ids, labels) if lab != -100])
    assert supervised.strip().endswith(tok.eos_token)


def _served_prompt(tokenizer_dir: Path, prompt: list[dict], system: str | None) -> str:
    """The prompt the registered model gets for these messages: the Modelfile TEMPLATE the serve stage
    derives, executed as Ollama executes it."""
    from serve.gotemplate import render_ollama
    from serve.parity import ollama_chat_messages
    from serve.publishing import tokenizer_spec

    spec, _report = tokenizer_spec(tokenizer_dir, system)
    return render_ollama(spec.go_template, ollama_chat_messages(prompt, spec.system))


def _prompt_part(example: dict) -> list[int]:
    first = example["completion_mask"].index(1)
    return example["input_ids"][:first]


def test_the_trained_prompt_tokens_are_the_served_prompt_tokens(trained, smollm2_base):
    """The hf backend's exact input ids (as the trainer feeds them) against what Ollama's runtime would
    tokenize for the same messages through the Modelfile TEMPLATE: equal, BOS included (SmolLM2's GGUF adds
    none; its BOS text <|im_start|> is the turn opener, which is why a "double BOS" check misfires on it)."""
    import llama_cpp
    from transformers import AutoTokenizer

    from finetune.base_model import smollm2_gguf

    _settings, recipe, ctx, _data, result = trained
    record = json.loads((ctx.run_dir / "finetune" / "training_examples.json").read_text(encoding="utf-8"))
    assert record["eos_token"] == "<|im_end|>" and len(record["examples"]) == 3
    vocab = llama_cpp.Llama(model_path=str(smollm2_gguf()), vocab_only=True, verbose=False)
    tok = AutoTokenizer.from_pretrained(str(result.adapter_dir))
    for ex in record["examples"]:
        served = _served_prompt(result.adapter_dir, ex["prompt"], recipe.model.system)
        runtime_ids = vocab.tokenize(served.encode("utf-8"), add_bos=True, special=True)
        assert _prompt_part(ex) == list(runtime_ids)
        assert tok.decode(_prompt_part(ex)) == served
        answer = [t for t, m in zip(ex["input_ids"], ex["completion_mask"]) if m]
        assert tok.decode(answer).startswith(ex["completion"][0]["content"] + "<|im_end|>")
        assert ex["input_ids"].count(record["eos_token_id"]) >= 1


def test_a_bos_prefixed_template_trains_with_one_bos_and_serves_the_same_prompt(tmp_path):
    """A Llama-3-style tokenizer whose post-processor adds BOS (as the published one does) and whose chat
    template writes BOS too: the training ids start with exactly one BOS, and the rest is the served prompt
    (the runtime adds BOS itself for such a GGUF)."""
    import torch
    from tokenizers import processors
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from finetune.base_model import ResolvedBase
    from tests.tokenizer_dirs import make_tokenizer_dir

    folder = make_tokenizer_dir(tmp_path / "llama3-tiny", "llama3")
    tok = AutoTokenizer.from_pretrained(str(folder))
    bos = tok.bos_token
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.bos_token_id)])
    tok.save_pretrained(str(folder))
    assert AutoTokenizer.from_pretrained(str(folder))("hello")["input_ids"][0] == tok.bos_token_id
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    settings = Settings(home=tmp_path / "home").ensure()
    recipe = load_recipe("demo-ko", ["train.max_steps=1", "train.batch_size=2", "data.eval_rows=2",
                                     "data.max_seq_len=256", "train.lora.r=2", "train.warmup_steps=0",
                                     f"model.base={folder}", "name=bos-test"])
    ctx = RunContext.create("bos-test", settings)
    data = prepare_data(recipe, ctx)
    base = ResolvedBase(ref=str(folder), kind="folder", hf_dir=folder, source_sha256="0" * 64)
    result = train(recipe, data, ctx, base=base)
    record = json.loads((ctx.run_dir / "finetune" / "training_examples.json").read_text(encoding="utf-8"))
    for ex in record["examples"]:
        ids = ex["input_ids"]
        assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id  # one BOS, not two
        served = _served_prompt(result.adapter_dir, ex["prompt"], recipe.model.system)
        assert not served.startswith(bos)  # the Go TEMPLATE leaves BOS to the runtime
        served_ids = tok(served, add_special_tokens=False)["input_ids"]
        assert _prompt_part(ex) == [tok.bos_token_id, *served_ids]


def test_every_split_of_the_effective_batch_gives_the_same_loss_sequence(trained, smollm2_base, tmp_path):
    """What auto-tune relies on: 1 x 4, 2 x 2 and 4 x 1 (micro-batch x accumulation) train the same rows in each
    step and normalise the loss over the whole step, so the loss sequence is the same to float noise (fp32 on
    CPU), though the micro-batches pad differently."""
    from finetune.backends.hf import build_trainer

    _settings, _recipe, _ctx, data, _ = trained
    rows = [json.loads(x) for x in data.train_path.read_text(encoding="utf-8").splitlines()][:24]
    runs = {}
    for micro, accum in ((1, 4), (2, 2), (4, 1)):
        recipe = load_recipe("demo-ko", ["train.max_steps=3", f"train.batch_size={micro}", f"train.grad_accum={accum}",
                                         "data.max_seq_len=160", "train.lora.r=4", "train.lr=0.01",
                                         "train.warmup_steps=0", "train.save_steps=100", "train.eval_steps=null"])
        trainer, cb = build_trainer(TrainJob(recipe, smollm2_base.hf_dir, rows, tmp_path / f"{micro}x{accum}",
                                             null_events("finetune")))
        trainer.train()
        runs[(micro, accum)] = cb.losses
    first = runs[(1, 4)]
    assert len(first) == 3 and first[0] != first[-1]  # it trained: the loss moved
    for split, losses in runs.items():
        assert losses == pytest.approx(first, rel=2e-4, abs=2e-4), (split, losses, first)
