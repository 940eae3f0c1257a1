"""Every screen of the TUI at 80x24 and 160x45: only glyphs Windows Terminal's default font has, the
navigation line whole, a help text, and a palette command for each action it shows; the live view, the
help and the quit question as snapshots; the light theme."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from rich.text import Text

from tests.tui_helpers import settle, screen_text, wait_until, workspace  # noqa: F401 - workspace is a fixture
from tui.app import HelpScreen, OllatuneApp, QuitScreen
from tui.glyphs import unsafe_chars
from tui.screens.base import NAV_ITEMS
from tui.screens.home import HomeScreen
from tui.screens.run import RunScreen

FACTS = [("python", "ok", "3.11"), ("torch", "ok", "2.13.0 (CPU build)"),
         ("gpu", "--", "no CUDA GPU: training uses the hf backend (LoRA on CPU)"),
         ("ollama", "--", "no daemon answers; the embedded runtime is started when needed")]


@pytest.fixture
def fixed_facts(monkeypatch):
    def probe(settings):  # noqa: ANN001, ANN202
        yield from FACTS

    monkeypatch.setattr(HomeScreen, "PROBE", staticmethod(probe))


def _app(settings, **kw) -> OllatuneApp:  # noqa: ANN001
    return OllatuneApp(settings.model_copy(update={"ollama_host": "http://127.0.0.1:9"}), reattach=False, **kw)


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
def test_every_screen_is_whole_safe_and_explained(workspace, fixed_facts, size):
    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=size) as pilot:
            for mode, key, label in NAV_ITEMS:
                await pilot.press(key) if mode != "home" else None
                await wait_until(pilot, lambda: app.current_mode == mode and app.screen.is_mounted)
                await settle(app)
                await pilot.pause()
                screen = app.screen
                text = screen_text(app)
                assert not unsafe_chars(text), (mode, unsafe_chars(text))
                nav = text.splitlines()[0]
                assert "1 Home" in nav and "7 History" in nav and "no job" in nav, (mode, nav)
                assert "Help" in text.splitlines()[-1] or "?" in text.splitlines()[-1], (mode, text.splitlines()[-1])
                # the palette offers every action the footer shows, and the screens
                titles = {c.title for c in app.get_system_commands(screen)}
                shown = {b.binding.description for b in screen.active_bindings.values()
                         if b.binding.show and b.binding.description}
                assert shown <= titles, (mode, shown - titles)
                assert {f"Go to {lab}" for _, _, lab in NAV_ITEMS} <= titles
                # help: the screen's own text and its keys
                await pilot.press("f1")
                await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
                await pilot.pause()
                help_text = Text.from_markup(str(app.screen.query_one("#help-text").content)).plain
                assert label in help_text and "Keys on this screen" in help_text
                assert Text.from_markup(screen.HELP).plain.split()[0] in help_text, mode
                for description in shown:
                    assert description in help_text, (mode, description)
                assert not unsafe_chars(help_text) and not unsafe_chars(screen_text(app))
                await pilot.press("escape")
                await wait_until(pilot, lambda: app.screen is screen)

    asyncio.run(scenario())


def test_the_command_palette_lists_the_screens_and_draws_no_emoji(workspace, fixed_facts):
    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app)
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"go to")
            await pilot.pause(0.5)
            text = screen_text(app)
            assert "Go to Train" in text or "Go to Data" in text
            assert not unsafe_chars(text), unsafe_chars(text)

    asyncio.run(scenario())


def test_light_and_dark_themes(workspace, fixed_facts):
    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            dark = app.current_theme.dark
            await pilot.press("ctrl+t")
            await pilot.pause()
            assert app.current_theme.dark is not dark
            await pilot.press("ctrl+t")
            await pilot.pause()
            assert app.current_theme.dark is dark

    asyncio.run(scenario())


# Snapshots of the live view, the help and the quit question (the other screens have theirs in their own
# test files). The run is read from a log written here, so nothing depends on a clock or a path.

LIVE_RUN = "demo-ko-snapshot"


def _live_log(settings) -> None:  # noqa: ANN001
    run_dir = settings.runs_dir / LIVE_RUN
    run_dir.mkdir(parents=True)
    events = [{"stage": "pipeline", "type": "start", "recipe": "demo-ko"},
              {"stage": "finetune", "type": "start", "base": "smollm2-135m-instruct", "backend": "hf"}]
    for step in range(1, 13):
        loss = 2.4 * 0.88 ** step
        events.append({"stage": "finetune", "type": "progress", "done": step, "total": 24, "unit": "steps",
                       "eta_s": 3.0 * (24 - step)})
        metric = {"stage": "finetune", "type": "metric", "step": step, "total_steps": 24, "loss": round(loss, 4),
                  "lr": 0.002, "tokens_per_s": 812.5}
        if step % 4 == 0:
            metric["eval_loss"] = round(loss * 1.1, 4)
        events.append(metric)
    events.append({"stage": "finetune", "type": "log", "level": "warning",
                   "message": "3 of 200 rows are longer than data.max_seq_len=448: they are cut"})
    (run_dir / "events.jsonl").write_text("".join(json.dumps({"ts": 1.0, "run": LIVE_RUN, **e}) + "\n"
                                                  for e in events), encoding="utf-8")


def _open_live(settings, theme: str | None = None):  # noqa: ANN001, ANN202
    async def run_before(pilot) -> None:  # noqa: ANN001
        app = pilot.app
        if theme:
            app.theme = theme
        await app.push_screen(RunScreen(LIVE_RUN, settings.runs_dir / LIVE_RUN))
        await wait_until(pilot, lambda: len(app.screen.query_one("LossPlot").losses) == 12)
        await pilot.pause(0.4)  # the plot's deferred redraw
        await settle(app)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
def test_snapshot_live_view(workspace, fixed_facts, snap_compare, size):
    _live_log(workspace)
    assert snap_compare(_app(workspace), terminal_size=size, run_before=_open_live(workspace))


def test_snapshot_live_view_light(workspace, fixed_facts, snap_compare):
    _live_log(workspace)
    assert snap_compare(_app(workspace), terminal_size=(80, 24), run_before=_open_live(workspace, "textual-light"))


def test_snapshot_help(workspace, fixed_facts, snap_compare):
    _live_log(workspace)
    live = _open_live(workspace)

    async def run_before(pilot) -> None:  # noqa: ANN001
        await live(pilot)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))
        await pilot.pause()

    assert snap_compare(_app(workspace), terminal_size=(80, 24), run_before=run_before)


HANGS = "import time\ntime.sleep(120)\n"


def test_snapshot_quit_question(workspace, fixed_facts, snap_compare, tmp_path):
    script = tmp_path / "hangs.py"
    script.write_text(HANGS, encoding="utf-8")
    app = _app(workspace, job_command=[sys.executable, str(script)])
    _live_log(workspace)
    live = _open_live(workspace)

    async def run_before(pilot) -> None:  # noqa: ANN001
        await live(pilot)  # behind the question: the live view (Home shows the store's clock times)
        job = app.start_job("demo-ko", ["pipeline", "demo-ko"], view=False)
        await wait_until(pilot, lambda: job.running and job.pid is not None)
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
    finally:
        if app.job is not None and app.job.process is not None:
            app.job.process.kill()


def test_the_mouse_switches_screens_from_the_top_line(workspace, fixed_facts):
    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app)
            nav = screen_text(app).splitlines()[0]
            for label, mode in (("3 Train", "train"), ("7 History", "history"), ("1 Home", "home")):
                assert await pilot.click("#nav-tabs", offset=(nav.index(label) + 2, 0))
                await wait_until(pilot, lambda: app.current_mode == mode)

    asyncio.run(scenario())


def test_a_model_registered_again_is_one_row_and_home_still_opens(workspace, fixed_facts):
    """Training a recipe again registers its name again with a new digest: one model, the newest."""
    from workspace.store import RegisteredModel, open_store, session_scope

    with session_scope(open_store(workspace.db_path)) as s:
        s.add(RegisteredModel(name="ollatune/demo-ko", host="embedded", digest="sha256:" + "3" * 64, role="tuned",
                              template_family="chatml"))

    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app)
            await pilot.pause()
            table = app.screen.query_one("#home-models")
            names = [table.get_row_at(i)[0] for i in range(table.row_count)]
            assert sorted(str(n) for n in names) == ["ollatune/demo-ko", "ollatune/demo-ko-vanilla"]
            assert app.is_running

    asyncio.run(scenario())


def test_the_data_screens_split_settings_without_a_form_row_reach_the_train_form(workspace, fixed_facts):
    async def scenario() -> None:
        app = _app(workspace)
        async with app.run_test(size=(120, 40)) as pilot:
            app.selected_data = {"source": "ko-alpaca", "task": "alpaca", "eval_rows": 12,
                                 "overrides": ["data.path=ko-alpaca", "data.eval_rows=12", "data.val_rows=7",
                                               "data.seed=11"]}
            await pilot.press("3")
            await wait_until(pilot, lambda: app.current_mode == "train")
            await settle(app)
            await wait_until(pilot, lambda: app.screen.recipe is not None)
            await pilot.pause()
            screen = app.screen
            assert screen.query_one("#f-extra").value == "data.val_rows=7 data.seed=11"
            args = screen.job_args()
            assert "data.val_rows=7" in args and "data.seed=11" in args and "data.eval_rows=12" in args

    asyncio.run(scenario())
