"""`ollatune doctor` on machines that lack a stage's package: it says which stages cannot run, and exits 1
only for what blocks every run. Packages are hidden from a fresh interpreter by an import blocker."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

DOCTOR_WITHOUT = """
import sys
class Hide:
    def __init__(self, names):
        self.names = set(names)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Hide(sys.argv[1].split(",")))
sys.argv = ["ollatune", "doctor"]
from tui.cli import main
main()
"""


def _doctor(hidden: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DOCTOR_WITHOUT, hidden], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})


def _line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line[3:].startswith(name))


def test_a_gpu_box_without_llama_cpp_can_still_train():
    proc = _doctor("llama_cpp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert _line(out, "stage finetune").startswith("ok")
    export, serve = _line(out, "stage export"), _line(out, "stage serve")
    assert export.startswith("--") and "unavailable" in export and "llama-cpp-python" in export
    assert serve.startswith("--") and "unavailable" in serve
    assert _line(out, "llama-cpp-python").startswith("--")
    assert "!!" not in out


def test_without_torch_nothing_can_train_and_doctor_fails():
    proc = _doctor("torch")
    assert proc.returncode == 1
    finetune = _line(proc.stdout, "stage finetune")
    assert finetune.startswith("!!") and "torch" in finetune
    assert _line(proc.stdout, "stage data").startswith("ok")


def test_a_complete_install_has_every_stage():
    proc = _doctor("nothing-hidden")
    assert proc.returncode == 0, proc.stdout
    for stage in ("data", "finetune", "export", "serve", "evals"):
        assert _line(proc.stdout, f"stage {stage}").startswith("ok"), stage
