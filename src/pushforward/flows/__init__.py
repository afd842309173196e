"""Ready-made discrete normalizing flows, registered by name."""

from pushforward.flows.autoregressive import iaf, maf, nsf_autoregressive
from pushforward.flows.circular import circular_nsf
from pushforward.flows.coupling import nsf, realnvp
from pushforward.flows.flow import Flow
from pushforward.flows.manifold import CylindricalSphereFlow, ManifoldFlow
from pushforward.flows.sphere import sphere_nsf

__all__ = [
    "CylindricalSphereFlow",
    "Flow",
    "ManifoldFlow",
    "circular_nsf",
    "iaf",
    "maf",
    "nsf",
    "nsf_autoregressive",
    "realnvp",
    "sphere_nsf",
]
