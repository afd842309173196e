"""Simulation-based inference: priors, posterior estimation helpers, calibration diagnostics.

Priors with a support (:mod:`~pushforward.sbi.priors`); posteriors of conditional models
over many observations at once, leakage, and likelihood estimation by MCMC
(:mod:`~pushforward.sbi.posterior`); simulation-based calibration, expected coverage and
TARP (:mod:`~pushforward.sbi.diagnostics`, run on a model by :func:`calibrate`); the
sbibm benchmark tasks with reference posteriors (:mod:`~pushforward.sbi.tasks`).
"""

from pushforward.sbi.calibration import Calibration, calibrate
from pushforward.sbi.diagnostics import (
    MIN_PAIRS,
    CoverageResult,
    SBCResult,
    TARPResult,
    expected_coverage,
    marginal_coverage,
    sbc,
    sbc_ranks,
    tarp,
)
from pushforward.sbi.posterior import (
    LikelihoodPosterior,
    SupportSamples,
    leakage,
    likelihood_posterior,
    log_prob_batched,
    sample_batched,
    sample_in_support,
    sample_likelihood_posterior,
)
from pushforward.sbi.priors import (
    BoxUniformPrior,
    GaussianPrior,
    Prior,
    check_theta_in_prior,
    load_prior,
    prior_from_description,
)
from pushforward.sbi.tasks import TASKS, Task, make_task

__all__ = [
    "MIN_PAIRS",
    "TASKS",
    "BoxUniformPrior",
    "Calibration",
    "CoverageResult",
    "GaussianPrior",
    "LikelihoodPosterior",
    "Prior",
    "SBCResult",
    "SupportSamples",
    "TARPResult",
    "Task",
    "calibrate",
    "check_theta_in_prior",
    "expected_coverage",
    "leakage",
    "likelihood_posterior",
    "load_prior",
    "log_prob_batched",
    "make_task",
    "marginal_coverage",
    "prior_from_description",
    "sample_batched",
    "sample_in_support",
    "sample_likelihood_posterior",
    "sbc",
    "sbc_ranks",
    "tarp",
]
