"""Discrete flow matching: mixture paths over tokens, their schedulers, the CTMC sampler
and the likelihood bound (Gat et al. 2024; Campbell et al. 2024)."""

from __future__ import annotations

from pushforward.matching.discrete.path import (
    MIXTURE_SOURCES,
    MaskedSource,
    MixtureSource,
    UniformSource,
    make_mixture_source,
    sample_mixture_path,
)
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
    "CosineKappa",
    "KappaScheduler",
    "LinearKappa",
    "MaskedSource",
    "MixtureSource",
    "PolynomialKappa",
    "UniformSource",
    "make_kappa_scheduler",
    "make_mixture_source",
    "sample_mixture_path",
]
