"""Comparing two eval runs from a real store: means, paired bootstrap CIs, directions, the examples that
moved most, judge verdicts, resolving names to runs, and the Markdown / JSON / HTML reports."""

from __future__ import annotations

import json
import re
from xml.etree import ElementTree

import pytest

from evals import metrics as metrics_module
from evals.report import (
    SCHEMA_ONLY_NOTE,
    CompareError,
    bootstrap_ci,
    check_threshold,
    compare,
    compare_refs,
    higher_is_better,
    resolve_eval_run,
    to_html,
    to_json,
    to_markdown,
)
from workspace.errors import OllatuneError
from workspace.store.engine import open_store, session_scope
from workspace.store.models import EvalRun, JudgeRun, Judgment, Prediction, RegisteredModel, Score

BASE, TUNED = "ollatune/base", "ollatune/ko-tuned"
ORDER = ["char_f1", "exact_match", "repetition_rate", "answer_length"]
# id, question, reference, base output, tuned output,
# (base, tuned) per metric: char_f1, exact_match, repetition_rate, answer_length
ROWS = [
    ("e1", "대한민국의 수도는?", "서울", "부산", "서울", (0.2, 1.0), (0, 1), (0.5, 0.0), (10, 12)),
    ("e2", "1 더하기 1은?", "2", "2", "2", (1.0, 1.0), (1, 1), (0.0, 0.0), (5, 5)),
    ("e3", "가장 큰 바다는?", "태평양", "태평양입니다", "대서양",
     (0.5, 0.25), (0, 0), (0.2, 0.4), (20, 30)),
    ("e4", "한글을 만든 왕은?", "세종대왕", "모릅니다", "세종",
     (0.0, 0.5), (0, 1), (0.1, 0.1), (8, 8)),
    ("e5", "물의 끓는점은?", "100도", "100도", "<script>alert('x')</script>",
     (0.75, 0.25), (1, 0), (0.0, 0.1), (4, 6)),
    ("e6", "한 주는 며칠?", "7일", "여러 날", "7일입니다", (0.25, 0.5), (0, 1), (0.3, 0.2), (7, 7)),
]


def _model(s, name: str, role: str) -> RegisteredModel:  # noqa: ANN001
    digest = "sha256:" + ("1" if role == "vanilla" else "2") * 64 if name in (BASE, TUNED) else "sha256:" + "9" * 64
    m = RegisteredModel(name=name, host="embedded", digest=digest, role=role, template_family="chatml")
    s.add(m)
    s.flush()
    return m


def _run(s, model: RegisteredModel, side: int, *, suite: str = "ko-qa", shash: str = "h" * 64,  # noqa: ANN001
         rows=ROWS, order=ORDER, status: str = "done", params: dict | None = None) -> int:  # noqa: ANN001
    """An eval run with one prediction per row; ``side`` 0 takes the base column, 1 the tuned one."""
    er = EvalRun(suite=suite, suite_hash=shash, model_id=model.id, status=status,
                 params={"tokenizer": "kiwi", "metrics": list(order), **(params or {})})
    for ex_id, question, reference, out_b, out_t, *values in rows:
        output = (out_b, out_t)[side]
        p = Prediction(example_id=ex_id, reference=reference, raw=output, cleaned=output,
                       prompt=json.dumps([{"role": "user", "content": question}], ensure_ascii=False))
        p.scores = [Score(metric=m, value=float(v[side]), tokenizer="char" if m == "char_f1" else None)
                    for m, v in zip(order, values)]
        er.predictions.append(p)
    s.add(er)
    s.flush()
    return er.id


@pytest.fixture()
def store(tmp_path):
    factory = open_store(tmp_path / "t.db")
    with session_scope(factory) as s:
        base, tuned = _model(s, BASE, "vanilla"), _model(s, TUNED, "tuned")
        ids = {"vanilla": _run(s, base, 0), "tuned": _run(s, tuned, 1)}
    return factory, ids


