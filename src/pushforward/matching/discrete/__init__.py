"""Discrete flow matching: mixture paths over tokens, their schedulers, the CTMC sampler,
the likelihood bound and the registered ``dfm`` model (Gat et al. 2024; Campbell et al. 2024)."""

from __future__ import annotations

from pushforward.matching.discrete.bound import BoundEstimate, elbo, generalized_kl
from pushforward.matching.discrete.dfm import discrete_flow_matching
from pushforward.matching.discrete.exact import exact_log_prob
from pushforward.matching.discrete.model import DiscreteFlowMatching
from pushforward.matching.discrete.options import BoundLogProbOptions, CTMCSampleOptions
from pushforward.matching.discrete.oracle import ExactDenoiser
from pushforward.matching.discrete.path import (
    MIXTURE_SOURCES,
    MaskedSource,
    MixtureSource,
    UniformSource,
    make_mixture_source,
    sample_mixture_path,
)
from pushforward.matching.discrete.sampler import ctmc_sample, euler_step, transition_probabilities
from pushforward.matching.discrete.schedulers import (
    KAPPA_SCHEDULERS,
    CosineKappa,
    KappaScheduler,
    LinearKappa,
    PolynomialKappa,
    make_kappa_scheduler,
)

__all__ = [
    "KAPPA_SCHEDULERS",
    "MIXTURE_SOURCES",
    "BoundEstimate",
    "BoundLogProbOptions",
    "CTMCSampleOptions",
    "CosineKappa",
    "DiscreteFlowMatching",
    "ExactDenoiser",
    "KappaScheduler",
    "LinearKappa",
    "MaskedSource",
    "MixtureSource",
    "PolynomialKappa",
    "UniformSource",
    "ctmc_sample",
    "discrete_flow_matching",
    "elbo",
    "euler_step",
    "exact_log_prob",
    "generalized_kl",
    "make_kappa_scheduler",
    "make_mixture_source",
    "sample_mixture_path",
    "transition_probabilities",
]
