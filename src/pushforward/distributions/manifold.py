"""The reference distribution of a manifold: uniform where it is compact."""

from __future__ import annotations

import torch
from torch import Tensor

from pushforward.distributions.base import Distribution
from pushforward.geometry import Manifold


class ManifoldUniform(Distribution):
    r"""The uniform distribution of a compact manifold (the standard normal on any
    Euclidean factor), with respect to its Riemannian volume:

    .. math:: \log p(x) = -\log \operatorname{vol}(M)

    (:math:`-\log 4\pi` on :math:`S^2`, :math:`-d \log 2\pi` on :math:`T^d`,
    :math:`-\log 2\pi^2` on SO(3) as unit quaternions).

    Example:
        >>> from pushforward.geometry import Sphere
        >>> base = ManifoldUniform(Sphere(2))
        >>> base.log_prob(base.sample(2))
        tensor([-2.5310, -2.5310])
    """

    def __init__(self, manifold: Manifold) -> None:
        super().__init__((manifold.ambient,))
        self.manifold = manifold

    def log_prob(self, z: Tensor) -> Tensor:
        return self.manifold.reference_log_prob(z)

    def rsample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.manifold.random(n, dtype=self.dtype, device=self.device, generator=generator)
