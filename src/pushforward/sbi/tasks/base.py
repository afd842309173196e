r"""The contract of a benchmark task of simulation-based inference, and the checks at its boundary.

A task is a prior :math:`p(\theta)`, a simulator :math:`x \sim p(x \mid \theta)`
whose density is known in closed form, and a sampler of the reference posterior
:math:`p(\theta \mid x_o)` against which an estimator is scored.

References:
    Lueckmann, Boelts, Greenberg, Gonçalves and Macke (2021), Benchmarking
    Simulation-Based Inference. AISTATS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from pushforward.sbi.priors import Prior


class Simulations(NamedTuple):
    """Parameters and the data simulated from them, row by row.

    Attributes:
        theta: ``(n, theta_features)``.
        x: ``(n, x_features)``.
    """

    theta: Tensor
    x: Tensor


class Task:
    r"""A benchmark task: prior, simulator, likelihood and reference posterior.

    Subclasses implement ``_simulate``, ``_log_likelihood`` and ``_reference_posterior``
    on inputs this class has already checked; the public methods here are the boundary.
    Randomness comes only from the ``torch.Generator`` passed in (or made from a seed),
    never from the global generator.

    .. math:: \log \tilde p(\theta \mid x_o) = \log p(x_o \mid \theta) + \log p(\theta)

    Attributes:
        name: the task's name in :data:`~pushforward.sbi.tasks.TASKS`.
        prior: the prior :math:`p(\theta)`.
        theta_features: the dimension of :math:`\theta`.
        x_features: the dimension of :math:`x`.
        budgets: the simulation budgets of Lueckmann et al. (2021).
    """

    name: str
    prior: Prior
    theta_features: int
    x_features: int
    budgets: tuple[int, ...] = (1_000, 10_000, 100_000)

    def simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        r"""One draw of :math:`x \sim p(x \mid \theta)` per row of ``theta``.

        Args:
            theta: ``(n, theta_features)``, float64 for the benchmark.
            generator: the only source of randomness.

        Returns:
            ``(n, x_features)`` in ``theta``'s dtype and device.
        """
        self._check_theta(theta)
        return self._simulate(theta, generator)

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        r""":math:`\log p(x \mid \theta)`, the simulator's exact log-density.

        Args:
            theta: ``(n, theta_features)``.
            x: ``(x_features,)`` shared by all rows, or ``(n, x_features)``.

        Returns:
            ``(n,)``.
        """
        self._check_theta(theta)
        return self._log_likelihood(theta, self._broadcast_x(x, theta))

    def unnormalized_log_posterior(self, theta: Tensor, x_o: Tensor) -> Tensor:
        r""":math:`\log p(x_o \mid \theta) + \log p(\theta)`, ``-inf`` outside the prior.

        Args:
            theta: ``(n, theta_features)``.
            x_o: ``(x_features,)`` or ``(n, x_features)``.

        Returns:
            ``(n,)``.
        """
        log_prior = self.prior.log_prob(theta)
        log_likelihood = self.log_likelihood(theta, x_o)
        # Outside the support the likelihood may be anything (even NaN); the prior decides.
        return torch.where(torch.isfinite(log_prior), log_likelihood + log_prior, log_prior)

    def reference_posterior(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        r"""``n`` exact or near-exact draws of :math:`p(\theta \mid x_o)`.

        Args:
            x_o: ``(x_features,)`` (or ``(1, x_features)``), the observation.
            n: the number of draws.
            generator: the only source of randomness.

        Returns:
            ``(n, theta_features)`` in ``x_o``'s dtype and device.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"the number of posterior draws must be a positive integer, got {n!r}")
        return self._reference_posterior(self._single_x(x_o), n, generator)

    def observations(self, count: int, seed: int) -> Simulations:
        """``count`` true parameters drawn from the prior and the data simulated from them.

        Each observation has its own generator, seeded from a stream that ``seed``
        starts, so the first ``k`` observations are the same for every ``count >= k``.

        Returns:
            ``theta: (count, theta_features)`` and ``x: (count, x_features)``, float64.
        """
        count = _non_negative_int("count", count)
        seeds = torch.Generator().manual_seed(seed)
        theta, x = [], []
        for _ in range(count):
            own_seed = int(torch.randint(0, 2**62, (1,), generator=seeds))
            generator = torch.Generator().manual_seed(own_seed)
            theta_i = self.prior.sample(1, generator)
            theta.append(theta_i)
            x.append(self.simulate(theta_i, generator))
        if count == 0:
            empty = torch.empty(0, self.theta_features, dtype=torch.float64)
            return Simulations(empty, torch.empty(0, self.x_features, dtype=torch.float64))
        return Simulations(torch.cat(theta), torch.cat(x))

    def simulations(self, n: int, seed: int) -> Simulations:
        """A training set: ``n`` draws of the prior and one simulation each.

        Returns:
            ``theta: (n, theta_features)`` and ``x: (n, x_features)``, float64.
        """
        n = _non_negative_int("n", n)
        generator = torch.Generator().manual_seed(seed)
        theta = self.prior.sample(n, generator)
        return Simulations(theta, self.simulate(theta, generator))

    def _simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """``theta: (n, theta_features)``, ``x: (n, x_features)``, both checked."""
        raise NotImplementedError

    def _reference_posterior(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        """``x_o: (x_features,)``, checked."""
        raise NotImplementedError

    def _check_theta(self, theta: Tensor) -> None:
        if theta.ndim != 2 or theta.shape[1] != self.theta_features:
            raise ValueError(
                f"task {self.name!r} takes theta of shape (n, {self.theta_features}), "
                f"got {tuple(theta.shape)}"
            )

    def _broadcast_x(self, x: Tensor, theta: Tensor) -> Tensor:
        rows = theta.shape[0]
        if x.ndim == 1 and x.shape[0] == self.x_features:
            return x.to(theta).expand(rows, self.x_features)
        if x.ndim == 2 and x.shape[1] == self.x_features and x.shape[0] in (1, rows):
            return x.to(theta).expand(rows, self.x_features)
        raise ValueError(
            f"task {self.name!r} takes x of shape ({self.x_features},) or "
            f"({rows}, {self.x_features}) beside {rows} rows of theta, got {tuple(x.shape)}"
        )

    def _single_x(self, x_o: Tensor) -> Tensor:
        if x_o.shape in ((self.x_features,), (1, self.x_features)):
            return x_o.reshape(self.x_features)
        raise ValueError(
            f"task {self.name!r} takes one observation of shape ({self.x_features},), "
            f"got {tuple(x_o.shape)}"
        )


def rejection_sample(
    propose: Callable[[int], tuple[Tensor, Tensor]],
    n: int,
    *,
    max_draws: int = 20_000_000,
) -> Tensor:
    """``n`` accepted proposals, drawn in batches sized by the acceptance seen so far.

    Args:
        propose: ``count -> (candidates (count, d), accepted (count,) booleans)``;
            it holds the generator, so the result is reproducible from it.
        n: the number of samples wanted.
        max_draws: the most proposals made before giving up.

    Returns:
        ``(n, d)``: the first ``n`` accepted candidates in the order drawn.

    Raises:
        ValueError: when fewer than ``n`` of ``max_draws`` proposals are accepted.
    """
    kept: list[Tensor] = []
    accepted_count, drawn = 0, 0
    while accepted_count < n:
        rate = max(accepted_count, 1) / max(drawn, 1)
        batch = min(max(1024, int(1.2 * (n - accepted_count) / rate)), 4_000_000)
        if drawn + batch > max_draws:
            raise ValueError(
                f"the reference sampler accepted {accepted_count} of {drawn} proposals; "
                "the observation is (numerically) impossible under the prior"
            )
        candidates, accepted = propose(batch)
        drawn += batch
        kept.append(candidates[accepted])
        accepted_count += int(accepted.sum())
    return torch.cat(kept)[:n]


def _non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name!r} must be a non-negative integer, got {value!r}")
    return value
