"""Every dependency rule of the layout, in one place.

Static rules read every import statement of every module (those inside functions too), so a lazy import
cannot slip past them; import-time rules run in fresh interpreters (as Harlequin's import test does).

    tui  ->  pipeline  ->  finetune | export | serve | evals  ->  workspace
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

STAGES = ("finetune", "export", "serve", "evals")
HEAVY = {"torch", "transformers", "unsloth", "llama_cpp", "peft", "trl"}

# package -> top-level names it must never import
FORBIDDEN = {
    **{stage: {"textual", "tui", "pipeline", *(s for s in STAGES if s != stage)} for stage in STAGES},
    "workspace": {"textual", "tui", "pipeline", *STAGES},
    "pipeline": {"textual", "tui"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downwards(package):
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, name in _imports(path):
            if name.split(".")[0] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_unsloth_is_imported_only_inside_the_training_process():
    allowed = {"finetune/worker.py", "finetune/backends/unsloth.py"}
    users = {str(p.relative_to(REPO)) for pkg in [*STAGES, "workspace", "pipeline", "tui"]
             for p in (REPO / pkg).rglob("*.py") if any(n.split(".")[0] == "unsloth" for _, n in _imports(p))}
    assert users <= allowed, sorted(users - allowed)


def _modules_after(code: str) -> set[str]:
    script = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_importing_every_core_module_loads_no_ui_and_no_unsloth():
    code = (
        "import pkgutil, importlib\n"
        "for package in ('workspace', 'finetune', 'export', 'serve', 'evals', 'pipeline'):\n"
        "    top = importlib.import_module(package)\n"
        "    for m in pkgutil.walk_packages(top.__path__, package + '.'):\n"
        "        if '.migrations' not in m.name:\n"
        "            importlib.import_module(m.name)\n"
    )
    mods = _modules_after(code)
    assert "pipeline.run" in mods and "serve.runtime" in mods  # the walk really imported them
    assert not {m for m in mods if m.split(".")[0] in {"textual", "tui", "unsloth"}}


def test_help_imports_no_heavy_library():
    code = (
        "import sys\nsys.argv = ['ollatune', '--help']\n"
        "from tui.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
    )
    mods = _modules_after(code)
    assert not mods & HEAVY, sorted(mods & HEAVY)


def test_help_lists_only_working_verbs():
    proc = subprocess.run([sys.executable, "-m", "tui.cli", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    for verb in ("pipeline", "doctor", "serve", "run", "list", "report", "tui", "data"):
        assert verb in proc.stdout
    assert "not implemented" not in proc.stdout.lower()


def test_the_tui_app_starts_without_the_job_libraries():
    modules = _modules_after("import tui.app")
    assert "tui.app" in modules and "textual" in modules  # the check ran against the real module
    heavy = HEAVY | {"langchain_core", "finetune.training", "pipeline.run"}
    assert not modules & heavy, sorted(modules & heavy)


def test_evaluating_loads_no_ui_and_no_torch():
    code = (
        "import evals\n"
        "import evals.metrics, evals.cleaning, evals.suites, evals.chains, evals.runner, evals.report\n"
        "evals.metrics.score('서울입니다', '서울', ['rouge_l', 'bleu', 'char_f1'], 'kiwi')\n"
    )
    mods = _modules_after(code)
    assert not {m for m in mods if m.split(".")[0] in {"textual", "tui", "torch", "transformers", "unsloth",
                                                        "llama_cpp", "finetune"}}


def test_import_evals_is_cheap():
    mods = _modules_after("import evals")
    assert not mods & {"langchain_core", "kiwipiepy", "rouge_score", "sacrebleu", "sqlalchemy"}
