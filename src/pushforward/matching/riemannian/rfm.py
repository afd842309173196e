"""The registered ``rfm`` builder: Riemannian flow matching on spheres, tori, SO(3) and
their products."""

from __future__ import annotations

from collections.abc import Sequence

from pushforward.geometry import make_manifold
from pushforward.matching.options import DEFAULT_LIKELIHOOD, LikelihoodOptions
from pushforward.matching.riemannian.model import RiemannianFlowMatching
from pushforward.nn.manifold_velocity import ManifoldVelocity
from pushforward.option_groups import grouped_options
from pushforward.options import hidden_widths, positive_float, positive_int, sizes
from pushforward.registry import register

RFM_TRAIN_DEFAULTS = {"lr": 2e-3}
"""The peak learning rate ``pushforward train`` uses for ``rfm``."""


@register("rfm", train=RFM_TRAIN_DEFAULTS, data="points")
@grouped_options(likelihood=LikelihoodOptions)
def riemannian_flow_matching(
    features: int,
    context: int = 0,
    manifold: str = "sphere",
    normalize: bool = False,
    coupling: str = "independent",
    time_sampling: str = "uniform",
    loss: str = "mse",
    loss_weighting: str = "none",
    hidden: Sequence[int] = (256, 256, 256, 256),
    residual: bool = True,
    time_embedding: int = 32,
    time_scale: float = 10.0,
    activation: str = "silu",
    fourier_features: int = 0,
    fourier_scale: float = 4.0,
    context_dropout: float = 0.0,
    solver: str = "rk4",
    steps: int = 20,
    step: str = "projected",
    likelihood: LikelihoodOptions = DEFAULT_LIKELIHOOD,
) -> RiemannianFlowMatching:
    """Riemannian flow matching (Chen & Lipman 2024) on a manifold given by name.

    Args:
        features: coordinates per point: 3 for :math:`S^2` (unit vectors), ``d`` for
            :math:`T^d` (angles), 4 for SO(3) (unit quaternions w, x, y, z), the sum for
            a product.
        context: context size (0 for unconditional).
        manifold: ``sphere``, ``torus``, ``so3``, ``euclidean`` or a product such as
            ``sphere*torus:1`` (see :func:`~pushforward.geometry.make_manifold`); the
            dimension of a single factor comes from ``features``.
        normalize: take the direction of sphere (and quaternion) rows that are not unit
            vectors, in training and in ``log_prob``, instead of refusing them (rows
            must otherwise be unit vectors to 1e-4).
        coupling: ``independent``, ``ot`` or ``sinkhorn`` (the minibatch couplings use
            the squared Euclidean distance of the coordinates).
        time_sampling: ``uniform``, ``logit-normal`` or ``u-shaped``.
        loss: ``mse`` or ``pseudo-huber`` (of the tangent vectors).
        loss_weighting: ``none`` or ``uniform-time``.
        hidden, residual, time_embedding, time_scale, activation: the velocity MLP.
        fourier_features, fourier_scale: random Fourier features of the point before the
            MLP (Tancik et al. 2020; :class:`~pushforward.nn.fourier.FourierFeatures`):
            the number of frequencies (0: none) and their standard deviation in cycles
            per unit of the point's features, for densities concentrated on scales far
            below the manifold's (the earth sets).
        context_dropout: probability of dropping the context in training
            (classifier-free guidance; 0 disables it).
        solver, steps: default sampling solver (fixed steps, or adaptive and projected
            at the end) and steps.
        step: how fixed steps move: ``projected`` (a Runge-Kutta step in the
            coordinates, then the projection) or ``exp`` (along the exponential map).

    Example:
        >>> import torch, pushforward
        >>> model = pushforward.build("rfm", features=3, manifold="sphere", hidden=[16, 16])
        >>> x = model.sample(5, steps=4)
        >>> bool(torch.allclose(x.norm(dim=-1), torch.ones(5)))
        True
    """
    features, context = sizes(features, context)
    space = make_manifold(manifold, columns=features)
    flagged = context + (1 if float(context_dropout) > 0 and context else 0)
    network = ManifoldVelocity(
        space,
        context=flagged,
        hidden=hidden_widths(hidden),
        time_embedding=positive_int("time_embedding", time_embedding, minimum=0),
        activation=activation,
        residual=bool(residual),
        time_scale=positive_float("time_scale", time_scale),
        fourier_features=positive_int("fourier_features", fourier_features, minimum=0),
        fourier_scale=positive_float("fourier_scale", fourier_scale),
    )
    return RiemannianFlowMatching(
        network,
        context,
        coupling=coupling,
        time_sampling=time_sampling,
        loss=loss,
        loss_weighting=loss_weighting,
        context_dropout=context_dropout,
        solver=solver,
        steps=steps,
        normalize=normalize,
        step=step,
        **likelihood.model_options(features),
    )
