"""The check every built-in target makes of the points it is given."""

from __future__ import annotations

from torch import Tensor


def check_points(x: Tensor, features: int, name: str) -> None:
    """Raises a ValueError in the user's words unless ``x`` is a float ``(batch, features)``.

    Args:
        x: the points handed to a target's ``log_prob``.
        features: the dimension the target was built for.
        name: the target's name, for the message.
    """
    if x.ndim != 2 or x.shape[1] != features:
        raise ValueError(
            f"target {name!r} takes points of shape (batch, {features}), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"target {name!r} takes floating-point points, got dtype {x.dtype}")
