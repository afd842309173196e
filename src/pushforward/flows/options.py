"""Validation of the keyword options only ready-made flows have (splines, last layers)."""

from __future__ import annotations

from pushforward.nn.mlp import LAST_LAYER_INITS
from pushforward.options import choice, positive_float, positive_int
from pushforward.transforms.functional.spline_parameterization import SPLINE_PARAMETERIZATIONS


def spline_options(
    bins: object, tail_bound: object, spline_parameterization: object
) -> dict[str, float | int | str]:
    """The spline options of a flow builder as keyword arguments of a spline map."""
    return {
        "bins": positive_int("bins", bins),
        "tail_bound": positive_float("tail_bound", tail_bound),
        "parameterization": choice(
            "spline_parameterization", spline_parameterization, SPLINE_PARAMETERIZATIONS
        ),
    }


def last_layer_initialization(value: object) -> str:
    """The ``last_layer_init`` option (``"zero"`` or ``"random"``), validated."""
    return choice("last_layer_init", value, LAST_LAYER_INITS)
