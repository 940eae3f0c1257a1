"""The TUI's data screen, driven through Textual's Pilot: a small JSONL file with a malformed row and a
duplicate, validated with a real (small, offline) tokenizer; the preview, the rejects, the lengths, the split
and the hand-over to the train screen; snapshots at 80x24 and 160x45."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static, TabbedContent

from tests.tokenizer_dirs import make_tokenizer_dir
from tests.tui_helpers import _cell_text, settle, wait_until
from tui.app import OllatuneApp
from tui.widgets.tables import fit_cell
from tui.screens.data import (
    DataScreen,
    TokenHistogram,
    bar,
    histogram_lines,
    hub_cached,
    model_name,
)
from workspace.samples import SAMPLES
from workspace.settings import Settings

ROWS = [
    {"instruction": "대한민국의 수도는 어디인가요?", "input": "", "output": "대한민국의 수도는 서울입니다."},
    {"instruction": "what is the capital of france", "input": "", "output": "paris"},
    None,  # line 3: malformed JSON
    {"instruction": "대한민국의 수도는 어디인가요?", "input": "", "output": "대한민국의 수도는 서울입니다."},  # line 4: duplicate
    {"instruction": "물은 몇 도에서 끓나요? 한국어 질문은 한 글자가 두 칸을 차지하므로 표의 칸을 넘기 쉽습니다.",
     "input": "", "output": "섭씨 100도에서 끓습니다."},
    {"instruction": "빈 답을 가진 행", "input": "", "output": ""},  # line 6: empty answer
]
BROKEN = '{"instruction": "깨진 행", "output": '


def _line(row: dict | None) -> str:
    return BROKEN if row is None else json.dumps(row, ensure_ascii=False)


def write_rows(path: Path, rows: list[dict | None], extra: int = 0) -> Path:
    lines = [_line(r) for r in rows]
    lines += [json.dumps({"instruction": f"question {i} " + "what is " * i, "output": "answer " * (i + 1)})
              for i in range(extra)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tokenizer_folder(folder: Path, family: str = "chatml") -> Path:
    """A small offline tokenizer with ``family``'s chat template, as a model folder resolve_base_model takes."""
    make_tokenizer_dir(folder, family)
    (folder / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    return folder


class TrainStandIn(Screen):
    """Where ``t`` lands; the real train screen reads ``app.selected_data``."""


class DataApp(OllatuneApp):
    MODES = {**getattr(OllatuneApp, "MODES", {}), "data": DataScreen, "train": TrainStandIn}
    DEFAULT_MODE = "data"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home").ensure()


def text_of(widget: Static) -> str:
    return str(widget.render())


def run(coro) -> None:  # noqa: ANN001
    asyncio.run(coro)


async def validate(pilot, source: str, model: str) -> DataScreen:  # noqa: ANN001
    screen = pilot.app.screen
    assert isinstance(screen, DataScreen)
    screen.query_one("#data-source", Input).value = source
    screen.query_one("#data-model", Input).value = model
    await pilot.press("e")
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen.data_view is not None and screen.data_view.tokenized
                     or screen.load_error is not None)
    await settle(pilot.app)
    await pilot.pause()
    return screen


def table_rows(table: DataTable) -> list[list[str]]:
    return [[_cell_text(c) for c in table.get_row(row.key)] for row in table.ordered_rows]


