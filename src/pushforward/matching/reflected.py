"""Reflected flow matching on a box, and its registered builder ``reflected-fm``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pushforward.distributions.uniform import BoxUniform
from pushforward.geometry.box import (
    box_contains,
    box_log_volume,
    box_reflect,
    box_reflection_sign,
)
from pushforward.matching.coupled import Fold
from pushforward.matching.flow_matching import FM_TRAIN_DEFAULTS
from pushforward.matching.model import FlowMatching
from pushforward.matching.options import (
    DEFAULT_LIKELIHOOD,
    DEFAULT_VELOCITY_NETWORK,
    LikelihoodOptions,
    VelocityNetworkOptions,
)
from pushforward.matching.schedulers import SCHEDULERS, Scheduler, make_scheduler
from pushforward.model import Model
from pushforward.nn.box_velocity import FaceTangentVelocity
from pushforward.option_groups import grouped_options
from pushforward.options import choice, sizes
from pushforward.registry import register
from pushforward.transforms.preprocessing import Preprocessing

# How far alpha_t + sigma_t may stray from 1 (rounding) for a path to count as convex.
_CONVEX_TOLERANCE = 1e-9


BOUNDARIES = ("tangent", "free")
"""How ``reflected-fm``'s field meets the faces: made tangent to them, or left free."""


def box_bounds_option(
    low: float | Sequence[float], high: float | Sequence[float], event_shape: tuple[int, ...]
) -> tuple[Tensor, Tensor]:
    """The ``low`` and ``high`` options checked: one bound for all features or one per feature,
    finite, and ``low < high`` in every feature.

    Returns:
        ``(low, high)``, each float64 shaped ``event_shape``.
    """
    features = math.prod(event_shape)
    bounds = []
    for name, value in (("low", low), ("high", high)):
        try:
            flat = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"option {name!r} must be a number or a list of numbers, got {value!r}"
            ) from error
        if flat.numel() == 1:
            flat = flat.expand(features)
        if flat.numel() != features:
            raise ValueError(
                f"option {name!r} has {flat.numel()} values for {features} features; "
                "give one bound for all features or one per feature"
            )
        finite = torch.isfinite(flat)
        if not bool(finite.all()):
            feature = int((~finite).nonzero()[0])
            raise ValueError(
                f"option {name!r} must be finite: feature {feature} is {float(flat[feature])}"
            )
        bounds.append(flat)
    low_t, high_t = bounds
    empty = ~(high_t > low_t)
    if bool(empty.any()):
        feature = int(empty.nonzero()[0])
        raise ValueError(
            f"option 'high' must exceed 'low' in every feature: feature {feature} has "
            f"low = {float(low_t[feature])} >= high = {float(high_t[feature])}"
        )
    return low_t.reshape(event_shape).clone(), high_t.reshape(event_shape).clone()


def check_path_in_box(scheduler: Scheduler) -> None:
    r"""Raises unless the affine path :math:`x_t = \alpha_t x_1 + \sigma_t x_0` stays in a box.

    A box is convex, so the path between two of its points stays in it for every
    pair exactly when :math:`x_t` is a convex combination: :math:`\alpha_t +
    \sigma_t = 1` with both non-negative, checked on a grid of 257 times (``cond-ot``
    and ``polynomial`` pass; ``cosine`` and ``vp`` overshoot the segment).
    """
    t = torch.linspace(0.0, 1.0, 257, dtype=torch.float64)
    coefficients = scheduler(t)
    total = coefficients.alpha + coefficients.sigma
    bad = (
        ((total - 1).abs() > _CONVEX_TOLERANCE)
        | (coefficients.alpha < -_CONVEX_TOLERANCE)
        | (coefficients.sigma < -_CONVEX_TOLERANCE)
    )
    if bool(bad.any()):
        k = int(bad.nonzero()[0])
        raise ValueError(
            f"the {scheduler.name!r} path leaves the box: at t = {float(t[k]):.3g}, "
            f"alpha_t + sigma_t = {float(total[k]):.4g}; a path inside the box mixes "
            "source and data points convexly (alpha_t + sigma_t = 1), as 'cond-ot' and "
            "'polynomial' do"
        )


