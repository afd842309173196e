r"""Element-wise sigmoid and logit maps with stable log-derivatives.

The log-derivative of the sigmoid is written with softplus,

.. math:: \log \sigma'(x) = \log \sigma(x) + \log \sigma(-x)
          = -\mathrm{softplus}(-x) - \mathrm{softplus}(x),

which stays finite where :math:`\sigma(x)` rounds to 0 or 1 (``|x| > 17`` in
float32), unlike ``log(s * (1 - s))``.

The optional ``alpha`` is RealNVP's squashing of bounded data: ``[0, 1]`` is first
mapped to ``[alpha, 1 - alpha]`` so the logit of a pixel at exactly 0 or 1 stays
finite (Dinh et al. 2017, section 4.1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha < 0.5:
        raise ValueError(f"alpha must lie in [0, 0.5), got {alpha}")


def sigmoid_forward(x: Tensor, alpha: float = 0.0) -> tuple[Tensor, Tensor]:
    r"""The (un-squashed) logistic sigmoid :math:`y = (\sigma(x) - \alpha) / (1 - 2\alpha)`.

    .. math:: \log \left|\frac{dy}{dx}\right| = -\mathrm{softplus}(-x) - \mathrm{softplus}(x)
              - \log(1 - 2\alpha)

    With ``alpha = 0`` this is the plain sigmoid. It is the inverse of :func:`logit`.

    References:
        Dinh et al. (2017), Density estimation using Real NVP.

    Args:
        x: inputs, any shape.
        alpha: squashing constant in ``[0, 0.5)``.

    Returns:
        ``(y, log|dy/dx|)``, both shaped like ``x``; ``y`` lies in ``[0, 1]``.
    """
    _check_alpha(alpha)
    logabsdet = -F.softplus(-x) - F.softplus(x)
    y = torch.sigmoid(x)
    if alpha:
        y = (y - alpha) / (1 - 2 * alpha)
        logabsdet = logabsdet - math.log1p(-2 * alpha)
    return y, logabsdet


def logit(y: Tensor, alpha: float = 0.0) -> tuple[Tensor, Tensor]:
    r"""The logit of squashed data, :math:`x = \log u - \log(1 - u)`.

    Here :math:`u = \alpha + (1 - 2\alpha) y`, and

    .. math:: \log \left|\frac{dx}{dy}\right| = \log(1 - 2\alpha) - \log u - \log(1 - u)

    With ``alpha = 0`` this is the plain logit (infinite at 0 and 1). It is the
    inverse of :func:`sigmoid_forward`.

    References:
        Dinh et al. (2017), Density estimation using Real NVP.

    Args:
        y: inputs in ``[0, 1]`` (``(0, 1)`` when ``alpha = 0``), any shape.
        alpha: squashing constant in ``[0, 0.5)``.

    Returns:
        ``(x, log|dx/dy|)``, both shaped like ``y``.
    """
    _check_alpha(alpha)
    u = alpha + (1 - 2 * alpha) * y if alpha else y
    log_u = torch.log(u)
    log_one_minus_u = torch.log1p(-u)
    logabsdet = -log_u - log_one_minus_u
    if alpha:
        logabsdet = logabsdet + math.log1p(-2 * alpha)
    return log_u - log_one_minus_u, logabsdet
