"""evals never imports textual, tui or torch (checked in a fresh interpreter, as Harlequin does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE = """
import sys
import evals
import evals.metrics, evals.cleaning, evals.suites, evals.chains, evals.runner, evals.report
from evals import run, compare, load_suite, ModelUnderTest, EvalResult, to_markdown
evals.metrics.score("서울입니다", "서울", ["rouge_l", "bleu", "char_f1"], "kiwi")
bad = sorted(m for m in sys.modules if m.split(".")[0] in {"textual", "tui", "torch", "transformers", "unsloth", "llama_cpp"})
print(",".join(bad))
"""


def test_evals_imports_no_ui_and_no_torch():
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"evals pulled in: {out.stdout.strip()}"


def test_import_evals_is_cheap():
    code = "import sys, evals; print(','.join(m for m in ('langchain_core', 'kiwipiepy', 'rouge_score', 'sacrebleu', 'sqlalchemy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
