"""Distributions of the training times t in [0, 1] of a flow-matching loss."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

TIME_SAMPLERS: tuple[str, ...] = ("uniform", "logit-normal", "u-shaped")
"""Names accepted by :func:`sample_times` and :func:`time_density`."""

_DEFAULTS: dict[str, dict[str, float]] = {
    "uniform": {},
    "logit-normal": {"location": 0.0, "scale": 1.0},
    "u-shaped": {"a": 4.0},
}


def _parameters(kind: str, params: Mapping[str, object]) -> dict[str, float]:
    """The sampler's parameters with defaults filled in, validated."""
    if kind not in TIME_SAMPLERS:
        raise ValueError(f"unknown time sampler {kind!r}; valid ones: {', '.join(TIME_SAMPLERS)}")
    defaults = _DEFAULTS[kind]
    for key in params:
        if key not in defaults:
            valid = f"valid: {', '.join(defaults)}" if defaults else "it takes none"
            raise ValueError(f"unknown parameter {key!r} for time sampler {kind!r}; {valid}")
    resolved: dict[str, float] = {}
    for key, default in defaults.items():
        value = params.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"parameter {key!r} of time sampler {kind!r} must be a finite number, got {value!r}"
            )
        resolved[key] = float(value)
    if kind == "logit-normal" and resolved["scale"] <= 0:
        raise ValueError(f"parameter 'scale' of 'logit-normal' must be positive, got {resolved}")
    if kind == "u-shaped" and resolved["a"] <= 0:
        raise ValueError(f"parameter 'a' of 'u-shaped' must be positive, got {resolved['a']}")
    return resolved


def sample_times(
    n: int,
    kind: str = "uniform",
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    generator: torch.Generator | None = None,
    **params: float,
) -> Tensor:
    r"""Draws ``n`` training times in ``[0, 1]``.

    * ``uniform``: :math:`t \sim U[0, 1]`.
    * ``logit-normal``: :math:`t = \mathrm{sigmoid}(m + s z)`, :math:`z \sim N(0, 1)`,
      parameters ``location`` :math:`m` (0) and ``scale`` :math:`s` (1); more
      weight on intermediate times (Esser et al. 2024).
    * ``u-shaped``: density :math:`p(t) \propto \cosh(a (t - \tfrac12))`,
      parameter ``a`` (4); more weight near both ends (Lee et al. 2024). This is
      the mixture :math:`\tfrac12 (q(t) + q(1 - t))` of the truncated exponential
      :math:`q(t) \propto e^{a t}` used by the paper's code; sampled here by the
      closed-form inverse CDF
      :math:`t = \tfrac12 + \mathrm{asinh}((2u - 1) \sinh(a/2)) / a`, :math:`u \sim U[0, 1]`.
      (That code draws each time with its mirror :math:`1 - t` in one batch and
      squeezes times into :math:`[10^{-5}, 1 - 10^{-5}]`; here draws are
      independent and the marginal is the same.)

    References:
        Esser et al. (2024), Scaling Rectified Flow Transformers for
        High-Resolution Image Synthesis;
        Lee et al. (2024), Improving the Training of Rectified Flows.

    Args:
        n: number of times.
        kind: one of :data:`TIME_SAMPLERS`.
        dtype: floating dtype of the result.
        device: device of the result.
        generator: random generator (on ``device``).
        **params: the sampler's parameters (see above).

    Returns:
        ``(n,)`` times in ``[0, 1]``.
    """
    values = _parameters(kind, params)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of times n must be a non-negative integer, got {n!r}")
    if kind == "logit-normal":
        z = torch.randn(n, generator=generator, dtype=dtype, device=device)
        return torch.sigmoid(values["location"] + values["scale"] * z)
    u = torch.rand(n, generator=generator, dtype=dtype, device=device)
    if kind == "uniform":
        return u
    a = values["a"]
    t = 0.5 + torch.asinh((2.0 * u - 1.0) * math.sinh(a / 2)) / a
    # asinh(sinh(a/2)) / a can round a hair past 1/2; the support is [0, 1].
    return t.clamp(0.0, 1.0)


def time_density(t: Tensor, kind: str, **params: float) -> Tensor:
    r"""The density of a time sampler of :func:`sample_times`, evaluated at ``t``.

    * ``uniform``: :math:`p(t) = 1`.
    * ``logit-normal``: :math:`p(t) = \frac{1}{s\sqrt{2\pi}\, t (1 - t)}
      \exp\!\big(-\frac{(\mathrm{logit}\, t - m)^2}{2 s^2}\big)`, 0 at the ends.
    * ``u-shaped``: :math:`p(t) = \frac{a \cosh(a (t - 1/2))}{2 \sinh(a / 2)}`.

    All are 0 outside ``[0, 1]`` and integrate to 1 over it.

    References:
        Esser et al. (2024), Scaling Rectified Flow Transformers for
        High-Resolution Image Synthesis;
        Lee et al. (2024), Improving the Training of Rectified Flows.

    Args:
        t: times, any shape, floating point.
        kind: one of :data:`TIME_SAMPLERS`.
        **params: the sampler's parameters.

    Returns:
        densities shaped like ``t``.
    """
    values = _parameters(kind, params)
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise TypeError("times t must be a floating-point tensor")
    inside = (t >= 0) & (t <= 1)
    if kind == "uniform":
        density = torch.ones_like(t)
    elif kind == "u-shaped":
        a = values["a"]
        density = a * torch.cosh(a * (t - 0.5)) / (2.0 * math.sinh(a / 2))
    else:
        m, s = values["location"], values["scale"]
        # logit and 1/(t(1-t)) are infinite at the ends, where the density is 0:
        # clamp first so the discarded branch forms no inf or NaN (nor its gradient).
        open_interval = (t > 0) & (t < 1)
        safe = torch.where(open_interval, t, torch.full_like(t, 0.5))
        logit = torch.log(safe) - torch.log1p(-safe)
        log_density = (
            -0.5 * ((logit - m) / s) ** 2
            - math.log(s * math.sqrt(2 * math.pi))
            - torch.log(safe)
            - torch.log1p(-safe)
        )
        density = torch.where(open_interval, torch.exp(log_density), torch.zeros_like(t))
    return torch.where(inside, density, torch.zeros_like(t))
