"""An equal-weight mixture of isotropic Gaussians: the shared maths of the mixture targets."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pushforward.data.toys import check_sample_count
from pushforward.sampling.target import Target
from pushforward.sampling.targets.points import check_points


def component_log_densities(x: Tensor, means: Tensor, scale: float) -> Tensor:
    r"""``(batch, K)`` component log-densities :math:`\log \mathcal N(x; \mu_k, \sigma^2 I)`.

    The differences :math:`x - \mu_k` are formed directly (not by expanding
    :math:`\lVert x\rVert^2 - 2 x\cdot\mu + \lVert\mu\rVert^2`), so float32 keeps its
    precision where the means are far from the origin (the 40-mode mixture spans
    :math:`[-40, 40]^2`).

    Args:
        x: ``(batch, d)`` points.
        means: ``(K, d)`` component means, in ``x``'s dtype and device.
        scale: the common standard deviation :math:`\sigma`.
    """
    squared = (x[:, None, :] - means[None]).square().sum(dim=-1)
    features = x.shape[1]
    return -squared / (2 * scale**2) - 0.5 * features * math.log(2 * math.pi * scale**2)


class GaussianMixtureTarget(Target):
    r"""The equal mixture :math:`p(x) = \frac1K \sum_{k=1}^K \mathcal N(x; \mu_k, \sigma^2 I)`.

    .. math:: \log p(x) = \operatorname{logsumexp}_k \Big(-\frac{\lVert x - \mu_k\rVert^2}
              {2\sigma^2}\Big) - \log K - \frac d2 \log(2\pi\sigma^2)

    Normalised (``log_z = 0``), with exact samples, ``modes`` the means and
    :meth:`mode_of` the component of highest responsibility, which for equal
    weights and a common scale is the nearest mean.

    Args:
        means: ``(K, d)`` component means (kept in float64).
        scale: the common standard deviation :math:`\sigma > 0`.
        name: the target's name.

    Example:
        >>> import torch
        >>> target = GaussianMixtureTarget(torch.tensor([[-1.0], [1.0]]), 0.5)
        >>> target.mode_of(torch.tensor([[-0.8], [2.0]])).tolist()
        [0, 1]
    """

    log_z = 0.0
    has_sample = True

    def __init__(self, means: Tensor, scale: float, name: str = "gaussian-mixture") -> None:
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        if not math.isfinite(scale) or not scale > 0:
            raise ValueError(f"the component scale must be a positive number, got {scale!r}")
        self.means = means.detach().to(device="cpu", dtype=torch.float64).clone()
        self.scale = float(scale)
        self.features = self.means.shape[1]
        # The mixture's spread per coordinate: the flow of a target run works in its units.
        spread = torch.zeros(self.features, dtype=torch.float64)
        if self.means.shape[0] > 1:
            spread = self.means.var(dim=0, unbiased=False)
        self.reference_scale = torch.sqrt(spread + self.scale**2)
        self.name = name

    def _log_components(self, x: Tensor) -> Tensor:
        check_points(x, self.features, self.name)
        return component_log_densities(x, self.means.to(x), self.scale)

    def log_prob(self, x: Tensor) -> Tensor:
        log_components = self._log_components(x)
        return torch.logsumexp(log_components, dim=1) - math.log(self.means.shape[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        component = torch.randint(
            self.means.shape[0], (check_sample_count(n),), generator=generator
        )
        noise = torch.randn(n, self.features, generator=generator, dtype=torch.float64)
        return self.means[component] + self.scale * noise

    @property
    def modes(self) -> Tensor:
        return self.means.clone()

    def mode_of(self, x: Tensor) -> Tensor:
        return self._log_components(x).argmax(dim=1)
