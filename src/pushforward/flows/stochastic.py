r"""Stochastic normalizing flows: coupling layers alternating with Langevin, MH or HMC steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from pushforward.distributions import make_base
from pushforward.distributions.base import Distribution
from pushforward.flows.options import last_layer_initialization, spline_options
from pushforward.inference import InferenceOptions
from pushforward.model import Model
from pushforward.options import choice, fraction, hidden_widths, positive_float, positive_int, sizes
from pushforward.registry import register
from pushforward.sampling.stochastic_layers import (
    STOCHASTIC_LAYERS,
    HamiltonianLayer,
    StochasticLayer,
)
from pushforward.sampling.target import Target, as_target, checked_log_prob
from pushforward.transforms.base import Compose, Transform
from pushforward.transforms.coupling import Coupling, alternating_mask
from pushforward.transforms.maps import AffineMap, ElementwiseMap, RationalQuadraticSplineMap

COUPLING_MAPS = ("spline", "affine")
INTERMEDIATES = ("pushforward", "prior")


@dataclass(frozen=True)
class StochasticFlowSampleOptions(InferenceOptions):
    """What ``sample`` and ``rsample`` of an ``snf`` take: the target and its temperature."""

    target: Any = field(
        default=None,
        metadata={"help": "the unnormalized target the stochastic layers move towards"},
    )
    beta: float = field(default=1.0, metadata={"help": "inverse temperature of the target"})

    # A target is a Python object (a Target or a callable), not a command-line value.
    python_only: ClassVar[tuple[str, ...]] = ("target", "beta")

    def __post_init__(self) -> None:
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float):
            raise ValueError(f"beta must be a number in (0, 1], got {self.beta!r}")
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"beta must be a number in (0, 1], got {self.beta!r}")


class StochasticNormalizingFlow(Model):
    r"""A stochastic normalizing flow: deterministic flow blocks and stochastic layers in turn.

    From :math:`y_0 = z \sim p_Z` the generative pass applies flow blocks
    :math:`F_0, \dots, F_K` (base to data) with a stochastic layer :math:`S_k` after
    each :math:`F_k` but the last, and carries the path's log-weight

    .. math:: \log w = \log\tilde p^\beta(x) - \log p_Z(z)
              + \sum_{\text{blocks}} \log\lvert\det \partial F_k\rvert
              + \sum_{\text{layers}} \Delta S_k

    with :math:`\Delta S_k` the log ratio of the backward to the forward transition
    density of layer :math:`k` (see :mod:`pushforward.sampling.stochastic_layers`).
    The weights are exact path importance weights: :math:`\mathbb E[w] = Z_\beta`
    (unbiased :math:`\log Z`), and :math:`-\mathbb E[\log w] + \log Z_\beta` is the KL
    between the forward and backward path measures, an upper bound of the
    marginal KL, which ``reverse-kl`` minimises end to end.

    **Intermediate densities.** Layer :math:`k` targets
    :math:`\rho_k = q_k^{1-\lambda_k}\,\pi_k^{\lambda_k}`
    (:math:`u_\lambda = (1-\lambda)u_0 + \lambda u_1` in energies) in the coordinates
    where it sits. With ``intermediate="pushforward"`` (the default),
    :math:`q_k = (F_k \circ\dots\circ F_0)_\# p_Z` is the density of the points that
    arrive there and :math:`\pi_k = (F_K \circ\dots\circ F_{k+1})^{-1}_\#\tilde p^\beta`
    is the target pulled back through the blocks still to come, so a layer at
    :math:`\lambda = 1` leaves the exact target's pull-back invariant; each
    evaluation runs every block once. ``intermediate="prior"`` is the authors'
    code's cheaper choice, :math:`q_k = p_Z` and :math:`\pi_k = \tilde p^\beta`
    evaluated in the layer's coordinates (no block pass). With identity blocks
    both are annealed importance sampling from :math:`p_Z` to the target.

    The model has no density of a point (marginalising the noise is intractable):
    ``has_log_prob`` is False and it is fitted to a target
    (``pushforward.fit(model, target=..., objective="reverse-kl")``), not to data.
    Its samples need the target: ``sample(n, target=...)``; without a target,
    ``sample`` raises (unless the model has no stochastic layer), since the
    deterministic blocks alone are not the model's distribution.

    References:
        Wu, Köhler & Noé (2020), Stochastic Normalizing Flows (NeurIPS);
        Neal (2001), Annealed Importance Sampling.

    Args:
        flows: ``K + 1`` transforms (data to base in their ``forward``), in the order
            the generative pass meets them.
        layers: the ``K`` stochastic layers.
        lambdas: ``K`` interpolation weights :math:`\lambda_k \in [0, 1]`.
        base: the base distribution.
        context_features: context size of the flow blocks (0 for unconditional).
        intermediate: ``"pushforward"`` or ``"prior"`` (see above).

    Example:
        >>> import math, torch, pushforward
        >>> from pushforward.sampling import CallableTarget
        >>> from pushforward.sampling.importance import log_z_estimate
        >>> target = CallableTarget(lambda x: -0.5 * (x - 1.0).square().sum(-1), features=2)
        >>> model = pushforward.build(
        ...     "snf", features=2, transforms=2, hidden=[8], stochastic=["langevin", "metropolis"]
        ... ).double()
        >>> _ = torch.manual_seed(0)
        >>> x, log_w = model.sample_and_log_weight(4000, target)
        >>> x.shape, log_w.shape
        (torch.Size([4000, 2]), torch.Size([4000]))
        >>> log_z, se = log_z_estimate(log_w)  # unbiased for Z = 2 pi
        >>> abs(log_z - math.log(2 * math.pi)) < 3 * se
        True
    """

    has_log_prob = False
    has_rsample = True
    # Samples come with exact path log-weights (rsample_and_log_weight); objectives and
    # importance diagnostics use them in place of log-densities.
    has_path_weights: ClassVar[bool] = True
    # Fitted to an unnormalized target, never to data.
    trains_from_data = False
    sample_options = StochasticFlowSampleOptions

    base: Distribution

    def __init__(
        self,
        flows: Sequence[Transform],
        layers: Sequence[StochasticLayer],
        lambdas: Sequence[float],
        base: Distribution,
        context_features: int = 0,
        intermediate: str = "pushforward",
    ) -> None:
        super().__init__()
        if len(flows) != len(layers) + 1 or len(lambdas) != len(layers):
            raise ValueError(
                f"an SNF with {len(layers)} stochastic layers needs {len(layers) + 1} flow "
                f"blocks and {len(layers)} lambdas, got {len(flows)} and {len(lambdas)}"
            )
        self.flows = nn.ModuleList(flows)
        self.layers = nn.ModuleList(layers)
        self.lambdas = tuple(fraction("lambdas", value) for value in lambdas)
        self.base = base
        self.event_shape = tuple(base.event_shape)
        self.context_features = int(context_features)
        self.intermediate = choice("intermediate", intermediate, INTERMEDIATES)

    @property
    def blocks(self) -> list[Transform]:
        """The flow blocks :math:`F_0, \\dots, F_K`, in the order the generative pass meets them."""
        return cast("list[Transform]", list(self.flows))

    # -- the path and its weights ------------------------------------------------------

    def rsample_and_log_weight(
        self, n: int, target: Any, beta: float = 1.0, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""``n`` reparameterised samples and their exact path log-weights against ``target``.

        :math:`\log w` as in the class docstring, with the target tempered,
        :math:`\tilde p^\beta`; :math:`\frac1n\sum_i w_i` is unbiased for
        :math:`Z_\beta`. Gradients reach the flow blocks and the step sizes.

        Args:
            n: number of samples.
            target: a :class:`~pushforward.sampling.target.Target`, or a callable of
                ``(batch, features)`` returning ``(batch,)``.
            beta: inverse temperature in ``(0, 1]``.
            context: ``(n, context)``, one row, or ``None``.

        Returns:
            ``x: (n, features)`` in the data's units and ``log_w: (n,)``.
        """
        options = StochasticFlowSampleOptions(target, beta)
        n, context = self._sampling_args(n, context)
        if options.target is None:
            raise ValueError("rsample_and_log_weight needs the target the weights are against")
        encoded = self.encode_context(context)
        y, log_w = self._path(n, self._target(options), beta, encoded, weigh=True)
        return self.preprocessing.decode(y)[0], log_w

    def sample_and_log_weight(
        self, n: int, target: Any, beta: float = 1.0, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`rsample_and_log_weight` without gradients (importance sampling, log Z)."""
        with torch.no_grad():
            return self.rsample_and_log_weight(n, target, beta, context)

    def _target(self, options: StochasticFlowSampleOptions) -> Target | None:
        if options.target is None:
            if self.layers:
                raise ValueError(
                    "an snf's stochastic layers move towards a target: pass it, "
                    "model.sample(n, target=...) or model.rsample_and_log_weight(n, target)"
                )
            return None
        return as_target(options.target, self.features)

    def _path(
        self, n: int, target: Target | None, beta: float, context: Tensor | None, weigh: bool
    ) -> tuple[Tensor, Tensor]:
        """The generative pass: its end in the model's units and, with ``weigh``, ``log w``."""
        z = self.base.rsample(n)
        y, log_w = z, -self.base.log_prob(z)
        for k, layer in enumerate(self.layers):
            y, logabsdet = self.blocks[k].inverse(y, context)
            assert target is not None  # _target raises without one where layers exist
            density = partial(self._intermediate_log_density, k, target, beta, context)
            y, delta = layer(y, density)
            log_w = log_w + logabsdet + delta
        y, logabsdet = self.blocks[-1].inverse(y, context)
        log_w = log_w + logabsdet
        if weigh and target is not None:
            log_w = log_w + self._log_target(y, target, beta)
        return y, log_w

    def _log_target(self, y: Tensor, target: Target, beta: float) -> Tensor:
        """:math:`\\log\\tilde p^\\beta` in the model's units (the preprocessing's Jacobian in)."""
        x, decoded = self.preprocessing.decode(y)
        log_p = beta * checked_log_prob(target, x)
        return log_p if decoded is None else log_p + decoded

    def _intermediate_log_density(
        self, k: int, target: Target, beta: float, context: Tensor | None, y: Tensor
    ) -> Tensor:
        r"""The log of rho_k at ``y``, :math:`(1-\lambda_k)\log q_k + \lambda_k\log\pi_k`."""
        weight = self.lambdas[k]
        total = y.new_zeros(y.shape[0])
        # A term of weight zero is skipped, so that 0 * (-inf) never makes a NaN.
        if weight < 1.0:
            point, arrived = y, y.new_zeros(y.shape[0])
            if self.intermediate == "pushforward":
                for flow in reversed(self.blocks[: k + 1]):
                    point, logabsdet = flow(point, context)
                    arrived = arrived + logabsdet
            total = total + (1.0 - weight) * (self.base.log_prob(point) + arrived)
        if weight > 0.0:
            point, carried = y, y.new_zeros(y.shape[0])
            if self.intermediate == "pushforward":
                for flow in self.blocks[k + 1 :]:
                    point, logabsdet = flow.inverse(point, context)
                    carried = carried + logabsdet
            total = total + weight * (self._log_target(point, target, beta) + carried)
        return total

    # -- the protocol ----------------------------------------------------------------------

    def _rsample_and_log_prob(
        self,
        n: int,
        context: Tensor | None,
        options: StochasticFlowSampleOptions,
        log_prob_options: Any | None,
    ) -> tuple[Tensor, Tensor | None]:
        y, _ = self._path(n, self._target(options), options.beta, context, weigh=False)
        return y, None

    def _loss(self, x: Tensor, context: Tensor | None, prepared: Any = None) -> Tensor:
        raise NotImplementedError(
            "an snf has no density of a point, so it is not trained from data: fit it to a "
            "target, pushforward.fit(model, target=..., objective='reverse-kl')"
        )


def _kinds(stochastic: object) -> tuple[str, ...]:
    kinds = (stochastic,) if isinstance(stochastic, str) else stochastic
    if not isinstance(kinds, Sequence):
        raise ValueError(f"option 'stochastic' must be a list of layer kinds, got {stochastic!r}")
    return tuple(choice("stochastic", kind, tuple(STOCHASTIC_LAYERS)) for kind in kinds)


def _per_layer(name: str, value: object, count: int) -> tuple[object, ...]:
    """A scalar option repeated ``count`` times, or a list of ``count`` values."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != count:
            raise ValueError(
                f"option {name!r} has {len(value)} values for {count} stochastic layers"
            )
        return tuple(value)
    return (value,) * count


def _positions(positions: object, layers: int, transforms: int) -> tuple[int, ...]:
    """How many coupling layers precede each stochastic layer (non-decreasing, in [0, T])."""
    if positions is None:
        return tuple((k + 1) * transforms // layers for k in range(layers))
    chosen = tuple(
        positive_int("positions", p, minimum=0) for p in _per_layer("positions", positions, layers)
    )
    if any(p > transforms for p in chosen) or any(a > b for a, b in pairwise(chosen)):
        raise ValueError(
            f"option 'positions' must be non-decreasing counts of coupling layers in "
            f"[0, {transforms}], got {list(chosen)}"
        )
    return chosen


@register("snf")
def snf(
    features: int,
    context: int = 0,
    transforms: int = 4,
    hidden: Sequence[int] = (64, 64),
    coupling_map: str = "spline",
    bins: int = 8,
    tail_bound: float = 5.0,
    base: str = "normal",
    stochastic: str | Sequence[str] = ("langevin", "langevin", "langevin", "langevin"),
    positions: Sequence[int] | None = None,
    lambdas: Sequence[float] | None = None,
    step_size: float | Sequence[float] = 0.1,
    learn_step_size: bool = True,
    leapfrog_steps: int = 5,
    intermediate: str = "pushforward",
    last_layer_init: str = "zero",
) -> StochasticNormalizingFlow:
    r"""A stochastic normalizing flow: coupling layers with stochastic layers between them.

    See :class:`StochasticNormalizingFlow` for the path weights and the intermediate
    densities.

    References:
        Wu, Köhler & Noé (2020), Stochastic Normalizing Flows (NeurIPS).

    Args:
        features: event size ``D``.
        context: context size of the coupling conditioners (0 for unconditional).
        transforms: number of coupling layers ``T`` (0: stochastic layers alone).
        hidden: conditioner hidden widths.
        coupling_map: ``"spline"`` (rational-quadratic, as ``nsf``) or ``"affine"``
            (as ``realnvp``).
        bins, tail_bound: the spline's bins and bound.
        base: base distribution name.
        stochastic: the kinds of the stochastic layers in order, each ``"langevin"``
            (unadjusted Langevin, step size the time step :math:`h`), ``"metropolis"``
            (Gaussian random walk, step size the proposal's scale) or ``"hmc"`` (step
            size the leapfrog step); ``[]`` for none (a plain coupling flow).
        positions: for each stochastic layer, how many coupling layers the generative
            pass applies before it (non-decreasing, in ``[0, T]``); by default spread
            evenly, the last after every coupling layer.
        lambdas: each layer's :math:`\lambda_k \in [0, 1]`; by default :math:`k / K`,
            :math:`k = 1, \dots, K`.
        step_size: one step size, or one per stochastic layer.
        learn_step_size: train the step sizes with the flow.
        leapfrog_steps: leapfrog steps of an ``"hmc"`` layer.
        intermediate: ``"pushforward"`` or ``"prior"`` intermediate densities.
        last_layer_init: the conditioners' output layers start at ``"zero"`` (identity
            blocks) or ``"random"``.
    """
    features, context = sizes(features, context)
    transforms = positive_int("transforms", transforms, minimum=0)
    hidden = hidden_widths(hidden)
    last_layer = last_layer_initialization(last_layer_init)
    kinds = _kinds(stochastic)
    count = len(kinds)
    where = _positions(positions, count, transforms) if count else ()
    weights = (
        tuple(k / count for k in range(1, count + 1))
        if lambdas is None
        else tuple(fraction("lambdas", v) for v in _per_layer("lambdas", lambdas, count))
    )
    steps = tuple(positive_float("step_size", s) for s in _per_layer("step_size", step_size, count))
    leapfrog_steps = positive_int("leapfrog_steps", leapfrog_steps)
    map_kind = choice("coupling_map", coupling_map, COUPLING_MAPS)
    options: dict[str, Any] = spline_options(bins, tail_bound, "minimum")
    couplings: list[Transform] = []
    for index in range(transforms):
        element: ElementwiseMap = (
            RationalQuadraticSplineMap(**options) if map_kind == "spline" else AffineMap()
        )
        layer = Coupling(
            features, element, alternating_mask(features, index % 2), hidden=hidden, context=context
        )
        layer.conditioner.initialize_last_layer(last_layer)
        couplings.append(layer)
    bounds = (0, *where, transforms)
    flows = [Compose(couplings[bounds[k] : bounds[k + 1]]) for k in range(count + 1)]
    layers: list[StochasticLayer] = []
    for kind, step in zip(kinds, steps, strict=True):
        if kind == "hmc":
            layers.append(HamiltonianLayer(step, bool(learn_step_size), leapfrog_steps))
        else:
            layers.append(STOCHASTIC_LAYERS[kind](step, bool(learn_step_size)))
    return StochasticNormalizingFlow(
        flows, layers, weights, make_base(base, (features,)), context, intermediate
    )
