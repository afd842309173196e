"""A layer's parameters: learned constants, or a hypernetwork of the context."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from pushforward.nn.mlp import MLP


class AmortizedParameters(nn.Module):
    r"""The flat parameter vector :math:`\theta` of one layer, shared or amortised.

    Without a context :math:`\theta` is a learned constant; with one it is
    :math:`\theta(c) = \mathrm{MLP}(c)`, a hypernetwork whose last layer starts at
    weight zero and bias :math:`\theta_0`, so every context starts at the same
    layer (amortised variational inference, where an encoder gives each data
    point its own flow).

    References:
        van den Berg et al. (2018), Sylvester Normalizing Flows for Variational Inference.

    Args:
        initial: ``(P,)`` the starting value :math:`\theta_0`.
        context: context width (0: a constant).
        hidden: the hypernetwork's hidden widths (read when ``context > 0``).
        activation: the hypernetwork's hidden nonlinearity.

    Example:
        >>> import torch
        >>> source = AmortizedParameters(torch.zeros(3), context=2, hidden=(8,))
        >>> source(torch.randn(5, 2)).shape
        torch.Size([5, 3])
        >>> AmortizedParameters(torch.zeros(3))(None).shape
        torch.Size([1, 3])
    """

    def __init__(
        self,
        initial: Tensor,
        context: int = 0,
        hidden: Sequence[int] = (64,),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        initial = initial.detach().reshape(-1)
        self.context = int(context)
        self.network: MLP | None = None
        self.constant: nn.Parameter | None = None
        if self.context > 0:
            self.network = MLP(self.context, initial.numel(), hidden, activation, zero_last=True)
            with torch.no_grad():
                cast(nn.Linear, self.network[-1]).bias.copy_(initial)
        else:
            self.constant = nn.Parameter(initial.clone())

    def forward(self, context: Tensor | None) -> Tensor:
        """``(batch, P)`` from a checked ``(batch, context)``, or ``(1, P)`` without one."""
        if self.network is not None and context is not None:
            return self.network(context)
        if self.constant is None:
            raise ValueError(f"these parameters are a function of {self.context} context features")
        return self.constant.unsqueeze(0)
