"""Flow matching: probability paths and schedulers, parameterisations, couplings, time
sampling, losses, and the registered ``fm``, ``reflected-fm`` and ``ffjord`` models built
from them."""

from __future__ import annotations

from pushforward.matching.components import Component, make_component
from pushforward.matching.couplings import (
    COUPLINGS,
    BatchCoupling,
    IndependentCoupling,
    OTCoupling,
    SinkhornCoupling,
    independent_coupling,
    make_coupling,
    minibatch_ot_coupling,
    sinkhorn_coupling,
)
from pushforward.matching.ffjord import FFJORD, ffjord
from pushforward.matching.flow_matching import flow_matching
from pushforward.matching.losses import (
    LOSS_WEIGHTINGS,
    LossWeighting,
    NoWeighting,
    UniformTimeWeighting,
    make_loss_weighting,
)
from pushforward.matching.model import FlowMatching
from pushforward.matching.optimal_transport import ot_assignment, sinkhorn_plan
from pushforward.matching.parameterization import PARAMETERIZATIONS, convert, regression_target
from pushforward.matching.path import AffinePath, PathSample
from pushforward.matching.reflected import ReflectedFlowMatching, reflected_flow_matching
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
from pushforward.matching.time_sampling import (
    TIME_SAMPLERS,
    LogitNormalTime,
    TimeSampler,
    UniformTime,
    UShapedTime,
    make_time_sampler,
    sample_times,
    time_density,
)
from pushforward.paired import PairedBatch

__all__ = [
    "COUPLINGS",
    "FFJORD",
    "LOSS_WEIGHTINGS",
    "PARAMETERIZATIONS",
    "SCHEDULERS",
    "TIME_SAMPLERS",
    "AffinePath",
    "BatchCoupling",
    "Component",
    "CondOTScheduler",
    "CosineScheduler",
    "FlowMatching",
    "IndependentCoupling",
    "LogitNormalTime",
    "LossWeighting",
    "NoWeighting",
    "OTCoupling",
    "PairedBatch",
    "PathSample",
    "PolynomialScheduler",
    "ReflectedFlowMatching",
    "Scheduler",
    "SchedulerCoefficients",
    "SinkhornCoupling",
    "TimeSampler",
    "UShapedTime",
    "UniformTime",
    "UniformTimeWeighting",
    "VPScheduler",
    "convert",
    "discrete",
    "ffjord",
    "flow_matching",
    "independent_coupling",
    "make_component",
    "make_coupling",
    "make_loss_weighting",
    "make_scheduler",
    "make_time_sampler",
    "minibatch_ot_coupling",
    "ot_assignment",
    "reflected_flow_matching",
    "regression_target",
    "riemannian",
    "sample_times",
    "simplex",
    "sinkhorn_coupling",
    "sinkhorn_plan",
    "time_density",
]

# Register ``dfm``, ``simplex-fm`` and ``rfm``; imported last because their models build
# on the shared pieces above.
from pushforward.matching import discrete, riemannian, simplex
