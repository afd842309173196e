r"""The von Mises--Fisher distribution on :math:`S^{d-1}`: stable normalisers, exact sampling.

The density with mean direction :math:`\mu` (a unit vector of :math:`\mathbb R^d`) and
concentration :math:`\kappa > 0`, with respect to the surface measure of the sphere, is

.. math::
    p(x) = C_d(\kappa)\, e^{\kappa \mu^\top x}, \qquad
    C_d(\kappa) = \frac{\kappa^{d/2 - 1}}{(2\pi)^{d/2} I_{d/2 - 1}(\kappa)}

and the three cases the built-in sets use are

* :math:`d = 2` (the von Mises distribution on the circle): :math:`C_2 = 1 / (2\pi I_0(\kappa))`;
* :math:`d = 3` (:math:`S^2`): :math:`C_3 = \kappa / (4\pi \sinh\kappa)`;
* :math:`d = 4` (:math:`S^3`, unit quaternions): :math:`C_4 = \kappa / (4\pi^2 I_1(\kappa))`.

:math:`C_d(\kappa)` under- and overflows for large :math:`\kappa`, so everything here
works with :math:`\log C_d(\kappa) + \kappa`, the log-density at the mode, written with
the exponentially scaled Bessel functions :math:`\operatorname{i0e}(\kappa) =
e^{-\kappa} I_0(\kappa)`, :math:`\operatorname{i1e}` and :math:`\sinh\kappa = e^\kappa
(1 - e^{-2\kappa})/2`; a log-density is then :math:`\kappa(\mu^\top x - 1) + \log
C_d(\kappa) + \kappa`, finite for every :math:`\kappa` in float64.

References:
    Mardia & Jupp (2000), Directional Statistics (the normalisers: the von Mises
    distribution, section 3.5; the von Mises--Fisher distribution, section 9.3).
    Fisher, Lewis & Embleton (1987), Statistical Analysis of Spherical Data (the
    inversion sampler on :math:`S^2`).
    Wood (1994), Simulation of the von Mises Fisher distribution (the rejection
    sampler of the cosine :math:`\mu^\top x` for any :math:`d`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

VMF_DIMENSIONS = (2, 3, 4)
"""The ambient dimensions :math:`d` whose normaliser is written out here."""


def log_vmf_mode_density(kappa: Tensor, dim: int) -> Tensor:
    r""":math:`\log C_d(\kappa) + \kappa`, the vMF log-density at its mode, stably.

    .. math::
        \log C_2 + \kappa &= -\log 2\pi - \log \operatorname{i0e}(\kappa) \\
        \log C_3 + \kappa &= \log\kappa - \log 2\pi - \log(1 - e^{-2\kappa}) \\
        \log C_4 + \kappa &= \log\kappa - \log 4\pi^2 - \log \operatorname{i1e}(\kappa)

    Args:
        kappa: concentrations :math:`\kappa > 0`, any shape.
        dim: the ambient dimension :math:`d` (2, 3 or 4).

    Returns:
        The same shape and dtype as ``kappa``.
    """
    if dim == 2:
        return -math.log(2 * math.pi) - torch.log(torch.special.i0e(kappa))
    if dim == 3:
        # 1 - exp(-2 kappa) by expm1: exact to the last bit for small kappa as well.
        return torch.log(kappa) - math.log(2 * math.pi) - torch.log(-torch.expm1(-2 * kappa))
    if dim == 4:
        return torch.log(kappa) - math.log(4 * math.pi**2) - torch.log(torch.special.i1e(kappa))
    raise ValueError(f"the vMF normaliser is written for d in {VMF_DIMENSIONS}, got d = {dim}")


def log_vmf_normalizer(kappa: Tensor, dim: int) -> Tensor:
    r""":math:`\log C_d(\kappa)`, the log-normaliser of the vMF density on :math:`S^{d-1}`.

    See :func:`log_vmf_mode_density`, of which this is the value minus :math:`\kappa`.
    """
    return log_vmf_mode_density(kappa, dim) - kappa


def vmf_log_prob(x: Tensor, means: Tensor, kappas: Tensor) -> Tensor:
    r"""Log-densities of every point under every vMF component.

    .. math:: \log p_k(x) = \kappa_k(\mu_k^\top x - 1) + \log C_d(\kappa_k) + \kappa_k

    Args:
        x: ``(n, d)`` unit vectors.
        means: ``(K, d)`` unit mean directions :math:`\mu_k`.
        kappas: ``(K,)`` concentrations :math:`\kappa_k > 0`.

    Returns:
        ``(n, K)`` log-densities w.r.t. the surface measure of :math:`S^{d-1}`.
    """
    mode = log_vmf_mode_density(kappas, means.shape[1])
    return kappas * (x @ means.T - 1) + mode


def _beta_symmetric(n: int, degrees: int, generator: torch.Generator) -> Tensor:
    r""":math:`\mathrm{Beta}(k/2, k/2)` as :math:`X / (X + Y)` with :math:`X, Y \sim \chi^2_k`.

    A ratio of sums of squared Gaussians, so it is seeded by ``generator`` (the
    ``torch.distributions`` Gamma sampler takes none).
    """
    squares = torch.randn(n, 2, degrees, generator=generator, dtype=torch.float64).square()
    chi = squares.sum(dim=2)
    return chi[:, 0] / (chi[:, 0] + chi[:, 1])


def vmf_cosines(kappa: float, dim: int, n: int, generator: torch.Generator) -> Tensor:
    r"""``n`` draws of :math:`W = \mu^\top x` for :math:`x \sim \mathrm{vMF}(\mu, \kappa)`
    on :math:`S^{d-1}`.

    :math:`W` has density proportional to :math:`e^{\kappa w}(1 - w^2)^{(d-3)/2}` on
    :math:`[-1, 1]`. On :math:`S^2` (``dim = 3``) that is :math:`e^{\kappa w}`, sampled
    exactly by inversion, :math:`W = 1 + \log(U + (1 - U)e^{-2\kappa})/\kappa`;
    otherwise by Wood's rejection sampler with

    .. math::
        b = \frac{d - 1}{2\kappa + \sqrt{4\kappa^2 + (d-1)^2}},\quad
        x_0 = \frac{1 - b}{1 + b},\quad c = \kappa x_0 + (d - 1)\log(1 - x_0^2),

    proposing :math:`W = (1 - (1 + b)Z) / (1 - (1 - b)Z)` with
    :math:`Z \sim \mathrm{Beta}(\tfrac{d-1}2, \tfrac{d-1}2)` and accepting when
    :math:`\kappa W + (d - 1)\log(1 - x_0 W) - c \ge \log U`. (``b`` is written in
    the form without cancellation for large :math:`\kappa`.)

    References:
        Wood (1994), Simulation of the von Mises Fisher distribution.
        Fisher, Lewis & Embleton (1987), Statistical Analysis of Spherical Data (the
        inversion on :math:`S^2`).

    Args:
        kappa: the concentration :math:`\kappa > 0`.
        dim: the ambient dimension :math:`d \ge 2`.
        n: the number of draws.
        generator: the random stream.

    Returns:
        float64 ``(n,)`` cosines in ``[-1, 1]``.
    """
    if dim == 3:
        # U in (0, 1], so the log stays finite even when exp(-2 kappa) underflows to 0.
        u = 1 - torch.rand(n, generator=generator, dtype=torch.float64)
        w = 1 + torch.log(u + (1 - u) * math.exp(-2 * kappa)) / kappa
        return w.clamp(-1.0, 1.0)
    b = (dim - 1) / (2 * kappa + math.sqrt(4 * kappa**2 + (dim - 1) ** 2))
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + (dim - 1) * math.log(1 - x0**2)
    accepted: list[Tensor] = []
    remaining = n
    while remaining > 0:
        # Wood's acceptance rate stays above 0.6 (it tends to about 0.66 for large kappa
        # at d = 2), so twice the shortfall in proposals usually finishes in one round.
        size = max(16, 2 * remaining)
        z = _beta_symmetric(size, dim - 1, generator)
        w = (1 - (1 + b) * z) / (1 - (1 - b) * z)
        log_u = torch.log(1 - torch.rand(size, generator=generator, dtype=torch.float64))
        keep = w[kappa * w + (dim - 1) * torch.log(1 - x0 * w) - c >= log_u][:remaining]
        accepted.append(keep)
        remaining -= keep.shape[0]
    return torch.cat(accepted).clamp(-1.0, 1.0) if accepted else torch.zeros(0, dtype=torch.float64)


def sample_vmf(mean: Tensor, kappa: float, n: int, generator: torch.Generator) -> Tensor:
    r"""``n`` exact draws from :math:`\mathrm{vMF}(\mu, \kappa)` on :math:`S^{d-1}`.

    .. math:: x = W\mu + \sqrt{1 - W^2}\, v

    with the cosine :math:`W` from :func:`vmf_cosines` and :math:`v` uniform on the
    unit sphere of the tangent space at :math:`\mu` (a Gaussian with its
    :math:`\mu` component removed, normalised; a random sign when ``d = 2``).

    References:
        Wood (1994), Simulation of the von Mises Fisher distribution.

    Args:
        mean: ``(d,)`` unit mean direction :math:`\mu`.
        kappa: the concentration :math:`\kappa > 0`.
        n: the number of draws.
        generator: the random stream.

    Returns:
        float64 ``(n, d)`` unit vectors.
    """
    mean = mean.to(torch.float64)
    w = vmf_cosines(kappa, mean.shape[0], n, generator)
    z = torch.randn(n, mean.shape[0], generator=generator, dtype=torch.float64)
    tangent = z - (z @ mean)[:, None] * mean
    tangent = tangent / torch.linalg.vector_norm(tangent, dim=1, keepdim=True)
    points = w[:, None] * mean + torch.sqrt((1 - w.square()).clamp(min=0))[:, None] * tangent
    return points / torch.linalg.vector_norm(points, dim=1, keepdim=True)
