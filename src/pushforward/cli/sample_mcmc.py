"""``pushforward sample RUN --mcmc KERNEL``: flow-based MCMC on the run's target, chains to .npy."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from pushforward.cli.evaluate_target import run_target
from pushforward.data import load_array
from pushforward.sampling.mcmc import MCMCResult, run_mcmc
from pushforward.sbi.posterior import sample_likelihood_posterior
from pushforward.sbi.priors import load_prior
from pushforward.serialization import atomic_write_bytes, npy_bytes
from pushforward.train.run_directory import open_run

DEFAULT_CHAINS = 16
DEFAULT_STEPS = 1000


def run_sample_mcmc(arguments: argparse.Namespace) -> int:
    """Runs ``--chains`` chains of ``--mcmc`` for ``--steps`` kept steps after ``--warmup``.

    Writes ``(steps, chains, d)`` float64 states in the data's units to ``--out`` and
    prints the acceptance rate, the largest R-hat and the smallest bulk ESS.
    """
    if arguments.n is not None:
        raise ValueError("--mcmc runs --chains chains for --steps steps; do not pass -n")
    if getattr(arguments, "observation", None) is not None:
        return _likelihood_posterior(arguments)
    if getattr(arguments, "source", None) is not None:
        raise ValueError("--mcmc samples the run's target; --source applies to transport runs")
    if arguments.context is not None:
        raise ValueError("--mcmc samples an unconditional target; do not pass --context")
    out = Path(arguments.out)
    if out.suffix.lower() != ".npy":
        raise ValueError(f"--out '{out}' must end in .npy")
    config, model = open_run(arguments.run)
    target = run_target(config, getattr(arguments, "target", None), None)
    chains, steps, warmup = _chain_lengths(arguments)
    result = run_mcmc(
        target, model, arguments.mcmc, chains=chains, steps=steps, warmup=warmup,
        seed=arguments.seed,
    )  # fmt: skip
    return _write_chains(arguments, out, result)


def _chain_lengths(arguments: argparse.Namespace) -> tuple[int, int, int]:
    chains = DEFAULT_CHAINS if arguments.chains is None else arguments.chains
    steps = DEFAULT_STEPS if arguments.steps is None else arguments.steps
    warmup = 0 if arguments.warmup is None else arguments.warmup
    for flag, value, least in (
        ("--chains", chains, 1),
        ("--steps", steps, 1),
        ("--warmup", warmup, 0),
    ):
        if value < least:
            raise ValueError(f"{flag} must be at least {least}, got {value}")
    return chains, steps, warmup


def _likelihood_posterior(arguments: argparse.Namespace) -> int:
    """``sample RUN --mcmc mala --observation x_o.npy --prior prior.json``: the posterior of a
    likelihood estimator (a run trained with ``--data x --context theta``) by MCMC over theta."""
    if arguments.mcmc not in ("mala", "hmc"):
        raise ValueError(
            f"--observation samples a likelihood run's posterior with --mcmc mala or hmc, "
            f"not {arguments.mcmc!r}"
        )
    if arguments.prior is None:
        raise ValueError("--observation needs --prior FILE.json, the prior over theta")
    if arguments.context is not None or getattr(arguments, "target", None) is not None:
        raise ValueError("--observation samples theta given x_o; do not pass --context or --target")
    out = Path(arguments.out)
    if out.suffix.lower() != ".npy":
        raise ValueError(f"--out '{out}' must end in .npy")
    prior = load_prior(arguments.prior)
    _, model = open_run(arguments.run)
    if not model.context_features:
        raise ValueError(
            "--observation needs a likelihood run: a model of x conditional on theta "
            "(trained with --data x.npy --context theta.npy)"
        )
    rows = load_array(arguments.observation, ndim=2)
    if rows.shape != (1, model.features):
        raise ValueError(
            f"observation file '{arguments.observation}' must hold one row of "
            f"{model.features} values (x_o), got shape {tuple(rows.shape)}"
        )
    observation = torch.from_numpy(rows.copy()).to(next(model.parameters()).dtype)
    chains, steps, warmup = _chain_lengths(arguments)
    result = sample_likelihood_posterior(
        model, prior, observation, chains * steps, kernel=arguments.mcmc, chains=chains,
        warmup=warmup, seed=arguments.seed,
    )  # fmt: skip
    return _write_chains(arguments, out, result)


def _write_chains(arguments: argparse.Namespace, out: Path, result: MCMCResult) -> int:
    array = result.chains.double().cpu().numpy()
    atomic_write_bytes(out, npy_bytes(np.ascontiguousarray(array)))
    r_hat = float(result.r_hat.max()) if result.r_hat.numel() else math.nan
    ess = float(result.ess.min()) if result.ess.numel() else math.nan
    print(
        f"wrote {arguments.mcmc} chains of shape {tuple(array.shape)} (steps, chains, features) "
        f"to {out}; acceptance {result.acceptance:.3f}, max R-hat {r_hat:.3f}, "
        f"min ESS {ess:.0f}, {result.target_evaluations} target evaluations"
    )
    return 0