class ReflectedFlowMatching(FlowMatching):
    r"""Flow matching on a box :math:`B = \prod_i [a_i, b_i]`, sampled by a reflected ODE.

    The source is the uniform distribution on the box, and the conditional path is
    a convex combination :math:`x_t = \alpha_t x_1 + (1 - \alpha_t) x_0` (``cond-ot``
    or ``polynomial``), so every point of every path lies in the convex box and the
    regression is :class:`~pushforward.matching.model.FlowMatching`'s, with its
    couplings (minibatch optimal transport included), time samplers, losses and
    classifier-free guidance. Sampling solves the reflected ODE

    .. math:: dx = v_\theta(x, t, c)\,dt \quad \text{reflected at the faces of } B

    with each solver step followed by the exact reflection :math:`R` into the box
    (:func:`~pushforward.geometry.box.box_reflect`, the fold of period
    :math:`2(b - a)`), and a final reflection clamped to the closed box: samples
    never leave the box, at any number of steps and any guidance weight.

    The solver integrates the unfolded field :math:`\tilde v(x) = S(x)\,v_\theta(R(x))`
    with :math:`S(x) = \partial R / \partial x = \operatorname{diag}(\pm 1)`
    (:meth:`velocity`; inside the box it is :math:`v_\theta` itself). It commutes with
    the reflections of the box's faces, so folding its flow after every step (fixed
    steps) or only at the end (adaptive solvers) gives the same points, and one Euler
    step of it is exactly "step with :math:`v_\theta`, then reflect". The signs matter:
    the field at the reflected point alone, :math:`v_\theta(R(x))`, would move the
    folded point :math:`R(x)` against :math:`v_\theta` wherever the fold flips it.

    ``log_prob`` is the density with respect to the Lebesgue measure on the box (it
    is :math:`-\infty` outside, where ``loss`` and ``log_prob`` refuse points). It
    integrates the divergence backward along the same reflected ODE and adds the
    uniform base's :math:`-\sum_i \log(b_i - a_i)`:

    .. math:: \log p_1(x) = -\sum_i \log(b_i - a_i)
              - \int_0^1 (\nabla\cdot v_\theta)(R(y_t), t)\,dt,

    where :math:`y_t` solves :math:`\dot y = \tilde v(y)` back from :math:`y_1 = x`,
    since :math:`\nabla\cdot\tilde v(y) = (\nabla\cdot v_\theta)(R(y))` (the signs of
    :math:`S` cancel). A reflection preserves volume, so nothing else enters, and the
    unfolded flow pushes the mirror-symmetric extension of the uniform source to that
    of the model: the change of variables holds up to solver error when the field is
    tangent to the faces, as the exact marginal field of these paths is (no
    probability flows through a face). A learned field with a normal component at a
    face is not: where it points out, the reflected flow piles mass against the face;
    where it points in, it leaves a thin layer beside the face empty, and the computed
    density misses its normalisation by about the flux through the faces (a few
    percent for a lightly trained field on data with mass at the faces). So by default
    (``boundary="tangent"`` in the builder) the network's field is multiplied by a
    weight that vanishes on the faces
    (:class:`~pushforward.nn.box_velocity.FaceTangentVelocity`): its flow maps the box
    onto itself, the reflections only guard the discrete steps, and ``log_prob`` is an
    exact density up to solver error. ``boundary="free"`` keeps Xie et al.'s raw field.

    The bounds are in the data's own units: the model refuses a data standardisation
    (:meth:`set_preprocessing`); a context may still be standardised.

    References:
        Xie et al. (2024), Reflected Flow Matching;
        Lipman et al. (2023), Flow Matching for Generative Modeling;
        Tong et al. (2024), Improving and Generalizing Flow-Based Generative Models
        with Minibatch Optimal Transport;
        Ho & Salimans (2022), Classifier-Free Diffusion Guidance.

    Args:
        network: the velocity network ``network(x, t, context) -> like x``.
        base: the uniform distribution on the box (its bounds are the box).
        scheduler: a convex path's coefficients (see :func:`check_path_in_box`).
        context_features: size of the context (0 for unconditional).
        **options: the keyword options of
            :class:`~pushforward.matching.model.FlowMatching` (coupling,
            parameterization, time sampling, loss, guidance, solvers).

    Example:
        >>> import torch, pushforward
        >>> model = pushforward.build("reflected-fm", features=2, low=[0, -1], high=[1, 1],
        ...                           hidden=[16], steps=2)
        >>> x = model.sample(1000)
        >>> bool((x[:, 0] >= 0).all() and (x[:, 0] <= 1).all() and (x[:, 1] >= -1).all())
        True
    """

    base: BoxUniform

    def __init__(
        self,
        network: nn.Module,
        base: BoxUniform,
        scheduler: Scheduler,
        context_features: int = 0,
        **options: Any,
    ) -> None:
        if not isinstance(base, BoxUniform):
            raise TypeError(
                f"reflected flow matching needs the uniform source on its box (BoxUniform), "
                f"got {type(base).__name__}"
            )
        check_path_in_box(scheduler)
        super().__init__(network, base, scheduler, context_features, **options)

    @property
    def low(self) -> Tensor:
        """The box's lower bounds, ``event_shape``, in the data's units."""
        return self.base.low

    @property
    def high(self) -> Tensor:
        """The box's upper bounds, ``event_shape``, in the data's units."""
        return self.base.high

    def reflect(self, x: Tensor) -> Tensor:
        """``x: (batch, *event)`` reflected into the box (see :func:`box_reflect`)."""
        return box_reflect(x, self.low, self.high)

    def log_volume(self) -> Tensor:
        r"""The box's log-volume :math:`\sum_i \log(b_i - a_i)`, a 0-dim tensor."""
        return box_log_volume(self.low, self.high)

    # -- the unfolded field -----------------------------------------------------

    def velocity(
        self, x: Tensor, t: Tensor, context: Tensor | None = None, guidance: float = 1.0
    ) -> Tensor:
        r"""The velocity :math:`v_\theta(x, t, c)` in the box, unfolded outside it.

        :math:`\tilde v(x) = S(x)\, v_\theta(R(x), t, c)` with :math:`R` the reflection
        into the box and :math:`S = \partial R / \partial x` its signs; inside the box
        (where every solver step starts) it is :math:`v_\theta` exactly. Guided by
        ``guidance`` as :meth:`FlowMatching.velocity`.

        Args:
            x: ``(batch, *event)`` states.
            t: ``(batch,)`` times, or a 0-dim time for all rows.
            context: ``(batch, context)`` or ``None``.
            guidance: classifier-free guidance scale ``w``; 1 is the plain conditional field.

        Returns:
            ``(batch, *event)``.
        """
        sign = box_reflection_sign(x, self.low, self.high)
        return sign * super().velocity(self.reflect(x), t, context, guidance)

    def velocity_and_divergence(
        self, x: Tensor, t: Tensor, context: Tensor | None = None, guidance: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        r"""The unfolded velocity (:meth:`velocity`) and its exact divergence.

        :math:`\nabla\cdot\tilde v(x) = \sum_i S_{ii}\,(\partial_i v_{\theta,i})(R(x))\,
        S_{ii} = (\nabla\cdot v_\theta)(R(x))`: the divergence at the reflected point.

        Returns:
            ``(velocity: (batch, *event), divergence: (batch,))``.
        """
        sign = box_reflection_sign(x, self.low, self.high)
        velocity, divergence = super().velocity_and_divergence(
            self.reflect(x), t, context, guidance
        )
        return sign * velocity, divergence

    def _domain_fold(self) -> Fold:
        return self.reflect

    # -- the box at the boundary ------------------------------------------------

    def check_points(self, x: Tensor) -> Tensor:
        """Checks that every row of ``x: (batch, *event)`` is finite and lies in the closed box.

        Raises:
            ValueError: naming the first row with a NaN or infinite value, or the
                first row outside the box (with the feature, its value and its bounds).

        Returns:
            ``x`` itself.
        """
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError("box points must be a floating-point torch.Tensor")
        if x.ndim < 2:
            raise ValueError(f"box points must be shaped (batch, *event), got {tuple(x.shape)}")
        finite = torch.isfinite(x).reshape(x.shape[0], -1).all(dim=1)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0])
            raise ValueError(f"data contains NaN or Inf values (first in row {row})")
        low, high = self.low.to(x.dtype), self.high.to(x.dtype)
        inside = box_contains(x, low, high)
        if not bool(inside.all()):
            row = int((~inside).nonzero()[0])
            point, lows, highs = x[row].reshape(-1), low.reshape(-1), high.reshape(-1)
            outside = (point < lows) | (point > highs)
            feature = int(outside.nonzero()[0])
            raise ValueError(
                f"row {row} of the data lies outside the box: feature {feature} is "
                f"{float(point[feature])}, the box has [{float(lows[feature])}, "
                f"{float(highs[feature])}] there"
            )
        return x

    def check_input(self, x: Tensor, match_dtype: bool = True) -> Tensor:
        """:meth:`Model.check_input`, then :meth:`check_points`: data must lie in the box."""
        return self.check_points(super().check_input(x, match_dtype))

    def set_preprocessing(self, preprocessing: Preprocessing) -> Model:
        """Installs a context preprocessing; a data map is refused, as the box is in data units.

        Raises:
            ValueError: ``preprocessing`` maps the data (a standardisation).
        """
        if isinstance(preprocessing, Preprocessing) and preprocessing.data is not None:
            raise ValueError(
                "reflected flow matching works in the data's own units, where its box "
                "[low, high] is given: box points are never standardised, so a data "
                "preprocessing does not apply (a context one does)"
            )
        return super().set_preprocessing(preprocessing)


