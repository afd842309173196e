"""SLCP: a simple likelihood whose posterior is complex (four symmetric, sharp modes)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pushforward.sbi.priors import BoxUniformPrior
from pushforward.sbi.tasks.base import Task
from pushforward.sbi.tasks.smc import tempered_smc

DRAWS = 4
# sbibm adds this to the covariance's diagonal so that it stays positive definite.
DIAGONAL_JITTER = 1e-6


class SLCP(Task):
    r"""Simple likelihood, complex posterior (sbibm's ``slcp``): :math:`\theta \in [-3, 3]^5`.

    :math:`x` is four i.i.d. draws :math:`x_j \sim \mathcal{N}(m, S)`, flattened to
    eight values :math:`(x_{1,1}, x_{1,2}, x_{2,1}, \dots, x_{4,2})`, with

    .. math::
        m = (\theta_1, \theta_2), \quad s_1 = \theta_3^2, \quad s_2 = \theta_4^2, \quad
        \rho = \tanh \theta_5, \quad
        S = \begin{pmatrix} s_1^2 + \epsilon & \rho s_1 s_2 \
                            \rho s_1 s_2 & s_2^2 + \epsilon \end{pmatrix},

    :math:`\epsilon = 10^{-6}` as in sbibm. The likelihood is the product of the four
    Gaussian densities (exact).

    **Reference posterior**, near-exact. The likelihood depends on :math:`\theta_3` and
    :math:`\theta_4` only through their squares, so the posterior is four mirror images
    of its restriction to :math:`\theta_3, \theta_4 \ge 0`. That fold is sampled by
    tempered sequential Monte Carlo (:func:`~pushforward.sbi.tasks.smc.tempered_smc`:
    prior draws, adaptive tempering, random-walk Metropolis moves made in the
    :class:`NonCentredCoordinates` that straighten the funnel between the mean and the
    scales), and each draw then gets independent random signs on :math:`\theta_3` and
    :math:`\theta_4`, which gives the four modes exactly equal mass. (sbibm draws it by
    sampling-importance-resampling, a neural spline flow fitted to those draws, and
    rejection sampling.)

    References:
        Papamakarios, Sterratt and Murray (2019), Sequential Neural Likelihood: Fast
        Likelihood-free Inference with Autoregressive Flows. AISTATS.
        Lueckmann et al. (2021), Benchmarking Simulation-Based Inference. AISTATS.
    """

    name = "slcp"
    theta_features = 5
    x_features = 2 * DRAWS

    def __init__(self) -> None:
        self.prior = BoxUniformPrior([-3.0] * 5, [3.0] * 5)
        # The prior restricted to theta_3, theta_4 >= 0: what the reference sampler folds onto.
        self.folded_prior = BoxUniformPrior([-3.0, -3.0, 0.0, 0.0, -3.0], [3.0] * 5)

    def _simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        n = theta.shape[0]
        variance_1, _, covariance, det = slcp_covariance(theta)
        noise = torch.randn(
            n, DRAWS, 2, generator=generator, dtype=theta.dtype, device=theta.device
        )
        # The Cholesky factor of S in closed form; its last entry is sqrt(det / S_11).
        std_1 = torch.sqrt(variance_1).unsqueeze(-1)
        first = theta[:, :1] + std_1 * noise[..., 0]
        second = (
            theta[:, 1:2]
            + (covariance.unsqueeze(-1) / std_1) * noise[..., 0]
            + torch.sqrt(det / variance_1).unsqueeze(-1) * noise[..., 1]
        )
        return torch.stack((first, second), dim=-1).reshape(n, self.x_features)

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        variance_1, variance_2, covariance, det = (
            value.unsqueeze(-1) for value in slcp_covariance(theta)
        )
        points = x.reshape(-1, DRAWS, 2)
        d_1 = points[..., 0] - theta[:, :1]
        d_2 = points[..., 1] - theta[:, 1:2]
        quadratic = (variance_2 * d_1**2 - 2 * covariance * d_1 * d_2 + variance_1 * d_2**2) / det
        log_density = -math.log(2 * math.pi) - 0.5 * torch.log(det) - 0.5 * quadratic
        return log_density.sum(-1)

    def _reference_posterior(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        def log_likelihood(theta: Tensor) -> Tensor:
            return self._log_likelihood(theta, x_o.expand(theta.shape[0], self.x_features))

        particles = max(n, 1_000)
        coordinates = NonCentredCoordinates(x_o)
        folded = tempered_smc(
            self.folded_prior, log_likelihood, particles, generator, coordinates=coordinates
        ).samples
        folded = folded[:n].to(x_o)
        flips = torch.rand(n, 2, generator=generator, dtype=folded.dtype, device=folded.device)
        signs = torch.where(flips < 0.5, -1.0, 1.0).to(folded)
        return torch.cat((folded[:, :2], folded[:, 2:4] * signs, folded[:, 4:]), dim=-1)


def slcp_covariance(theta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""The entries of :math:`S(\theta)` and its determinant, each ``(n,)``.

    .. math:: \det S = s_1^2 s_2^2 \operatorname{sech}^2\theta_5
              + \epsilon (s_1^2 + s_2^2) + \epsilon^2

    (written with :math:`\operatorname{sech}^2 = 1 - \tanh^2` so that it stays accurate
    as :math:`|\rho| \to 1`).

    Returns:
        ``S_11``, ``S_22``, ``S_12`` and ``det S``.
    """
    s_1 = theta[:, 2] ** 2
    s_2 = theta[:, 3] ** 2
    product = s_1 * s_2
    covariance = torch.tanh(theta[:, 4]) * product
    sech_squared = 1.0 / torch.cosh(theta[:, 4]) ** 2
    det = product**2 * sech_squared + DIAGONAL_JITTER * (s_1**2 + s_2**2) + DIAGONAL_JITTER**2
    return s_1**2 + DIAGONAL_JITTER, s_2**2 + DIAGONAL_JITTER, covariance, det


class NonCentredCoordinates:
    r"""Coordinates that straighten SLCP's funnel, for the reference sampler's moves.

    On the fold :math:`\theta_3, \theta_4 > 0`,

    .. math:: \phi = (z, \log\theta_3, \log\theta_4, \theta_5), \qquad
              (\theta_1, \theta_2) = \bar x + L z, \quad L L^\top = S(\theta) / 4,

    with :math:`\bar x` the mean of the four observed points: given :math:`S` the
    likelihood makes :math:`z` about standard normal whatever the scale, where in
    :math:`\theta` the width of the mean shrinks with :math:`\theta_3^2` and
    :math:`\theta_4^2` (a funnel a random walk cannot enter). The Jacobian is
    :math:`|\det \partial\theta / \partial\phi| = L_{11} L_{22}\, \theta_3 \theta_4`.

    References:
        Papaspiliopoulos, Roberts and Sköld (2007), A general framework for the
        parametrization of hierarchical models. Statistical Science.

    Args:
        x_o: ``(8,)``, the observation.
    """

    def __init__(self, x_o: Tensor) -> None:
        self.centre = x_o.reshape(DRAWS, 2).mean(0)

    def to_moves(self, theta: Tensor) -> Tensor:
        first, second, last = _mean_scale(theta)
        centre = self.centre.to(theta)
        z_1 = (theta[:, 0] - centre[0]) / first
        z_2 = (theta[:, 1] - centre[1] - second * z_1) / last
        scales = torch.log(theta[:, 2:4])
        return torch.cat((z_1.unsqueeze(-1), z_2.unsqueeze(-1), scales, theta[:, 4:]), dim=-1)

    def from_moves(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        scales = torch.exp(phi[:, 2:4])
        shape = torch.cat((torch.zeros_like(phi[:, :2]), scales, phi[:, 4:]), dim=-1)
        first, second, last = _mean_scale(shape)
        centre = self.centre.to(phi)
        theta_1 = centre[0] + first * phi[:, 0]
        theta_2 = centre[1] + second * phi[:, 0] + last * phi[:, 1]
        theta = torch.cat((theta_1.unsqueeze(-1), theta_2.unsqueeze(-1), shape[:, 2:]), dim=-1)
        log_det = torch.log(first) + torch.log(last) + phi[:, 2] + phi[:, 3]
        return theta, log_det


def _mean_scale(theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``L_11, L_21, L_22`` of the Cholesky factor of :math:`S / 4`, the spread of the mean."""
    variance_1, _, covariance, det = slcp_covariance(theta)
    first = torch.sqrt(variance_1 / DRAWS)
    return first, covariance / (DRAWS * first), torch.sqrt(det / (DRAWS * variance_1))
