"""Validation of the shared keyword options of ready-made flows."""

from __future__ import annotations

from collections.abc import Sequence

from pushforward.nn.mlp import LAST_LAYER_INITS
from pushforward.transforms.functional.spline import SPLINE_PARAMETERIZATIONS


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int no smaller than ``minimum``, or a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"option {name!r} must be an integer >= {minimum}, got {value!r}")
    return value


def hidden_widths(value: object) -> tuple[int, ...]:
    """The ``hidden`` option as a tuple of positive widths (an int means one layer)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) == 0:
        raise ValueError(f"option 'hidden' must be a list of layer widths, got {value!r}")
    return tuple(positive_int("hidden", width) for width in value)


def positive_float(name: str, value: object) -> float:
    """``value`` as a positive float, or a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"option {name!r} must be a positive number, got {value!r}")
    return float(value)


def choice(name: str, value: object, valid: Sequence[str]) -> str:
    """``value`` if it is one of ``valid``, or a ValueError listing them."""
    if value not in valid:
        raise ValueError(
            f"option {name!r} must be one of {', '.join(map(repr, valid))}, got {value!r}"
        )
    return str(value)


def sizes(features: object, context: object) -> tuple[int, int]:
    """The ``features`` (at least 1) and ``context`` (at least 0) options, validated."""
    return positive_int("features", features), positive_int("context", context, minimum=0)


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
