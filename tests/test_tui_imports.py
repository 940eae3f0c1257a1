"""The TUI starts without the heavy libraries: they belong to the job processes it starts."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

HEAVY = {"torch", "transformers", "unsloth", "llama_cpp", "peft", "trl", "langchain_core", "finetune.train"}


def test_import_tui_app_loads_no_heavy_library():
    script = "import tui.app, sys, json\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "tui.app" in modules and "textual" in modules  # the check ran against the real module
    assert not modules & HEAVY, sorted(modules & HEAVY)
