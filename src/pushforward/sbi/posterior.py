"""Posteriors of conditional models: many observations at once, leakage, likelihood estimation.

A neural posterior estimator (NPE) is a conditional model :math:`q(\\theta \\mid x)`
trained on simulations :math:`(\\theta_i, x_i)`; its samples and densities for
many observations come from one batched call each (:func:`sample_batched`,
:func:`log_prob_batched`). A model trained without the prior's support may put
mass outside it (:func:`leakage`); :func:`sample_in_support` draws from the
posterior restricted to the support by rejection. A neural likelihood estimator
(NLE) is a conditional model :math:`q(x \\mid \\theta)`; its posterior
:math:`q(x_o \\mid \\theta)\\,p(\\theta)` is sampled by MCMC
(:func:`likelihood_posterior`, :func:`sample_likelihood_posterior`).

References:
    Papamakarios & Murray (2016), Fast epsilon-free Inference of Simulation Models
    with Bayesian Conditional Density Estimation; Greenberg et al. (2019), Automatic
    Posterior Transformation for Likelihood-Free Inference (leakage); Papamakarios
    et al. (2019), Sequential Neural Likelihood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pushforward.model import Model
from pushforward.sampling.mcmc import MCMCResult, run_mcmc
from pushforward.sampling.target import Target
from pushforward.sbi.priors import Prior

DEFAULT_CHUNK = 65_536
"""Rows per model call in the batched functions (bounds memory, not results)."""


def _observations(model: Model, context: Tensor) -> Tensor:
    """Observations as ``(M, c)`` rows, checked against the model's context size."""
    if context.ndim == 1:
        context = context.unsqueeze(0)
    if context.ndim != 2:
        raise ValueError(
            f"observations must be (M, {model.context_features}), got {tuple(context.shape)}"
        )
    model.check_context(context, context.shape[0])
    return context


def sample_batched(
    model: Model, n: int, context: Tensor, chunk: int = DEFAULT_CHUNK, **options: Any
) -> Tensor:
    """``n`` samples for each of ``M`` observations, ``(M, n, *event_shape)``.

    Row ``m`` of ``context`` conditions ``out[m]``; the ``M * n`` draws are made in
    calls of at most ``chunk`` rows. ``options`` are the model's sample options.

    Example:
        >>> import torch, pushforward
        >>> model = pushforward.build("nsf", features=2, context=3, transforms=2, hidden=[8])
        >>> sample_batched(model, 5, torch.randn(4, 3)).shape
        torch.Size([4, 5, 2])
    """
    context = _observations(model, context)
    observations = context.shape[0]
    rows = context.repeat_interleave(n, dim=0)
    parts = [
        model.sample(min(chunk, rows.shape[0] - start), rows[start : start + chunk], **options)
        for start in range(0, rows.shape[0], chunk)
    ]
    samples = torch.cat(parts) if parts else model.sample(0, rows, **options)
    return samples.reshape(observations, n, *model.event_shape)


def log_prob_batched(
    model: Model, theta: Tensor, context: Tensor, chunk: int = DEFAULT_CHUNK, **options: Any
) -> Tensor:
    """``log q(theta[m, k] | context[m])`` for ``theta: (M, K, *event)``, returned ``(M, K)``."""
    context = _observations(model, context)
    if theta.ndim < 2 or theta.shape[0] != context.shape[0]:
        raise ValueError(
            f"theta has shape {tuple(theta.shape)}; expected (M, K, ...) with M = "
            f"{context.shape[0]} observations"
        )
    observations, per = theta.shape[0], theta.shape[1]
    flat = theta.reshape(observations * per, *theta.shape[2:])
    rows = context.repeat_interleave(per, dim=0)
    with torch.no_grad():
        parts = [
            model.log_prob(flat[start : start + chunk], rows[start : start + chunk], **options)
            for start in range(0, flat.shape[0], chunk)
        ]
    return torch.cat(parts).reshape(observations, per) if parts else flat.new_zeros(observations, 0)


def leakage(model: Model, prior: Prior, context: Tensor, n: int = 10_000, **options: Any) -> Tensor:
    r"""The posterior mass outside the prior's support, per observation, ``(M,)``.

    .. math:: \ell(x) = \Pr_{\theta \sim q(\cdot \mid x)}[\theta \notin \operatorname{supp} p]

    estimated from ``n`` samples each (standard error :math:`\sqrt{\ell(1-\ell)/n}`). A
    model trained with the prior (``train --prior``) has none.
    """
    samples = sample_batched(model, n, context, **options)
    inside = prior.contains(samples.reshape(-1, samples.shape[-1])).reshape(samples.shape[:2])
    return 1.0 - inside.to(torch.float64).mean(dim=1)


