"""Ready-made discrete normalizing flows, registered by name."""

from pushforward.flows.autoregressive import iaf, maf, nsf_autoregressive
from pushforward.flows.circular import circular_nsf
from pushforward.flows.coupling import nsf, realnvp
from pushforward.flows.energy import EnergyFlow, ebflow
from pushforward.flows.flow import Flow
from pushforward.flows.kernel import kernel_flow
from pushforward.flows.manifold import CylindricalSphereFlow, ManifoldFlow
from pushforward.flows.residual import LogLikelihoodEstimate, ResidualFlow, resflow
from pushforward.flows.sphere import sphere_nsf
from pushforward.flows.stochastic import StochasticNormalizingFlow, snf
from pushforward.flows.variational import planar, radial, sylvester

__all__ = [
    "CylindricalSphereFlow",
    "EnergyFlow",
    "Flow",
    "LogLikelihoodEstimate",
    "ManifoldFlow",
    "ResidualFlow",
    "StochasticNormalizingFlow",
    "circular_nsf",
    "ebflow",
    "iaf",
    "kernel_flow",
    "maf",
    "nsf",
    "nsf_autoregressive",
    "planar",
    "radial",
    "realnvp",
    "resflow",
    "snf",
    "sphere_nsf",
    "sylvester",
]
