"""What a simplex flow-matching model's ``sample`` accepts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from pushforward.inference import InferenceOptions
from pushforward.options import finite, positive_int


@dataclass(frozen=True)
class SphereEulerOptions(InferenceOptions):
    """Options of sampling by Euler steps on the sphere; ``None`` takes the model's own.

    Example:
        >>> SphereEulerOptions(steps=32).steps
        32
    """

    python_only: ClassVar[tuple[str, ...]] = ("generator",)

    steps: int | None = field(
        default=None, metadata={"help": "Euler steps on the sphere (exponential map)"}
    )
    guidance: float = field(
        default=1.0, metadata={"help": "classifier-free guidance scale (1: none)"}
    )
    generator: torch.Generator | None = field(
        default=None, metadata={"help": "random generator of the source points"}
    )

    def __post_init__(self) -> None:
        if self.steps is not None:
            positive_int("steps", self.steps)
        finite("guidance", self.guidance)
