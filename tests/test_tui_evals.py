"""The Evals screen and the comparison screen, driven through Textual's Pilot against a real store: the
metric table with its intervals, Korean examples cut by display width with both answers side by side, the
regression filter, sorting by delta, stepping, the judge's reason, starting an evaluation job, and
snapshots at 80x24 and 160x45."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from rich.cells import cell_len
from sqlalchemy import select, update
from textual.widgets.data_table import ColumnKey

from tui.app import OllatuneApp
from tui.widgets.tables import fit_cell
from tui.screens.compare import (
    CompareScreen,
    ExamplesTable,
    MetricsTable,
    SORTS,
    example_columns,
    paired_bootstrap_ci,
)
from tui.screens.runs import RunsTable
from tui.screens.evals import EvalRunsTable, EvalsScreen, PairsTable, comparable_pairs, eval_args, load_store
from tests import tui_helpers
from tests.tui_helpers import RUN_ID, _cell_text, settle, wait_until
from workspace.store import EvalRun, Prediction, RegisteredModel, Score, open_store, session_scope
from workspace.store.models import JudgeRun, Judgment

workspace = tui_helpers.workspace  # the fixture: a store with an evaluated run

LONG_KO = ("다음 글을 읽고 조선 왕조를 세운 첫 번째 왕이 누구였는지, 그리고 그 왕이 수도를 어디에서 어디로 "
           "옮겼는지 두 문장으로 설명해 주세요.")
VANILLA_KO = "조선의 첫 번째 왕은 태조 이성계이며, 그는 수도를 개경에서 한양으로 옮겼습니다. 한양은 지금의 서울입니다."
TUNED_KO = "태조 이성계입니다. 수도는 한양입니다."
# Examples added to the workspace's two examples (ex-1: exact_match 0 -> 1, char_f1 0.2 -> 1.0; ex-2: equal):
# id, question, reference, vanilla output, tuned output, exact_match (v, t), char_f1 (v, t)
MORE = [
    ("ex-3", LONG_KO, "태조 이성계가 세웠고, 수도를 개경에서 한양으로 옮겼다.", VANILLA_KO, TUNED_KO, (0.0, 0.0), (0.9, 0.3)),
    ("ex-4", "1 더하기 1은?", "2", "2", "정답은 2", (1.0, 0.0), (1.0, 0.9)),
]
JUDGE_REASON = "서울이 대한민국의 수도이므로 B의 답이 맞습니다."


def _populate(settings) -> None:  # noqa: ANN001
    """More examples (a long Korean question, a regression), a pairwise judge over the pipeline run's two
    eval runs, and an evaluation of an outside model from the CLI; fixed dates."""
    factory = open_store(settings.db_path)
    with session_scope(factory) as s:
        runs = s.scalars(select(EvalRun).where(EvalRun.status == "done").order_by(EvalRun.id)).all()
        vanilla, tuned = runs
        for i, er in enumerate((vanilla, tuned)):
            for ex_id, question, reference, out_v, out_t, em, f1 in MORE:
                p = Prediction(eval_run_id=er.id, example_id=ex_id, reference=reference, raw=(out_v, out_t)[i],
                               cleaned=(out_v, out_t)[i],
                               prompt=json.dumps([{"role": "user", "content": question}], ensure_ascii=False))
                p.scores = [Score(metric="exact_match", value=em[i]), Score(metric="char_f1", value=f1[i])]
                s.add(p)
        jr = JudgeRun(kind="pairwise", suite="pairwise", suite_hash="p" * 64, judge_name="judge-model:7b",
                      judge_digest="sha256:" + "9" * 64, eval_run_a_id=vanilla.id, eval_run_b_id=tuned.id,
                      params={}, summary={"wins": 1, "ties": 1, "losses": 0, "unparseable": 0, "win_rate": 75.0},
                      status="done")
        s.add(jr)
        s.flush()
        s.add_all([
            Judgment(judge_run_id=jr.id, example_id="ex-1", order="ab", verdict="b", reason=JUDGE_REASON, raw="{}"),
            Judgment(judge_run_id=jr.id, example_id="ex-1", order="ba", verdict="b", reason=JUDGE_REASON, raw="{}"),
            Judgment(judge_run_id=jr.id, example_id="ex-3", order="ab", verdict="a", reason="A가 더 자세합니다.",
                     raw="{}"),
            Judgment(judge_run_id=jr.id, example_id="ex-3", order="ba", verdict="tie", reason="둘 다 맞습니다.",
                     raw="{}"),
        ])
        outside = RegisteredModel(name="qwen2.5:0.5b", host="embedded", digest="sha256:" + "3" * 64,
                                  role="external", template_family="unknown")
        s.add(outside)
        s.flush()
        er = EvalRun(run_id=None, suite="demo-ko", suite_hash="h" * 64, model_id=outside.id, params={}, status="done")
        for ex_id, question, reference, *_ in MORE[:1]:
            p = Prediction(example_id=ex_id, reference=reference, raw="모릅니다", cleaned="모릅니다",
                           prompt=json.dumps([{"role": "user", "content": question}], ensure_ascii=False))
            p.scores = [Score(metric="exact_match", value=0.0), Score(metric="char_f1", value=0.1)]
            er.predictions.append(p)
        s.add(er)
        s.flush()
        for n, rid in enumerate(s.scalars(select(EvalRun.id).order_by(EvalRun.id)).all()):
            when = datetime(2026, 1, 2, 3, 4 + n, tzinfo=timezone.utc)
            s.execute(update(EvalRun).where(EvalRun.id == rid).values(started_at=when, finished_at=when))


@pytest.fixture
def evals_workspace(workspace):
    """The TUI workspace plus :func:`_populate`; local time is UTC so dates on screen are fixed."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    _populate(workspace)
    yield workspace
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