@register("reflected-fm", train=FM_TRAIN_DEFAULTS, data="points")
@grouped_options(network=VelocityNetworkOptions, likelihood=LikelihoodOptions)
def reflected_flow_matching(
    features: int,
    context: int = 0,
    low: float | Sequence[float] = 0.0,
    high: float | Sequence[float] = 1.0,
    path: str = "cond-ot",
    coupling: str = "ot",
    parameterization: str = "velocity",
    time_sampling: str = "uniform",
    loss: str = "mse",
    loss_weighting: str = "none",
    network: VelocityNetworkOptions = DEFAULT_VELOCITY_NETWORK,
    context_dropout: float = 0.0,
    solver: str = "rk4",
    steps: int = 20,
    boundary: str = "tangent",
    likelihood: LikelihoodOptions = DEFAULT_LIKELIHOOD,
) -> ReflectedFlowMatching:
    """Reflected flow matching on the box ``[low, high]`` (Xie et al. 2024).

    The source is uniform on the box, the path linear (or polynomial) between a
    source and a data point, and sampling a reflected ODE: every step is reflected
    into the box, so no sample leaves it. The network, coupling, time sampling,
    loss and guidance options are ``fm``'s; see
    :class:`ReflectedFlowMatching` for the equations and what ``log_prob`` is a
    density of (the Lebesgue measure on the box).

    Args:
        features: number of values per event (``prod(shape)``).
        context: context size (0 for unconditional).
        low: the box's lower bound, one number for all features or one per feature,
            in the data's units.
        high: the box's upper bound, likewise; above ``low`` in every feature.
        path: scheduler of the path, one that stays in the box: ``cond-ot`` (linear)
            or ``polynomial``.
        coupling: ``ot`` (exact minibatch OT, Tong et al. 2024), ``independent``,
            ``sinkhorn``.
        parameterization: ``velocity``, ``data`` or ``noise``.
        time_sampling: ``uniform``, ``logit-normal`` or ``u-shaped``.
        loss: ``mse`` or ``pseudo-huber``.
        loss_weighting: ``none`` or ``uniform-time``.
        context_dropout: probability of dropping the context in training
            (classifier-free guidance; 0 disables it).
        solver, steps: default sampling solver and steps.
        boundary: ``tangent`` (the network's field multiplied by a weight that vanishes
            on the faces, :class:`~pushforward.nn.box_velocity.FaceTangentVelocity`:
            its flow keeps the box and ``log_prob`` is an exact density) or ``free``
            (the raw field of Xie et al., reflected at the faces: samples stay in the
            box, but where the learned field crosses a face the density misses its
            normalisation by about that flux; see :class:`ReflectedFlowMatching`).
    """
    features, context = sizes(features, context)
    choice("boundary", boundary, BOUNDARIES)
    if boundary == "tangent" and parameterization != "velocity":
        raise ValueError(
            f"boundary 'tangent' weights a velocity, so it needs parameterization 'velocity', "
            f"not {parameterization!r} (or set boundary='free')"
        )
    event_shape = network.event_shape(features)
    low_t, high_t = box_bounds_option(low, high, event_shape)
    scheduler = make_scheduler(choice("path", path, tuple(SCHEDULERS)))
    source = BoxUniform(event_shape, low_t.tolist(), high_t.tolist())
    # A network trained for guidance takes a context-presence flag after the context.
    flagged = context + (1 if float(context_dropout) > 0 and context else 0)
    velocity = network.build_network(features, flagged)
    if boundary == "tangent":
        velocity = FaceTangentVelocity(velocity, low_t.tolist(), high_t.tolist())
    return ReflectedFlowMatching(
        velocity,
        source,
        scheduler,
        context,
        coupling=coupling,
        parameterization=parameterization,
        time_sampling=time_sampling,
        loss=loss,
        loss_weighting=loss_weighting,
        context_dropout=context_dropout,
        solver=solver,
        steps=steps,
        **likelihood.model_options(features),
    )
