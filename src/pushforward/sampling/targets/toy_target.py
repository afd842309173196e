"""The 2-D toys of :mod:`pushforward.data.toys` as targets (``two-moons``, ``rings``)."""

from __future__ import annotations

import torch
from torch import Tensor

from pushforward.data.densities import IsotropicGaussianMixture
from pushforward.data.toys import Toy, check_sample_count, get_toy
from pushforward.sampling.target import Target
from pushforward.sampling.targets.gaussian_mixture import component_log_densities
from pushforward.sampling.targets.points import check_points


class ToyTarget(Target):
    r"""A built-in 2-D toy with an exact density, used as a normalised target.

    ``log_prob`` is the toy's exact log-density (closed form or 1-D quadrature, see
    :mod:`pushforward.data.densities`), so ``log_z = 0``; ``sample`` is the toy's
    own sampler. ``two-moons`` is the toy ``moons`` (two half circles scaled by 2,
    noise sd 0.2) and ``rings`` four circles of radii 0.75 to 3 (noise sd 0.08).

    .. math:: p(x) = \sum_k w_k \int q(t)\, \mathcal N(x; c_k(t), \sigma^2 I)\, dt

    References:
        Grathwohl et al. (2019), FFJORD: Free-form Continuous Dynamics for Scalable
        Reversible Generative Models (the 2-D toys); as sampling targets, e.g.
        Grenioux et al. (2023), On Sampling with Approximate Transport Maps (two moons).

    Args:
        toy: the toy's name in :data:`pushforward.data.toys.TOYS` (its density must exist).
        name: the target's name (the toy's name by default).

    Example:
        >>> target = ToyTarget("moons", name="two-moons")
        >>> target.sample(3, torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """

    features = 2
    log_z = 0.0
    has_sample = True

    def __init__(self, toy: str, name: str | None = None) -> None:
        self.toy: Toy = get_toy(toy)
        if self.toy.log_prob is None:
            raise ValueError(f"toy {toy!r} has no exact density, so it cannot be a target")
        self.name = toy if name is None else name

    def log_prob(self, x: Tensor) -> Tensor:
        check_points(x, self.features, self.name)
        density = self.toy.density
        if density is None:  # excluded in __init__; kept for the type checker
            raise ValueError(f"toy {self.toy.name!r} has no exact density")
        if isinstance(density, IsotropicGaussianMixture):
            # The mixture's own log_prob works in place to save memory, which autograd
            # cannot differentiate; a sampler needs the gradient, so evaluate it here.
            centres = density.centres.to(x)
            log_weights = density.log_weights.to(x)
            components = component_log_densities(x, centres, density.scale)
            return torch.logsumexp(components + log_weights, dim=1)
        return density.log_prob(x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_sample_count(n)
        if generator is None:
            # The toys draw from a generator; without one, seed it from the global RNG
            # so that torch.manual_seed still makes the draw reproducible.
            seed = int(torch.randint(0, 2**62, (1,)).item())
            generator = torch.Generator().manual_seed(seed)
        return self.toy.sample_with(n, generator)
