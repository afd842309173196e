"""Two-dimensional toy distributions used throughout the flow literature.

Each sampler takes ``n`` and a ``torch.Generator`` and returns ``(n, 2)`` float64
samples, so a dataset is reproducible from its seed alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def moons(n: int, generator: torch.Generator, noise: float = 0.1) -> Tensor:
    """Two interleaving half circles (as scikit-learn's ``make_moons``), with Gaussian noise."""
    upper = n // 2
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
    points = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    points[upper:, 0] = 1 - points[upper:, 0]
    points[upper:, 1] = 0.5 - points[upper:, 1]
    points = points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (points - torch.tensor([0.5, 0.25], dtype=torch.float64)) * 2


def eight_gaussians(
    n: int, generator: torch.Generator, radius: float = 2.0, scale: float = 0.2
) -> Tensor:
    """An equal mixture of eight isotropic Gaussians on a circle."""
    component = torch.randint(0, 8, (n,), generator=generator)
    angle = component.to(torch.float64) * (2 * math.pi / 8)
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centres + scale * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def checkerboard(n: int, generator: torch.Generator) -> Tensor:
    """Uniform on the eight black squares of a 4x4 checkerboard on ``[-2, 2]^2``."""
    x = 4 * torch.rand(n, generator=generator, dtype=torch.float64) - 2
    row = torch.randint(0, 2, (n,), generator=generator).to(torch.float64)
    y = torch.rand(n, generator=generator, dtype=torch.float64) - 2 * row + torch.floor(x) % 2
    return torch.stack([x, y], dim=1) * 1.0


def two_spirals(n: int, generator: torch.Generator, noise: float = 0.1) -> Tensor:
    """Two interleaved Archimedean spirals."""
    t = torch.sqrt(torch.rand(n, generator=generator, dtype=torch.float64)) * 3 * math.pi
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
    points = sign[:, None] * torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / 3
    return points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)


TOYS: dict[str, Callable[..., Tensor]] = {
    "moons": moons,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "2spirals": two_spirals,
}


def sample_toy(name: str, n: int, seed: int = 0) -> Tensor:
    """``n`` samples ``(n, 2)`` of the named toy distribution, reproducible from ``seed``."""
    if name not in TOYS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(TOYS))}")
    generator = torch.Generator().manual_seed(seed)
    return TOYS[name](n, generator)
