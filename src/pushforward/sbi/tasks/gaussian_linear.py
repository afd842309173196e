"""Gaussian linear: a conjugate Gaussian model whose posterior is known in closed form."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pushforward.options import positive_float, positive_int
from pushforward.sbi.priors import GaussianPrior
from pushforward.sbi.tasks.base import Task


class GaussianLinear(Task):
    r"""Gaussian linear (sbibm's ``gaussian_linear``): the mean of a Gaussian, in ten dimensions.

    .. math::
        \theta \sim \mathcal{N}(0, \sigma_0^2 I), \qquad
        x \mid \theta \sim \mathcal{N}(\theta, \sigma^2 I),

    with sbibm's variances :math:`\sigma_0^2 = \sigma^2 = 0.1` (sbibm writes them as
    the precision matrices :math:`(0.1 I)^{-1}`). **Reference posterior**, exact:

    .. math:: \theta \mid x_o \sim \mathcal{N}\Big(\frac{\sigma_0^2}{\sigma_0^2 + \sigma^2} x_o,\;
              \frac{\sigma_0^2 \sigma^2}{\sigma_0^2 + \sigma^2} I\Big).

    Args:
        features: the dimension of :math:`\theta` and :math:`x` (sbibm: 10).
        prior_variance: :math:`\sigma_0^2` (sbibm: 0.1).
        noise_variance: :math:`\sigma^2` (sbibm: 0.1).

    References:
        Lueckmann et al. (2021), Benchmarking Simulation-Based Inference. AISTATS.

    Example:
        >>> task = GaussianLinear()
        >>> mean, cov = task.posterior_moments(torch.ones(10, dtype=torch.float64))
        >>> round(float(mean[0]), 6), round(float(cov[0, 0]), 6)
        (0.5, 0.05)
    """

    name = "gaussian_linear"

    def __init__(
        self, features: int = 10, prior_variance: float = 0.1, noise_variance: float = 0.1
    ) -> None:
        self.theta_features = self.x_features = positive_int("features", features)
        self.prior_variance = positive_float("prior_variance", prior_variance)
        self.noise_variance = positive_float("noise_variance", noise_variance)
        mean = torch.zeros(self.theta_features, dtype=torch.float64)
        self.prior = GaussianPrior(mean, std=torch.full_like(mean, math.sqrt(prior_variance)))

    def posterior_moments(self, x_o: Tensor) -> tuple[Tensor, Tensor]:
        """The exact posterior's mean ``(d,)`` and covariance ``(d, d)`` given ``x_o: (d,)``."""
        x_o = self._single_x(x_o)
        total = self.prior_variance + self.noise_variance
        mean = self.prior_variance / total * x_o
        variance = self.prior_variance * self.noise_variance / total
        eye = torch.eye(self.theta_features, dtype=x_o.dtype, device=x_o.device)
        return mean, variance * eye

    def _simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        noise = torch.randn(
            theta.shape, generator=generator, dtype=theta.dtype, device=theta.device
        )
        return theta + math.sqrt(self.noise_variance) * noise

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        squared = ((x - theta) ** 2).sum(-1)
        return -0.5 * squared / self.noise_variance - 0.5 * self.x_features * math.log(
            2 * math.pi * self.noise_variance
        )

    def _reference_posterior(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        mean, cov = self.posterior_moments(x_o)
        noise = torch.randn(
            n, self.theta_features, generator=generator, dtype=x_o.dtype, device=x_o.device
        )
        return mean + noise * torch.sqrt(torch.diagonal(cov))
