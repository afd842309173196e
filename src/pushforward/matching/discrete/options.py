"""What a discrete flow-matching model's ``sample`` and ``log_prob`` accept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from pushforward.inference import InferenceOptions
from pushforward.options import finite, positive_int


@dataclass(frozen=True)
class CTMCSampleOptions(InferenceOptions):
    """Options of sampling by the CTMC's Euler steps; ``None`` takes the model's own setting.

    Example:
        >>> CTMCSampleOptions(steps=64, eta=0.5).eta
        0.5
    """

    python_only: ClassVar[tuple[str, ...]] = ("generator",)

    steps: int | None = field(default=None, metadata={"help": "Euler steps of the CTMC sampler"})
    eta: float | None = field(
        default=None, metadata={"help": "corrector stochasticity of the CTMC sampler (0: none)"}
    )
    guidance: float = field(
        default=1.0, metadata={"help": "classifier-free guidance scale (1: none)"}
    )
    generator: torch.Generator | None = field(
        default=None, metadata={"help": "random generator of the sampler"}
    )

    def __post_init__(self) -> None:
        if self.steps is not None:
            positive_int("steps", self.steps)
        if self.eta is not None and not finite("eta", self.eta) >= 0:
            raise ValueError(f"option 'eta' must be >= 0, got {self.eta!r}")
        finite("guidance", self.guidance)


@dataclass(frozen=True)
class BoundLogProbOptions(InferenceOptions):
    """Options of the evidence lower bound that a discrete model's ``log_prob`` returns.

    ``exact=True`` enumerates every state instead (short sequences over small
    vocabularies only), to check the bound.
    """

    python_only: ClassVar[tuple[str, ...]] = ("generator",)

    draws: int | None = field(
        default=None, metadata={"help": "Monte Carlo draws of the likelihood bound per sequence"}
    )
    exact: bool = field(
        default=False,
        metadata={"help": "the exact log-likelihood by enumerating every state (small models)"},
    )
    guidance: float = field(
        default=1.0, metadata={"help": "classifier-free guidance scale (1: none)"}
    )
    generator: torch.Generator | None = field(
        default=None, metadata={"help": "random generator of the bound's times and paths"}
    )

    def __post_init__(self) -> None:
        if self.draws is not None:
            positive_int("draws", self.draws)
        if not isinstance(self.exact, bool):
            raise ValueError(f"option 'exact' must be true or false, got {self.exact!r}")
        finite("guidance", self.guidance)
