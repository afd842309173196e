"""Sinusoidal embeddings of a scalar time, the usual input of a velocity network."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(
    t: Tensor, dim: int, max_period: float = 10000.0, scale: float = 1000.0
) -> Tensor:
    r"""Embed times as cosines then sines of the scaled time at geometric frequencies.

    .. math:: e(t) = [\cos(s t w_0), \dots, \cos(s t w_{h-1}),
        \sin(s t w_0), \dots, \sin(s t w_{h-1})]

    with :math:`h = \lfloor dim / 2 \rfloor` frequencies

    .. math:: w_k = P^{-k / h}, \quad k = 0, \dots, h - 1,

    (:math:`P` = ``max_period``, :math:`s` = ``scale``), the periods range from
    :math:`2\pi / s` to about :math:`2\pi P / s`. An odd ``dim`` gets one trailing
    column of zeros.

    References:
        Vaswani et al. (2017), Attention Is All You Need;
        Ho et al. (2020), Denoising Diffusion Probabilistic Models.

    Args:
        t: ``(batch,)`` times (a 0-dim tensor gives one row).
        dim: embedding width, at least 2.
        max_period: :math:`P`, the longest period in units of ``scale * t``.
        scale: :math:`s`, multiplies ``t`` first so times in ``[0, 1]`` cover as
            many periods as the integer steps of a diffusion model.

    Returns:
        ``(batch, dim)`` in the dtype and device of ``t`` (the default dtype when
        ``t`` holds integers).
    """
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    t = t.reshape(-1)
    half = dim // 2
    exponents = torch.arange(half, dtype=t.dtype, device=t.device) / half
    frequencies = torch.exp(-math.log(max_period) * exponents)
    angles = (scale * t)[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2 == 1:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class SinusoidalTimeEmbedding(nn.Module):
    r"""Sinusoidal features of a time :math:`t \in [0, 1]`; no trainable parameters.

    .. math:: e(t) = [\cos(s t w_k)]_{k<h} \,\Vert\, [\sin(s t w_k)]_{k<h},
        \quad w_k = P^{-k/h}, \quad h = \lfloor dim/2 \rfloor

    See :func:`sinusoidal_embedding`.

    References:
        Vaswani et al. (2017), Attention Is All You Need;
        Ho et al. (2020), Denoising Diffusion Probabilistic Models.

    Args:
        dim: embedding width, at least 2.
        max_period: :math:`P`, the longest period in units of ``scale * t``.
        scale: :math:`s`, the factor applied to ``t`` before the sinusoids.
    """

    def __init__(self, dim: int, max_period: float = 10000.0, scale: float = 1000.0) -> None:
        super().__init__()
        if int(dim) < 2:
            raise ValueError(f"the time embedding needs dim >= 2, got dim={dim}")
        if not max_period > 1.0:
            raise ValueError(f"max_period must be greater than 1, got {max_period}")
        if not scale > 0.0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.dim = int(dim)
        self.max_period = float(max_period)
        self.scale = float(scale)

    def forward(self, t: Tensor) -> Tensor:
        """Embed ``t``.

        Args:
            t: ``(batch,)``, ``(batch, 1)`` or 0-dim times.

        Returns:
            ``(batch, dim)``, or ``(1, dim)`` for a 0-dim ``t`` (broadcasts against
            any batch); dtype and device of ``t``.
        """
        if t.dim() > 2 or (t.dim() == 2 and t.shape[1] != 1):
            raise ValueError(
                f"time must be a scalar, (batch,) or (batch, 1) tensor, got shape {tuple(t.shape)}"
            )
        return sinusoidal_embedding(t, self.dim, self.max_period, self.scale)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period}, scale={self.scale}"
