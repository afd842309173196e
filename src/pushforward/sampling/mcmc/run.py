"""One entry point to every flow MCMC kernel: ``run_mcmc``, and its result."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pushforward.inference import InferenceOptions, resolve_options
from pushforward.model import Model
from pushforward.options import closest, positive_int
from pushforward.sampling.mcmc.density import DataLogDensity
from pushforward.sampling.mcmc.diagnostics import (
    acceptance_rates,
    effective_sample_size,
    split_r_hat,
)
from pushforward.sampling.mcmc.hmc import HamiltonianMonteCarlo, HMCOptions
from pushforward.sampling.mcmc.independent import (
    IndependenceOptions,
    IndependentMetropolisHastings,
    ISIROptions,
    IteratedSIR,
)
from pushforward.sampling.mcmc.kernel import Kernel
from pushforward.sampling.mcmc.langevin import MALAOptions, MetropolisAdjustedLangevin
from pushforward.sampling.mcmc.local_global import LocalGlobal, LocalGlobalOptions
from pushforward.sampling.mcmc.neutra import neutra_kernel
from pushforward.sampling.mcmc.proposal import FlowProposal, draw_from_model, model_dtype
from pushforward.sampling.target import Target, as_target

KERNEL_OPTIONS: dict[str, type[InferenceOptions]] = {
    "imh": IndependenceOptions,
    "isir": ISIROptions,
    "neutra": HMCOptions,
    "neutra-mala": MALAOptions,
    "local-global": LocalGlobalOptions,
    "hmc": HMCOptions,
    "mala": MALAOptions,
}
"""Each kernel's options dataclass, by the kernel's name."""

KERNELS = tuple(KERNEL_OPTIONS)
"""The kernel names :func:`run_mcmc` accepts."""

# Kernels that need the model only for their starting points.
_LOCAL = ("hmc", "mala")


@dataclass(frozen=True)
class MCMCResult:
    """Chains of a :func:`run_mcmc` run, after warm-up, and their diagnostics.

    Attributes:
        chains: ``(steps, chains, d)`` the states, in the data's units.
        acceptance: the fraction of accepted moves (for i-SIR: moves to a fresh
            candidate; for local-global: the global move's).
        acceptance_per_chain: ``(chains,)`` float64.
        r_hat: ``(d,)`` rank-normalised split R-hat (NaN below 4 steps).
        ess: ``(d,)`` bulk effective sample size over all chains (NaN below 4 steps).
        target_evaluations: rows the target was evaluated at, warm-up included
            (a gradient evaluation counts as one).
        kernel: the kernel's name.
        options: the kernel's resolved options, defaults included.
        details: what the kernel tuned or measured (a step size, the local acceptance).
    """

    chains: Tensor
    acceptance: float
    acceptance_per_chain: Tensor
    r_hat: Tensor
    ess: Tensor
    target_evaluations: int
    kernel: str
    options: dict[str, Any] = field(default_factory=dict)
    details: dict[str, float] = field(default_factory=dict)


def _build_kernel(name: str, options: Any, density: DataLogDensity, model: Model | None) -> Kernel:
    if name in _LOCAL:
        if name == "hmc":
            return HamiltonianMonteCarlo(
                density,
                options.step_size,
                options.leapfrog_steps,
                options.adapt_step_size,
                options.target_acceptance,
                options.jitter,
            )
        return MetropolisAdjustedLangevin(
            density, options.step_size, options.adapt_step_size, options.target_acceptance
        )
    if model is None:
        raise ValueError(f"kernel {name!r} needs a model (the flow); none was given")
    if name.startswith("neutra"):
        return neutra_kernel(density, model, options)
    proposal = FlowProposal(model, options.defensive, options.defensive_scale)
    if name == "imh":
        return IndependentMetropolisHastings(density, proposal)
    if name == "isir":
        return IteratedSIR(density, proposal, options.particles)
    global_move: IndependentMetropolisHastings = (
        IteratedSIR(density, proposal, options.particles)
        if options.global_kernel == "isir"
        else IndependentMetropolisHastings(density, proposal)
    )
    local_move = MetropolisAdjustedLangevin(
        density, options.step_size, options.adapt_step_size, options.target_acceptance
    )
    return LocalGlobal(global_move, local_move, options.local_steps)


def _generator(
    generator: torch.Generator | None, seed: int | None, device: torch.device
) -> torch.Generator:
    if generator is not None and seed is not None:
        raise ValueError("give a generator or a seed, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != device.type:
            raise ValueError(f"the generator is on {generator.device} but the model is on {device}")
        return generator
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return torch.Generator(device=device).manual_seed(0 if seed is None else seed)


def _initial_points(
    init: Tensor | None,
    model: Model | None,
    chains: int,
    features: int,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    if init is None:
        if model is None:
            raise ValueError("give init (chains, d) starting points, or a model to draw them from")
        return draw_from_model(model, chains, generator)[0]
    if not isinstance(init, Tensor) or not init.is_floating_point():
        raise TypeError("init must be a floating-point tensor (chains, d)")
    if init.ndim == 1:
        init = init.expand(chains, -1)
    if tuple(init.shape) != (chains, features):
        raise ValueError(f"init has shape {tuple(init.shape)}, expected ({chains}, {features})")
    if init.dtype != dtype or init.device != device:
        raise TypeError(
            f"init is {init.dtype} on {init.device} but the model is {dtype} on {device}"
        )
    if not bool(torch.isfinite(init).all()):
        raise ValueError("init contains NaN or Inf values")
    return init.clone()


def run_mcmc(
    target: Target | Any,
    model: Model | None,
    kernel: str = "imh",
    *,
    chains: int = 16,
    steps: int = 1000,
    warmup: int = 0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    init: Tensor | None = None,
    **kernel_options: Any,
) -> MCMCResult:
    """Runs ``chains`` Markov chains of ``kernel`` on ``target``, with ``model`` as the flow.

    Kernels (:data:`KERNELS`): ``imh`` (independent Metropolis-Hastings, the
    flow as proposal), ``isir`` (iterated SIR), ``neutra`` / ``neutra-mala`` (HMC /
    MALA in the flow's latent space), ``local-global`` (a flow move, then MALA
    steps), and ``hmc`` / ``mala`` in the data's units (the flow only starts
    them). ``kernel_options`` are the chosen kernel's (:data:`KERNEL_OPTIONS`).
    Randomness comes from ``generator`` (or a new one seeded with ``seed``,
    0 by default), never from torch's global generator, so runs repeat exactly.
    Chains start from the flow's samples unless ``init`` is given. The warm-up
    steps tune step sizes and are dropped. Tensors follow the model's dtype and
    device.

    Args:
        target: a :class:`~pushforward.sampling.Target`, or a callable of
            ``(batch, d)`` returning ``(batch,)`` (``-inf`` outside the support).
        model: a trained unconditional model (a flow for ``neutra``); may be
            ``None`` for ``hmc`` / ``mala`` started from ``init``.
        kernel: one of :data:`KERNELS`.
        chains, steps, warmup: chains run side by side, steps kept, steps dropped.
        generator, seed: the source of randomness (one of them, or neither).
        init: ``(chains, d)`` or ``(d,)`` starting points in the data's units.

    Returns:
        An :class:`MCMCResult`.

    Example:
        >>> import torch, pushforward
        >>> from pushforward.sampling import CallableTarget
        >>> flow = pushforward.build("realnvp", features=2, transforms=2, hidden=[8])
        >>> target = CallableTarget(lambda x: -0.5 * (x**2).sum(-1), features=2)
        >>> result = run_mcmc(target, flow, "imh", chains=4, steps=50, seed=1)
        >>> tuple(result.chains.shape), result.acceptance
        ((50, 4, 2), 1.0)
    """
    if kernel not in KERNEL_OPTIONS:
        raise ValueError(
            f"unknown MCMC kernel {kernel!r}{closest(str(kernel), list(KERNELS))}; "
            f"known kernels: {', '.join(KERNELS)}"
        )
    options = resolve_options(KERNEL_OPTIONS[kernel], kernel_options, f"run_mcmc({kernel!r})")
    chains = positive_int("chains", chains)
    steps = positive_int("steps", steps)
    warmup = positive_int("warmup", warmup, minimum=0)
    if model is not None and not isinstance(model, Model):
        raise TypeError(f"model must be a pushforward Model, got {type(model).__name__}")
    features = model.features if model is not None else None
    target = as_target(target, features)
    if model is not None:
        dtype, device = model_dtype(model)
    elif init is not None:
        dtype, device = init.dtype, init.device
    else:
        raise ValueError("give init (chains, d) starting points, or a model to draw them from")
    random = _generator(generator, seed, device)
    density = DataLogDensity(target)
    chosen = _build_kernel(kernel, options, density, model)
    x = _initial_points(init, model, chains, target.features, random, dtype, device)
    state = chosen.initialize(x)
    for _ in range(warmup):
        state, _ = chosen.step(state, random, True)
    chosen.end_warmup()
    kept, moves = [], []
    for _ in range(steps):
        state, accepted = chosen.step(state, random, False)
        kept.append(chosen.data(state))
        moves.append(accepted)
    draws = torch.stack(kept)
    acceptance, per_chain = acceptance_rates(torch.stack(moves))
    if steps >= 4:
        r_hat, ess = split_r_hat(draws), effective_sample_size(draws)
    else:
        r_hat = ess = torch.full((target.features,), math.nan, dtype=dtype, device=device)
    return MCMCResult(
        chains=draws,
        acceptance=acceptance,
        acceptance_per_chain=per_chain,
        r_hat=r_hat,
        ess=ess,
        target_evaluations=density.evaluations,
        kernel=kernel,
        options=options.given(),
        details=chosen.details(),
    )
