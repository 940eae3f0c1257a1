"""Token lengths of the training rows against ``data.max_seq_len``, checked before any training starts.

A row longer than ``max_seq_len`` is cut from the right: its answer loses its end (and the end-of-turn token
the model should learn to emit), or, when the prompt alone fills the window, every answer token - such a row
trains nothing. Left alone, a dataset of long rows (KorQuAD contexts against a 448-token window) trains zero
steps and the failure only shows at export. So the rows are measured under the model's chat template first:
none trainable is refused, many cut is a warning with the length that would fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from finetune.troubleshoot import TrainingProblem

WARN_SHARE = 0.10  # warn when more than this share of the rows is cut or dropped


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a tokenizer without a chat template the Korean Alpaca-style prompt; True when it had none (its
    answers then need EOS appended, that prompt having no end-of-turn token of its own)."""
    if tokenizer.chat_template:
        return False
    from workspace.chat_families import template_for_family

    tokenizer.chat_template = template_for_family("alpaca-ko").jinja_template
    return True


@dataclass
class LengthReport:
    rows: int
    max_seq_len: int
    truncated: int = 0  # the answer is cut: its end (and end-of-turn token) is not trained
    dropped: int = 0  # the prompt alone fills max_seq_len: no answer token is trained
    longest: int = 0  # tokens of the longest row (prompt + answer)
    p95: int = 0
    longest_prompt: int = 0
    keep: list[bool] = field(default_factory=list, repr=False)  # per row: some answer token survives
    lengths: list[int] = field(default_factory=list, repr=False)  # per row: tokens trained (after the cut)

    @property
    def trainable(self) -> int:
        return self.rows - self.dropped

    def fitting_len(self) -> int:
        """A max_seq_len that holds 95% of the rows whole (rounded up to 64)."""
        return max(64, int(math.ceil(self.p95 / 64.0)) * 64)

    def summary(self) -> str:
        return (f"{self.rows} rows, max_seq_len={self.max_seq_len}: {self.truncated} cut (answer loses its end), "
                f"{self.dropped} dropped (no answer token left); longest {self.longest} tokens, p95 {self.p95}")


def measure(tokenizer: Any, rows: list[dict], max_seq_len: int, eos_appended: bool = False) -> LengthReport:
    """Prompt and full lengths of prompt/completion rows under the tokenizer's chat template."""
    report = LengthReport(rows=len(rows), max_seq_len=max_seq_len)
    full_lengths: list[int] = []
    for r in rows:
        prompt = len(tokenizer.apply_chat_template(r["prompt"], tokenize=True, add_generation_prompt=True,
                                                   return_dict=False))
        full = len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True,
                                                 return_dict=False)) + (1 if eos_appended else 0)
        full_lengths.append(full)
        report.longest_prompt = max(report.longest_prompt, prompt)
        if prompt >= max_seq_len:
            report.dropped += 1
            report.keep.append(False)
        else:
            report.keep.append(True)
            if full > max_seq_len:
                report.truncated += 1
        report.lengths.append(min(full, max_seq_len))
    if full_lengths:
        ordered = sorted(full_lengths)
        report.longest = ordered[-1]
        report.p95 = ordered[min(len(ordered) - 1, int(math.ceil(0.95 * len(ordered))) - 1)]
    return report


def check(report: LengthReport, warn: Any = None) -> None:
    """Refuse a run that would train nothing; ``warn(message)`` when many rows are cut or dropped."""
    if report.rows == 0:
        raise TrainingProblem("there are no training rows", "check data.path and data.eval_rows/data.val_rows")
    if report.trainable == 0:
        raise TrainingProblem(
            f"every one of the {report.rows} training rows is at least data.max_seq_len={report.max_seq_len} "
            f"tokens before its answer starts (the longest prompt is {report.longest_prompt} tokens): "
            "nothing would be trained",
            f"set data.max_seq_len={report.fitting_len()} (95% of the rows fit whole; the longest is "
            f"{report.longest} tokens), or shorten the prompts (contexts, DDL)")
    cut = report.truncated + report.dropped
    if warn is not None and cut > WARN_SHARE * report.rows:
        warn(f"{cut} of {report.rows} training rows are longer than data.max_seq_len={report.max_seq_len}: "
             f"{report.truncated} lose the end of their answer (the model does not learn to stop there), "
             f"{report.dropped} are dropped; data.max_seq_len={report.fitting_len()} would hold 95% of them whole")
