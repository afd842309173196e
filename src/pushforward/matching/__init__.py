"""Flow matching: probability paths and schedulers, parameterisations, couplings, time
sampling, losses, and the registered ``fm`` model built from them."""

from __future__ import annotations

from pushforward.matching.couplings import (
    COUPLINGS,
    PairedBatch,
    independent_coupling,
    make_coupling,
    minibatch_ot_coupling,
    ot_assignment,
    sinkhorn_coupling,
    sinkhorn_plan,
)
from pushforward.matching.model import FlowMatching, flow_matching
from pushforward.matching.parameterization import PARAMETERIZATIONS, convert, regression_target
from pushforward.matching.path import AffinePath, PathSample
from pushforward.matching.schedulers import (
    SCHEDULERS,
    CondOTScheduler,
    CosineScheduler,
    PolynomialScheduler,
    Scheduler,
    SchedulerCoefficients,
    VPScheduler,
    make_scheduler,
)
from pushforward.matching.time_sampling import TIME_SAMPLERS, sample_times, time_density

__all__ = [
    "COUPLINGS",
    "PARAMETERIZATIONS",
    "SCHEDULERS",
    "TIME_SAMPLERS",
    "AffinePath",
    "CondOTScheduler",
    "CosineScheduler",
    "FlowMatching",
    "PairedBatch",
    "PathSample",
    "PolynomialScheduler",
    "Scheduler",
    "SchedulerCoefficients",
    "VPScheduler",
    "convert",
    "flow_matching",
    "independent_coupling",
    "make_coupling",
    "make_scheduler",
    "minibatch_ot_coupling",
    "ot_assignment",
    "regression_target",
    "sample_times",
    "sinkhorn_coupling",
    "sinkhorn_plan",
    "time_density",
]
