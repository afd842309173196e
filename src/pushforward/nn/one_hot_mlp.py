"""An MLP denoiser over token sequences: one-hot tokens, time and context in, logits out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional

from pushforward.nn.mlp import MLP
from pushforward.nn.time_embedding import SinusoidalTimeEmbedding
from pushforward.nn.velocity import checked_context
from pushforward.options import positive_int

# Width of the sinusoidal time features fed to the MLP beside the one-hot tokens.
TIME_FEATURES = 32


def checked_sizes(states: int, vocab: int, length: int, context_features: int) -> None:
    """Raise a ValueError unless the sizes of a token denoiser are consistent.

    Args:
        states: tokens ``x_t`` can take (``vocab + 1`` with a mask token).
        vocab: real tokens the logits cover, at most ``states``.
        length: sequence length ``L``.
        context_features: context width, 0 for none.
    """
    for name, value in (("states", states), ("vocab", vocab), ("length", length)):
        positive_int(name, value)
    positive_int("context_features", context_features, minimum=0)
    if vocab > states:
        raise ValueError(f"vocab ({vocab}) cannot exceed the number of states ({states})")


def checked_tokens(x_t: Tensor, states: int, length: int) -> int:
    """Check ``x_t`` is ``(batch, L)`` integer tokens or ``(batch, L, states)`` weights.

    Args:
        x_t: ``(batch, L)`` integer tokens, or ``(batch, L, states)`` floating one-hot
            weights (probability vectors on the simplex).
        states: the token count the network was built for.
        length: the sequence length ``L`` the network was built for.

    Returns:
        The batch size.
    """
    if x_t.is_floating_point():
        if x_t.dim() != 3 or x_t.shape[1:] != (length, states):
            raise ValueError(
                f"soft tokens x_t must have shape (batch, {length}, {states}), "
                f"got {tuple(x_t.shape)}"
            )
    elif x_t.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise TypeError(f"x_t must hold integer tokens or float weights, got {x_t.dtype}")
    elif x_t.dim() != 2 or x_t.shape[1] != length:
        raise ValueError(f"tokens x_t must have shape (batch, {length}), got {tuple(x_t.shape)}")
    return int(x_t.shape[0])


def checked_times(t: Tensor, batch: int, like: Tensor) -> Tensor:
    """``t`` as ``(batch,)`` in the dtype and device of ``like``; a 0-dim or one-element
    time is broadcast, any other row count is an error naming it.

    Args:
        t: 0-dim, ``(1,)`` or ``(batch,)`` times.
        batch: the batch size of ``x_t``.
        like: a parameter whose dtype and device the times take.
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a tensor of times, got {type(t).__name__}")
    if t.dim() > 1:
        raise ValueError(f"t must have shape (batch,), got {tuple(t.shape)}")
    t = t.reshape(-1).to(dtype=like.dtype, device=like.device)
    if t.shape[0] == 1:
        return t.expand(batch)
    if t.shape[0] != batch:
        raise ValueError(f"t has {t.shape[0]} times, x_t has {batch} rows")
    return t


def checked_token_context(
    context: Tensor | None, features: int, batch: int, like: Tensor
) -> Tensor | None:
    """``context`` as ``(batch, features)`` in ``like``'s dtype, or None when ``features == 0``.

    Args:
        context: ``(batch, features)`` (or one row, broadcast), or None.
        features: the context width the network was built for.
        batch: the batch size of ``x_t``.
        like: a parameter whose dtype and device the context takes.
    """
    if features == 0:
        if context is not None:
            raise ValueError(
                "a context was given, but the network was built with context_features=0"
            )
        return None
    context = checked_context(context, features, batch)
    return context.to(dtype=like.dtype, device=like.device)


class OneHotMLP(nn.Module):
    r"""A token denoiser: an MLP on the flattened one-hot sequence, the time and the context.

    .. math:: \ell(x_t, t, c) = \mathrm{MLP}\big([\,\mathrm{onehot}(x_t) \,\Vert\,
        e(t) \,\Vert\, c\,]\big) \in \mathbb{R}^{L \times V}

    with :math:`\mathrm{onehot}(x_t) \in \{0, 1\}^{L S}` (``S = states``), :math:`e` the
    sinusoidal time embedding (:class:`SinusoidalTimeEmbedding`, 32 features) and SiLU
    between the layers. The logits parameterise the factorised probability denoiser
    :math:`p_{1|t}(x_1^i \mid x_t) = \mathrm{softmax}(\ell^i)` of discrete flow
    matching; they cover the ``vocab`` real tokens only, never the mask. A floating
    ``x_t`` of shape ``(batch, L, S)`` is taken as the one-hot weights themselves (a
    point of the simplex), so an exact one-hot gives the logits of its tokens.

    References:
        Gat et al. (2024), Discrete Flow Matching.

    Args:
        states: tokens ``x_t`` can take: ``vocab + 1`` on a masked path (the last is
            the mask), ``vocab`` on a uniform path.
        vocab: real tokens, the width of the logits.
        length: sequence length ``L``.
        context_features: context width, 0 for an unconditional denoiser.
        hidden: widths of the hidden layers.

    Example:
        >>> network = OneHotMLP(5, 4, 3, hidden=(16,))
        >>> network(torch.tensor([[0, 4, 2]]), torch.tensor([0.5])).shape
        torch.Size([1, 3, 4])
    """

    def __init__(
        self,
        states: int,
        vocab: int,
        length: int,
        *,
        context_features: int = 0,
        hidden: Sequence[int] = (256, 256),
    ) -> None:
        super().__init__()
        checked_sizes(states, vocab, length, context_features)
        widths = tuple(positive_int("hidden", width) for width in hidden)
        self.states = states
        self.vocab = vocab
        self.length = length
        self.context_features = context_features
        self.hidden = widths
        self.time_embedding = SinusoidalTimeEmbedding(TIME_FEATURES)
        inputs = length * states + TIME_FEATURES + context_features
        self.network = MLP(inputs, length * vocab, widths, "silu", zero_last=False)

    def forward(self, x_t: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        """Logits of the denoiser.

        Args:
            x_t: ``(batch, L)`` integer tokens in ``[0, states)``, or ``(batch, L, states)``
                floating one-hot weights.
            t: ``(batch,)`` times in ``[0, 1]`` (0-dim or ``(1,)`` is broadcast).
            context: ``(batch, context_features)`` (one row is broadcast), or None
                when the network has no context.

        Returns:
            ``(batch, L, vocab)`` logits in the dtype of the parameters.
        """
        batch = checked_tokens(x_t, self.states, self.length)
        reference = next(self.network.parameters())
        times = checked_times(t, batch, reference)
        rows = checked_token_context(context, self.context_features, batch, reference)
        if x_t.is_floating_point():
            weights = x_t.to(dtype=reference.dtype, device=reference.device)
        else:
            weights = functional.one_hot(x_t.to(reference.device), self.states)
            weights = weights.to(reference.dtype)
        parts = [weights.reshape(batch, self.length * self.states), self.time_embedding(times)]
        if rows is not None:
            parts.append(rows)
        logits = self.network(torch.cat(parts, dim=-1))
        return logits.reshape(batch, self.length, self.vocab)

    def extra_repr(self) -> str:
        return (
            f"states={self.states}, vocab={self.vocab}, length={self.length}, "
            f"context_features={self.context_features}"
        )
