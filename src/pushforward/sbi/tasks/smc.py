r"""Sequential Monte Carlo with adaptive likelihood tempering: the reference sampler of MCMC tasks.

The particles start as exact prior draws and move through the tempered posteriors

.. math:: \pi_\beta(\theta) \propto p(\theta)\, p(x_o \mid \theta)^\beta,
          \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_K = 1,

each :math:`\beta_{k+1}` chosen so that the effective sample size of the incremental
weights :math:`p(x_o \mid \theta)^{\beta_{k+1} - \beta_k}` is a fixed fraction of the
particles; after each reweighting the particles are resampled (systematically) and
moved by random-walk Metropolis sweeps that leave :math:`\pi_{\beta_{k+1}}` invariant,
their proposal covariance the particles' own covariance times a step scale tuned
towards a target acceptance rate. Many chains in parallel, each started from the
previous tempered target, need no burn-in of a single chain; the final sweeps at
:math:`\beta = 1` break up the ties that resampling leaves.

References:
    Del Moral, Doucet and Jasra (2006), Sequential Monte Carlo samplers. JRSS B.
    Chopin (2002), A sequential particle filter method for static models. Biometrika.
    Jasra, Stephens, Doucet and Tsagaris (2011), Inference for Lévy-driven stochastic
    volatility models via adaptive sequential Monte Carlo. Scandinavian J. Statistics.
    Roberts, Gelman and Gilks (1997), Weak convergence and optimal scaling of random
    walk Metropolis algorithms. Annals of Applied Probability.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from pushforward.sbi.priors import Prior

MAX_STAGES = 1_000


@dataclass(frozen=True)
class SMCResult:
    r"""What a tempered SMC run returns.

    Attributes:
        samples: ``(particles, d)`` equally weighted draws of the posterior, in random order.
        temperatures: ``(stages + 1,)`` the :math:`\beta_k`, from 0 to 1.
        log_evidence: ``()`` the estimate of the log-evidence
            :math:`\log \int p(\theta) p(x_o \mid \theta) d\theta`.
        acceptance: ``(sweeps,)`` the acceptance rate of every Metropolis sweep.
    """

    samples: Tensor
    temperatures: Tensor
    log_evidence: Tensor
    acceptance: Tensor


class MoveCoordinates(Protocol):
    r"""A bijection :math:`\theta = T(\phi)` in whose coordinates the Metropolis moves are made.

    A random walk in :math:`\phi` on :math:`\pi(T(\phi))\,|\det \partial T / \partial \phi|`
    leaves :math:`\pi` invariant in :math:`\theta`; coordinates in which the target is
    close to Gaussian (a funnel straightened, a bound taken away) make it mix fast.
    """

    def to_moves(self, theta: Tensor) -> Tensor:
        r""":math:`\phi = T^{-1}(\theta)`, ``(n, d)``."""
        ...

    def from_moves(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`\theta = T(\phi)` ``(n, d)`` and its log-Jacobian ``(n,)``."""
        ...


def tempered_smc(
    prior: Prior,
    log_likelihood: Callable[[Tensor], Tensor],
    particles: int,
    generator: torch.Generator,
    *,
    coordinates: MoveCoordinates | None = None,
    ess_fraction: float = 0.5,
    moves: int = 10,
    final_moves: int = 60,
    target_acceptance: float = 0.3,
) -> SMCResult:
    r"""Draws of :math:`p(\theta \mid x_o) \propto p(\theta)\,p(x_o \mid \theta)` by tempered SMC.

    Args:
        prior: the prior, sampled exactly at :math:`\beta = 0`.
        log_likelihood: ``theta (m, d) -> (m,)``, called only inside the prior's support.
        particles: the number of particles (and of draws returned).
        generator: the only source of randomness.
        coordinates: where the random walk moves; ``None`` moves in :math:`\theta` itself.
        ess_fraction: the effective sample size kept at each reweighting, as a fraction.
        moves: Metropolis sweeps after each reweighting.
        final_moves: extra sweeps at :math:`\beta = 1`.
        target_acceptance: the acceptance rate the step scale is tuned towards.

    Returns:
        The samples, temperatures, log-evidence estimate and acceptance rates.
    """
    cloud = _Cloud.start(prior, log_likelihood, particles, generator)
    beta = 0.0
    temperatures = [0.0]
    log_evidence = torch.zeros((), dtype=cloud.theta.dtype)
    scale = 2.38 / math.sqrt(cloud.theta.shape[1])
    acceptance: list[Tensor] = []
    while beta < 1.0:
        if len(temperatures) > MAX_STAGES:
            raise ValueError(f"the tempering needed more than {MAX_STAGES} stages")
        next_beta = _next_temperature(cloud.log_lik, beta, ess_fraction)
        log_weights = (next_beta - beta) * cloud.log_lik
        log_evidence = log_evidence + torch.logsumexp(log_weights, 0) - math.log(particles)
        cloud = cloud.select(systematic_resample(log_weights, generator))
        beta = next_beta
        temperatures.append(beta)
        walk = _RandomWalk(prior, log_likelihood, coordinates, beta, target_acceptance)
        sweeps = moves + (final_moves if beta >= 1.0 else 0)
        cloud, scale, rates = walk.run(cloud, sweeps, scale, generator)
        acceptance.extend(rates)
    order = torch.randperm(particles, generator=generator, device=cloud.theta.device)
    return SMCResult(
        samples=cloud.theta[order],
        temperatures=torch.tensor(temperatures, dtype=cloud.theta.dtype),
        log_evidence=log_evidence,
        acceptance=torch.stack(acceptance),
    )


