"""Ready-made discrete normalizing flows, registered by name."""

from pushforward.flows.autoregressive import iaf, maf, nsf_autoregressive
from pushforward.flows.coupling import nsf, realnvp
from pushforward.flows.flow import Flow

__all__ = ["Flow", "iaf", "maf", "nsf", "nsf_autoregressive", "realnvp"]