async def _open(app: OllatuneApp, pilot, screen=None):  # noqa: ANN001, ANN202
    """Push ``screen`` (a comparison), or switch to the Evals screen as key 6 does; wait for its reads."""
    if screen is None:
        await app.switch_mode("evals")
    else:
        await app.push_screen(screen)
    await pilot.pause()
    await settle(app)
    await pilot.pause()
    return app.screen


def _rows(table) -> dict[str, list[str]]:  # noqa: ANN001
    return {row.key.value: [_cell_text(c) for c in table.get_row(row.key)] for row in table.ordered_rows}


def _keys(table) -> list[str]:  # noqa: ANN001
    return [row.key.value for row in table.ordered_rows]


def _lines(widget) -> list[str]:  # noqa: ANN001
    """What a widget shows, line by line, as rendered at its size (without a border line at its right)."""
    return [strip.text.rstrip().rstrip("\u2595") for strip in widget.render_lines(widget.region.reset_offset)]


async def _select_metric(pilot, screen, name: str) -> None:  # noqa: ANN001
    for _ in screen.comparison.metrics:
        if screen.metric == name:
            return
        await pilot.press("m")
    assert screen.metric == name


# ---------------------------------------------------------------------------------------- pure parts


def test_ci_equals_the_hand_computed_exact_bootstrap():
    # diffs [0, 0, 1]: the 27 resamples have means k/3 with k ~ Binomial(3, 1/3):
    # P(0) = 8/27, P(1/3) = 12/27, P(2/3) = 6/27, P(1) = 1/27. Cumulative: 8, 20, 26, 27 (of 27).
    # 25th percentile: the first mean whose cumulative share reaches 0.25 -> 0 (8/27 = 0.296).
    # 75th percentile: 20/27 = 0.741 < 0.75, 26/27 reaches it -> 2/3.
    low, high = paired_bootstrap_ci([1.0, 0.5, 0.0], [1.0, 0.5, 1.0], level=0.5)
    assert low == pytest.approx(0.0)
    assert high == pytest.approx(2 / 3)
    # 95%: 2.5th -> 0 (8/27 > 0.025), 97.5th: 26/27 = 0.963 < 0.975 -> 1.
    assert paired_bootstrap_ci([1.0, 0.5, 0.0], [1.0, 0.5, 1.0]) == pytest.approx((0.0, 1.0))
    # diffs [-1, 1]: means -1, 0, 0, 1 -> 25th = -1 (1/4 reaches 0.25), 75th = 0 (3/4).
    assert paired_bootstrap_ci([1.0, 0.0], [0.0, 1.0], level=0.5) == pytest.approx((-1.0, 0.0))
    assert paired_bootstrap_ci([0.5], [1.0]) is None  # one pair says nothing about the spread
    with pytest.raises(ValueError):
        paired_bootstrap_ci([0.0, 1.0], [1.0])


