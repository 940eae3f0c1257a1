"""The whole loop on SmolLM2-135M with a tiny step budget, through the CLI and the stage functions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from tests.conftest import REPO
from workspace.events import read_events

pytestmark = pytest.mark.slow

TINY = ["train.max_steps=3", "train.batch_size=4", "data.max_seq_len=192", "train.lr=0.005", "eval.limit=3",
        "eval.num_predict=24", "export.verify_tokens=4", "serve.name=ollatune/e2e-tuned"]
VANILLA = "ollatune/smollm2-135m-instruct-vanilla:latest"  # named after the base actually used


def _cli(home, *args, check=True):
    env = {**__import__("os").environ, "OLLATUNE_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def pipeline_home(session_home, smollm2_base):
    # smollm2_base has converted the base model into session_home once; the CLI reuses it.
    args = ["pipeline", "demo-ko"] + [x for kv in TINY for x in ("--set", kv)]
    first = _cli(session_home, *args)
    second = _cli(session_home, *args)
    return session_home, first, second


def test_pipeline_prints_table_and_locations(pipeline_home):
    _home, first, _ = pipeline_home
    out = first.stdout
    assert "vanilla vs tuned" in out
    for metric in ("rouge_l", "token_f1", "exact_match"):
        assert metric in out
    for where in ("database", "gguf", "modelfile"):
        assert where in out
    assert "embedded" in first.stderr  # no daemon here: the embedded runtime was started and said so


def test_second_run_skips_every_stage(pipeline_home):
    home, _first, second = pipeline_home
    run_dir = next((home / "runs").glob("demo-ko-*"))
    events = list(read_events(run_dir / "events.jsonl"))
    # events of the second run: everything after the second pipeline start
    starts = [i for i, e in enumerate(events) if e["stage"] == "pipeline" and e["type"] == "start"]
    assert len(starts) == 2
    second_events = events[starts[1]:]
    skipped = {e["stage"] for e in second_events if e["type"] == "done" and e.get("skipped")}
    assert skipped == {"data", "finetune", "export", "serve", "evals"}
    assert not [e for e in second_events if e["type"] in ("metric", "artifact")]
    assert "skipped" in second.stdout


def test_store_records_full_lineage(pipeline_home):
    from workspace.store import (Artifact, Dataset, EvalRun, Prediction, RegisteredModel, Score, TrainingRun,
                                 open_store, session_scope)

    home, _, _ = pipeline_home
    factory = open_store(home / "ollatune.db")
    with session_scope(factory) as s:
        tr = s.scalars(select(TrainingRun).where(TrainingRun.run_id.like("demo-ko-%"))).one()
        assert tr.status == "done" and tr.steps == 3 and s.get(Dataset, tr.dataset_id).rows >= 200
        kinds = {(a.kind, a.quant) for a in s.scalars(select(Artifact).where(Artifact.training_run_id == tr.id))}
        assert {("adapter", None), ("merged", None), ("gguf", "f16"), ("gguf", "q4_k_m")} <= kinds
        tuned = s.scalars(select(RegisteredModel).where(RegisteredModel.role == "tuned")).one()
        assert s.get(Artifact, tuned.artifact_id).training_run_id == tr.id
        runs = s.scalars(select(EvalRun).where(EvalRun.run_id == tr.run_id)).all()
        assert {r.model.role for r in runs} == {"vanilla", "tuned"} and all(r.status == "done" for r in runs)
        for r in runs:
            preds = s.scalars(select(Prediction).where(Prediction.eval_run_id == r.id)).all()
            assert len(preds) == 3 and all(p.raw is not None and p.cleaned is not None for p in preds)
            n_scores = s.scalar(select(func.count()).select_from(Score).join(Prediction)
                                .where(Prediction.eval_run_id == r.id))
            assert n_scores >= 3 * 3


def test_modelfile_has_template_and_every_stop(pipeline_home):
    home, _, _ = pipeline_home
    run_dir = next((home / "runs").glob("demo-ko-*"))
    modelfiles = sorted((run_dir / "export").glob("*/Modelfile"))
    assert [m.parent.name for m in modelfiles] == ["tuned", "vanilla"]
    assert modelfiles
    text = modelfiles[0].read_text(encoding="utf-8")
    assert text.startswith("#") or "FROM" in text
    assert "FROM ./" in text and "TEMPLATE" in text and 'PARAMETER stop "<|im_end|>"' in text
    assert "PARAMETER temperature" in text and "PARAMETER num_ctx" in text


def _hangul_share(text: str) -> float:
    letters = [ch for ch in text if ch.isalpha()]
    return sum("\uac00" <= ch <= "\ud7a3" for ch in letters) / len(letters) if letters else 0.0


def test_tuned_model_answers_korean_in_hangul_and_stops(pipeline_home):
    """Trained on Korean answers, the tuned model answers Korean questions in Hangul and ends its turn at the
    end-of-turn token it learned (not at the length limit)."""
    import ollama

    from serve import ensure_ollama
    from workspace.events import null_events
    from workspace.settings import Settings

    home, _, _ = pipeline_home
    endpoint = ensure_ollama(Settings(home=home).ensure(), null_events("serve"))
    questions = ["한국의 수도는 어디인가요?", "물은 몇 도에서 끓나요?", "좋은 아침 인사를 한 문장으로 써 주세요.",
                 "김치찌개 끓이는 법을 알려 주세요."]
    try:
        client = ollama.Client(host=endpoint.host)
        names = {m.model for m in client.list().models}
        assert {"ollatune/e2e-tuned:latest", VANILLA} <= names
        replies = [client.chat(model="ollatune/e2e-tuned", messages=[{"role": "user", "content": q}],
                               options={"temperature": 0, "seed": 1, "num_predict": 160}) for q in questions]
    finally:
        endpoint.close()
    for r in replies:
        assert r.message.content.strip() and "<|im_end|>" not in r.message.content
    korean = [r for r in replies if _hangul_share(r.message.content) > 0.5]
    assert len(korean) >= 3, [r.message.content for r in replies]
    assert sum(r.done_reason == "stop" for r in replies) >= 3, [(r.done_reason, r.eval_count) for r in replies]


def test_the_served_answer_is_llama_cpp_on_the_raw_gguf_with_the_jinja_prompt(pipeline_home, monkeypatch):
    """The registered model, asked through the official ``ollama`` client, answers greedily exactly what
    llama-cpp-python computes on the exported GGUF file for the prompt the tokenizer's Jinja chat template
    renders: template, system prompt, BOS, stops and weights all survive the way to Ollama.

    llama-cpp-python is loaded as the runtime loads models, without repacked weights (repacking changes
    the rounding of the products, see serve.runner); everything else is its own default."""
    import llama_cpp
    import llama_cpp.llama as llama_module
    import ollama
    from transformers import AutoTokenizer

    from serve import ensure_ollama
    from workspace.events import null_events
    from workspace.settings import Settings

    home, _, _ = pipeline_home
    (export_dir,) = [p for p in (home / "runs").glob("demo-ko-*/export/tuned") if (p / "Modelfile").exists()]
    gguf = next(export_dir.glob("tuned-q4_k_m.gguf"))
    tok = AutoTokenizer.from_pretrained(str(export_dir / "merged"))
    questions = ["한국의 수도는 어디인가요?", "물은 몇 도에서 끓나요?"]
    opts = {"temperature": 0, "seed": 1, "num_predict": 24, "repeat_penalty": 1.0, "top_k": 1}
    endpoint = ensure_ollama(Settings(home=home).ensure(), null_events("serve"))
    try:
        client = ollama.Client(host=endpoint.host)
        served = [client.chat(model="ollatune/e2e-tuned", messages=[{"role": "user", "content": q}], options=opts)
                  for q in questions]
    finally:
        endpoint.close()

    default_params = llama_module.llama_cpp.llama_model_default_params

    def no_repack():  # noqa: ANN202
        params = default_params()
        params.use_extra_bufts = False
        return params

    monkeypatch.setattr(llama_module.llama_cpp, "llama_model_default_params", no_repack)
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=2048, verbose=False)
    eog = {t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(llm._model.vocab, t)}
    for q, reply in zip(questions, served):
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                         add_generation_prompt=True)
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        out: list[int] = []
        llm.reset()
        for t in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            if t in eog or len(out) >= 24:
                break
            out.append(int(t))
        direct = llm.detokenize(out).decode("utf-8", errors="ignore")
        assert reply.message.content == direct, (q, reply.message.content, direct)
        assert reply.eval_count == len(out) or reply.done_reason == "stop"


def test_report_and_runs_commands(pipeline_home):
    home, _, _ = pipeline_home
    runs = _cli(home, "runs")
    run_id = next((home / "runs").glob("demo-ko-*")).name
    assert run_id in runs.stdout
    rep = _cli(home, "report", run_id, "--markdown")
    assert "rouge_l" in rep.stdout and "|" in rep.stdout


def test_an_evaluation_setting_keeps_the_run_and_an_evals_error_is_labelled_evals(pipeline_home, tmp_path):
    """A suite for another task than the held-out rows: same run (no stage re-runs), the error is the evals
    stage's, found before training (the check runs right after the data stage), written once, shown whole."""
    home, _, _ = pipeline_home
    suite = tmp_path / "sql-suite.yaml"
    suite.write_text("name: sql-test\ntask: text2sql\ndataset: {path: heldout.jsonl, format: examples}\n"
                     "metrics: [exact_match]\n", encoding="utf-8")
    args = ["pipeline", "demo-ko"] + [x for kv in TINY + [f"eval.suite={suite}"] for x in ("--set", kv)]
    proc = _cli(home, *args, check=False)
    assert proc.returncode == 1
    assert "error evals: suite 'sql-test' scores text2sql examples" in proc.stderr and "next:" in proc.stderr
    run_dirs = list((home / "runs").glob("demo-ko-*"))
    assert len(run_dirs) == 1  # an evaluation setting does not start a new run
    events = list(read_events(run_dirs[0] / "events.jsonl"))
    last = [i for i, e in enumerate(events) if e["stage"] == "pipeline" and e["type"] == "start"][-1]
    tail = events[last:]
    assert {e["stage"] for e in tail if e["type"] == "done" and e.get("skipped")} == {"data"}
    assert not [e for e in tail if e["stage"] == "finetune"]  # refused before any training
    errors = [e for e in tail if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["stage"] == "evals" and "text2sql" in errors[0]["message"]


def test_malformed_dataset_fails_with_one_line_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "질문", "output": "답"}, ensure_ascii=False) + "\n{oops\n",
                   encoding="utf-8")
    proc = _cli(tmp_path / "home", "pipeline", "demo-ko", "--set", f"data.path={bad}", "--set", "name=badrun",
                check=False)
    assert proc.returncode == 1
    assert f"{bad}:2" in proc.stderr and "next:" in proc.stderr
    assert "Traceback" not in proc.stderr
    run_dir = next((tmp_path / "home" / "runs").glob("badrun-*"))
    events = list(read_events(run_dir / "events.jsonl"))
    assert events[-1]["type"] == "error" and events[-1]["stage"] == "data" and events[-1]["hint"]
    assert not (run_dir / "data" / "train.jsonl").exists()


