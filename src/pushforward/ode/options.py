"""Inference options of models that solve an ODE: what their ``sample`` and ``log_prob`` take."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from pushforward.inference import InferenceOptions
from pushforward.ode.likelihood import DIVERGENCES
from pushforward.ode.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS
from pushforward.options import choice, finite, positive_float, positive_int

SOLVERS: tuple[str, ...] = tuple(FIXED_STEP_METHODS) + tuple(ADAPTIVE_METHODS)
"""Solver names ``sample`` and ``log_prob`` accept."""


def _optional_steps(steps: int | None) -> None:
    if steps is not None:
        positive_int("steps", steps)


@dataclass(frozen=True)
class ODESampleOptions(InferenceOptions):
    """Options of sampling by an ODE solve; ``None`` takes the model's own setting.

    Example:
        >>> ODESampleOptions(solver="heun", steps=8).steps
        8
    """

    solver: str | None = field(default=None, metadata={"help": "ODE method: " + ", ".join(SOLVERS)})
    steps: int | None = field(default=None, metadata={"help": "steps of a fixed-step solver"})
    guidance: float = field(
        default=1.0, metadata={"help": "classifier-free guidance scale (1: none)"}
    )

    def __post_init__(self) -> None:
        if self.solver is not None:
            choice("solver", self.solver, SOLVERS)
        _optional_steps(self.steps)
        finite("guidance", self.guidance)


@dataclass(frozen=True)
class ODELogProbOptions(InferenceOptions):
    """Options of a likelihood by the instantaneous change of variables (Chen et al. 2018).

    ``None`` takes the model's own setting; ``generator`` drives Hutchinson's probes.
    """

    python_only: ClassVar[tuple[str, ...]] = ("generator",)

    solver: str | None = field(default=None, metadata={"help": "ODE method: " + ", ".join(SOLVERS)})
    steps: int | None = field(default=None, metadata={"help": "steps of a fixed-step solver"})
    atol: float | None = field(
        default=None, metadata={"help": "absolute tolerance of an adaptive solver"}
    )
    rtol: float | None = field(
        default=None, metadata={"help": "relative tolerance of an adaptive solver"}
    )
    divergence: str | None = field(
        default=None, metadata={"help": "divergence: " + " or ".join(DIVERGENCES)}
    )
    probes: int | None = field(default=None, metadata={"help": "Hutchinson probes per point"})
    generator: torch.Generator | None = field(
        default=None, metadata={"help": "random generator of Hutchinson's probes"}
    )

    def __post_init__(self) -> None:
        if self.solver is not None:
            choice("solver", self.solver, SOLVERS)
        _optional_steps(self.steps)
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if value is not None:
                positive_float(name, value)
        if self.divergence is not None:
            choice("divergence", self.divergence, DIVERGENCES)
        if self.probes is not None:
            positive_int("probes", self.probes)


@dataclass(frozen=True)
class StepSampleOptions(InferenceOptions):
    """Options of a few-step sampler: the number of network evaluations."""

    steps: int | None = field(
        default=None, metadata={"help": "network evaluations (jumps) of a few-step model"}
    )

    def __post_init__(self) -> None:
        _optional_steps(self.steps)
