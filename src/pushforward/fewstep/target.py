"""The slowly moving target network of consistency-style losses."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from pushforward.nn.averaging import move_toward


class TargetNetwork(nn.Module):
    r"""A slowly moving copy :math:`\theta^-` of a network: the target of a consistency loss.

    After every training step (the model's ``after_step``, which the training engine
    calls after each optimizer step) the copy moves towards the online weights,

    .. math:: \theta^- \leftarrow \mu\, \theta^- + (1 - \mu)\, \theta,

    with a constant rate :math:`\mu` (no warm-up, as in consistency models). The
    copy's parameters do not require gradients, so the training engine's
    optimizer never sees them; they are part of the state dict, so ``save`` and
    ``load`` (and checkpoints) keep them. Evaluations run without gradients.

    References: Song et al. (2023), Consistency Models; Frans et al. (2025), One
    Step Diffusion via Shortcut Models.

    Args:
        network: the online network; the target starts as an exact copy of it.
        decay: the rate :math:`\mu` in ``(0, 1)``.
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"the target network's decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.network = copy.deepcopy(network).requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        """Moves the target one EMA step towards ``online``'s current weights."""
        move_toward(
            self.network.state_dict(keep_vars=True).values(),
            online.state_dict(keep_vars=True).values(),
            1.0 - self.decay,
        )

    def forward(self, *args: Tensor | None) -> Tensor:
        """The target network's output (no gradients), called like the online network."""
        with torch.no_grad():
            output: Tensor = self.network(*args)
        return output

    def extra_repr(self) -> str:
        return f"decay={self.decay}"