def test_text2sql_recipe_is_evaluated_by_executing_its_sql(session_home, smollm2_base):
    """The Korean text-to-SQL recipe on SmolLM2 (its system prompt kept): every stage runs, the held-out
    split is SQL examples with their database ids, and the vanilla-vs-tuned table has execution accuracy."""
    from sqlalchemy import select

    from workspace.heldout import read_eval_examples
    from workspace.store import EvalRun, Prediction, open_store

    args = ["pipeline", "ko-text2sql-qlora"] + [x for kv in [
        "model.base=smollm2-135m-instruct", "train.backend=hf", "train.max_steps=2", "train.epochs=null",
        "train.batch_size=2", "train.grad_accum=1", "train.eval_steps=null", "data.val_rows=0",
        "export.verify_tokens=2", "eval.limit=6", "eval.num_predict=48"] for x in ("--set", kv)]
    proc = _cli(session_home, *args, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    for metric in ("exec_acc", "exec_acc_set", "soft_f1", "exact_match", "valid_sql"):
        assert metric in table, metric
    run_dir = next((session_home / "runs").glob("ko-text2sql-qlora-*"))
    events = list(read_events(run_dir / "events.jsonl"))
    assert [e["stage"] for e in events if e["type"] == "done"] == ["data", "finetune", "export", "export", "serve",
                                                                   "evals", "pipeline"]
    evaluated = json.loads((run_dir / "stages" / "evals.json").read_text(encoding="utf-8"))["result"]
    assert evaluated["suite"] == "ko-text2sql"
    sf = open_store(session_home / "ollatune.db")
    with sf() as s:
        for eval_run_id in evaluated["eval_run_ids"].values():
            er = s.get(EvalRun, eval_run_id)
            assert er.params["schema_only"] is False and er.params["num_ctx"] == 4096  # the recipe's, not 2048
            preds = s.scalars(select(Prediction).where(Prediction.eval_run_id == eval_run_id)).all()
            assert len(preds) == 6
            for p in preds:
                names = {sc.metric for sc in p.scores}
                assert names == {"exec_acc", "exec_acc_set", "soft_f1", "exact_match", "valid_sql"}
                assert all(0.0 <= sc.value <= 1.0 for sc in p.scores)
                assert p.details["semantics"] == "execution"
    held = read_eval_examples(run_dir / "data" / "heldout.jsonl")
    assert held and all(ex.task == "text2sql" and ex.db_id in {"game", "shop", "school"} and ex.schema_sql
                        for ex in held)
    system = held[0].messages[0]
    assert system.role == "system" and "SQLite" in system.content
    served = json.loads((run_dir / "stages" / "serve.json").read_text(encoding="utf-8"))["result"]
    assert served["vanilla"]["name"] == VANILLA
    assert served["tuned"]["name"] == "ollatune/ko-text2sql-qlora:latest"
    assert served["tuned"]["system"] == system.content  # parity held with the system prompt it was trained with
    assert served["vanilla"]["system"] != system.content  # the base model keeps its own template's default


def test_eval_run_pairwise_and_html_report_through_the_cli(pipeline_home, tmp_path):
    """Any registered models through `eval run`, a pairwise judge over the two eval runs, and the comparison
    as one self-contained HTML file; a threshold exit code for CI scripts."""
    home, _, _ = pipeline_home
    tuned = "ollatune/e2e-tuned:latest"
    run = _cli(home, "eval", "run", "ko-instruct", "--model", VANILLA, "--model", tuned, "--set", "limit=3",
               "--set", "params.num_predict=24")
    for metric in ("rouge_1", "embed_cosine", "korean_share"):
        assert metric in run.stdout
    judged = _cli(home, "eval", "pairwise", VANILLA, tuned, "--judge", VANILLA, "--suite", "ko-instruct",
                  "--set", "judge.num_predict=48")
    assert "wins" in judged.stdout and "ties" in judged.stdout and "unparseable" in judged.stdout
    assert "warning" in judged.stderr  # the judge is one of the compared models
    report = tmp_path / "report.html"
    _cli(home, "eval", "compare", VANILLA, tuned, "--suite", "ko-instruct", "--format", "html", "-o", str(report))
    html = report.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "<svg" in html and "Judge" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html
    md = _cli(home, "eval", "compare", VANILLA, tuned, "--suite", "ko-instruct", "--format", "md")
    assert "rouge_l" in md.stdout
    # A regression threshold no model can meet fails with exit code 1.
    gate = _cli(home, "eval", "compare", VANILLA, tuned, "--suite", "ko-instruct", "--fail-metric", "korean_share",
                "--max-regression", "-2", check=False)
    assert gate.returncode == 1
