"""Procedures on a trained model: reflow (k-rectified flows) and one-step distillation.

They train new models through :func:`pushforward.train.fit`, so this folder sits
above ``train/``; the models they produce are plain registered models.
"""

from __future__ import annotations

from pushforward.recipes.distill import DistillationResult, distill, student_for
from pushforward.recipes.pairs import (
    PairRegression,
    fit_pairs,
    pack_pairs,
    reflow_pairs,
    unpack_pairs,
)
from pushforward.recipes.reflow import ReflowResult, rectified_model, reflow

__all__ = [
    "DistillationResult",
    "PairRegression",
    "ReflowResult",
    "distill",
    "fit_pairs",
    "pack_pairs",
    "rectified_model",
    "reflow",
    "reflow_pairs",
    "student_for",
    "unpack_pairs",
]