def _rows(c) -> dict:  # noqa: ANN001
    return {m.metric: m for m in c.metrics}


def test_means_deltas_and_winners_respect_the_metric_direction(store):
    factory, ids = store
    c = compare(factory, ids)
    assert (c.baseline, c.candidate) == ("vanilla", "tuned") and c.suite == "ko-qa"
    assert [m.metric for m in c.metrics] == ORDER and c.primary_metric == "char_f1"
    rows = _rows(c)
    f1 = rows["char_f1"]
    assert f1.values == {"vanilla": pytest.approx(2.7 / 6), "tuned": pytest.approx(3.5 / 6)}
    assert f1.delta == pytest.approx(0.8 / 6) and f1.winner == "tuned" and f1.n == 6
    assert (f1.wins, f1.ties, f1.losses) == (3, 1, 2) and f1.tokenizer == "char"
    em = rows["exact_match"]
    assert em.delta == pytest.approx(1 / 3) and em.example_wins == {"vanilla": 1, "tuned": 3, "tie": 2}
    assert em.tokenizer is None
    rep = rows["repetition_rate"]  # lower is better: the tuned model repeats less, so it wins
    assert rep.higher_is_better is False and rep.delta == pytest.approx(-0.05) and rep.winner == "tuned"
    assert rep.example_wins == {"vanilla": 2, "tuned": 2, "tie": 2} and (rep.wins, rep.losses) == (2, 2)
    length = rows["answer_length"]  # no better direction: a delta, no winner
    assert length.higher_is_better is None and length.winner is None and length.delta == pytest.approx(14 / 6)
    assert c.runs["tuned"].model == TUNED and c.shared_examples == 6 and not c.warnings and not c.schema_only


def test_bootstrap_ci_contains_the_delta_and_is_deterministic_for_a_seed(store):
    factory, ids = store
    first, again, other = compare(factory, ids), compare(factory, ids), compare(factory, ids, seed=7)
    for m in first.metrics:
        assert m.ci_low is not None and m.ci_high is not None
        assert m.ci_low <= m.delta <= m.ci_high
    assert [(m.ci_low, m.ci_high) for m in first.metrics] == [(m.ci_low, m.ci_high) for m in again.metrics]
    assert [(m.ci_low, m.ci_high) for m in first.metrics] != [(m.ci_low, m.ci_high) for m in other.metrics]
    f1 = _rows(first)["char_f1"]
    assert f1.ci_low < 0 < f1.ci_high  # six examples, mixed: the interval spans zero
    assert bootstrap_ci([0.1, 0.3], seed=3, resamples=500) == bootstrap_ci([0.1, 0.3], seed=3, resamples=500)


def test_ci_of_identical_runs_is_zero_and_none_below_two_examples(tmp_path):
    factory = open_store(tmp_path / "t.db")
    with session_scope(factory) as s:
        a, b = _model(s, BASE, "vanilla"), _model(s, TUNED, "tuned")
        ids = {"vanilla": _run(s, a, 0), "tuned": _run(s, b, 0)}
        one = {"vanilla": _run(s, a, 0, rows=ROWS[:1], shash="o" * 64),
               "tuned": _run(s, b, 1, rows=ROWS[:1], shash="o" * 64)}
    c = compare(factory, ids)
    assert all((m.ci_low, m.ci_high, m.delta) == (0.0, 0.0, 0.0) for m in c.metrics)
    assert all(m.winner in ("tie", None) for m in c.metrics) and not c.improved and not c.regressed
    single = compare(factory, one)
    assert all(m.n == 1 and m.ci_low is None and m.ci_high is None for m in single.metrics)
    assert bootstrap_ci([]) is None and bootstrap_ci([0.5]) is None


