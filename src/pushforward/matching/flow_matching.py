"""The registered ``fm`` builder: flow matching with an MLP velocity network."""

from __future__ import annotations

from typing import Any

from pushforward.matching.model import FlowMatching
from pushforward.matching.options import (
    DEFAULT_LIKELIHOOD,
    DEFAULT_NETWORK,
    LikelihoodOptions,
    NetworkOptions,
)
from pushforward.matching.schedulers import SCHEDULERS, make_scheduler
from pushforward.matching.time_sampling import TIME_SAMPLERS, make_time_sampler
from pushforward.option_groups import grouped_options
from pushforward.options import choice, sizes
from pushforward.registry import register

FM_TRAIN_DEFAULTS: dict[str, float | int] = {"lr": 5e-3, "convergence_patience": 60}
"""What ``pushforward train`` changes for ``fm``. The peak learning rate: with the
residual 4x256 network, 1e-3 left the KL 2-20x higher at 2000 steps and 1e-2 diverged
in one of twelve runs (``bench/fm_quality.py``). The patience of a run trained to
convergence: the regression loss on validation rows keeps falling by about 1e-4 a
validation for thousands of steps while the model still improves, so the general 10
stopped posterior estimators far too early (two moons at 10,000 simulations: best
weights at step 264, test NLL -2.43, against -3.66 with 60 and -3.55 for ``nsf``;
``bench/README.md``)."""


@register("fm", train=FM_TRAIN_DEFAULTS)
@grouped_options(network=NetworkOptions, likelihood=LikelihoodOptions)
def flow_matching(
    features: int,
    context: int = 0,
    path: str = "cond-ot",
    sigma_min: float = 0.0,
    coupling: str = "ot",
    parameterization: str = "velocity",
    time_sampling: str = "uniform",
    time_options: dict[str, float] | None = None,
    loss: str = "mse",
    loss_weighting: str = "none",
    network: NetworkOptions = DEFAULT_NETWORK,
    context_dropout: float = 0.0,
    solver: str = "rk4",
    steps: int = 20,
    likelihood: LikelihoodOptions = DEFAULT_LIKELIHOOD,
    source_rows: int = 0,
) -> FlowMatching:
    """Flow matching with an MLP velocity network (Lipman et al. 2023).

    The defaults (a residual 4x256 network, exact minibatch OT coupling, and a
    peak learning rate of 5e-3 for ``pushforward train``) are those that matched
    or beat NSF's KL on the built-in toys at the same 2000-step budget in
    ``bench/fm_quality.py``; the plain 3x256 MLP with independent coupling and
    lr 1e-3 (torchcfm's examples) ended 10-60x worse. Minibatch OT costs an
    assignment per batch (about 25 ms for 512 points on one CPU core), prepared
    one step ahead in a thread; ``coupling="independent"`` trains about 4x
    faster on a CPU and fits less well on checkerboard-like data.

    Args:
        features: number of values per event (``prod(shape)``).
        context: context size (0 for unconditional).
        path: scheduler of the affine path: ``cond-ot`` (linear), ``cosine``, ``vp``,
            ``polynomial``.
        sigma_min: the linear path's noise at ``t = 1`` (``cond-ot`` only).
        coupling: ``ot`` (exact minibatch OT, Tong et al. 2024), ``independent``,
            ``sinkhorn``.
        parameterization: ``velocity``, ``data`` or ``noise``.
        time_sampling: ``uniform``, ``logit-normal``, ``u-shaped`` or ``power`` (more
            weight near the data, as in flow matching posterior estimation).
        time_options: the time sampler's parameters (``{"exponent": 4.0}`` for ``power``,
            ``{"location": 0, "scale": 1}`` for ``logit-normal``, ``{"a": 4}`` for
            ``u-shaped``).
        loss: ``mse`` or ``pseudo-huber``.
        loss_weighting: ``none`` or ``uniform-time``.
        context_dropout: probability of dropping the context in training
            (classifier-free guidance; 0 disables it).
        solver, steps: default sampling solver and steps.
        source_rows: number of stored source rows of the ``empirical`` base (0
            otherwise); the model is built with zero rows, filled by loading saved
            weights or by ``model.base.assign_rows(rows)``.
    """
    features, context = sizes(features, context)
    event_shape = network.event_shape(features)
    scheduler_options: dict[str, Any] = {}
    choice("path", path, tuple(SCHEDULERS))
    if sigma_min:
        if path not in ("cond-ot", "linear"):
            raise ValueError(f"option 'sigma_min' applies to the 'cond-ot' path, not {path!r}")
        scheduler_options["sigma_min"] = float(sigma_min)
    scheduler = make_scheduler(path, **scheduler_options)
    # A network trained for guidance takes a context-presence flag after the context.
    flagged = context + (1 if float(context_dropout) > 0 and context else 0)
    return FlowMatching(
        network.build_network(features, flagged),
        network.source(event_shape, source_rows),
        scheduler,
        context,
        coupling=coupling,
        parameterization=parameterization,
        time_sampling=make_time_sampler(
            choice("time_sampling", time_sampling, tuple(TIME_SAMPLERS)), **(time_options or {})
        ),
        loss=loss,
        loss_weighting=loss_weighting,
        context_dropout=context_dropout,
        solver=solver,
        steps=steps,
        **likelihood.model_options(features),
    )
