"""Flows as samplers of unnormalized densities: targets, objectives, importance weights, MCMC.

* :mod:`~pushforward.sampling.target`: the :class:`Target` protocol and
  :class:`CallableTarget` for a user's function; :mod:`~pushforward.sampling.targets`:
  the built-in benchmark targets; :func:`load_target` for ``builtin:NAME`` and
  ``FILE.py:NAME``.
* :mod:`~pushforward.sampling.objectives`: reverse KL, path gradients (fast and
  drop-in), forward KL, alpha-divergences, trained by ``pushforward.fit(model,
  target=...)``.
* :mod:`~pushforward.sampling.importance`: log-weights, log Z with its standard error,
  ELBO and EUBO, reverse and forward ESS, mode coverage.
* :mod:`~pushforward.sampling.mcmc`: independent Metropolis-Hastings, i-SIR, NeuTra,
  local-global kernels, R-hat and MCMC ESS.
"""

from pushforward.sampling.importance import (
    SamplerEvaluation,
    evaluate_sampler,
    forward_ess,
    importance_log_weights,
    log_z_estimate,
    mode_coverage,
    reverse_ess,
)
from pushforward.sampling.mcmc import KERNELS, MCMCResult, run_mcmc, split_r_hat
from pushforward.sampling.objectives import OBJECTIVES, Objective, make_objective
from pushforward.sampling.target import CallableTarget, Target, as_target, checked_log_prob
from pushforward.sampling.target_files import load_target, probe_target
from pushforward.sampling.targets import BUILTIN_TARGETS, builtin_target

__all__ = [
    "BUILTIN_TARGETS",
    "KERNELS",
    "OBJECTIVES",
    "CallableTarget",
    "MCMCResult",
    "Objective",
    "SamplerEvaluation",
    "Target",
    "as_target",
    "builtin_target",
    "checked_log_prob",
    "evaluate_sampler",
    "forward_ess",
    "importance_log_weights",
    "load_target",
    "log_z_estimate",
    "make_objective",
    "mode_coverage",
    "probe_target",
    "reverse_ess",
    "run_mcmc",
    "split_r_hat",
]
