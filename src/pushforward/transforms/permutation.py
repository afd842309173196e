"""Fixed permutations of the feature (or channel) dimension."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pushforward.transforms.base import Transform, identity_logabsdet


class Permutation(Transform):
    r"""Reorders features: :math:`y_i = x_{\pi(i)}`, with :math:`\log|\det J| = 0`.

    Acts on dimension 1, so ``(batch, features)`` vectors and
    ``(batch, channels, height, width)`` images (channel permutation) both work.
    Stacked between coupling or autoregressive layers it lets every feature be
    transformed conditioned on every other one.

    The permutation and its inverse are buffers, so a random permutation is
    saved and reloaded with the model.

    References:
        Dinh et al. (2015), NICE: Non-linear Independent Components Estimation.
        Papamakarios et al. (2017), Masked Autoregressive Flow for Density Estimation.

    Args:
        permutation: a permutation of ``0 .. features - 1`` (ints or a 1-D integer tensor).
    """

    permutation: Tensor
    inverse_permutation: Tensor

    def __init__(self, permutation: Tensor | Sequence[int]) -> None:
        super().__init__()
        index = torch.as_tensor(permutation, dtype=torch.long)
        features = index.numel()
        if index.dim() != 1 or not torch.equal(
            index.sort().values, torch.arange(features, device=index.device)
        ):
            raise ValueError(f"expected a permutation of 0..{features - 1}, got {index.tolist()}")
        self.register_buffer("permutation", index.clone())
        self.register_buffer("inverse_permutation", torch.argsort(index))

    @classmethod
    def reverse(cls, features: int) -> Permutation:
        r"""The order-reversing permutation :math:`\pi(i) = D - 1 - i`."""
        return cls(torch.arange(features - 1, -1, -1))

    @classmethod
    def random(cls, features: int, generator: torch.Generator | None = None) -> Permutation:
        """A uniformly random permutation (seeded by ``generator`` if given)."""
        return cls(torch.randperm(features, generator=generator))

    @property
    def features(self) -> int:
        return self.permutation.numel()

    def _check(self, x: Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.features:
            raise ValueError(
                f"Permutation was built for {self.features} features, got input of shape "
                f"{tuple(x.shape)}"
            )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x: (batch, features, ...) -> (y, zeros(batch))`` with ``y = x[:, permutation]``."""
        self._check(x)
        return x.index_select(1, self.permutation), identity_logabsdet(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``y: (batch, features, ...) -> (y[:, inverse_permutation], zeros(batch))``."""
        self._check(y)
        return y.index_select(1, self.inverse_permutation), identity_logabsdet(y)

    def extra_repr(self) -> str:
        return f"features={self.features}"
