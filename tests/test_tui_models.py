"""The Models screen, driven through Textual's Pilot: against the embedded runtime serving the real SmolLM2 GGUF
(list, Modelfile and parity, a streaming chat and stopping one), against a host nobody listens on (the message
and its next step, store-only models, starting the embedded runtime from the screen), and snapshots at 80x24
and 160x45 with fixed content."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import update

from tests.conftest import free_port
from tests.test_serve_runtime import create_smol
from tests import tui_helpers
from tests.tui_helpers import _cell_text, settle, wait_until
from tui.app import OllatuneApp
from tui.screens.models import ChatLog, ModelsScreen, ModelsTable
from workspace.settings import Settings
from workspace.store import RegisteredModel, open_store, session_scope

SMOL = "ollatune-test/smol:latest"
FIXED_HOST = "http://127.0.0.1:9"  # nobody listens on the discard port
workspace = tui_helpers.workspace  # the TUI workspace fixture (one evaluated run in the store)


@pytest.fixture(scope="module")
def smol_runtime(tmp_path_factory):
    """The embedded runtime with SmolLM2-135M registered, shared by this module's tests."""
    import ollama

    from serve.runtime import EmbeddedRuntime

    with EmbeddedRuntime(store_dir=tmp_path_factory.mktemp("models-store")) as rt:
        assert create_smol(ollama.Client(host=rt.url))[-1] == "success"
        yield rt


def _settings_for(tmp_path, host: str) -> Settings:
    settings = Settings(home=tmp_path / "home", ollama_host=host).ensure()
    with session_scope(open_store(settings.db_path)) as s:
        s.add(RegisteredModel(name=SMOL, host=host, digest="sha256:" + "0" * 64, role="tuned",
                              template_family="chatml"))
    return settings


async def _open(app: OllatuneApp, pilot, screen: ModelsScreen) -> ModelsScreen:  # noqa: ANN001
    await app.push_screen(screen)
    await wait_until(pilot, lambda: screen.state is not None and (screen.details is not None or not screen.rows))
    await wait_until(pilot, lambda: all(w.is_finished for w in app.workers))
    await pilot.pause()
    return screen


def _text(screen: ModelsScreen, selector: str) -> str:
    return str(screen.query_one(selector).content)


@pytest.mark.slow
def test_lists_the_registered_model_with_its_host_modelfile_and_parity(tmp_path, smol_runtime):
    settings = _settings_for(tmp_path, smol_runtime.url)

    async def scenario() -> None:
        app = OllatuneApp(settings)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await _open(app, pilot, ModelsScreen())
            assert f"embedded runtime at {smol_runtime.url}" in _text(screen, "#models-source")
            table = screen.query_one(ModelsTable)
            assert SMOL in [row.key.value for row in table.ordered_rows]
            assert _cell_text(table.get_cell(SMOL, "status")) == "here"
            assert _cell_text(table.get_cell(SMOL, "family")) == "llama"
            assert _cell_text(table.get_cell(SMOL, "quant")) == "Q4_1"
            assert _cell_text(table.get_cell(SMOL, "role")) == "tuned"  # from the store's row
            assert _cell_text(table.get_cell(SMOL, "size")).endswith("MiB")
            await wait_until(pilot, lambda: screen.details is not None and screen.details.name == SMOL)
            await pilot.press("m")
            await pilot.pause()
            assert screen.query_one("TabbedContent").active == "modelfile"
            modelfile = _text(screen, "#modelfile-text")
            assert "TEMPLATE" in modelfile and "<|im_start|>" in modelfile
            assert 'PARAMETER stop "<|im_end|>"' in modelfile
            summary = _text(screen, "#modelfile-summary")
            assert '"<|im_end|>"' in summary.split("stops", 1)[1].splitlines()[0]
            assert "parity holds" in summary and "6 sample conversations" in summary

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_chat_message_streams_an_answer_and_esc_stops_one(tmp_path, smol_runtime):
    settings = _settings_for(tmp_path, smol_runtime.url)

    async def scenario() -> None:
        app = OllatuneApp(settings)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _open(app, pilot, ModelsScreen({"temperature": 0, "seed": 42, "num_predict": 12}))
            await pilot.press("c")
            await pilot.pause()
            assert screen.query_one("#chat-input").has_focus
            assert f"chat with {SMOL}" in _text(screen, "#chat-title")
            await pilot.press(*"Name a fruit.")
            await pilot.press("enter")
            assert screen.streaming == SMOL
            await wait_until(pilot, lambda: screen.streaming is None, timeout=120)
            history = screen.sessions[SMOL].history
            assert [m["role"] for m in history] == ["user", "assistant"]
            answer = history[1]["content"]
            assert answer.strip() and screen.chunks > 1
            assert answer in screen.query_one(ChatLog).transcript
            # a second answer is stopped after its first piece: the exchange is not kept
            screen.chat_options["num_predict"] = 64
            screen.sessions[SMOL].options["num_predict"] = 64
            await pilot.press(*"Count to twenty.")
            await pilot.press("enter")
            await wait_until(pilot, lambda: screen.chunks >= 1, timeout=120)
            await pilot.press("escape")
            assert screen.streaming is None
            assert "(stopped" in screen.query_one(ChatLog).transcript
            assert len(screen.sessions[SMOL].history) == 2
            # esc with nothing streaming leaves the input for the list; ctrl+l clears the conversation
            await pilot.press("escape")
            assert screen.query_one("TabbedContent").active == "list"
            await pilot.press("c", "ctrl+l")
            assert SMOL not in screen.sessions
            assert answer not in screen.query_one(ChatLog).transcript
            await settle(app)

    asyncio.run(scenario())


