from __future__ import annotations

import json
from pathlib import Path

import pytest

from workspace.examples import adapt
from finetune.recipe import Recipe, RecipeError, load_recipe, shipped_recipes
from workspace.samples import SAMPLES, resolve_source
from workspace.sources import SourceError, read_records
from finetune.splits import SplitError, split_examples
from finetune.validate import ValidationConfig, validate
from workspace.prompts import alpaca_user_message


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_validates(name):
    recipe = load_recipe(name)
    assert isinstance(recipe, Recipe) and recipe.name
    if recipe.data.path.startswith("builtin:"):
        assert Path(resolve_source(recipe.data.path)[0]).exists()


def test_dotted_overrides():
    r = load_recipe("demo-ko", ["train.max_steps=3", "train.lora.r=4", "eval.limit=2", "model.system=안녕"])
    assert (r.train.max_steps, r.train.lora.r, r.eval.limit, r.model.system) == (3, 4, 2, "안녕")


def test_bad_override_names_the_field():
    with pytest.raises(RecipeError, match="train.max_steps"):
        load_recipe("demo-ko", ["train.max_steps=-1"])
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        load_recipe("demo-ko", ["train.max_steps"])
    with pytest.raises(RecipeError, match="train.nonsense"):
        load_recipe("demo-ko", ["train.nonsense=1"])


def test_unknown_recipe_lists_shipped_ones():
    with pytest.raises(RecipeError) as e:
        load_recipe("nope")
    assert "demo-ko" in e.value.hint


def _validate(path, task="alpaca"):
    return validate(read_records(path), ValidationConfig(task=task), source=str(path))


def test_shipped_korean_sample_is_valid_and_large_enough():
    examples, report = _validate(SAMPLES["ko-alpaca"].path)
    assert report.ok and len(examples) >= 200
    assert all(any("\uac00" <= ch <= "\ud7a3" for ch in ex.response) for ex in examples)
    assert sum(1 for ex in examples if ex.fields["input"].strip()) >= 20


def test_malformed_rows_are_rejected_by_line_and_valid_rows_go_on(tmp_path):
    p = tmp_path / "bad.jsonl"
    good = json.dumps({"instruction": "a", "input": "", "output": "b"}, ensure_ascii=False)
    rows = [good, "{not json", json.dumps({"instruction": "x"}), json.dumps({"instruction": "x", "output": 3}),
            json.dumps({"instruction": "y", "output": "z"}), good]
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    examples, report = _validate(p)
    reasons = {r.line: r.reason for r in report.rejects}
    assert reasons[2].startswith("not valid JSON")
    assert reasons[3] == "missing field 'output'"
    assert reasons[4] == "field 'output' is int, expected text"
    assert reasons[6] == "exact duplicate of line 1"
    assert [ex.line for ex in examples] == [1, 5]
    with pytest.raises(SourceError, match="does not exist"):
        list(read_records(tmp_path / "missing.jsonl"))


def test_split_is_seeded_and_disjoint():
    examples = [adapt({"instruction": f"q{i}", "output": f"a{i}"}, "alpaca", line=i) for i in range(50)]
    a = split_examples(examples, validation=5, test=10, seed=0)
    b = split_examples(examples, validation=5, test=10, seed=0)
    assert [e.line for e in a["test"]] == [e.line for e in b["test"]]
    assert (len(a["train"]), len(a["validation"]), len(a["test"])) == (35, 5, 10)
    assert not {e.line for e in a["train"]} & {e.line for e in a["test"]}
    with pytest.raises(SplitError):
        split_examples(examples, test=50, seed=0)
    leaky = examples + [adapt({"instruction": "q0", "output": "a0"}, "alpaca", line=99)]
    with pytest.raises(SplitError, match="also appear in the training split"):
        for seed in range(20):  # some seed puts one copy in train and the other in test
            split_examples(leaky, test=25, seed=seed)


def test_prompt_completion_rows_use_the_shared_user_message():
    row = {"instruction": "요약해 주세요.", "input": "긴 글", "output": "짧은 글입니다."}
    pc = adapt(row, "alpaca", system="시스템").prompt_completion()
    assert pc["prompt"] == [{"role": "system", "content": "시스템"},
                            {"role": "user", "content": alpaca_user_message("요약해 주세요.", "긴 글")}]
    assert pc["completion"] == [{"role": "assistant", "content": "짧은 글입니다."}]
    assert adapt(row, "alpaca").prompt[0]["content"] == "요약해 주세요.\n\n긴 글"


def test_qa_held_out_split_keeps_each_paragraph_on_one_side():
    from workspace.examples import adapt
    from workspace.samples import SAMPLES
    from workspace.sources import read_records

    rows = [r for r in read_records(SAMPLES["ko-qa"].path)]
    examples = [adapt(r.data, "qa", line=r.line) for r in rows]
    contexts = {ex.fields["context"] for ex in examples}
    assert len(contexts) < len(examples)  # several questions per paragraph: the case that leaked before
    for seed in range(5):
        parts = split_examples(examples, validation=6, test=12, seed=seed)
        train_ctx = {ex.fields["context"] for ex in parts["train"]}
        for part in ("test", "validation"):
            assert not train_ctx & {ex.fields["context"] for ex in parts[part]}, (seed, part)
        assert len(parts["test"]) >= 12 and len(parts["validation"]) >= 6
        assert sum(len(v) for v in parts.values()) == len(examples)