def test_ci_sampled_is_seeded_and_close_to_exact():
    base = [0.0] * 8
    cand = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]  # 8**8 resamples: too many to enumerate
    first = paired_bootstrap_ci(base, cand, seed=3)
    assert first == paired_bootstrap_ci(base, cand, seed=3)
    # exactly, the mean is k/8 with k ~ Binomial(8, 1/2): P(k<=0) = 1/256 < 0.025 <= P(k<=1) = 9/256, so the
    # 2.5th percentile is 1/8; P(k<=6) = 247/256 < 0.975 <= P(k<=7), so the 97.5th is 7/8. Sampled: near those.
    assert first[0] == pytest.approx(1 / 8, abs=1 / 8 + 1e-9)
    assert first[1] == pytest.approx(7 / 8, abs=1 / 8 + 1e-9)
    assert first[0] < 0.5 < first[1]


def test_cells_are_cut_by_display_width():
    cell = fit_cell(LONG_KO, 20)
    assert cell_len(cell.plain) <= 20 and cell.plain.endswith("\u2026")
    assert fit_cell("a  b\nc", 10).plain == "a b c"
    assert fit_cell(None, 5).plain == "-"
    assert fit_cell("[b]not markup[/b]", 40).plain == "[b]not markup[/b]"
    narrow, wide = example_columns(80, 4), example_columns(160, 4)
    assert narrow.outputs is None and wide.outputs is not None
    for width, cols in ((80, narrow), (160, wide)):
        used = cols.id + cols.question + 2 * (cols.outputs or 0) + 3 * 7
        used += 2 * (5 + (2 if cols.outputs else 0))  # padding of every column
        assert used <= width - 2


def test_eval_args_and_pairs(evals_workspace):
    assert eval_args("ko-qa", "a:1b", "b:1b") == ["eval", "run", "ko-qa", "-m", "a:1b", "-m", "b:1b"]
    assert eval_args("ko-safety", "a", "b", "j") == ["eval", "run", "ko-safety", "-m", "a", "-m", "b", "--judge", "j"]
    data = load_store(evals_workspace)
    assert [(r.id, r.model, r.status, r.examples) for r in data.runs] == [
        (4, "qwen2.5:0.5b", "done", 1), (3, "ollatune/demo-ko", "running", 0),
        (2, "ollatune/demo-ko", "done", 4), (1, "ollatune/demo-ko-vanilla", "done", 4)]
    assert [(p.label, p.baseline, p.candidate, p.run_id, p.refs) for p in data.pairs] == [
        (f"run {RUN_ID}", "ollatune/demo-ko-vanilla", "ollatune/demo-ko", RUN_ID, None),
        ("#2 vs #4", "ollatune/demo-ko", "qwen2.5:0.5b", None, ("2", "4")),
    ]
    assert comparable_pairs([r for r in data.runs if r.id in (1, 3)]) == []  # a running eval pairs with nothing


# ------------------------------------------------------------------------------------ comparison


def test_compare_screen_shows_metrics_and_examples(evals_workspace):
    async def scenario() -> None:
        app = OllatuneApp(evals_workspace, reattach=False)
        async with app.run_test(size=(160, 50)) as pilot:
            # opened from History: c on a run compares its vanilla and tuned evaluations
            await app.switch_mode("history")
            table = app.screen.query_one(RunsTable)
            await wait_until(pilot, lambda: table.row_count > 0)
            table.move_cursor(row=table.get_row_index(RUN_ID))
            await pilot.press("c")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, CompareScreen) and screen.run_id == RUN_ID
            await settle(app)
            await pilot.pause()
            assert screen.error is None
            rows = _rows(screen.query_one(MetricsTable))
            # metric, direction, vanilla, tuned, delta, CI, candidate won/tie/lost (4 examples)
            assert rows["exact_match"][:5] == ["exact_match", "\u2191", "0.250", "0.250", "+0.000"]
            assert rows["exact_match"][6] == "1/2/1"
            assert rows["char_f1"][:5] == ["char_f1", "\u2191", "0.675", "0.700", "+0.025"]
            assert rows["char_f1"][6] == "1/1/2"
            c = screen.comparison
            m = next(m for m in c.metrics if m.metric == "char_f1")
            assert rows["char_f1"][5] == f"[{m.ci_low:+.3f}, {m.ci_high:+.3f}]"  # the report's paired bootstrap
            examples = screen.query_one(ExamplesTable)
            assert _keys(examples) == ["ex-1", "ex-2", "ex-3", "ex-4"]
            assert screen.metric == c.primary_metric
            await _select_metric(pilot, screen, "exact_match")
            first = _rows(examples)["ex-1"]
            assert first[:4] == ["ex-1", "대한민국의 수도는?", "부산", "서울"]
            assert first[4:] == ["0.000", "1.000", "+1.000"]  # the selected metric (exact_match), delta
            second = _rows(examples)["ex-2"]
            assert second[3] == "SELECT [name] FROM t"  # model output shown as text, not read as markup
            head = str(screen.query_one("#example-head").render())
            assert "대한민국의 수도는?" in head
            assert JUDGE_REASON in str(screen.query_one("#example-judge").render())

    asyncio.run(scenario())


