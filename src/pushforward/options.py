"""Checks of the keyword options of builders, in the user's words, and did-you-mean hints.

Every folder validates its builders' options with these (``flows/``, ``matching/``,
``fewstep/``, ``ode/``, ``data/``), so they sit below all of them and import nothing
from the library.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence


def closest(word: str, choices: list[str]) -> str:
    """A ``did you mean`` hint naming the closest of ``choices``, or an empty string."""
    near = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in near)}?)" if near else ""


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


def unit_interval(name: str, value: object, *, closed_right: bool = False) -> float:
    """``value`` as a float in ``[0, 1)`` (or ``[0, 1]``), or a ValueError naming the option."""
    upper = "]" if closed_right else ")"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"option {name!r} must be a number in [0, 1{upper}, got {value!r}")
    number = float(value)
    inside = 0.0 <= number <= 1.0 if closed_right else 0.0 <= number < 1.0
    if not inside:
        raise ValueError(f"option {name!r} must be in [0, 1{upper}, got {value!r}")
    return number


def finite(name: str, value: object) -> float:
    """``value`` as a finite float, or a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"option {name!r} must be a finite number, got {value!r}")
    return float(value)


def non_negative(name: str, value: object) -> float:
    """``value`` as a finite float >= 0, or a ValueError naming the option."""
    number = finite(name, value)
    if number < 0:
        raise ValueError(f"option {name!r} must be >= 0, got {value!r}")
    return number


def fraction(name: str, value: object) -> float:
    """``value`` as a float in ``[0, 1]``, or a ValueError naming the option."""
    number = finite(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"option {name!r} must be a fraction in [0, 1], got {value!r}")
    return number
