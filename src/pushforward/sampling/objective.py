"""The objective protocol: what fits a flow to an unnormalized target, one step at a time."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from pushforward.model import Model
from pushforward.sampling.target import Target, checked_log_prob


def estimate(value: Tensor, surrogate: Tensor) -> Tensor:
    """``value``'s number with ``surrogate``'s gradient."""
    return value.detach() + (surrogate - surrogate.detach())


class Objective:
    """A training objective against a target; subclasses implement :meth:`loss`.

    Attributes:
        name: the objective's name (``--objective``).
        needs_samples: it needs exact target samples (``target.sample``).
    """

    name: ClassVar[str]
    needs_samples: ClassVar[bool] = False
    # The estimator back-propagates through the target's log-density.
    needs_target_gradient: ClassVar[bool] = True

    def check(self, model: Model, target: Target) -> None:
        """Raises ``ValueError`` naming what is missing when the model or target cannot run this."""
        if not (model.has_rsample and model.has_log_prob):
            raise ValueError(
                f"objective {self.name!r} needs a model with reparameterised samples and their "
                f"log-density (rsample_and_log_prob); {model_name(model)} has none"
            )
        if self.needs_target_gradient:
            check_differentiable(target, self.name, model)
        if self.needs_samples and not target.has_sample:
            raise ValueError(
                f"objective {self.name!r} needs exact samples of the target, and target "
                f"{target.name!r} has no sampler; use reverse-kl, path-gradient, alpha or fab"
            )

    def loss(
        self, model: Model, target: Target, n: int, beta: float = 1.0, generator: Any = None
    ) -> Tensor:
        """The scalar loss of one step of ``n`` samples; see the module docstring."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The objective's options, for ``config.json``."""
        return {}

    def state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """What the objective carries from step to step (a replay buffer, a tuned step
        size) as ``(json_part, tensors)``, saved in every checkpoint; none by default."""
        return {}, {}

    def restore(self, json_part: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        """Inverse of :meth:`state` (an exact resume continues from it)."""


def check_differentiable(
    target: Target,
    objective: str,
    model: Model,
    instead: str = "or use forward-kl with exact samples",
) -> None:
    """Raises ``ValueError`` when ``target.log_prob`` does not carry gradients to its input.

    Evaluated on two standard-normal points (inside the box of a bounded target).
    """
    reference = model._reference()
    dtype = torch.float64 if reference is None else reference.dtype
    generator = torch.Generator().manual_seed(0)
    point = torch.randn(2, target.features, generator=generator, dtype=torch.float64)
    if target.low is not None and target.high is not None:
        point = target.low + (target.high - target.low) * torch.rand(
            2, target.features, generator=generator, dtype=torch.float64
        )
    with torch.enable_grad():
        point = point.to(dtype).requires_grad_(True)
        values = checked_log_prob(target, point)
    if not values.requires_grad:
        raise ValueError(
            f"objective {objective!r} back-propagates through the target, and target "
            f"{target.name!r} is not differentiable: build its log_prob from torch operations "
            f"on its input ({instead})"
        )


def model_name(model: Model) -> str:
    return repr((getattr(model, "config", None) or {}).get("model", type(model).__name__))