def test_direction_comes_from_metric_info_when_it_is_there(monkeypatch):
    assert higher_is_better("rouge_l") is True and higher_is_better("repetition_rate") is False
    assert higher_is_better("answer_length") is None
    monkeypatch.setattr(metrics_module, "METRIC_INFO", {"rouge_l": {"higher_is_better": False}}, raising=False)
    assert higher_is_better("rouge_l") is False and higher_is_better("repetition_rate") is False

    class Info:
        higher_is_better = None

    monkeypatch.setattr(metrics_module, "METRIC_INFO", {"bleu": Info()}, raising=False)
    assert higher_is_better("bleu") is None


def test_improved_and_regressed_examples_on_the_primary_metric(store):
    factory, ids = store
    c = compare(factory, ids)
    assert [d.example_id for d in c.improved] == ["e1", "e4", "e6"]
    assert [d.example_id for d in c.regressed] == ["e5", "e3"]
    top = c.improved[0]
    assert top.question == "대한민국의 수도는?" and top.reference == "서울"
    assert top.outputs == {"vanilla": "부산", "tuned": "서울"} and top.values == {"vanilla": 0.2, "tuned": 1.0}
    assert top.delta == pytest.approx(0.8)
    limited = compare(factory, ids, top=1)
    assert [d.example_id for d in limited.improved] == ["e1"] and [d.example_id for d in limited.regressed] == ["e5"]


def test_a_lower_is_better_primary_metric_turns_improved_around(tmp_path):
    factory = open_store(tmp_path / "t.db")
    order = ["repetition_rate", "char_f1", "exact_match", "answer_length"]
    rows = [(r[0], r[1], r[2], r[3], r[4], r[7], r[5], r[6], r[8]) for r in ROWS]
    with session_scope(factory) as s:
        ids = {"vanilla": _run(s, _model(s, BASE, "vanilla"), 0, rows=rows, order=order),
               "tuned": _run(s, _model(s, TUNED, "tuned"), 1, rows=rows, order=order)}
    c = compare(factory, ids)
    assert c.primary_metric == "repetition_rate"
    assert [d.example_id for d in c.improved] == ["e1", "e6"]  # repetition went down
    assert [d.example_id for d in c.regressed] == ["e3", "e5"]  # 0.2 -> 0.4 first, then 0 -> 0.1


def test_resolve_by_id_and_by_model_name_newest_finished(tmp_path):
    factory = open_store(tmp_path / "t.db")
    with session_scope(factory) as s:
        base = _model(s, BASE, "vanilla")
        old = _run(s, base, 0)
        new = _run(s, base, 0)
        _run(s, base, 0, status="running")  # unfinished: never picked
    with session_scope(factory) as s:
        assert resolve_eval_run(s, BASE, None) == new != old
        assert resolve_eval_run(s, str(old), None) == old
        assert resolve_eval_run(s, f" {new} ", "ko-qa") == new
        with pytest.raises(OllatuneError, match="no eval run #999"):
            resolve_eval_run(s, "999", None)
        with pytest.raises(OllatuneError, match="not 'other'"):
            resolve_eval_run(s, str(old), "other")


def test_resolve_errors_name_what_exists_and_the_next_step(tmp_path):
    factory = open_store(tmp_path / "t.db")
    with session_scope(factory) as s:
        base = _model(s, BASE, "vanilla")
        qa = _run(s, base, 0)
        sql = _run(s, base, 0, suite="ko-sql", shash="s" * 64)
    with session_scope(factory) as s:
        with pytest.raises(CompareError) as ambiguous:
            resolve_eval_run(s, BASE, None)
        assert "ko-qa" in str(ambiguous.value) and "ko-sql" in str(ambiguous.value)
        assert "--suite" in ambiguous.value.hint
        assert resolve_eval_run(s, BASE, "ko-sql") == sql and resolve_eval_run(s, BASE, "ko-qa") == qa
        with pytest.raises(CompareError) as missing:
            resolve_eval_run(s, "nobody", None)
        assert BASE in str(missing.value)
        with pytest.raises(CompareError) as other_suite:
            resolve_eval_run(s, BASE, "ko-chat")
        assert "ko-qa" in str(other_suite.value) and "--suite" in other_suite.value.hint


