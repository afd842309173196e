"""Ready-made autoregressive flows: MAF, IAF and the autoregressive neural spline flow."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pushforward.distributions import make_base
from pushforward.flows.flow import Flow
from pushforward.flows.options import last_layer_initialization, spline_options
from pushforward.flows.tails import tail_adaptive_base
from pushforward.options import choice, hidden_widths, positive_int, sizes
from pushforward.registry import register
from pushforward.transforms.autoregressive import MaskedAutoregressive
from pushforward.transforms.base import Compose, Inverse, Transform
from pushforward.transforms.maps import AffineMap, ElementwiseMap, RationalQuadraticSplineMap
from pushforward.transforms.normalization import BatchNorm

ORDERS = ("alternate", "random")


def _autoregressive_layers(
    features: int,
    context: int,
    transforms: int,
    hidden: Sequence[int],
    make_map: type[ElementwiseMap] | None,
    map_options: dict,
    order: str,
    residual: bool,
    activation: str,
    batch_norm: bool,
    invert: bool,
    last_layer: str = "zero",
) -> Transform:
    transforms = positive_int("transforms", transforms)
    last_layer = last_layer_initialization(last_layer)
    hidden = hidden_widths(hidden)
    order = choice("order", order, ORDERS)
    generator = torch.Generator().manual_seed(features * 7919 + transforms)
    layers: list[Transform] = []
    for index in range(transforms):
        if order == "random":
            permutation = torch.randperm(features, generator=generator)
        else:
            permutation = torch.arange(features)
            if index % 2 == 1:
                permutation = permutation.flip(0)
        assert make_map is not None
        autoregressive = MaskedAutoregressive(
            features,
            make_map(**map_options),
            hidden=hidden,
            context=context,
            order=permutation,
            residual=residual,
            activation=activation,
        )
        autoregressive.made.initialize_last_layer(last_layer)
        layer: Transform = autoregressive
        if invert:
            layer = Inverse(layer)
        if batch_norm and index < transforms - 1:
            layers += [layer, BatchNorm(features)]
        else:
            layers.append(layer)
    return Compose(layers)


@register("maf")
def maf(
    features: int,
    context: int = 0,
    transforms: int = 5,
    hidden: Sequence[int] = (64, 64),
    base: str = "normal",
    order: str = "alternate",
    residual: bool = False,
    activation: str = "relu",
    batch_norm: bool = False,
) -> Flow:
    r"""Masked autoregressive flow: affine autoregressive layers, density in one pass.

    Each layer maps data to noise with :math:`z_i = x_i e^{s_i(x_{<i})} + t_i(x_{<i})`,
    computed for all :math:`i` in one MADE pass; sampling needs ``features``
    passes. Layers alternate the autoregressive order (or draw random orders).

    References:
        Papamakarios et al. (2017), Masked Autoregressive Flow for Density Estimation;
        Germain et al. (2015), MADE: Masked Autoencoder for Distribution Estimation.

    Args:
        features: event size ``D``.
        context: context size (0 for unconditional).
        transforms: number of autoregressive layers.
        hidden: MADE hidden widths.
        base: base distribution name (``normal``, ``diag-normal``, ``uniform``, ``student-t``).
        order: ``alternate`` (identity and reversed orders in turn) or ``random``.
        residual: use MADE with masked residual blocks.
        activation: hidden nonlinearity.
        batch_norm: insert batch normalisation bijections between layers (as in MAF).
    """
    features, context = sizes(features, context)
    layers = _autoregressive_layers(
        features,
        context,
        transforms,
        hidden,
        AffineMap,
        {},
        order,
        residual,
        activation,
        batch_norm,
        invert=False,
    )
    return Flow(layers, make_base(base, (features,)), context)


@register("iaf")
def iaf(
    features: int,
    context: int = 0,
    transforms: int = 5,
    hidden: Sequence[int] = (64, 64),
    base: str = "normal",
    order: str = "alternate",
    residual: bool = False,
    activation: str = "relu",
) -> Flow:
    r"""Inverse autoregressive flow: affine autoregressive layers, sampling in one pass.

    The generative direction is :math:`x_i = z_i e^{s_i(z_{<i})} + t_i(z_{<i})`, one
    MADE pass; ``log_prob`` of arbitrary data needs ``features`` passes. Use it
    where sampling speed matters (variational inference, samplers of unnormalized
    densities via ``rsample_and_log_prob``).

    References:
        Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow.

    Args: as :func:`maf` (no batch normalisation).
    """
    features, context = sizes(features, context)
    layers = _autoregressive_layers(
        features,
        context,
        transforms,
        hidden,
        AffineMap,
        {},
        order,
        residual,
        activation,
        batch_norm=False,
        invert=True,
    )
    return Flow(layers, make_base(base, (features,)), context)


@register("nsf-ar")
def nsf_autoregressive(
    features: int,
    context: int = 0,
    transforms: int = 5,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    tail_bound: float = 5.0,
    base: str = "normal",
    order: str = "alternate",
    residual: bool = False,
    activation: str = "relu",
    spline_parameterization: str = "minimum",
    last_layer_init: str = "zero",
    tails: str = "gaussian",
    tail_df: Sequence[float | None] | None = None,
) -> Flow:
    r"""Autoregressive neural spline flow: rational-quadratic spline MAF layers.

    Each layer maps :math:`x_i` through a monotonic rational-quadratic spline on
    ``[-tail_bound, tail_bound]`` (identity outside) whose knots are a MADE output
    of :math:`x_{<i}`. Density in one pass, sampling in ``features`` passes.

    With ``tails="adaptive"`` the base has a Student-t marginal for every
    heavy-tailed data marginal (mTAF); the autoregressive orders only reorder the
    conditioners' inputs, never the features, so each keeps its tail.

    References:
        Durkan et al. (2019), Neural Spline Flows;
        Laszkiewicz, Lederer & Fischer (2022), Marginal Tail-Adaptive Normalizing Flows.

    Args: as :func:`maf`, plus ``bins`` (spline bins), ``tail_bound``,
    ``spline_parameterization``, ``last_layer_init``, ``tails`` and ``tail_df`` (as in
    the coupling ``nsf``).
    """
    features, context = sizes(features, context)
    options = spline_options(bins, tail_bound, spline_parameterization)
    tail_base = tail_adaptive_base(tails, tail_df, features, base)
    layers = _autoregressive_layers(
        features,
        context,
        transforms,
        hidden,
        RationalQuadraticSplineMap,
        options,
        order,
        residual,
        activation,
        batch_norm=False,
        invert=False,
        last_layer=last_layer_init,
    )
    return Flow(layers, make_base(base, (features,)) if tail_base is None else tail_base, context)
