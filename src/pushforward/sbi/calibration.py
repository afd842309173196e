"""Calibration of a posterior estimator on held-out simulations: SBC, expected coverage, TARP.

:func:`calibrate` draws ``samples`` posterior samples for each of ``N`` test pairs
:math:`(\\theta_i, x_i)` (one batched call), scores them where the model has a density,
and runs the diagnostics of :mod:`pushforward.sbi.diagnostics` on them; ``pushforward
diagnose`` prints its :meth:`Calibration.summary` and draws its figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pushforward.model import Model
from pushforward.sbi.diagnostics import (
    MIN_PAIRS,
    CoverageResult,
    SBCResult,
    TARPResult,
    expected_coverage,
    sbc,
    tarp,
)
from pushforward.sbi.posterior import log_prob_batched, sample_batched
from pushforward.sbi.priors import Prior

DEFAULT_SAMPLES = 500
"""Posterior draws per test pair: ranks in 0..500 resolve a rank histogram of N/20 bins for
any N up to 10,000 pairs and cost one batched call."""


@dataclass(frozen=True)
class Calibration:
    """The diagnostics of one estimator on one set of test pairs.

    Attributes:
        sbc: simulation-based calibration of each coordinate.
        coverage: expected coverage of highest-density regions (``None`` for a model
            without ``log_prob``, or when not asked).
        tarp: the TARP coverage test.
        pairs: ``N``, the test pairs.
        samples_per_pair: ``L``, posterior draws per pair.
        leakage: the share of all posterior draws outside the prior's support (``None``
            without a prior): what a model trained without ``--prior`` loses.
    """

    sbc: SBCResult
    coverage: CoverageResult | None
    tarp: TARPResult
    pairs: int
    samples_per_pair: int
    leakage: float | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest: p-values, areas and the coverage at the usual levels."""
        digest: dict[str, Any] = {
            "pairs": self.pairs,
            "samples_per_pair": self.samples_per_pair,
            "sbc": {
                "ks_pvalues": [float(p) for p in self.sbc.ks_pvalues],
                "min_ks_pvalue": float(self.sbc.ks_pvalues.min()),
            },
            "tarp": {"atc": float(self.tarp.atc), "ks_pvalue": float(self.tarp.ks_pvalue)},
        }
        if self.leakage is not None:
            digest["leakage"] = self.leakage
        if self.coverage is not None:
            levels = self.coverage.levels
            at = {}
            for level in (0.5, 0.9, 0.95):
                index = int(torch.argmin((levels - level).abs()))
                at[f"{level:g}"] = float(self.coverage.coverage[index])
            digest["expected_coverage"] = {
                "signed_area": float(self.coverage.signed_area),
                "ks_pvalue": float(self.coverage.ks_pvalue),
                "coverage_at": at,
            }
        return digest


def calibrate(
    model: Model,
    theta: Tensor,
    x: Tensor,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    coverage: bool = True,
    prior: Prior | None = None,
    **options: Any,
) -> Calibration:
    r"""Runs SBC, expected coverage and TARP on test pairs ``(theta, x)``.

    The pairs must come from the joint :math:`p(\theta)\,p(x \mid \theta)` the estimator
    was trained on (fresh simulations, not the training set). Randomness (the posterior
    draws, the jitter of the rank tests, TARP's reference points) comes from ``seed``;
    torch's global generator is left as it was.

    Args:
        model: a conditional model :math:`q(\theta \mid x)`.
        theta: ``(N, D)`` true parameters.
        x: ``(N, C)`` their simulated observations.
        samples: posterior draws per pair, ``L``.
        seed: the seed of every random choice.
        coverage: score the draws for expected coverage (a density per draw: an ODE
            solve each for flow matching).
        prior: where given, the share of draws outside its support is reported.
        options: the model's sample (and log-probability) options.

    Raises:
        ValueError: for fewer than :data:`~pushforward.sbi.diagnostics.MIN_PAIRS` pairs
            (saying how many), or shapes that do not fit the model.

    Example:
        >>> import torch, pushforward
        >>> model = pushforward.build("nsf", features=1, context=1, transforms=1, hidden=[8])
        >>> theta = torch.randn(40, 1); x = theta + torch.randn(40, 1)
        >>> report = calibrate(model, theta, x, samples=50)
        >>> sorted(report.summary())
        ['expected_coverage', 'pairs', 'samples_per_pair', 'sbc', 'tarp']
    """
    if theta.ndim != 2 or x.ndim != 2:
        raise ValueError(
            f"theta and x must be (pairs, features); got {tuple(theta.shape)} and {tuple(x.shape)}"
        )
    if theta.shape[0] != x.shape[0]:
        raise ValueError(
            f"theta has {theta.shape[0]} rows but x has {x.shape[0]}; they must match row for row"
        )
    pairs = theta.shape[0]
    if pairs < MIN_PAIRS:
        raise ValueError(f"calibration needs at least {MIN_PAIRS} test pairs, {pairs} were given")
    model.check_input(theta)
    model.check_context(x, pairs)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples per pair must be an integer >= 2, got {samples!r}")
    generator = torch.Generator().manual_seed(seed)
    sampling = {k: v for k, v in options.items() if k in model.sample_options.names()}
    scoring = {k: v for k, v in options.items() if k in model.log_prob_options.names()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        draws = sample_batched(model, samples, x, **sampling)
    ranks_result = sbc(draws.double(), theta.double(), generator)
    tarp_result = tarp(draws.double(), theta.double(), generator)
    coverage_result = None
    if coverage and model.has_log_prob:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            sample_scores = log_prob_batched(model, draws, x, **scoring)
            with torch.no_grad():
                truth_scores = model.log_prob(theta, x, **scoring)
        coverage_result = expected_coverage(
            sample_scores.double(), truth_scores.double(), generator=generator
        )
    leaked = None
    if prior is not None:
        flat = draws.reshape(-1, draws.shape[-1])
        leaked = 1.0 - float(prior.contains(flat.double()).double().mean())
    return Calibration(ranks_result, coverage_result, tarp_result, pairs, samples, leaked)
