"""The path-integral sampler's nine Gaussians on a grid (``grid-9``)."""

from __future__ import annotations

import math

import torch

from pushforward.options import positive_float, positive_int
from pushforward.sampling.targets.gaussian_mixture import GaussianMixtureTarget


def grid_means(per_side: int, half_width: float) -> torch.Tensor:
    """``(per_side**2, 2)`` float64 grid points on ``[-w, w]^2``, first coordinate slowest."""
    axis = torch.linspace(-half_width, half_width, per_side, dtype=torch.float64)
    first, second = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([first.reshape(-1), second.reshape(-1)], dim=1)


class GaussianGrid(GaussianMixtureTarget):
    r"""An equal mixture of Gaussians centred on the grid :math:`\{-5, 0, 5\}^2`, variance 0.3.

    .. math:: p(x) = \frac19 \sum_{\mu \in \{-5, 0, 5\}^2} \mathcal N(x; \mu, 0.3\, I)

    The benchmark of the path integral sampler (its ``Fun`` target: means from
    ``np.mgrid[-5:5:3j, -5:5:3j]``, standard deviation :math:`\sqrt{0.3}`, equal
    weights), here in the same order of the means, first coordinate slowest.

    References:
        Zhang & Chen (2022), Path Integral Sampler: a Stochastic Control Approach
        for Sampling (``src/datamodules/datasets/ps.py`` of qsh-zh/pis).

    Args:
        per_side: grid points along each axis (3).
        half_width: the grid spans ``[-half_width, half_width]`` on each axis (5).
        variance: every component's variance (0.3).

    Example:
        >>> import torch
        >>> target = GaussianGrid()
        >>> target.mode_of(torch.tensor([[4.0, -6.0]])).item()  # the mean (5, -5)
        6
    """

    def __init__(self, per_side: int = 3, half_width: float = 5.0, variance: float = 0.3) -> None:
        per_side = positive_int("per_side", per_side)
        half_width = positive_float("half_width", half_width)
        variance = positive_float("variance", variance)
        super().__init__(
            grid_means(per_side, half_width), math.sqrt(variance), f"grid-{per_side**2}"
        )
        self.variance = variance