def systematic_resample(log_weights: Tensor, generator: torch.Generator) -> Tensor:
    """Systematic resampling: ``(n,)`` ancestor indices for ``(n,)`` log-weights.

    One uniform :math:`u` places the points :math:`(u + i) / n` on the weights' CDF.

    References:
        Kitagawa (1996), Monte Carlo filter and smoother for non-Gaussian nonlinear
        state space models. J. Computational and Graphical Statistics.
    """
    n = log_weights.shape[0]
    cdf = torch.cumsum(torch.softmax(log_weights, 0), 0)
    start = torch.rand(1, generator=generator, dtype=cdf.dtype, device=cdf.device)
    points = (start + torch.arange(n, dtype=cdf.dtype, device=cdf.device)) / n
    # Rounding may leave the CDF's last value just below 1.
    return torch.searchsorted(cdf, points).clamp_max(n - 1)


def effective_sample_size(log_weights: Tensor) -> Tensor:
    r"""Kish's effective sample size :math:`(\sum w)^2 / \sum w^2` of ``(n,)`` log-weights."""
    return torch.exp(2 * torch.logsumexp(log_weights, 0) - torch.logsumexp(2 * log_weights, 0))


def _next_temperature(log_lik: Tensor, beta: float, fraction: float) -> float:
    """The largest next temperature (by bisection) whose weights keep the wanted ESS."""
    wanted = fraction * log_lik.shape[0]
    if float(effective_sample_size((1.0 - beta) * log_lik)) >= wanted:
        return 1.0
    low, high = 0.0, 1.0 - beta
    for _ in range(50):
        middle = 0.5 * (low + high)
        if float(effective_sample_size(middle * log_lik)) >= wanted:
            low = middle
        else:
            high = middle
    # ``high`` is above zero, so the tempering always moves on.
    return beta + high


@dataclass(frozen=True)
class _Cloud:
    """The particles with their log-prior and log-likelihood, each ``(n,)``."""

    theta: Tensor
    log_prior: Tensor
    log_lik: Tensor

    @staticmethod
    def start(
        prior: Prior,
        log_likelihood: Callable[[Tensor], Tensor],
        particles: int,
        generator: torch.Generator,
    ) -> _Cloud:
        theta = prior.sample(particles, generator)
        return _Cloud(theta, prior.log_prob(theta), log_likelihood(theta))

    def select(self, index: Tensor) -> _Cloud:
        return _Cloud(self.theta[index], self.log_prior[index], self.log_lik[index])


@dataclass(frozen=True)
class _RandomWalk:
    r"""Random-walk Metropolis sweeps of all particles, each leaving :math:`\pi_\beta` invariant."""

    prior: Prior
    log_likelihood: Callable[[Tensor], Tensor]
    coordinates: MoveCoordinates | None
    beta: float
    target_acceptance: float

    def run(
        self, cloud: _Cloud, sweeps: int, scale: float, generator: torch.Generator
    ) -> tuple[_Cloud, float, list[Tensor]]:
        """``sweeps`` sweeps from ``cloud``: the moved cloud, the tuned scale, the acceptances."""
        phi, log_det = self._to_moves(cloud.theta)
        n, d = phi.shape
        cholesky = _spread(phi)
        rates = []
        for _ in range(sweeps):
            noise = torch.randn(n, d, generator=generator, dtype=phi.dtype, device=phi.device)
            phi_new = phi + scale * noise @ cholesky.T
            theta_new, log_det_new = self._from_moves(phi_new)
            prior_new = self.prior.log_prob(theta_new)
            inside = torch.isfinite(prior_new) & torch.isfinite(log_det_new)
            lik_new = torch.full_like(cloud.log_lik, -math.inf)
            lik_new[inside] = self.log_likelihood(theta_new[inside])
            log_ratio = (prior_new + self.beta * lik_new + log_det_new) - (
                cloud.log_prior + self.beta * cloud.log_lik + log_det
            )
            uniform = torch.rand(n, generator=generator, dtype=phi.dtype, device=phi.device)
            # A NaN ratio compares False, so such a proposal is refused.
            accept = (torch.log(uniform) < log_ratio) & inside
            keep = accept.unsqueeze(-1)
            phi = torch.where(keep, phi_new, phi)
            log_det = torch.where(accept, log_det_new, log_det)
            cloud = _Cloud(
                torch.where(keep, theta_new, cloud.theta),
                torch.where(accept, prior_new, cloud.log_prior),
                torch.where(accept, lik_new, cloud.log_lik),
            )
            rate = accept.to(phi.dtype).mean()
            rates.append(rate)
            # Between sweeps, not within one: each sweep's kernel is fixed while it runs.
            scale *= math.exp(float(rate) - self.target_acceptance)
        return cloud, scale, rates

    def _to_moves(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        if self.coordinates is None:
            return theta, torch.zeros_like(theta[:, 0])
        phi = self.coordinates.to_moves(theta)
        return phi, self.coordinates.from_moves(phi)[1]

    def _from_moves(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        if self.coordinates is None:
            return phi, torch.zeros_like(phi[:, 0])
        return self.coordinates.from_moves(phi)


def _spread(points: Tensor) -> Tensor:
    """The Cholesky factor ``(d, d)`` of the points' covariance, the random walk's shape."""
    d = points.shape[1]
    cov = torch.cov(points.T).reshape(d, d)
    jitter = 1e-12 * torch.diagonal(cov).mean().clamp_min(1e-300)
    eye = torch.eye(d, dtype=points.dtype, device=points.device)
    cholesky, info = torch.linalg.cholesky_ex(cov + jitter * eye)
    if int(info) != 0:
        # A degenerate cloud (all particles on a line): fall back on its marginal spreads.
        return torch.diag(torch.sqrt(torch.diagonal(cov) + jitter))
    return cholesky
