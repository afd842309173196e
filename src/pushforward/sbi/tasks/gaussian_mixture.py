"""Gaussian mixture: a broad and a narrow Gaussian sharing their mean."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pushforward.options import positive_float, positive_int
from pushforward.sbi.priors import BoxUniformPrior
from pushforward.sbi.tasks.base import Task, rejection_sample

# sbibm's mixture: equal weights, standard deviations 1 and 0.1, both centred at theta.
WEIGHTS = (0.5, 0.5)
STDS = (1.0, 0.1)


class GaussianMixture(Task):
    r"""Gaussian mixture (sbibm's ``gaussian_mixture``): :math:`\theta \in [-10, 10]^2`.

    .. math::
        x \mid \theta \sim \tfrac12\,\mathcal{N}(\theta, I)
                         + \tfrac12\,\mathcal{N}(\theta, 0.01\, I).

    **Reference posterior**, exact: the likelihood is symmetric in :math:`x - \theta`,
    so under the uniform prior the posterior is the same mixture centred at
    :math:`x_o` and truncated to the box; it is drawn by rejection from the untruncated
    mixture (which truncates both components in the right proportion).

    Args:
        features: the dimension of :math:`\theta` and :math:`x` (sbibm: 2).
        bound: the prior is uniform on :math:`[-b, b]^d` (sbibm: 10).

    References:
        Sisson, Fan and Tanaka (2007), Sequential Monte Carlo without likelihoods. PNAS.
        Beaumont, Cornuet, Marin and Robert (2009), Adaptive approximate Bayesian
        computation. Biometrika.
        Lueckmann et al. (2021), Benchmarking Simulation-Based Inference. AISTATS.
    """

    name = "gaussian_mixture"

    def __init__(self, features: int = 2, bound: float = 10.0) -> None:
        self.theta_features = self.x_features = positive_int("features", features)
        bound = positive_float("bound", bound)
        self.prior = BoxUniformPrior([-bound] * features, [bound] * features)

    def _simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        return theta + _mixture_noise(theta.shape[0], self.x_features, generator, theta)

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        squared = ((x - theta) ** 2).sum(-1)
        d = self.x_features
        components = [
            math.log(weight)
            - 0.5 * squared / std**2
            - d * math.log(std)
            - 0.5 * d * math.log(2 * math.pi)
            for weight, std in zip(WEIGHTS, STDS, strict=True)
        ]
        return torch.logsumexp(torch.stack(components, dim=-1), dim=-1)

    def _reference_posterior(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        def propose(count: int) -> tuple[Tensor, Tensor]:
            theta = x_o + _mixture_noise(count, self.theta_features, generator, x_o)
            return theta, self.prior.contains(theta)

        return rejection_sample(propose, n)


def _mixture_noise(n: int, features: int, generator: torch.Generator, like: Tensor) -> Tensor:
    """``(n, features)`` draws of the centred mixture, in ``like``'s dtype and device."""
    pick = torch.rand(n, 1, generator=generator, dtype=like.dtype, device=like.device)
    noise = torch.randn(n, features, generator=generator, dtype=like.dtype, device=like.device)
    std = torch.where(pick < WEIGHTS[0], STDS[0], STDS[1])
    return std * noise