def test_compare_without_evals_says_what_to_do(workspace):
    async def scenario() -> None:
        app = OllatuneApp(workspace, reattach=False)
        async with app.run_test() as pilot:
            await _open(app, pilot, CompareScreen("crashed-run"))
            assert "no finished evaluation" in (app.screen.error or "")
            assert "next:" in str(app.screen.query_one("#compare-title").render())
            assert app.is_running

    asyncio.run(scenario())


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
def test_korean_example_fits_and_both_answers_show(evals_workspace, size):
    async def scenario() -> None:
        app = OllatuneApp(evals_workspace, reattach=False)
        async with app.run_test(size=size) as pilot:
            screen = CompareScreen(RUN_ID)
            await _open(app, pilot, screen)
            examples = screen.query_one(ExamplesTable)
            assert examples.size.height >= 4  # header and at least three rows
            question = examples.get_cell("ex-3", "question")
            column = examples.columns[ColumnKey("question")]
            assert cell_len(question.plain) <= column.width
            assert question.plain.endswith("\u2026")  # cut, not wrapped into the next column
            total = sum(col.get_render_width(examples) for col in examples.ordered_columns)
            assert total <= examples.size.width  # no column is pushed off screen
            await pilot.press("n", "n")
            assert screen.shown[examples.cursor_row].example_id == "ex-3"
            await pilot.pause()
            base, cand = screen.query_one("#answer-baseline"), screen.query_one("#answer-candidate")
            # two columns side by side, each about half the width, both inside the screen
            assert base.region.y == cand.region.y and base.region.right <= cand.region.x
            assert cand.region.right <= size[0]
            assert abs(base.region.width - cand.region.width) <= 1
            assert base.region.width >= size[0] // 2 - 2
            for widget, answer in ((base, VANILLA_KO), (cand, TUNED_KO)):
                lines = _lines(widget)
                assert all(cell_len(line.rstrip()) <= widget.region.width for line in lines)
                shown = "".join(line.strip() for line in lines).replace(" ", "")
                assert answer.replace(" ", "") in shown  # the whole answer, wrapped, nothing cut
            scroll = screen.query_one("#example-scroll")
            assert scroll.region.height >= 6 and scroll.region.bottom <= size[1] - 1  # above the footer

    asyncio.run(scenario())


