"""Checks of what crosses the protocol boundary, in the user's words: contexts here.

Every model's public methods check their inputs before any work; the checks that
do not depend on what the model is live here, so model kinds with other data
(vectors, tokens) share them. Imports only torch.
"""

from __future__ import annotations

import torch
from torch import Tensor


def checked_context(
    context: Tensor | None, wanted: int, batch: int, reference: Tensor | None = None
) -> Tensor | None:
    """Checks a context for a model of ``wanted`` context features and ``batch`` rows.

    One row (or a 1-D vector) is expanded to ``batch`` rows. With ``reference`` (a
    parameter of the model), the context's dtype must be the model's.

    Returns:
        ``(batch, wanted)``, or ``None`` for an unconditional model.
    """
    if wanted == 0:
        if context is not None:
            raise ValueError("this model is unconditional (context=0) but a context was given")
        return None
    if context is None:
        raise ValueError(f"this model is conditional on {wanted} context features; pass context")
    if not isinstance(context, Tensor):
        raise TypeError(f"expected context as a torch.Tensor, got {type(context).__name__}")
    if not context.is_floating_point():
        raise TypeError(f"context must be a floating-point tensor, got dtype {context.dtype}")
    if context.ndim == 1:
        context = context.unsqueeze(0)
    if context.ndim != 2:
        raise ValueError(
            f"context has shape {tuple(context.shape)}, expected (batch, {wanted}) or ({wanted},)"
        )
    if context.shape[1] != wanted:
        raise ValueError(
            f"context has {context.shape[1]} features, the model was built for {wanted}"
        )
    if context.shape[0] == 1 and batch != 1:
        context = context.expand(batch, wanted)
    elif context.shape[0] != batch:
        raise ValueError(
            f"context has {context.shape[0]} rows but there are {batch} data rows; "
            "pass one row per data row, or a single row for all"
        )
    if not bool(torch.isfinite(context).all()):
        raise ValueError("context contains NaN or Inf values")
    if reference is not None and reference.dtype != context.dtype:
        raise TypeError(
            f"context has dtype {context.dtype} but the model's parameters are {reference.dtype}"
        )
    return context