def test_compare_refs_uses_model_names_as_roles(tmp_path):
    factory = open_store(tmp_path / "t.db")
    with session_scope(factory) as s:
        base, tuned = _model(s, BASE, "vanilla"), _model(s, TUNED, "tuned")
        first, second = _run(s, base, 0), _run(s, base, 1)  # older runs of the base model
        _run(s, base, 0)
        _run(s, tuned, 1)
        _run(s, tuned, 1, suite="ko-sql", shash="s" * 64)  # only the tuned model has ko-sql: ko-qa is common
    c = compare_refs(factory, BASE, TUNED)
    assert c.roles == [BASE, TUNED] and (c.baseline, c.candidate) == (BASE, TUNED) and c.suite == "ko-qa"
    assert _rows(c)["exact_match"].delta == pytest.approx(1 / 3) and _rows(c)["exact_match"].winner == TUNED
    same = compare_refs(factory, str(first), str(second))
    assert same.roles == ["A", "B"] and _rows(same)["exact_match"].delta == pytest.approx(1 / 3)
    with pytest.raises(CompareError, match="same eval run"):
        compare_refs(factory, str(first), str(first))


def test_different_suite_hashes_compare_on_shared_examples_or_refuse(tmp_path):
    factory = open_store(tmp_path / "t.db")
    with session_scope(factory) as s:
        base, tuned = _model(s, BASE, "vanilla"), _model(s, TUNED, "tuned")
        a = _run(s, base, 0, rows=ROWS[:4])
        b = _run(s, tuned, 1, rows=ROWS[2:], shash="k" * 64)
        c_ = _run(s, tuned, 1, rows=ROWS[4:], suite="ko-qa-v2", shash="z" * 64)
    c = compare_refs(factory, str(a), str(b))
    assert c.shared_examples == 2 and [e.example_id for e in c.examples] == ["e3", "e4"]
    assert len(c.warnings) == 1 and "only the 2 example ids" in c.warnings[0]
    assert _rows(c)["char_f1"].delta == pytest.approx(((0.25 - 0.5) + (0.5 - 0.0)) / 2)
    assert "Warning" in to_markdown(c)
    with pytest.raises(CompareError, match="share no example id") as none:
        compare_refs(factory, str(a), str(c_))
    assert "--suite" in none.value.hint


def _judge(factory, a: int, b: int, summary: dict) -> None:  # noqa: ANN001
    with session_scope(factory) as s:
        jr = JudgeRun(kind="pairwise", suite="ko-qa", suite_hash="h" * 64, judge_name="judge-x",
                      judge_digest="sha256:" + "j" * 64, eval_run_a_id=a, eval_run_b_id=b, params={},
                      summary=summary, status="done")
        jr.judgments = [
            Judgment(example_id="e1", order="ab", verdict="a", reason="정확한 답", raw="{}", parsed_by="json"),
            Judgment(example_id="e1", order="ba", verdict="a", reason="A가 맞음", raw="{}", parsed_by="json"),
            Judgment(example_id="e2", order="ab", verdict="a", reason="first", raw="{}", parsed_by="json"),
            Judgment(example_id="e2", order="ba", verdict="b", reason="second", raw="{}", parsed_by="fallback"),
            Judgment(example_id="e3", order="ab", verdict=None, reason=None, raw="???", parsed_by=None),
        ]
        s.add(jr)
        # A grade run over the same runs is not a pairwise verdict and is ignored.
        s.add(JudgeRun(kind="grade", suite="ko-qa", suite_hash="h" * 64, judge_name="judge-x", judge_digest="d",
                       eval_run_a_id=a, eval_run_b_id=None, params={}, summary={"mean": 3.0}, status="done"))