def test_regression_filter_sort_and_stepping(evals_workspace):
    async def scenario() -> None:
        app = OllatuneApp(evals_workspace, reattach=False)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = CompareScreen(RUN_ID)
            await _open(app, pilot, screen)
            examples = screen.query_one(ExamplesTable)
            await _select_metric(pilot, screen, "exact_match")
            await pilot.press("f")
            # exact_match, tuned worse than vanilla: only ex-4 (1 -> 0); ex-1 improved, ex-2 and ex-3 tie
            assert _keys(examples) == ["ex-4"]
            assert "regressions: 1 of 4" in str(screen.query_one("#compare-filter").render())
            await _select_metric(pilot, screen, "char_f1")
            # char_f1: ex-3 (0.9 -> 0.3) and ex-4 (1.0 -> 0.9); ex-1 improved, ex-2 equal
            assert _keys(examples) == ["ex-3", "ex-4"]
            await pilot.press("f")
            assert _keys(examples) == ["ex-1", "ex-2", "ex-3", "ex-4"]
            await pilot.press("s")
            assert screen.sort == SORTS[1]
            # worst first by char_f1 delta: ex-3 -0.6, ex-4 -0.1, ex-2 0.0, ex-1 +0.8
            assert _keys(examples) == ["ex-3", "ex-4", "ex-2", "ex-1"]
            await pilot.press("s")
            assert _keys(examples) == ["ex-1", "ex-2", "ex-4", "ex-3"]
            current = screen.shown[examples.cursor_row].example_id
            await pilot.press("s")
            assert _keys(examples) == ["ex-1", "ex-2", "ex-3", "ex-4"]
            assert screen.shown[examples.cursor_row].example_id == current  # the selection stays put

            # stepping: n / p and the arrows move through the listed examples and show each one
            examples.move_cursor(row=0)
            await pilot.pause()
            head = screen.query_one("#example-head")
            assert examples.cursor_row == 0 and "ex-1" in str(head.render())
            await pilot.press("n")
            await pilot.pause()
            assert examples.cursor_row == 1 and "ex-2" in str(head.render())
            await pilot.press("n", "n", "n")  # stops at the last one
            await pilot.pause()
            assert examples.cursor_row == 3 and "ex-4" in str(head.render())
            await pilot.press("p")
            await pilot.pause()
            assert "ex-3" in str(head.render())
            assert "A가 더 자세합니다." in str(screen.query_one("#example-judge").render())  # both orders' reasons
            assert "둘 다 맞습니다." in str(screen.query_one("#example-judge").render())
            examples.focus()
            await pilot.press("up")
            await pilot.pause()
            assert "ex-2" in str(head.render())
            assert "example 2/4" in str(screen.query_one("#compare-filter").render())
            # the metric table's cursor selects the metric too
            metrics = screen.query_one(MetricsTable)
            metrics.focus()
            other = next(k for k in _keys(metrics) if k != "char_f1")
            metrics.move_cursor(row=_keys(metrics).index(other))
            await pilot.pause()
            assert screen.metric == other

    asyncio.run(scenario())


def test_compare_two_eval_runs_by_id(evals_workspace):
    async def scenario() -> None:
        app = OllatuneApp(evals_workspace, reattach=False)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = CompareScreen(refs=("2", "4"), suite="demo-ko")
            await _open(app, pilot, screen)
            assert screen.error is None
            c = screen.comparison
            assert (c.baseline, c.candidate) == ("ollatune/demo-ko", "qwen2.5:0.5b")
            assert _keys(screen.query_one(ExamplesTable)) == ["ex-1", "ex-2", "ex-3", "ex-4"]
            title = str(screen.query_one("#compare-title").render())
            assert "#2 vs #4" in title and "warning" not in title
            # one shared example: no interval from the report, none computed (one pair says nothing)
            assert _rows(screen.query_one(MetricsTable))["char_f1"][5] == "-"
            assert "no pairwise judge" in str(screen.query_one("#example-judge").render())

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------- evals


def test_evals_screen_lists_runs_and_opens_comparisons(evals_workspace):
    async def scenario() -> None:
        app = OllatuneApp(evals_workspace, reattach=False)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await _open(app, pilot)
            assert isinstance(screen, EvalsScreen)
            assert screen.error is None
            runs = _rows(screen.query_one(EvalRunsTable))
            assert list(runs) == ["4", "3", "2", "1"]
            # id, suite, model, status, examples, date, pipeline run
            assert runs["2"] == ["2", "demo-ko", "ollatune/demo-ko", "done", "4", "2026-01-02 03:05", RUN_ID]
            assert runs["3"][3:5] == ["running", "0"]
            assert runs["4"][6] == "-"
            pairs = _rows(screen.query_one(PairsTable))
            assert list(pairs) == [f"run:{RUN_ID}", "ids:2:4"]
            assert pairs["ids:2:4"] == ["#2 vs #4", "demo-ko", "ollatune/demo-ko", "qwen2.5:0.5b", "1"]
            # the suite list is `ollatune eval suites`' generate suites; models prefilled from the store
            from evals.suites import load_suite, shipped_suites

            runnable = [n for n in shipped_suites() if load_suite(n).kind == "generate"]
            assert [s.name for s in screen.suites] == runnable
            assert screen.query_one("#baseline").value == "ollatune/demo-ko-vanilla"
            assert screen.query_one("#candidate").value == "ollatune/demo-ko"

            table = screen.query_one(PairsTable)
            table.focus()
            table.move_cursor(row=1)
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, CompareScreen) and app.screen.refs == ("2", "4")
            await settle(app)
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is screen

            runs_table = screen.query_one(EvalRunsTable)
            runs_table.focus()
            runs_table.move_cursor(row=_keys(runs_table).index("1"))
            await pilot.press("enter")  # the vanilla eval of the pipeline run: its vanilla-vs-tuned comparison
            await pilot.pause()
            assert isinstance(app.screen, CompareScreen) and app.screen.run_id == RUN_ID
            await settle(app)
            await pilot.press("escape")
            await pilot.pause()
            runs_table.move_cursor(row=_keys(runs_table).index("3"))
            await pilot.press("enter")  # still running: nothing to compare, said so
            await pilot.pause()
            assert app.screen is screen

            runs_table.move_cursor(row=_keys(runs_table).index("4"))
            await pilot.press("b")
            assert screen.query_one("#baseline").value == "qwen2.5:0.5b"
            assert screen.query_one("#suite").value is not None

    asyncio.run(scenario())


