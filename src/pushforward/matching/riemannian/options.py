"""What a Riemannian flow-matching model's ``sample`` accepts."""

from __future__ import annotations

from dataclasses import dataclass, field

from pushforward.ode.options import ODESampleOptions
from pushforward.options import choice

MANIFOLD_STEPS = ("projected", "exp")
"""How a fixed-step solver moves on a manifold: a step in the coordinates then the
projection, or every stage along the exponential map."""


@dataclass(frozen=True)
class ManifoldSampleOptions(ODESampleOptions):
    """:class:`~pushforward.ode.options.ODESampleOptions` and how the steps move on the
    manifold; ``None`` takes the model's own setting.

    Example:
        >>> ManifoldSampleOptions(solver="rk4", steps=8, step="exp").step
        'exp'
    """

    step: str | None = field(
        default=None, metadata={"help": "fixed steps: " + " or ".join(MANIFOLD_STEPS)}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.step is not None:
            choice("step", self.step, MANIFOLD_STEPS)
