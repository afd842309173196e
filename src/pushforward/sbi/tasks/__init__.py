"""The benchmark tasks of sbibm: simulators, priors, exact likelihoods, reference posteriors.

Every task answers the same questions (:class:`Task`): simulate data from parameters,
the simulator's log-density, and draws of the reference posterior of an observation.
:func:`make_task` builds one by name.

References:
    Lueckmann, Boelts, Greenberg, Gonçalves and Macke (2021), Benchmarking
    Simulation-Based Inference. AISTATS.

Example:
    >>> import torch
    >>> task = make_task("gaussian_linear")
    >>> theta_o, x_o = task.observations(1, seed=0)
    >>> task.reference_posterior(x_o[0], 100, torch.Generator().manual_seed(0)).shape
    torch.Size([100, 10])
"""

from __future__ import annotations

from pushforward.options import closest
from pushforward.sbi.tasks.base import Simulations, Task
from pushforward.sbi.tasks.bernoulli_glm import BernoulliGLM
from pushforward.sbi.tasks.gaussian_linear import GaussianLinear
from pushforward.sbi.tasks.gaussian_mixture import GaussianMixture
from pushforward.sbi.tasks.slcp import SLCP
from pushforward.sbi.tasks.smc import SMCResult, tempered_smc
from pushforward.sbi.tasks.two_moons import TwoMoons

TASKS: dict[str, type[Task]] = {
    "two_moons": TwoMoons,
    "slcp": SLCP,
    "gaussian_linear": GaussianLinear,
    "gaussian_mixture": GaussianMixture,
    "bernoulli_glm": BernoulliGLM,
}


def make_task(name: str) -> Task:
    """The task registered as ``name``, with sbibm's settings.

    Raises:
        ValueError: for an unknown name, listing the valid ones with a did-you-mean hint.
    """
    if name not in TASKS:
        names = list(TASKS)
        raise ValueError(
            f"unknown task {name!r}{closest(str(name), names)}; valid tasks: {', '.join(names)}"
        )
    return TASKS[name]()


__all__ = [
    "SLCP",
    "TASKS",
    "BernoulliGLM",
    "GaussianLinear",
    "GaussianMixture",
    "SMCResult",
    "Simulations",
    "Task",
    "TwoMoons",
    "make_task",
    "tempered_smc",
]
