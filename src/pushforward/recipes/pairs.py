r"""Pairs from a trained flow, and training on a fixed set of pairs.

A trained flow-matching model defines a deterministic map from source to data, the
solution of its ODE. Drawing source points and solving the ODE accurately gives
pairs :math:`(x_0, x_1 = \Phi_1(x_0))`: a *fixed* coupling, which reflow
(:mod:`pushforward.recipes.reflow`) and one-step distillation
(:mod:`pushforward.recipes.distill`) train a new model on.

The training goes through :func:`pushforward.train.fit` (EMA, checkpoints,
validation), which batches the pairs as aligned rows (``source=``) and hands
each batch's pairs to the model's loss as they are: the model trains as itself
and saves, loads, samples and scores like any other.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pushforward.matching.model import SOLVERS, FlowMatching
from pushforward.model import Model
from pushforward.ode import FIXED_STEP_METHODS
from pushforward.options import choice, positive_int
from pushforward.paired import PairedBatch
from pushforward.train import fit
from pushforward.train.history import History

INITIALIZATIONS: tuple[str, ...] = ("parent", "fresh")
"""How a model trained on pairs starts: from the parent's weights (Liu et al. 2023;
Lee et al. 2024) or from freshly drawn ones."""

PAIR_BATCH = 4096
"""Source points solved at once when making pairs (an adaptive solver shares its
step size across one solve, so smaller chunks also step less often)."""


def reflow_pairs(
    model: FlowMatching,
    n: int,
    context: Tensor | None = None,
    *,
    solver: str = "dopri5",
    steps: int | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-6,
    guidance: float = 1.0,
    batch_size: int = PAIR_BATCH,
    generator: torch.Generator | None = None,
) -> PairedBatch:
    r"""The coupling a trained flow-matching model induces: source points and their ODE ends.

    .. math:: x_0 \sim p_0, \qquad x_1 = x_0 + \int_0^1 v_\theta(x_t, t, c)\, dt

    solved accurately (by default Dormand-Prince at tolerances ``1e-6``; a fixed-step
    solver needs ``steps``, for instance ``rk4`` with 100 steps). The pairs are a
    deterministic coupling of the base and the model's distribution, which reflow
    trains a new field on.

    References: Liu et al. (2023), Flow Straight and Fast: Learning to Generate and
    Transfer Data with Rectified Flow; Lee et al. (2024), Improving the Training of
    Rectified Flows.

    Args:
        model: the trained flow-matching model (the teacher).
        n: number of pairs.
        context: ``(n, context)`` context rows, one per pair (kept with its pair), or
            ``None`` for an unconditional model.
        solver: ODE method (adaptive ones use ``atol``/``rtol``).
        steps: steps of a fixed-step method (required for one).
        atol, rtol: tolerances of an adaptive method.
        guidance: classifier-free guidance scale (models trained for guidance).
        batch_size: source points solved at once.
        generator: draws the source points (default: torch's global generator).

    Returns:
        A :class:`~pushforward.matching.couplings.PairedBatch` with ``x0``, ``x1``
        ``(n, *event)`` and ``context`` ``(n, context)`` or ``None``, without gradients.
    """
    if not isinstance(model, FlowMatching):
        raise TypeError(f"reflow needs a flow-matching model, got {type(model).__name__}")
    n = positive_int("pairs", n)
    batch_size = positive_int("batch_size", batch_size)
    method = choice("solver", solver, SOLVERS)
    if method in FIXED_STEP_METHODS:
        if steps is None:
            raise ValueError(
                f"the fixed-step solver {method!r} needs steps (for accurate pairs, "
                "for instance 100 for rk4); or use the adaptive 'dopri5'"
            )
        steps = positive_int("steps", steps)
    context = model.check_context(context, n)
    source = model.base.sample(n, generator)
    ends = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                chunk = None if context is None else context[start : start + batch_size]
                solution = model.solve(
                    source[start : start + batch_size],
                    chunk,
                    solver=method,
                    steps=steps,
                    atol=atol,
                    rtol=rtol,
                    guidance=guidance,
                )
                if not isinstance(solution.state, Tensor):
                    raise TypeError("expected a single-tensor ODE state")
                ends.append(solution.state)
    finally:
        model.train(was_training)
    target = torch.cat(ends)
    if not bool(torch.isfinite(target).all()):
        raise ValueError(
            "the model's ODE gave NaN or Inf end points; the model may be untrained or "
            "diverged, or the solver too coarse"
        )
    return PairedBatch(source, target, None if context is None else context.contiguous())


def fit_pairs(
    model: Model,
    pairs: PairedBatch,
    validation: PairedBatch | float | None = None,
    **fit_options: Any,
) -> History:
    """Trains ``model`` in place on fixed pairs through :func:`pushforward.train.fit`.

    The pairs are in the model's units (as :func:`reflow_pairs` makes them), so
    they go to ``fit`` as aligned rows (``data=pairs.x1``, ``source=pairs.x0``)
    with ``preprocessed=True``: the engine batches them, and the model's loss
    regresses on each batch's pairs as given.

    Args:
        model: a model that learns from pairs (``fm`` or ``distilled``).
        pairs: the training pairs (``x0``, ``x1`` ``(n, *event)``, context or ``None``).
        validation: held-out pairs whose loss selects the weights, a fraction of
            ``pairs`` to hold out (seeded by ``seed``), or ``None``.
        **fit_options: keywords of :func:`pushforward.train.fit` (``steps``,
            ``batch_size``, ``lr``, ``ema``, ``seed``, ``checkpoint_dir``, ...).

    Returns:
        The training :class:`~pushforward.train.history.History`.
    """
    if pairs.x0.shape != pairs.x1.shape:
        raise ValueError(
            f"the pairs' source has shape {tuple(pairs.x0.shape)} and their target "
            f"{tuple(pairs.x1.shape)}; they must match"
        )
    held: float | tuple[Tensor, Tensor | None, Tensor] | None
    if isinstance(validation, PairedBatch):
        held = (validation.x1, validation.context, validation.x0)
    else:
        held = validation
    return fit(
        model,
        pairs.x1,
        pairs.context,
        source=pairs.x0,
        preprocessed=True,
        validation=held,
        **fit_options,
    )
