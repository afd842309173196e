"""Flow-based MCMC: asymptotically exact samples of a target, a trained flow as proposal or map.

Independent Metropolis-Hastings and i-SIR with the flow as proposal, NeuTra
(HMC or MALA in the flow's latent space), local-global kernels, HMC and MALA in
the data's units, and the diagnostics to read their chains (rank-normalised
split R-hat, bulk ESS, acceptance rates). :func:`run_mcmc` runs any of them.
"""

from pushforward.sampling.mcmc.diagnostics import (
    acceptance_rates,
    autocovariance,
    effective_sample_size,
    rank_normalize,
    split_r_hat,
)
from pushforward.sampling.mcmc.hmc import HamiltonianMonteCarlo, HMCOptions
from pushforward.sampling.mcmc.independent import (
    IndependenceOptions,
    IndependentMetropolisHastings,
    ISIROptions,
    IteratedSIR,
)
from pushforward.sampling.mcmc.langevin import MALAOptions, MetropolisAdjustedLangevin
from pushforward.sampling.mcmc.latent import PulledBackLogDensity, base_to_data, data_to_base
from pushforward.sampling.mcmc.local_global import LocalGlobal, LocalGlobalOptions
from pushforward.sampling.mcmc.neutra import neutra_kernel
from pushforward.sampling.mcmc.proposal import FlowProposal
from pushforward.sampling.mcmc.run import KERNEL_OPTIONS, KERNELS, MCMCResult, run_mcmc
from pushforward.sampling.mcmc.step_size import DualAveraging

__all__ = [
    "KERNELS",
    "KERNEL_OPTIONS",
    "DualAveraging",
    "FlowProposal",
    "HMCOptions",
    "HamiltonianMonteCarlo",
    "ISIROptions",
    "IndependenceOptions",
    "IndependentMetropolisHastings",
    "IteratedSIR",
    "LocalGlobal",
    "LocalGlobalOptions",
    "MALAOptions",
    "MCMCResult",
    "MetropolisAdjustedLangevin",
    "PulledBackLogDensity",
    "acceptance_rates",
    "autocovariance",
    "base_to_data",
    "data_to_base",
    "effective_sample_size",
    "neutra_kernel",
    "rank_normalize",
    "run_mcmc",
    "split_r_hat",
]
