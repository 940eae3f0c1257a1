"""The pipeline layer, between the UIs (``tui``) and the stages (finetune, export, serve, evals).

``run_pipeline(recipe, settings)`` chains the stages' public functions. It owns run identity, the stage
markers (each stage's typed result, stored under the key of that stage's own inputs) and the error events;
the stages know nothing of it, and it holds no stage logic.
"""

from __future__ import annotations

from pipeline.run import (
    STAGE_ORDER, ExportedModels, PipelineResult, PublishedModels, StageFailed, run_id_for, run_pipeline, tuned_name,
    vanilla_name,
)

__all__ = ["STAGE_ORDER", "ExportedModels", "PipelineResult", "PublishedModels", "StageFailed", "run_id_for",
           "run_pipeline", "tuned_name", "vanilla_name"]
