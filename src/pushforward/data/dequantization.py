"""Uniform dequantisation of integer-valued data and the bits-per-dimension it implies."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def uniform_dequantize(
    values: Tensor, levels: int, generator: torch.Generator | None = None
) -> Tensor:
    r"""Maps integers :math:`v \in \{0, \dots, L-1\}` to :math:`(v + u)/L`, :math:`u \sim U[0,1)`.

    Fitting a continuous density :math:`p` to :math:`x \in [0, 1)^D` bounds the
    discrete model: :math:`\log P(v) \ge \mathbb E_u[\log p(x)] - D \log L`.

    References:
        Theis et al. (2016), A note on the evaluation of generative models;
        Uria et al. (2013), RNADE: The real-valued neural autoregressive
        density-estimator.

    Args:
        values: integer-valued tensor of any shape (any dtype), entries in ``[0, L)``.
        levels: :math:`L`, the number of distinct values.
        generator: random source for :math:`u`.

    Returns:
        A floating tensor of ``values``' shape (float64 unless ``values`` is
        floating) with entries in ``[0, 1)``.
    """
    dtype = values.dtype if values.is_floating_point() else torch.float64
    noise = torch.rand(values.shape, generator=generator, dtype=dtype, device=values.device)
    return (values.to(dtype) + noise) / levels


def bits_per_dim(nll_nats: float | Tensor, dims: int, n_levels: int = 17) -> float | Tensor:
    r"""Bits per dimension of data dequantised and scaled to ``[0, 1)`` by :math:`L` levels.

    With :math:`x = (v + u)/L`, a density :math:`p_x` on the scaled data is a
    density on the integer grid's unit cells :math:`y = v + u = L x` of
    :math:`p_y(y) = p_x(y/L)\, L^{-D}`, so the negative log-likelihood in bits per
    dimension is

    .. math:: \text{bpd} = \frac{-\log p_x(x) + D \log L}{D \log 2}
              = \frac{\text{NLL}_x}{D \log 2} + \log_2 L

    It upper-bounds :math:`-\log_2 P(v) / D` of the discrete data.

    References:
        Theis et al. (2016), A note on the evaluation of generative models;
        Dinh et al. (2017), Density estimation using Real NVP.

    Args:
        nll_nats: mean negative log-likelihood per example, in nats, of the
            scaled data (a float or a tensor of any shape).
        dims: :math:`D`, values per example (64 for 8x8 digits).
        n_levels: :math:`L` (17 for scikit-learn's digits, 256 for 8-bit images).

    Returns:
        Bits per dimension, of the same type as ``nll_nats``.
    """
    if dims <= 0 or n_levels <= 1:
        raise ValueError(f"need dims > 0 and n_levels > 1, got dims={dims}, n_levels={n_levels}")
    return nll_nats / (dims * math.log(2)) + math.log2(n_levels)
