"""Procedures on a trained model: reflow (k-rectified flows) and one-step distillation.

They train new models through :func:`pushforward.train.fit`, so this folder sits
above ``train/``; the models they produce are plain registered models.
:func:`reflow_run` and :func:`distill_run` do the same into a run directory, as
``pushforward reflow`` and ``pushforward distill`` do.
"""

from __future__ import annotations

from pushforward.recipes.distill import DistillationResult, distill, student_for
from pushforward.recipes.pairs import fit_pairs, reflow_pairs
from pushforward.recipes.reflow import ReflowResult, rectified_model, reflow
from pushforward.recipes.run import distill_run, pair_run, reflow_run

__all__ = [
    "DistillationResult",
    "ReflowResult",
    "distill",
    "distill_run",
    "fit_pairs",
    "pair_run",
    "rectified_model",
    "reflow",
    "reflow_pairs",
    "reflow_run",
    "student_for",
]
