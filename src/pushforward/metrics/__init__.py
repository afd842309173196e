"""Sample-quality metrics: two-sample distances, the classifier test, straightness, ESS."""

from pushforward.metrics.distances import energy_distance, mmd, sliced_wasserstein
from pushforward.metrics.importance import effective_sample_size, normalized_ess
from pushforward.metrics.sbibm_c2st import SbibmC2STResult, sbibm_c2st
from pushforward.metrics.straightness import straightness, velocity_straightness
from pushforward.metrics.two_sample import C2STResult, c2st

__all__ = [
    "C2STResult",
    "SbibmC2STResult",
    "c2st",
    "effective_sample_size",
    "energy_distance",
    "mmd",
    "normalized_ess",
    "sbibm_c2st",
    "sliced_wasserstein",
    "straightness",
    "velocity_straightness",
]
