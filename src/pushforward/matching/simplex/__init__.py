"""Flow matching on the probability simplex through the sphere's positive orthant, and
the registered ``simplex-fm`` model (Davis et al. 2024; Cheng et al. 2024)."""

from __future__ import annotations

from pushforward.matching.simplex.model import SIMPLEX_OBJECTIVES, SimplexFlowMatching
from pushforward.matching.simplex.options import SphereEulerOptions
from pushforward.matching.simplex.path import (
    SIMPLEX_SOURCES,
    SimplexPathSample,
    posterior_velocity,
    sample_simplex_path,
    sample_source,
)
from pushforward.matching.simplex.simplex_fm import simplex_flow_matching

__all__ = [
    "SIMPLEX_OBJECTIVES",
    "SIMPLEX_SOURCES",
    "SimplexFlowMatching",
    "SimplexPathSample",
    "SphereEulerOptions",
    "posterior_velocity",
    "sample_simplex_path",
    "sample_source",
    "simplex_flow_matching",
]