def test_evals_screen_starts_an_eval_job_and_reloads(evals_workspace, tmp_path):
    # The job stands in for `ollatune eval run`: it reports progress, stores a finished eval run, and exits.
    script = tmp_path / "job.py"
    script.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(tui_helpers.__file__).resolve().parent.parent)!r})\n"
        "from workspace.settings import get_settings\n"
        "from workspace.store import EvalRun, RegisteredModel, open_store, session_scope\n"
        "print(json.dumps({'ts': 1.0, 'run': 'eval-1', 'stage': 'evals', 'type': 'progress', 'done': 1, "
        "'total': 2, 'unit': 'examples'}), flush=True)\n"
        "with session_scope(open_store(get_settings().db_path)) as s:\n"
        "    m = s.query(RegisteredModel).filter_by(name='qwen2.5:0.5b').one()\n"
        "    s.add(EvalRun(suite='ko-qa', suite_hash='q' * 64, model_id=m.id, params={}, status='done'))\n"
        "print(json.dumps({'ts': 2.0, 'run': 'eval-1', 'stage': 'evals', 'type': 'done'}), flush=True)\n",
        encoding="utf-8")

    async def scenario() -> None:
        app = OllatuneApp(evals_workspace, job_command=[sys.executable, str(script)], reattach=False)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await _open(app, pilot)
            screen.query_one("#suite").value = "ko-qa"
            screen.query_one("#candidate").value = "qwen2.5:0.5b"
            await pilot.pause()
            await pilot.press("ctrl+r")
            assert app.job is not None
            assert app.job.args == ["eval", "run", "ko-qa", "-m", "ollatune/demo-ko-vanilla", "-m", "qwen2.5:0.5b"]
            assert app.job.label == "eval ko-qa"
            await wait_until(pilot, lambda: not app.job.running)
            assert app.job.state == "done", app.job.describe()
            # the finished job reloads the screen: the new eval run is listed, and the job's state is shown
            runs = screen.query_one(EvalRunsTable)
            await wait_until(pilot, lambda: runs.row_count == 5)
            assert _rows(runs)["5"][1:4] == ["ko-qa", "qwen2.5:0.5b", "done"]
            assert "eval ko-qa: done" in str(screen.query_one("#evals-info").render())
            assert screen.query_one("#candidate").value == "qwen2.5:0.5b"  # what was typed stays

    asyncio.run(scenario())


