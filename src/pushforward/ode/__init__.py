"""ODE solvers, divergence estimators and likelihoods of continuous flows.

Time runs from the base at ``t = 0`` to the data at ``t = 1``; every vector field
is called as ``f(t, x)`` with ``t`` a 0-dim tensor in the dtype and device of ``x``.
"""

from __future__ import annotations

from pushforward.ode.divergence import (
    PROBE_KINDS,
    exact_divergence,
    hutchinson_divergence,
    make_probes,
)
from pushforward.ode.likelihood import (
    DIVERGENCES,
    AugmentedDynamics,
    LikelihoodResult,
    log_likelihood,
)
from pushforward.ode.solvers import (
    ADAPTIVE_METHODS,
    FIXED_STEP_METHODS,
    TABLEAUS,
    ButcherTableau,
    ODESolution,
    runge_kutta_step,
    solve_ode,
)

__all__ = [
    "ADAPTIVE_METHODS",
    "DIVERGENCES",
    "FIXED_STEP_METHODS",
    "PROBE_KINDS",
    "TABLEAUS",
    "AugmentedDynamics",
    "ButcherTableau",
    "LikelihoodResult",
    "ODESolution",
    "exact_divergence",
    "hutchinson_divergence",
    "log_likelihood",
    "make_probes",
    "runge_kutta_step",
    "solve_ode",
]
