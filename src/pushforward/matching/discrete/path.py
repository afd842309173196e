r"""The source of a discrete mixture path (masked or uniform) and draws of :math:`x_t`.

Tokens are integers in ``[0, vocab)``. A *masked* (absorbing) source puts every
position at one extra token, the mask, whose index is ``vocab``: the model's state
space has ``vocab + 1`` tokens, its denoiser predicts only the ``vocab`` real ones.
A *uniform* source draws every position uniformly from the ``vocab`` tokens.

.. math:: x_t^i = x_1^i \text{ with probability } \kappa_t, \text{ else } x_0^i,
          \text{ independently per position.}

References: Gat et al. (2024), Discrete Flow Matching; Campbell et al. (2024),
Generative Flows on Discrete State-Spaces; Austin et al. (2021), Structured
Denoising Diffusion Models in Discrete State-Spaces (the absorbing state).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from pushforward.matching.components import Component, make_component


class MixtureSource(Component, ABC):
    """The source distribution :math:`p_0` of a mixture path, the same at every position."""

    @abstractmethod
    def states(self, vocab: int) -> int:
        """Tokens of the state space for ``vocab`` data tokens (``vocab + 1`` with a mask)."""

    @abstractmethod
    def sample(
        self,
        shape: tuple[int, ...],
        vocab: int,
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Source tokens ``(*shape)`` of dtype int64."""

    @abstractmethod
    def log_prob(self, x0: Tensor, vocab: int) -> Tensor:
        """``log p_0`` of each position of ``x0``: a float tensor of the same shape."""


class MaskedSource(MixtureSource):
    """Every position at the mask token ``vocab`` (an absorbing state)."""

    name: ClassVar[str] = "masked"

    def states(self, vocab: int) -> int:
        return vocab + 1

    def mask(self, vocab: int) -> int:
        """The mask token's index."""
        return vocab

    def sample(
        self,
        shape: tuple[int, ...],
        vocab: int,
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return torch.full(shape, vocab, dtype=torch.int64, device=device)

    def log_prob(self, x0: Tensor, vocab: int) -> Tensor:
        zero = torch.zeros(x0.shape, device=x0.device)
        return torch.where(x0 == vocab, zero, zero.new_full((), -math.inf))


class UniformSource(MixtureSource):
    """Every position uniform over the ``vocab`` tokens."""

    name: ClassVar[str] = "uniform"

    def states(self, vocab: int) -> int:
        return vocab

    def sample(
        self,
        shape: tuple[int, ...],
        vocab: int,
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return torch.randint(vocab, shape, device=device, generator=generator)

    def log_prob(self, x0: Tensor, vocab: int) -> Tensor:
        inside = (x0 >= 0) & (x0 < vocab)
        value = torch.full(x0.shape, -math.log(vocab), device=x0.device)
        return torch.where(inside, value, value.new_full((), -math.inf))


MIXTURE_SOURCES: dict[str, type[MixtureSource]] = {
    cls.name: cls for cls in (MaskedSource, UniformSource)
}
"""The sources of a mixture path by name (the ``path`` option of ``dfm``)."""


def make_mixture_source(name: str, **options: Any) -> MixtureSource:
    """The source ``name`` of :data:`MIXTURE_SOURCES`; unknown names list the valid ones."""
    return make_component("path", MIXTURE_SOURCES, name, options)


def sample_mixture_path(
    x0: Tensor, x1: Tensor, kappa: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    r"""Draws :math:`x_t \sim p_t(\cdot \mid x_0, x_1)` of a mixture path.

    Args:
        x0: ``(batch, *positions)`` source tokens.
        x1: ``(batch, *positions)`` data tokens.
        kappa: ``(batch,)`` values :math:`\kappa_t` (floating).
        generator: the random stream (default: torch's global one).

    Returns:
        ``(batch, *positions)`` int64 tokens: ``x1`` where a uniform draw is below
        :math:`\kappa_t`, ``x0`` elsewhere.
    """
    if x0.shape != x1.shape:
        raise ValueError(
            f"x0 has shape {tuple(x0.shape)} and x1 {tuple(x1.shape)}; they must match"
        )
    shape = (x1.shape[0],) + (1,) * (x1.ndim - 1)
    draw = torch.rand(x1.shape, dtype=kappa.dtype, device=x1.device, generator=generator)
    return torch.where(draw < kappa.reshape(shape), x1, x0)