@dataclass(frozen=True)
class SupportSamples:
    r"""Posterior samples restricted to the prior's support, by rejection.

    Attributes:
        samples: ``(n, d)``, every row inside the support.
        acceptance: the fraction of draws inside (one minus the leakage estimate).
        log_normalizer: :math:`\log(1 - \ell)`, to subtract from ``log_prob`` for the
            density of the restricted posterior.
    """

    samples: Tensor
    acceptance: float
    log_normalizer: float


def sample_in_support(
    model: Model,
    prior: Prior,
    n: int,
    context: Tensor,
    max_draws: int = 10_000_000,
    **options: Any,
) -> SupportSamples:
    r"""``n`` samples of :math:`q(\theta \mid x)\,\mathbb{1}[\theta \in \operatorname{supp} p]`
    for one observation, by rejection (the leakage correction of Greenberg et al. 2019).

    Raises:
        RuntimeError: when fewer than ``n`` of ``max_draws`` draws land inside.
    """
    context = _observations(model, context)
    if context.shape[0] != 1:
        raise ValueError("sample_in_support takes one observation; loop over several")
    kept: list[Tensor] = []
    found = drawn = 0
    batch = max(n, 1024)
    while found < n:
        if drawn >= max_draws:
            raise RuntimeError(
                f"only {found} of {drawn} posterior draws lie in the prior's support; "
                f"the estimator leaks {1 - found / max(drawn, 1):.1%} of its mass"
            )
        draws = model.sample(batch, context, **options)
        inside = draws[prior.contains(draws)]
        kept.append(inside)
        found += inside.shape[0]
        drawn += batch
    acceptance = found / drawn
    return SupportSamples(torch.cat(kept)[:n], acceptance, math.log(acceptance))


class LikelihoodPosterior(Target):
    r"""The posterior of a likelihood estimator, :math:`\log q(x_o \mid \theta) + \log p(\theta)`.

    ``model`` is a conditional model of :math:`x` given :math:`\theta` (trained with
    ``--data x.npy --context theta.npy``); this is an unnormalized target over
    :math:`\theta` for the MCMC kernels (:func:`~pushforward.sampling.mcmc.run_mcmc`),
    ``-inf`` outside the prior's support.

    References:
        Papamakarios et al. (2019), Sequential Neural Likelihood.
    """

    def __init__(self, model: Model, prior: Prior, observation: Tensor) -> None:
        if model.context_features != prior.features:
            raise ValueError(
                f"the likelihood model is conditional on {model.context_features} values but "
                f"the prior has {prior.features} dimensions"
            )
        observation = observation.reshape(1, -1)
        model.check_input(observation)
        self.model, self.prior, self.observation = model, prior, observation
        self.features = prior.features
        self.low, self.high = prior.low, prior.high
        self.name = "likelihood-posterior"

    def log_prob(self, x: Tensor) -> Tensor:
        prior = self.prior.log_prob(x)
        inside = torch.isfinite(prior)
        # The flow is only evaluated inside the support (outside, the density is zero).
        theta = torch.where(inside.unsqueeze(-1), x, self._centre(x))
        rows = self.observation.expand(x.shape[0], -1).to(x)
        likelihood = self.model.log_prob(rows, theta)
        return torch.where(inside, likelihood + prior, torch.full_like(prior, -math.inf))

    def _centre(self, x: Tensor) -> Tensor:
        if self.prior.low is None or self.prior.high is None:
            return torch.zeros_like(x)
        return ((self.prior.low + self.prior.high) / 2).to(x).expand_as(x)


def likelihood_posterior(model: Model, prior: Prior, observation: Tensor) -> LikelihoodPosterior:
    """The unnormalized posterior of a likelihood estimator for one observation (see the class)."""
    return LikelihoodPosterior(model, prior, observation)


def sample_likelihood_posterior(
    model: Model,
    prior: Prior,
    observation: Tensor,
    n: int,
    kernel: str = "mala",
    chains: int = 20,
    warmup: int = 500,
    seed: int = 0,
    **kernel_options: Any,
) -> MCMCResult:
    """About ``n`` posterior samples of a likelihood estimator by MCMC over theta.

    ``chains`` chains start from prior draws and run ``warmup`` tuning steps, then
    ``ceil(n / chains)`` kept steps; ``kernel`` is ``"mala"`` or ``"hmc"``. Read the
    result's ``r_hat`` and ``ess`` before trusting it.
    """
    if kernel not in ("mala", "hmc"):
        raise ValueError(f"sampling a likelihood posterior uses 'mala' or 'hmc', not {kernel!r}")
    target = likelihood_posterior(model, prior, observation)
    reference = model._reference()
    dtype = torch.float32 if reference is None else reference.dtype
    start = prior.sample(chains, torch.Generator().manual_seed(seed)).to(dtype)
    return run_mcmc(
        target,
        None,
        kernel,
        chains=chains,
        steps=max(1, math.ceil(n / chains)),
        warmup=warmup,
        seed=seed,
        init=start,
        **kernel_options,
    )
