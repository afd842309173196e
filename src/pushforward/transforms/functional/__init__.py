"""Element-wise bijection maths as pure functions of tensors (no module state).

Each function returns ``(output, per-element log|derivative|)`` so coupling,
autoregressive and element-wise layers can share it.
"""

from pushforward.transforms.functional.affine import (
    LOG_SCALE_BOUND,
    affine_forward,
    affine_inverse,
    affine_log_scale,
    soft_clamp,
)
from pushforward.transforms.functional.circular_spline import circular_rational_quadratic_spline
from pushforward.transforms.functional.interval_spline import interval_rational_quadratic_spline
from pushforward.transforms.functional.sigmoid import logit, sigmoid_forward
from pushforward.transforms.functional.spline import (
    packed_rational_quadratic_spline,
    rational_quadratic_spline,
)
from pushforward.transforms.functional.spline_parameterization import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
    SPLINE_ENDS,
    spline_knots,
)

__all__ = [
    "DEFAULT_MIN_BIN_HEIGHT",
    "DEFAULT_MIN_BIN_WIDTH",
    "DEFAULT_MIN_DERIVATIVE",
    "LOG_SCALE_BOUND",
    "SPLINE_ENDS",
    "affine_forward",
    "affine_inverse",
    "affine_log_scale",
    "circular_rational_quadratic_spline",
    "interval_rational_quadratic_spline",
    "logit",
    "packed_rational_quadratic_spline",
    "rational_quadratic_spline",
    "sigmoid_forward",
    "soft_clamp",
    "spline_knots",
]