def test_an_unreachable_host_shows_the_next_step_and_the_store_models(workspace):
    async def scenario() -> None:
        app = OllatuneApp(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            started = time.monotonic()
            screen = await _open(app, pilot, ModelsScreen())
            assert time.monotonic() - started < 30  # a closed port answers at once; no read waits out a timeout
            assert app.screen is screen
            source = _text(screen, "#models-source")
            assert f"no Ollama answers at {workspace.ollama_host}" in source and "ollatune serve" in source
            table = screen.query_one(ModelsTable)
            assert {row.key.value for row in table.ordered_rows} == {"ollatune/demo-ko:latest",
                                                                      "ollatune/demo-ko-vanilla:latest"}
            assert _cell_text(table.get_cell("ollatune/demo-ko:latest", "status")) == "store only"
            assert _cell_text(table.get_cell("ollatune/demo-ko:latest", "run")) == "demo-ko-20260101-abc123"
            assert "not registered at" in _text(screen, "#modelfile-summary")
            # a message to a model nobody serves is refused with the next step, not sent
            await pilot.press("c", *"hi", "enter")
            assert screen.streaming is None and screen.sessions == {}
            assert any("ollatune serve" in str(n.message) for n in app._notifications)
            assert screen.check_action("start_runtime", ()) is True

    asyncio.run(scenario())


@pytest.mark.slow
def test_s_starts_the_embedded_runtime_as_a_child_that_stops_with_the_tui(tmp_path):
    settings = Settings(home=tmp_path / "home", ollama_host=f"http://127.0.0.1:{free_port()}").ensure()

    async def scenario() -> ModelsScreen:
        app = OllatuneApp(settings)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _open(app, pilot, ModelsScreen())
            assert screen.state.kind == "none"
            await pilot.press("s")
            assert screen.check_action("start_runtime", ()) is False  # not twice
            await wait_until(pilot, lambda: screen.state.kind == "embedded", timeout=90)
            assert f"embedded runtime at {settings.ollama_host}" in _text(screen, "#models-source")
            assert "(started here)" in _text(screen, "#models-source")
            assert screen.runtime is not None and screen.runtime.running
            return screen

    screen = asyncio.run(scenario())
    assert screen.runtime.proc.poll() is not None  # the TUI's exit stopped it


# ------------------------------------------------------------------------------------------- snapshots


@pytest.fixture
def fixed_workspace(workspace, monkeypatch):
    """The TUI workspace with a host nobody answers at and registration times that never change."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    with session_scope(open_store(workspace.db_path)) as s:
        s.execute(update(RegisteredModel).values(created_at=datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)))
    yield workspace.model_copy(update={"ollama_host": FIXED_HOST})
    monkeypatch.delenv("TZ")
    time.tzset()


def _snapshot_run(tab: str | None = None):  # noqa: ANN202
    async def run_before(pilot) -> None:  # noqa: ANN001
        screen = await _open(pilot.app, pilot, ModelsScreen())
        await wait_until(pilot, lambda: screen.details is not None)
        if tab:
            await pilot.press(tab)
        # the footer is recomposed after each change of bindings: wait for it to be whole again
        await wait_until(pilot, lambda: all(w.is_finished for w in pilot.app.workers)
                         and len(pilot.app.screen.query("FooterKey")) >= 5)
        await pilot.pause(0.2)

    return run_before


def test_snapshot_list_80x24(fixed_workspace, snap_compare):
    assert snap_compare(OllatuneApp(fixed_workspace), terminal_size=(80, 24), run_before=_snapshot_run())


def test_snapshot_modelfile_80x24(fixed_workspace, snap_compare):
    assert snap_compare(OllatuneApp(fixed_workspace), terminal_size=(80, 24), run_before=_snapshot_run("m"))


def test_snapshot_list_160x45(fixed_workspace, snap_compare):
    assert snap_compare(OllatuneApp(fixed_workspace), terminal_size=(160, 45), run_before=_snapshot_run())
