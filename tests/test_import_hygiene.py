"""Dependency rules of the layout, checked in fresh interpreters (as Harlequin does)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ["torch", "transformers", "unsloth", "llama_cpp", "peft", "trl"]


def _modules_after(code: str) -> set[str]:
    script = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("package", ["finetune", "export", "serve", "evals", "workspace"])
def test_core_packages_never_import_textual_or_tui(package):
    code = (
        f"import pkgutil, importlib, {package}\n"
        f"for m in pkgutil.walk_packages({package}.__path__, '{package}.'):\n"
        f"    if '.migrations' in m.name: continue\n"
        f"    importlib.import_module(m.name)\n"
    )
    mods = _modules_after(code)
    assert not {m for m in mods if m == "textual" or m.startswith("textual.")}
    assert not {m for m in mods if m == "tui" or m.startswith("tui.")}


def test_help_imports_no_heavy_library():
    code = (
        "import sys\nsys.argv = ['ollatune', '--help']\n"
        "from tui.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
    )
    mods = _modules_after(code)
    assert not mods & set(HEAVY), sorted(mods & set(HEAVY))


def test_help_lists_only_working_verbs():
    proc = subprocess.run([sys.executable, "-m", "tui.cli", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    for verb in ("pipeline", "doctor", "serve", "run", "list", "report", "tui", "data"):
        assert verb in proc.stdout
    assert "not implemented" not in proc.stdout.lower()