SUMMARY = {"wins": 4, "ties": 1, "losses": 1, "unparseable": 0, "win_rate": 0.75, "lc_win_rate": 0.7,
           "judge": "judge-x", "warning": "self-preference: judge-x shares a family with the tuned model"}


def test_judge_block_counts_for_the_candidate_when_run_a_is_the_candidate(store):
    factory, ids = store
    assert compare(factory, ids).judge is None
    _judge(factory, ids["tuned"], ids["vanilla"], SUMMARY)
    j = compare(factory, ids).judge
    assert j is not None and j.run_a_role == "tuned" and j.judge == "judge-x"
    # the summary is run B's side (evals.judging counts the candidate's wins, B): here B is the baseline
    assert (j.wins, j.ties, j.losses, j.unparseable) == (1, 1, 4, 0)
    assert j.win_rate == pytest.approx(0.25) and j.lc_win_rate == pytest.approx(0.3)
    assert j.warning and "self-preference" in j.warning
    by_id = {e.example_id: e for e in j.examples}
    assert by_id["e1"].verdicts == {"ab": "tuned", "ba": "tuned"} and by_id["e1"].combined == "tuned"
    assert by_id["e1"].consistent and by_id["e1"].reasons["ab"] == "정확한 답"
    assert by_id["e2"].combined == "tie" and not by_id["e2"].consistent  # the orders disagree
    assert by_id["e3"].combined is None


def test_judge_block_is_reoriented_when_run_a_is_the_baseline(store):
    factory, ids = store
    summary = {**SUMMARY, "win_rate": 25.0, "lc_win_rate": 30.0, "warning": None}  # percent, run B's side
    _judge(factory, ids["vanilla"], ids["tuned"], summary)
    c = compare(factory, ids)
    j = c.judge
    assert j is not None and j.run_a_role == "vanilla"
    assert (j.wins, j.losses) == (4, 1)  # B is the candidate: the summary's counts are the candidate's
    assert j.win_rate == pytest.approx(0.25) and j.lc_win_rate == pytest.approx(0.30)
    assert {e.example_id: e.combined for e in j.examples}["e1"] == "vanilla"
    assert j.warning is None
    md = to_markdown(c)
    assert "## Judge: judge-x" in md and "25.0%" in md


def test_a_judge_that_is_one_of_the_models_is_flagged(store):
    factory, ids = store
    with session_scope(factory) as s:
        s.add(JudgeRun(kind="pairwise", suite="ko-qa", suite_hash="h" * 64, judge_name=TUNED,
                       judge_digest="sha256:" + "2" * 64, eval_run_a_id=ids["vanilla"], eval_run_b_id=ids["tuned"],
                       params={}, summary={"wins": 1, "ties": 0, "losses": 0, "unparseable": 0}, status="done"))
    c = compare(factory, ids)
    assert c.judge is not None and "self-preference" in (c.judge.warning or "")
    assert any("self-preference" in w for w in c.warnings)


def _sql_store(tmp_path, with_exec: bool):  # noqa: ANN001
    factory = open_store(tmp_path / ("x.db" if with_exec else "s.db"))
    order = ["executes_on_schema", "exact_match", "exec_acc" if with_exec else "answer_length"]
    rows = [(f"q{i}", "직원 수는?", "SELECT count(*) FROM emp", "SELECT 1", "SELECT count(*) FROM emp",
             (0, 1), (0, 1), (0, 1)) for i in range(3)]
    with session_scope(factory) as s:
        ids = {"vanilla": _run(s, _model(s, BASE, "vanilla"), 0, rows=rows, order=order, suite="ko-sql",
                               params={"task": "text2sql"}),
               "tuned": _run(s, _model(s, TUNED, "tuned"), 1, rows=rows, order=order, suite="ko-sql",
                             params={"task": "text2sql"})}
    return compare(factory, ids)


