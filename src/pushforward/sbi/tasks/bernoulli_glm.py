"""Bernoulli GLM: a spiking neuron's linear filter and bias from its spike-triggered sums."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import softplus

from pushforward.options import positive_int
from pushforward.sbi.priors import GaussianPrior
from pushforward.sbi.tasks.base import Task
from pushforward.sbi.tasks.smc import tempered_smc

FILTER_LENGTH = 9


class BernoulliGLM(Task):
    r"""Bernoulli GLM (sbibm's ``bernoulli_glm``): a bias and a nine-tap stimulus filter.

    A white-noise stimulus :math:`I_t \sim \mathcal{N}(0, 1)`, :math:`t = 1..T`
    (:math:`T = 100` bins), gives the design matrix :math:`X \in \mathbb{R}^{T \times 10}`
    with rows :math:`(1, I_t, I_{t-1}, \dots, I_{t-8})` (zero before the start). Spikes
    are

    .. math:: y_t \sim \operatorname{Bernoulli}(\sigma(\psi_t)), \qquad \psi = X\theta,

    and :math:`x = X^\top y`: the spike count and the nine spike-triggered sums (sbibm's
    ``conv1d`` of the spikes with the stimulus, last nine lags). Prior
    :math:`\theta \sim \mathcal{N}(0, B^{-1})` with precision :math:`B_{00} = 0.5` on the
    bias and :math:`F^\top F` on the filter,
    :math:`F = D^2 + \operatorname{diag}(\sqrt{i/9})_{i=0..8}`, :math:`D` the
    first-difference matrix (a smoothness prior on second differences).

    **Likelihood.** The Bernoulli likelihood of a spike train depends on it only through
    :math:`x`, and distinct spike trains give distinct :math:`x` (each lag's sum is an
    integer combination of the real stimulus values), so for :math:`x = X^\top y`

    .. math:: \log p(x \mid \theta) = \theta^\top x - \sum_t \log(1 + e^{\psi_t})

    exactly; values of :math:`x` that no spike train gives (probability zero) are not
    detected. **Reference posterior**, near-exact: the log-concave posterior is sampled
    by tempered sequential Monte Carlo from the Gaussian prior
    (:func:`~pushforward.sbi.tasks.smc.tempered_smc`). (sbibm runs a Pólya-gamma Gibbs
    sampler on the raw spike train, which has the same posterior.)

    **The stimulus** is sbibm's: numpy's legacy ``RandomState(42).randn(100)`` rounded
    to float32, as sbibm drew it (its stored ``stimulus_I.pt`` holds these values).

    Args:
        duration: the number of time bins :math:`T` (sbibm: 100; fewer for tests that
            enumerate every spike train).
        stimulus_seed: the seed of numpy's ``RandomState`` that draws the stimulus (sbibm: 42).

    References:
        Lueckmann, Gonçalves, Bassetto, Öcal, Nonnenmacher and Macke (2017), Flexible
        statistical inference for mechanistic models of neural dynamics. NeurIPS.
        Gonçalves et al. (2020), Training deep neural density estimators to identify
        mechanistic models of neural dynamics. eLife.
        Polson, Scott and Windle (2013), Bayesian inference for logistic models using
        Pólya-gamma latent variables. JASA.
        Lueckmann et al. (2021), Benchmarking Simulation-Based Inference. AISTATS.
    """

    name = "bernoulli_glm"
    theta_features = FILTER_LENGTH + 1
    x_features = FILTER_LENGTH + 1

    def __init__(self, duration: int = 100, stimulus_seed: int = 42) -> None:
        self.duration = positive_int("duration", duration)
        self.stimulus = glm_stimulus(self.duration, stimulus_seed)
        self.design = glm_design(self.stimulus)
        precision = glm_prior_precision()
        cov = torch.linalg.inv(precision)
        self.prior = GaussianPrior(
            torch.zeros(self.theta_features, dtype=torch.float64), cov=0.5 * (cov + cov.T)
        )

    def simulate_spikes(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        """Spike trains ``(n, duration)`` of 0s and 1s in ``theta``'s dtype; ``theta: (n, 10)``."""
        self._check_theta(theta)
        rate = torch.sigmoid(theta @ self.design.to(theta).T)
        uniform = torch.rand(
            rate.shape, generator=generator, dtype=theta.dtype, device=theta.device
        )
        return (uniform < rate).to(theta.dtype)

    def statistics(self, spikes: Tensor) -> Tensor:
        r"""The sufficient statistics :math:`x = X^\top y`, ``(n, 10)``, of ``spikes: (n, T)``."""
        if spikes.ndim != 2 or spikes.shape[1] != self.duration:
            raise ValueError(
                f"the spike trains must have shape (n, {self.duration}), got {tuple(spikes.shape)}"
            )
        return spikes @ self.design.to(spikes)

    def _simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        return self.statistics(self.simulate_spikes(theta, generator))

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        drive = theta @ self.design.to(theta).T
        return (theta * x).sum(-1) - softplus(drive).sum(-1)

    def _reference_posterior(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        def log_likelihood(theta: Tensor) -> Tensor:
            return self._log_likelihood(theta, x_o.expand(theta.shape[0], self.x_features))

        particles = max(n, 1_000)
        return tempered_smc(self.prior, log_likelihood, particles, generator).samples[:n].to(x_o)


def glm_stimulus(duration: int, seed: int) -> Tensor:
    """sbibm's white-noise stimulus ``(duration,)``: numpy's legacy normal draws via float32."""
    # sbibm drew the stimulus with numpy's legacy generator; the same call reproduces it.
    draws = np.random.RandomState(seed).randn(duration).astype(np.float32)
    return torch.from_numpy(draws).to(torch.float64)


def glm_design(stimulus: Tensor, filter_length: int = FILTER_LENGTH) -> Tensor:
    """The design matrix ``(T, 1 + filter_length)``: ones, then the stimulus delayed 0, 1, ..."""
    duration = stimulus.shape[0]
    design = torch.zeros(duration, 1 + filter_length, dtype=stimulus.dtype)
    design[:, 0] = 1.0
    for lag in range(filter_length):
        design[lag:, 1 + lag] = stimulus[: duration - lag]
    return design


def glm_prior_precision(filter_length: int = FILTER_LENGTH) -> Tensor:
    r"""sbibm's prior precision ``(1 + M, 1 + M)``: 0.5 on the bias, :math:`F^\top F` on the filter.

    .. math:: F = D^2 + \operatorname{diag}(\sqrt{i / M})_{i=0}^{M-1}, \qquad
              D = I - (\text{ones on the first subdiagonal})
    """
    m = filter_length
    difference = torch.eye(m, dtype=torch.float64) - torch.diag(
        torch.ones(m - 1, dtype=torch.float64), -1
    )
    index = torch.arange(m, dtype=torch.float64)
    smooth = difference @ difference + torch.diag(torch.sqrt(index / m))
    precision = torch.zeros(m + 1, m + 1, dtype=torch.float64)
    precision[0, 0] = 0.5
    precision[1:, 1:] = smooth.T @ smooth
    return precision
