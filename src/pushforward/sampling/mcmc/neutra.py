"""NeuTra: HMC or MALA in a flow's latent space, on the target pulled back through the flow."""

from __future__ import annotations

from pushforward.model import Model
from pushforward.sampling.mcmc.density import DataLogDensity
from pushforward.sampling.mcmc.gradient_kernel import GradientKernel
from pushforward.sampling.mcmc.hmc import HamiltonianMonteCarlo, HMCOptions
from pushforward.sampling.mcmc.langevin import MALAOptions, MetropolisAdjustedLangevin
from pushforward.sampling.mcmc.latent import PulledBackLogDensity


def neutra_kernel(
    density: DataLogDensity, model: Model, options: HMCOptions | MALAOptions
) -> GradientKernel:
    r"""HMC (``HMCOptions``) or MALA (``MALAOptions``) on :math:`z` with the pulled-back density.

    .. math:: \log \pi(z) = \log \tilde p\big(T(z)\big) + \log|\det \partial T / \partial z|

    where :math:`T` is the flow's base-to-data map. Chains move in :math:`z`,
    where a good flow has made the target close to a standard normal, and are
    reported as :math:`x = T(z)`; the invariant law of :math:`x` is the target
    exactly, however poor the flow.

    References:
        Hoffman et al. (2019), NeuTra-lizing Bad Geometry in Hamiltonian Monte
        Carlo Using Neural Transport.

    Raises:
        TypeError: a model without an explicit bijection (``transform`` and ``base``).
    """
    latent = PulledBackLogDensity(density, model)
    if isinstance(options, HMCOptions):
        return HamiltonianMonteCarlo(
            latent,
            options.step_size,
            options.leapfrog_steps,
            options.adapt_step_size,
            options.target_acceptance,
            options.jitter,
        )
    return MetropolisAdjustedLangevin(
        latent, options.step_size, options.adapt_step_size, options.target_acceptance
    )
