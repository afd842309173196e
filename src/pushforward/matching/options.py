"""Validation of the keyword options the flow-matching family's builders share."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pushforward.distributions import Distribution, Empirical, make_base
from pushforward.nn.velocity import VelocityMLP
from pushforward.options import hidden_widths, positive_int


def event_shape_option(features: int, shape: Sequence[int] | None) -> tuple[int, ...]:
    """The ``shape`` option checked against ``features`` (default ``(features,)``)."""
    event_shape = (features,) if shape is None else tuple(positive_int("shape", d) for d in shape)
    if math.prod(event_shape) != features:
        raise ValueError(
            f"option 'shape' {list(event_shape)} holds {math.prod(event_shape)} values, "
            f"but features is {features}"
        )
    return event_shape


def divergence_option(divergence: str | None, features: int) -> str:
    """The ``divergence`` option: as given, or by default exact up to 64 features.

    Beyond that the exact divergence costs one pass a feature, and Hutchinson's
    estimator one pass a probe.
    """
    if divergence is None:
        return "exact" if features <= 64 else "hutchinson"
    return divergence


def source_option(base: str, event_shape: tuple[int, ...], source_rows: int) -> Distribution:
    """The ``base`` and ``source_rows`` options of ``fm``: a named base distribution, or an
    empirical source of ``source_rows`` stored rows (zeros until loaded or assigned)."""
    rows = positive_int("source_rows", source_rows, minimum=0)
    if base == "empirical":
        if rows == 0:
            raise ValueError(
                "base 'empirical' needs source_rows, the number of stored source rows "
                "(pushforward train sets it from --source FILE)"
            )
        return Empirical.zeros(rows, event_shape)
    if rows:
        raise ValueError(
            f"option 'source_rows' applies to base 'empirical', not {base!r}; "
            'set base = "empirical" (pushforward train: pass --source FILE)'
        )
    return make_base(base, event_shape)


def velocity_network(
    features: int,
    context: int,
    hidden: Sequence[int],
    time_embedding: int,
    time_scale: float,
    activation: str,
    residual: bool,
) -> VelocityMLP:
    """The velocity network ``(x, t, context) -> like x`` a builder's network options describe.

    Args:
        features: values per event.
        context: context columns the network takes (with any presence flag).
        hidden: the ``hidden`` option: widths of the hidden layers.
        time_embedding: the ``time_embedding`` option (0: time is one raw input).
        time_scale: the ``time_scale`` option, the time embedding's frequency scale.
        activation: the ``activation`` option.
        residual: the ``residual`` option.
    """
    return VelocityMLP(
        features,
        context=context,
        hidden=hidden_widths(hidden),
        time_embedding=positive_int("time_embedding", time_embedding, minimum=0),
        time_scale=float(time_scale),
        activation=activation,
        residual=bool(residual),
    )
