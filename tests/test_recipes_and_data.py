from __future__ import annotations

import json

import pytest

from finetune.data import DatasetError, load_alpaca, split_rows
from finetune.formats import alpaca_to_messages, alpaca_user_message
from finetune.prepare import to_prompt_completion
from finetune.recipe import Recipe, RecipeError, builtin_data_path, load_recipe, shipped_recipes


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_validates(name):
    recipe = load_recipe(name)
    assert isinstance(recipe, Recipe) and recipe.name
    if recipe.data.path.startswith("builtin:"):
        assert builtin_data_path(recipe.data.path.split(":", 1)[1]).exists()


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


def test_shipped_korean_sample_is_valid_and_large_enough():
    ds = load_alpaca(builtin_data_path("ko_instructions"))
    assert len(ds.rows) >= 200
    assert not ds.warnings
    hangul = sum(1 for r in ds.rows if any("\uac00" <= ch <= "\ud7a3" for ch in r["output"]))
    assert hangul == len(ds.rows)
    assert sum(1 for r in ds.rows if r["input"].strip()) >= 20


def test_malformed_row_reports_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    good = json.dumps({"instruction": "a", "input": "", "output": "b"}, ensure_ascii=False)
    p.write_text(good + "\n" + good + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.jsonl:3: not valid JSON"):
        load_alpaca(p)
    p.write_text(good + "\n" + json.dumps({"instruction": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: missing field 'output'"):
        load_alpaca(p)
    p.write_text(json.dumps({"instruction": "x", "output": 3}) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: field 'output' is int"):
        load_alpaca(p)
    with pytest.raises(DatasetError, match="does not exist"):
        load_alpaca(tmp_path / "missing.jsonl")


def test_split_is_seeded_and_disjoint():
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(50)]
    a_train, a_held = split_rows(rows, 10, seed=0)
    b_train, b_held = split_rows(rows, 10, seed=0)
    assert a_held == b_held and len(a_held) == 10 and len(a_train) == 40
    assert not {r["instruction"] for r in a_train} & {r["instruction"] for r in a_held}
    with pytest.raises(DatasetError):
        split_rows(rows, 50, seed=0)


def test_prompt_completion_rows_use_the_shared_user_message():
    row = {"instruction": "요약해 주세요.", "input": "긴 글", "output": "짧은 글입니다."}
    pc = to_prompt_completion(row, system="시스템")
    assert pc["prompt"] == [{"role": "system", "content": "시스템"},
                            {"role": "user", "content": alpaca_user_message("요약해 주세요.", "긴 글")}]
    assert pc["completion"] == [{"role": "assistant", "content": "짧은 글입니다."}]
    assert alpaca_to_messages(row)[0]["content"] == "요약해 주세요.\n\n긴 글"