def test_evals_screen_refuses_incomplete_forms(evals_workspace):
    async def scenario() -> None:
        app = OllatuneApp(evals_workspace, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _open(app, pilot)
            screen.query_one("#candidate").value = "ollatune/demo-ko-vanilla"  # the same as the baseline
            await pilot.press("ctrl+r")
            assert app.job is None
            screen.query_one("#candidate").value = "qwen2.5:0.5b"
            screen.query_one("#suite").value = "ko-safety"  # judged: needs a judge model
            await pilot.pause()
            assert not screen.query_one("#judge").disabled
            await pilot.press("ctrl+r")
            assert app.job is None
            assert app.focused is screen.query_one("#judge")

    asyncio.run(scenario())


def test_compare_one_evaluated_model(evals_workspace):
    factory = open_store(evals_workspace.db_path)
    with session_scope(factory) as s:
        vanilla = s.scalars(select(RegisteredModel).where(RegisteredModel.role == "vanilla")).one()
        er = EvalRun(run_id="solo-run", suite="demo-ko", suite_hash="h" * 64, model_id=vanilla.id, params={},
                     status="done")
        p = Prediction(example_id="ex-1", reference="서울", raw="서울", cleaned="서울",
                       prompt=json.dumps([{"role": "user", "content": "대한민국의 수도는?"}], ensure_ascii=False))
        p.scores = [Score(metric="exact_match", value=1.0)]
        er.predictions.append(p)
        s.add(er)

    async def scenario() -> None:
        app = OllatuneApp(evals_workspace, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _open(app, pilot, CompareScreen("solo-run"))
            assert screen.error is None
            assert _rows(screen.query_one(MetricsTable))["exact_match"][:3] == ["exact_match", "\u2191", "1.000"]
            assert _keys(screen.query_one(ExamplesTable)) == ["ex-1"]
            await pilot.press("f", "s", "n", "z")  # nothing to filter or sort by: no error
            await pilot.pause()
            assert "서울" in str(screen.query_one("#answer-baseline").render())
            assert app.is_running

    asyncio.run(scenario())


def test_evals_screen_without_a_store(tmp_path):
    from workspace.settings import Settings

    settings = Settings(home=tmp_path / "empty").ensure()

    async def scenario() -> None:
        app = OllatuneApp(settings, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _open(app, pilot)
            assert isinstance(screen, EvalsScreen)
            assert screen.error is None
            assert screen.query_one(EvalRunsTable).row_count == 0
            assert "none yet" in str(screen.query_one("#pairs-title").render())
            await pilot.press("ctrl+r")  # no model typed: says so, starts nothing
            assert app.job is None
        assert not settings.db_path.exists()  # looking never creates the database

    asyncio.run(scenario())


def test_zoom_shows_the_example_alone_and_glyphs_are_safe(evals_workspace):
    from tui.glyphs import unsafe_chars
    from tests.tui_helpers import screen_text

    async def scenario() -> None:
        app = OllatuneApp(evals_workspace, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            evals = await _open(app, pilot)
            assert unsafe_chars(screen_text(app)) == set()
            screen = await _open(app, pilot, CompareScreen(RUN_ID))
            assert unsafe_chars(screen_text(app)) == set()
            await pilot.press("n", "n", "z")
            await pilot.pause()
            view = screen.query_one("#example-scroll")
            assert screen.maximized is view
            text = screen_text(app)
            # at 80x24 the whole example fits once zoomed: both answers and both of the judge's reasons
            assert "A가 더 자세합니다." in text and "둘 다 맞습니다." in text
            assert "태조 이성계입니다." in text
            await pilot.press("n")  # stepping goes on while zoomed
            await pilot.pause()
            assert "ex-4" in str(screen.query_one("#example-head").render())
            await pilot.press("escape")  # back to the tables first, then back to the Evals screen
            await pilot.pause()
            assert screen.maximized is None and app.screen is screen
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is evals

    asyncio.run(scenario())


# ----------------------------------------------------------------------------------------- snapshots


def _before(screen_factory=None):  # noqa: ANN001, ANN202
    async def run_before(pilot) -> None:  # noqa: ANN001
        await _open(pilot.app, pilot)
        if screen_factory is not None:
            await _open(pilot.app, pilot, screen_factory())
    return run_before


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
def test_snapshot_compare(evals_workspace, snap_compare, size):
    async def step_to_korean(pilot) -> None:  # noqa: ANN001
        await _before(lambda: CompareScreen(RUN_ID))(pilot)
        await pilot.press("n", "n")  # ex-3: the long Korean question, the judge's reasons
        await pilot.pause()

    assert snap_compare(OllatuneApp(evals_workspace, reattach=False), terminal_size=size, run_before=step_to_korean)


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
def test_snapshot_evals(evals_workspace, snap_compare, size):
    assert snap_compare(OllatuneApp(evals_workspace, reattach=False), terminal_size=size, run_before=_before())
