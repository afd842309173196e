r"""Reflow (k-rectified flow): retrain a flow-matching model on the coupling its own ODE gives.

Training a new velocity field on the pairs of a trained model's ODE
(:func:`~pushforward.recipes.pairs.reflow_pairs`; no re-pairing) gives the
2-rectified flow: its straight-line interpolants cross less than those of the
independent coupling, its trajectories are straighter, so few-step samples are
better. Reflowing a reflowed model gives the k-rectified flow. The model it
trains stays a plain ``fm`` model that saves, loads, samples and scores like any
other.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pushforward.matching.model import FlowMatching
from pushforward.model import Model
from pushforward.options import choice
from pushforward.paired import PairedBatch
from pushforward.recipes.pairs import INITIALIZATIONS, fit_pairs, reflow_pairs
from pushforward.registry import build
from pushforward.train.history import History

ARCHITECTURE_OPTIONS: tuple[str, ...] = (
    "hidden",
    "shape",
    "base",
    "path",
    "sigma_min",
    "parameterization",
    "residual",
    "time_embedding",
    "time_scale",
    "activation",
    "context_dropout",
)
"""``fm`` options that change the network or what its output means: a reflowed model
that starts from its parent's weights keeps the parent's values of these."""


def rectified_model(parent: FlowMatching, *, init: str = "parent", **options: Any) -> FlowMatching:
    """A new ``fm`` model to train on the parent's pairs: the parent's options, with changes.

    With ``init="parent"`` the network starts from the parent's weights (as Liu et al.
    and Lee et al. do), so options that change the network (:data:`ARCHITECTURE_OPTIONS`)
    keep the parent's values; with ``init="fresh"`` the weights are drawn from torch's
    global generator and any option may change. Training-time options such as
    ``time_sampling="u-shaped"`` or ``loss="pseudo-huber"`` (Lee et al. 2024) may always
    change.

    Args:
        parent: the trained model, built by ``pushforward.build("fm", ...)``.
        init: ``"parent"`` or ``"fresh"``.
        **options: ``fm`` options to change.

    Returns:
        The new :class:`~pushforward.matching.model.FlowMatching` (config name ``fm``).
    """
    init = choice("init", init, INITIALIZATIONS)
    config = getattr(parent, "config", None) or {}
    if config.get("model") != "fm":
        raise ValueError(
            "reflow needs the parent as built by pushforward.build('fm', ...) "
            f"(its config names {config.get('model')!r})"
        )
    for key in ("features", "context"):
        if key in options:
            raise ValueError(f"option {key!r} comes from the parent and cannot be changed")
    if init == "parent":
        fixed = [key for key in options if key in ARCHITECTURE_OPTIONS]
        if fixed and any(options[key] != config["options"].get(key) for key in fixed):
            raise ValueError(
                f"option {fixed[0]!r} changes the network, which starts from the parent's "
                'weights; set init="fresh" to change it'
            )
    merged = dict(config["options"])
    merged.update(options)
    model = build("fm", **merged)
    if not isinstance(model, FlowMatching):
        raise TypeError("the 'fm' builder did not return a FlowMatching model")
    # The rectified model lives in the parent's units: it keeps its preprocessing.
    model.set_preprocessing(copy.deepcopy(parent.preprocessing))
    reference = next(iter(parent.parameters()), None)
    if reference is not None:
        model.to(dtype=reference.dtype, device=reference.device)
    if init == "parent":
        model.load_state_dict(parent.state_dict())
    else:
        # The source (an empirical base's rows) stays the parent's with fresh weights.
        model.base.load_state_dict(parent.base.state_dict())
    return model


@dataclass
class ReflowResult:
    """The outcome of :func:`reflow`.

    Attributes:
        model: the rectified model (trained; EMA weights when EMA was on).
        pairs: the coupling it was trained on.
        history: the training history.
    """

    model: FlowMatching
    pairs: PairedBatch
    history: History


def reflow(
    model: FlowMatching,
    pairs: int | PairedBatch,
    context: Tensor | None = None,
    *,
    solver: str = "dopri5",
    solver_steps: int | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-6,
    init: str = "parent",
    options: dict[str, Any] | None = None,
    seed: int = 0,
    **fit_options: Any,
) -> ReflowResult:
    r"""One reflow step: the (k+1)-rectified flow from the k-rectified ``model``.

    Draws ``pairs`` source points, solves ``model``'s ODE for their ends
    (:func:`reflow_pairs`), and trains a new ``fm`` model (:func:`rectified_model`)
    on that fixed coupling through :func:`pushforward.train.fit`:

    .. math:: v_{k+1} = \arg\min_v \mathbb E_{t, x_0}
              \lVert v(x_t, t) - (\Phi^k_1(x_0) - x_0) \rVert^2,
              \quad x_t = t\,\Phi^k_1(x_0) + (1 - t)\,x_0

    Reflow again on the result for k = 3, 4, ....

    References: Liu et al. (2023), Flow Straight and Fast: Learning to Generate and
    Transfer Data with Rectified Flow; Lee et al. (2024), Improving the Training of
    Rectified Flows.

    Args:
        model: the trained flow-matching model.
        pairs: how many pairs to draw, or pairs already made by :func:`reflow_pairs`.
        context: ``(n, context)`` context rows of the pairs (conditional models).
        solver, solver_steps, atol, rtol: the ODE solve that makes the pairs.
        init: ``"parent"`` (start from ``model``'s weights) or ``"fresh"``.
        options: ``fm`` options of the new model that differ from ``model``'s, e.g.
            ``{"time_sampling": "u-shaped", "loss": "pseudo-huber"}``.
        seed: seeds the source points, fresh weights and the training run.
        **fit_options: keywords of :func:`pushforward.train.fit` (``steps``,
            ``batch_size``, ``lr``, ``ema``, ...).

    Returns:
        A :class:`ReflowResult`.
    """
    if isinstance(pairs, PairedBatch):
        coupling = pairs
    else:
        generator = torch.Generator(device=_device(model)).manual_seed(seed)
        coupling = reflow_pairs(
            model,
            pairs,
            context,
            solver=solver,
            steps=solver_steps,
            atol=atol,
            rtol=rtol,
            generator=generator,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rectified = rectified_model(model, init=init, **(options or {}))
    history = fit_pairs(rectified, coupling, seed=seed, **fit_options)
    return ReflowResult(rectified, coupling, history)


def _device(model: Model) -> torch.device:
    reference = next(iter(model.parameters()), None)
    return torch.device("cpu") if reference is None else reference.device
