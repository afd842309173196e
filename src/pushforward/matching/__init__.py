"""Flow matching: probability paths and schedulers, parameterisations, couplings, time
sampling, and the registered ``fm`` model."""

from __future__ import annotations

from pushforward.matching.consistency import ConsistencyFlowMatching, consistency_flow_matching
from pushforward.matching.couplings import (
    COUPLINGS,
    Coupling,
    independent_coupling,
    make_coupling,
    minibatch_ot_coupling,
    ot_assignment,
    sinkhorn_coupling,
    sinkhorn_plan,
)
from pushforward.matching.distill import DistilledFlow, distill, distilled
from pushforward.matching.meanflow import MeanFlow, meanflow
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
from pushforward.matching.shortcut import ShortcutModel, shortcut
from pushforward.matching.time_sampling import TIME_SAMPLERS, sample_times, time_density

__all__ = [
    "COUPLINGS",
    "PARAMETERIZATIONS",
    "SCHEDULERS",
    "TIME_SAMPLERS",
    "AffinePath",
    "CondOTScheduler",
    "ConsistencyFlowMatching",
    "CosineScheduler",
    "Coupling",
    "DistilledFlow",
    "FlowMatching",
    "MeanFlow",
    "PathSample",
    "PolynomialScheduler",
    "Scheduler",
    "SchedulerCoefficients",
    "ShortcutModel",
    "VPScheduler",
    "consistency_flow_matching",
    "convert",
    "distill",
    "distilled",
    "flow_matching",
    "independent_coupling",
    "make_coupling",
    "make_scheduler",
    "meanflow",
    "minibatch_ot_coupling",
    "ot_assignment",
    "regression_target",
    "sample_times",
    "shortcut",
    "sinkhorn_coupling",
    "sinkhorn_plan",
    "time_density",
]