def test_rejects_name_their_lines_and_duplicates(tmp_path, settings):
    data = write_rows(tmp_path / "rows.jsonl", ROWS)
    tok = tokenizer_folder(tmp_path / "tok")

    async def scenario() -> None:
        app = DataApp(settings, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await validate(pilot, str(data), str(tok))
            report = screen.data_view.report
            assert (report.total, report.valid) == (6, 3)
            rows = table_rows(screen.query_one("#rejects", DataTable))
            assert [r[0] for r in rows] == ["3", "4", "6"]
            assert rows[0][2].startswith("not valid JSON")
            assert rows[1][2] == "exact duplicate of line 1"
            assert rows[2][1] == "output" and "empty" in rows[2][2]
            # the first load with rejects shows them; the status line sums it up
            assert screen.query_one("#data-tabs", TabbedContent).active == "pane-rejects"
            status = text_of(screen.query_one("#data-status", Static))
            assert "6 rows, 3 valid, 3 rejected" in status and "1 exact" in status
            summary = text_of(screen.query_one("#rejects-summary", Static))
            assert "3 of 6 rows rejected" in summary and "duplicates: 1 exact" in summary
            # the highlighted reject is spelled out whole below the table
            await pilot.press("down")
            assert text_of(screen.query_one("#reject-detail", Static)) == "line 4: exact duplicate of line 1"

    run(scenario())


def test_preview_shows_the_chat_template_with_the_end_of_turn_token(tmp_path, settings):
    data = write_rows(tmp_path / "rows.jsonl", ROWS)
    tok = tokenizer_folder(tmp_path / "tok-llama3", "llama3")

    async def scenario() -> None:
        app = DataApp(settings, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await validate(pilot, str(data), str(tok))
            screen.show_pane("pane-preview")
            await pilot.pause()
            table = screen.query_one("#rows", DataTable)
            assert [r[0] for r in table_rows(table)] == ["1", "2", "5"]
            text = text_of(screen.query_one("#row-text", Static))
            assert "<|start_header_id|>user<|end_header_id|>" in text
            assert "대한민국의 수도는 어디인가요?<|eot_id|>" in text
            assert "대한민국의 수도는 서울입니다.<|eot_id|>" in text  # the answer ends with the end-of-turn token
            row = screen.data_view.rows[0]
            assert row.prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
            assert row.answer.startswith("대한민국의 수도는 서울입니다.<|eot_id|>")
            # the answer is highlighted apart from the prompt, the special tokens too
            content = screen.query_one("#row-text", Static).render()
            styles = {str(span.style) for span in content.spans}
            assert "bold $success" in styles and "bold $accent" in styles
            # the highlighted row follows the cursor
            await pilot.press("down")
            assert "what is the capital of france<|eot_id|>" in text_of(screen.query_one("#row-text", Static))
            # a Korean question is cut by display width, never past its column
            asks = table.columns[next(k for k in table.columns if k.value == "asks")].width
            cell = table.get_cell("2", "asks")
            assert cell.cell_len <= asks and cell.plain.endswith("…")

    run(scenario())


@pytest.mark.slow
def test_preview_with_the_shipped_smollm2(tmp_path, settings, smollm2_base):
    data = write_rows(tmp_path / "rows.jsonl", [r for r in ROWS if r is not None][:2])

    async def scenario() -> None:
        app = DataApp(settings, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await validate(pilot, str(data), str(smollm2_base.hf_dir))
            assert screen.data_view.model_error is None
            assert screen.query_one("#data-tabs", TabbedContent).active == "pane-preview"
            text = text_of(screen.query_one("#row-text", Static))
            assert "<|im_start|>system\nYou are a helpful AI assistant named SmolLM" in text
            assert "<|im_start|>assistant\n대한민국의 수도는 서울입니다.<|im_end|>" in text
            tokens = screen.data_view.report.tokens
            assert tokens is not None and tokens.recommended_max_seq_len >= 64
            assert f"recommended max_seq_len {tokens.recommended_max_seq_len}" in text_of(
                screen.query_one("#lengths-summary", Static))

    run(scenario())


def test_lengths_pane_histogram_and_recommended_length(tmp_path, settings):
    data = write_rows(tmp_path / "rows.jsonl", ROWS, extra=30)
    tok = tokenizer_folder(tmp_path / "tok")

    async def scenario() -> None:
        app = DataApp(settings, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await validate(pilot, str(data), str(tok))
            tokens = screen.data_view.report.tokens
            assert tokens is not None
            summary = text_of(screen.query_one("#lengths-summary", Static))
            assert f"p95 {tokens.p95}" in summary
            assert f"recommended max_seq_len {tokens.recommended_max_seq_len}" in summary
            assert "over max_seq_len 512" in summary  # the recipe's default length
            hist = screen.query_one(TokenHistogram)
            lines = str(hist.render()).splitlines()
            assert len(lines) == len(tokens.histogram) + 1
            assert sum(int(line.split()[-1]) for line in lines[1:]) == screen.data_view.report.valid
            assert all("█" in line for line in lines[1:] if int(line.split()[-1]))
            # the tokens column of the preview has each row's count under the template
            counts = [r[1] for r in table_rows(screen.query_one("#rows", DataTable))]
            assert all(c.isdigit() for c in counts) and max(map(int, counts)) == tokens.max

    run(scenario())


def test_a_wrong_path_is_an_error_naming_it(tmp_path, settings):
    missing = tmp_path / "nowhere" / "rows.jsonl"

    async def scenario() -> None:
        app = DataApp(settings, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await validate(pilot, str(missing), "")
            status = screen.query_one("#data-status", Static)
            assert str(missing) in text_of(status) and "does not exist" in text_of(status)
            assert "next: check the path" in text_of(status)
            assert status.has_class("-error")
            assert screen.data_view is None and screen.query_one("#rejects", DataTable).row_count == 0
            # the focus stays in the field to fix it; esc leaves it, and t has nothing to train on
            assert screen.focused is screen.query_one("#data-source", Input)
            await pilot.press("escape", "t")
            await pilot.pause()
            assert screen.query_one("#data-source", Input).value == str(missing)
            assert app.current_mode == "data"
            assert getattr(app, "selected_data", None) is None
            assert any("validate the source first" in n.message for n in app._notifications)

    run(scenario())


def test_a_hub_id_missing_from_the_cache_is_an_error_not_a_hang(tmp_path, settings, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)

    async def scenario() -> None:
        app = DataApp(settings, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            t0 = time.monotonic()
            screen = await validate(pilot, "hf:someone/korean-rows", "")
            assert time.monotonic() - t0 < 10
            text = text_of(screen.query_one("#data-status", Static))
            assert "hf:someone/korean-rows is not in the local Hugging Face cache" in text
            assert str(tmp_path / "hf" / "hub") in text

    run(scenario())
    # cached under either layout, it is read from there
    env = {"HF_HOME": str(tmp_path / "hf")}
    assert not hub_cached("hf:someone/korean-rows", env)
    (tmp_path / "hf" / "datasets" / "someone___korean-rows").mkdir(parents=True)
    assert hub_cached("hf:someone/korean-rows:default", env)
    (tmp_path / "hf" / "hub" / "datasets--other--rows").mkdir(parents=True)
    assert hub_cached("hf:other/rows", env) and not hub_cached("hf:other/none", env)


def test_split_counts_add_up_and_follow_the_fields(tmp_path, settings):
    data = write_rows(tmp_path / "rows.jsonl", [r for r in ROWS if r is not None][:1], extra=40)

    async def scenario() -> None:
        app = DataApp(settings, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await validate(pilot, str(data), "")
            valid = screen.data_view.report.valid
            assert valid == 41
            screen.show_pane("pane-split")
            await pilot.pause()
            s = screen.split_result
            assert (s.train, s.validation, s.test) == (valid - 24, 0, 24)  # the recipe's defaults
            await pilot.press("tab")  # from the tab bar into the first field
            assert screen.focused is screen.query_one("#split-eval_rows", Input)
            await pilot.press(*"10", "enter", *"5", "enter", *"7")  # a focused field is selected whole
            await pilot.pause()
            values = [screen.query_one(f"#split-{k}", Input).value for k in ("eval_rows", "val_rows", "seed")]
            assert values == ["10", "5", "7"]
            s = screen.split_result
            assert (s.train, s.validation, s.test) == (26, 5, 10) and s.train + s.validation + s.test == valid
            counts = text_of(screen.query_one("#split-counts", Static))
            assert "train 26 + val 5 + eval 10 = 41 of 41 valid rows" in counts
            await pilot.press("escape")  # leave the field: the screen's keys work again
            assert not isinstance(screen.focused, Input)
            screen.query_one("#split-eval_rows", Input).value = "40"
            await pilot.pause()
            assert "leaves no training rows" in text_of(screen.query_one("#split-counts", Static))
            await pilot.press("t")
            await pilot.pause()
            assert app.current_mode == "data" and getattr(app, "selected_data", None) is None

    run(scenario())


def test_train_takes_the_source_and_split_to_the_train_screen(tmp_path, settings, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_rows(tmp_path / "rows.jsonl", [r for r in ROWS if r is not None][:2], extra=30)
    tokenizer_folder(tmp_path / "tok")

    async def scenario() -> None:
        app = DataApp(settings, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await validate(pilot, "rows.jsonl", "tok")
            screen.query_one("#split-seed", Input).value = "3"
            await pilot.pause()
            await pilot.press("t")
            await pilot.pause()
            assert app.current_mode == "train"
            chosen = app.selected_data
            path = str((tmp_path / "rows.jsonl").resolve())
            assert chosen["source"] == path and chosen["task"] == "alpaca"
            assert (chosen["eval_rows"], chosen["val_rows"], chosen["seed"]) == (24, 0, 3)
            assert chosen["counts"] == {"train": 8, "validation": 0, "test": 24}
            assert chosen["max_seq_len"] == screen.data_view.report.tokens.recommended_max_seq_len
            assert chosen["model"] == "tok"
            assert chosen["overrides"][:5] == [f"data.path={path}", "data.format=alpaca", "data.eval_rows=24",
                                               "data.val_rows=0", "data.seed=3"]

    run(scenario())


def test_rejected_rows_keep_the_dataset_out_of_training(tmp_path, settings):
    data = write_rows(tmp_path / "rows.jsonl", ROWS, extra=30)

    async def scenario() -> None:
        app = DataApp(settings, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await validate(pilot, str(data), "")
            await pilot.press("t")
            await pilot.pause()
            assert app.current_mode == "data" and getattr(app, "selected_data", None) is None
            assert any("3 rows are rejected (first: line 3" in n.message for n in app._notifications)

    run(scenario())


def test_a_shipped_sample_from_the_list_and_the_format_key(settings):
    async def scenario() -> None:
        app = DataApp(settings, reattach=False)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            assert isinstance(screen, DataScreen)
            samples = screen.query_one("#samples", DataTable)
            assert [r[0] for r in table_rows(samples)] == list(SAMPLES)
            screen.query_one("#data-model", Input).value = ""  # no tokenizer: validation only
            assert screen.focused is samples
            await pilot.press("enter")
            await wait_until(pilot, lambda: screen.data_view is not None and screen.data_view.tokenized)
            assert screen.query_one("#data-source", Input).value == "ko-alpaca"
            assert screen.data_view.task == "alpaca" and screen.data_view.report.valid > 100
            assert text_of(screen.query_one("#data-format", Static)) == "format auto: alpaca"
            assert "no model: the chat template is not applied" in text_of(screen.query_one("#row-text", Static))
            await pilot.press("f")  # auto -> alpaca, and validated again as that
            await wait_until(pilot, lambda: screen.data_view.request.task == "alpaca" and screen.data_view.tokenized)
            assert text_of(screen.query_one("#data-format", Static)) == "format alpaca"
            await pilot.press("f")  # alpaca -> text2sql: these rows lack its fields
            await wait_until(pilot, lambda: screen.data_view.request.task == "text2sql" and screen.data_view.tokenized)
            assert screen.data_view.report.valid == 0
            assert "missing field 'question'" in table_rows(screen.query_one("#rejects", DataTable))[0][2]

    run(scenario())


def test_helpers_measure_display_width():
    cut = fit_cell("대한민국의 수도는 어디인가요? 한국어 질문", 12)
    assert cut.cell_len <= 12 and cut.plain.endswith("…")
    assert fit_cell("short", 12).plain == "short"
    assert bar(0, 10, 20) == "" and bar(10, 10, 20) == "█" * 20
    assert bar(1, 16, 4) == "▎"  # a quarter of a cell
    lines = histogram_lines([(10, 20, 4), (20, 30, 1)], 40)
    assert lines[0].split() == ["tokens", "rows"]
    assert all(len(line) <= 40 for line in lines) and lines[1].endswith(" 4") and lines[2].endswith(" 1")
    assert model_name("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert model_name("/models/tok-chatml") == "tok-chatml"
    assert model_name("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"


# -- snapshots: a fixed working folder and relative paths keep machine paths off screen

SNAPSHOT_ROWS = [
    {"instruction": "대한민국의 수도는 어디인가요?", "input": "", "output": "대한민국의 수도는 서울입니다."},
    {"instruction": "물은 몇 도에서 끓나요?", "input": "", "output": "섭씨 100도에서 끓습니다."},
    None,
    {"instruction": "대한민국의 수도는 어디인가요?", "input": "", "output": "대한민국의 수도는 서울입니다."},
    {"instruction": "what is the capital of france", "input": "", "output": "paris"},
    {"instruction": "'되'와 '돼'는 어떻게 구별하나요?", "input": "'안 돼요'", "output": "'되어'로 바꿔 자연스러우면 '돼'를 씁니다."},
]


@pytest.fixture
def snapshot_folder(tmp_path, monkeypatch) -> Path:
    write_rows(tmp_path / "ko-rows.jsonl", SNAPSHOT_ROWS, extra=12)
    tokenizer_folder(tmp_path / "tok-chatml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _snapshot_app(folder: Path) -> DataApp:
    return DataApp(Settings(home=folder / "home").ensure(), reattach=False)


def _before(pane: str):  # noqa: ANN202
    async def run_before(pilot) -> None:  # noqa: ANN001
        screen = await validate(pilot, "ko-rows.jsonl", "tok-chatml")
        if pane == "pane-split":
            screen.query_one("#split-eval_rows", Input).value = "4"
            screen.query_one("#split-val_rows", Input).value = "2"
        screen.show_pane(pane)
        await pilot.pause()

    return run_before


SNAPSHOTS = [((80, 24), "pane-preview"), ((80, 24), "pane-rejects"), ((80, 24), "pane-lengths"),
             ((160, 45), "pane-preview"), ((160, 45), "pane-split")]


@pytest.mark.parametrize("size,pane", SNAPSHOTS, ids=[f"{w}x{h}-{p[5:]}" for (w, h), p in SNAPSHOTS])
def test_snapshot(snap_compare, snapshot_folder, size, pane):
    assert snap_compare(_snapshot_app(snapshot_folder), terminal_size=size, run_before=_before(pane))


def test_every_glyph_is_in_cascadia_mono(snapshot_folder):
    """What the screen draws (Hangul of the rows aside) stays in the ranges Cascadia Mono has."""
    safe = [(0x20, 0x7E), (0xA0, 0xFF), (0x2190, 0x2193), (0x2022, 0x2022), (0x2026, 0x2026),
            (0x2500, 0x259F), (0xAC00, 0xD7A3), (0x3131, 0x318E), (0x1100, 0x11FF)]

    async def scenario() -> None:
        app = _snapshot_app(snapshot_folder)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await validate(pilot, "ko-rows.jsonl", "tok-chatml")
            seen: set[str] = set()
            for pane in ("pane-source", "pane-preview", "pane-rejects", "pane-lengths", "pane-split"):
                screen.show_pane(pane)
                await pilot.pause()
                seen |= {ch for strip in screen._compositor.render_strips() for ch in strip.text}
            bad = sorted(ch for ch in seen if not any(a <= ord(ch) <= b for a, b in safe))
            assert not bad, [f"U+{ord(c):04X}" for c in bad]

    run(scenario())
