"""Neal's funnel (``funnel-10``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pushforward.data.toys import check_sample_count
from pushforward.options import positive_float, positive_int
from pushforward.sampling.target import Target
from pushforward.sampling.targets.points import check_points


class NealFunnel(Target):
    r"""Neal's funnel: a Gaussian whose variance is the exponential of another Gaussian.

    .. math:: x_0 \sim \mathcal N(0, 3^2), \qquad
              x_i \mid x_0 \sim \mathcal N(0, e^{x_0}),\ i = 1, \dots, d - 1

    .. math:: \log p(x) = -\frac{x_0^2}{2 \cdot 3^2} - \frac12 \log(2\pi\, 3^2)
              - \frac{d - 1}{2} (\log 2\pi + x_0) - \frac12 \sum_{i \ge 1} x_i^2 e^{-x_0}

    Normalised (``log_z = 0``) with exact samples; the neck (:math:`x_0 < -3`, mass
    :math:`\Phi(-1) \approx 0.1587`) is what samplers miss. The path integral
    sampler's ``funnel`` uses :math:`x_0 \sim \mathcal N(0, 1)` instead; give
    ``scale=1`` for it.

    References:
        Neal (2003), Slice Sampling.

    Args:
        features: the dimension :math:`d \ge 2` (10).
        scale: the standard deviation of :math:`x_0` (3).

    Example:
        >>> import torch
        >>> target = NealFunnel(features=3)
        >>> round(target.log_prob(torch.zeros(1, 3, dtype=torch.float64)).item(), 4)
        -3.8554
    """

    log_z = 0.0
    has_sample = True

    def __init__(self, features: int = 10, scale: float = 3.0) -> None:
        self.features = positive_int("features", features, minimum=2)
        self.scale = positive_float("scale", scale)
        self.name = f"funnel-{self.features}"

    def log_prob(self, x: Tensor) -> Tensor:
        check_points(x, self.features, self.name)
        neck, rest = x[:, 0], x[:, 1:]
        # The squared standard score (x_i e^{-x_0/2})^2 never forms e^{-x_0} alone, which
        # overflows float32 below x_0 = -88; the clamp keeps e^{-x_0/2} finite so that
        # x_i = 0 gives 0 (not 0 * inf = NaN, in the value or its gradient); the margin
        # of 1 covers the rounding of log(max) itself.
        largest = math.log(torch.finfo(x.dtype).max) - 1.0
        inverse_sd = torch.exp((-0.5 * neck).clamp(max=largest))
        standard = rest * inverse_sd[:, None]
        log_neck = -0.5 * (neck / self.scale).square() - 0.5 * math.log(2 * math.pi * self.scale**2)
        # Far down the neck (|x_0| beyond the square root of the largest float) the
        # normaliser's +|x_0| term would overflow to +inf beside the -inf of the squares,
        # and inf - inf is NaN: clamped there, the density is zero (-inf) as it should be.
        bounded = neck.clamp(min=-math.sqrt(torch.finfo(x.dtype).max))
        log_rest = -0.5 * standard.square().sum(dim=1) - 0.5 * rest.shape[1] * (
            math.log(2 * math.pi) + bounded
        )
        return log_neck + log_rest

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(
            check_sample_count(n), self.features, generator=generator, dtype=torch.float64
        )
        neck = self.scale * z[:, :1]
        return torch.cat([neck, torch.exp(0.5 * neck) * z[:, 1:]], dim=1)
