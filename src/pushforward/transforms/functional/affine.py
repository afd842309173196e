"""Element-wise affine maths with a stable scale parameterisation."""

from __future__ import annotations

import torch
from torch import Tensor

#: Log-scales are soft-clamped to ``[-LOG_SCALE_BOUND, LOG_SCALE_BOUND]``: an
#: unbounded ``exp`` lets one bad conditioner output overflow the whole flow.
LOG_SCALE_BOUND = 5.0


def soft_clamp(values: Tensor, bound: float) -> Tensor:
    r"""Smoothly limits values to ``(-bound, bound)``: :math:`b \tanh(v / b)`.

    The map is the identity to first order near zero, so a zero-initialised
    conditioner still starts at the identity transform.
    """
    return bound * torch.tanh(values / bound)


def affine_log_scale(unconstrained_scale: Tensor, bound: float = LOG_SCALE_BOUND) -> Tensor:
    """The log-scale used by :func:`affine_forward`: a soft clamp of the raw output."""
    return soft_clamp(unconstrained_scale, bound)


def affine_forward(
    x: Tensor, shift: Tensor, unconstrained_scale: Tensor, bound: float = LOG_SCALE_BOUND
) -> tuple[Tensor, Tensor]:
    r"""The affine map :math:`y = x e^{s} + t` with :math:`s = b \tanh(\tilde s / b)`.

    As in RealNVP (Dinh et al. 2017, 'Density estimation using Real NVP') and MAF
    (Papamakarios et al. 2017, 'Masked Autoregressive Flow for Density
    Estimation'), with the log-scale soft-clamped for stability.

    Args:
        x: inputs, any shape.
        shift: :math:`t`, same shape as ``x``.
        unconstrained_scale: :math:`\tilde s`, same shape as ``x``.
        bound: the soft bound :math:`b` on the log-scale.

    Returns:
        ``(y, log|dy/dx|)``, both shaped like ``x`` (the log-derivative is per element).
    """
    log_scale = affine_log_scale(unconstrained_scale, bound)
    return x * torch.exp(log_scale) + shift, log_scale


def affine_inverse(
    y: Tensor, shift: Tensor, unconstrained_scale: Tensor, bound: float = LOG_SCALE_BOUND
) -> tuple[Tensor, Tensor]:
    r"""Inverse of :func:`affine_forward`: :math:`x = (y - t) e^{-s}`.

    Returns:
        ``(x, log|dx/dy|)``, both shaped like ``y``.
    """
    log_scale = affine_log_scale(unconstrained_scale, bound)
    return (y - shift) * torch.exp(-log_scale), -log_scale
