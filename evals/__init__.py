"""Evaluation: suites, LangChain chains (prompt | ChatOllama | parser), Korean-aware metrics, the runner
that stores predictions and scores in the SQLite store, and vanilla-vs-tuned comparisons.

The public entry point is :func:`evals.run`. Names are imported on first use, so ``import evals`` stays
cheap (LangChain, kiwipiepy, rouge-score and sacrebleu load only when needed). Never imports textual,
tui or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workspace.lazy import lazy_exports

if TYPE_CHECKING:
    from evals.cleaning import clean
    from evals.metrics import METRICS, score
    from evals.report import Comparison, check_threshold, compare, compare_refs, to_html, to_json, to_markdown
    from evals.judging import grade_run, judge_pairwise, judge_refusals
    from evals.runner import EvalConnectionError, EvalModelError, EvalResult, ModelUnderTest, run, score_predictions
    from evals.suites import Example, Suite, SuiteError, load_examples, load_suite, suite_for_task, suite_hash

_EXPORTS = {
    "run": "evals.runner",
    "ModelUnderTest": "evals.runner",
    "EvalResult": "evals.runner",
    "EvalConnectionError": "evals.runner",
    "EvalModelError": "evals.runner",
    "Suite": "evals.suites",
    "SuiteError": "evals.suites",
    "Example": "evals.suites",
    "load_suite": "evals.suites",
    "load_examples": "evals.suites",
    "suite_hash": "evals.suites",
    "suite_for_task": "evals.suites",
    "compare": "evals.report",
    "Comparison": "evals.report",
    "to_markdown": "evals.report",
    "to_html": "evals.report",
    "to_json": "evals.report",
    "compare_refs": "evals.report",
    "check_threshold": "evals.report",
    "score_predictions": "evals.runner",
    "judge_pairwise": "evals.judging",
    "grade_run": "evals.judging",
    "judge_refusals": "evals.judging",
    "clean": "evals.cleaning",
    "score": "evals.metrics",
    "METRICS": "evals.metrics",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