def test_schema_only_note_when_sql_was_not_executed(tmp_path):
    c = _sql_store(tmp_path, with_exec=False)
    assert c.schema_only and c.notes == [SCHEMA_ONLY_NOTE] and c.task == "text2sql"
    assert "executes on the schema" in to_markdown(c)
    assert "executes on the schema" in to_html(c)
    executed = _sql_store(tmp_path, with_exec=True)
    assert not executed.schema_only and not executed.notes


def test_html_is_self_contained_escaped_korean_and_has_charts(store):
    factory, ids = store
    _judge(factory, ids["tuned"], ids["vanilla"], SUMMARY)
    page = to_html(compare(factory, ids))
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<script", page, re.I) and "<link" not in page and "@import" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "대한민국의 수도는?" in page and "Malgun Gothic" in page and "Noto Sans KR" in page
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 2 and "<rect" in svgs[0] and "<circle" in svgs[1] and "<line" in svgs[1]
    for svg in svgs:  # well-formed, so any browser draws it
        ElementTree.fromstring(svg)
    assert "Most improved on char_f1" in page and "Most regressed on char_f1" in page
    assert "Judge: judge-x" in page and "self-preference" in page and "정확한 답" in page
    assert 'class="num good"' in page and 'class="num bad"' not in page  # every delta favours the tuned model


def test_json_round_trips_with_everything(store):
    factory, ids = store
    _judge(factory, ids["tuned"], ids["vanilla"], SUMMARY)
    c = compare(factory, ids)
    text = to_json(c)
    data = json.loads(text)
    assert data["format"] == "ollatune.comparison" and data["baseline"] == "vanilla"
    f1 = next(m for m in data["metrics"] if m["metric"] == "char_f1")
    assert f1["ci_low"] == _rows(c)["char_f1"].ci_low and f1["higher_is_better"] is True and f1["n"] == 6
    assert [d["example_id"] for d in data["improved"]] == ["e1", "e4", "e6"]
    assert data["judge"]["wins"] == 1 and data["judge"]["summary"]["win_rate"] == 0.75  # B is the baseline here
    assert "대한민국의 수도는?" in text  # readable, not \\u-escaped
    assert text == to_json(compare(factory, ids))  # stable


def test_markdown_has_the_metric_table_and_the_movers(store):
    factory, ids = store
    md = to_markdown(compare(factory, ids))
    assert "| char_f1 | 0.450 | 0.583 | +0.133 | tuned | 2 / 3 / 1 |" in md
    assert "| repetition_rate | 0.183 | 0.133 | -0.050 | tuned |" in md and "| lower |" in md
    assert "| answer_length |" in md and "lower is better for repetition_rate" in md
    assert "## Most improved on char_f1 (3)" in md and "## Most regressed on char_f1 (2)" in md
    assert "95% CI" in md and "2000 resamples, seed 0" in md


def test_check_threshold_passes_and_fails(store):
    factory, ids = store
    c = compare(factory, ids)
    ok, msg = check_threshold(c, "exact_match")
    assert ok and msg.startswith("PASS exact_match") and "+0.3333" in msg
    ok, msg = check_threshold(c, "exact_match", max_regression=-0.5)  # demands +0.5: not reached
    assert not ok and msg.startswith("FAIL")
    assert check_threshold(c, "repetition_rate")[0]  # lower is better and it went down
    reverse = compare(factory, ids, baseline="tuned", candidate="vanilla")
    assert not check_threshold(reverse, "exact_match", 0.1)[0]
    assert check_threshold(reverse, "exact_match", 0.4)[0]
    assert not check_threshold(reverse, "repetition_rate", 0.01)[0]  # went up by 0.05
    assert check_threshold(reverse, "repetition_rate", 0.06)[0]
    assert not check_threshold(c, "char_f1", 0.0, use_ci=True)[0]  # its CI reaches below zero
    with pytest.raises(CompareError, match="no better direction"):
        check_threshold(c, "answer_length")
    with pytest.raises(CompareError, match="not in the comparison"):
        check_threshold(c, "bleu")
