"""Velocity networks ``v_theta(x, t, c)`` for flow matching and continuous normalizing flows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pushforward.nn.mlp import activation as make_activation
from pushforward.nn.time_embedding import SinusoidalTimeEmbedding


class ConditionedResidualBlock(nn.Module):
    r"""A pre-activation residual block with an additive conditioning embedding.

    .. math:: h \leftarrow h + W_2\, \sigma\big(W_1 \sigma(h) + b_1 + E e\big) + b_2

    where :math:`e` is the time (and context) embedding. :math:`W_2, b_2` start at
    zero, so the block starts as the identity.

    References:
        He et al. (2016), Identity Mappings in Deep Residual Networks;
        Ho et al. (2020), Denoising Diffusion Probabilistic Models (time added per block).

    Args:
        width: the hidden width.
        embedding: the width of :math:`e`.
        activation_name: name of :math:`\sigma` (see :mod:`pushforward.nn.mlp`).
    """

    def __init__(self, width: int, embedding: int, activation_name: str = "silu") -> None:
        super().__init__()
        self.activation = make_activation(activation_name)
        self.first = nn.Linear(width, width)
        self.embedding_layer = nn.Linear(embedding, width, bias=False)
        self.second = nn.Linear(width, width)
        nn.init.zeros_(self.second.weight)
        nn.init.zeros_(self.second.bias)

    def forward(self, h: Tensor, embedding: Tensor) -> Tensor:
        """``h: (batch, width)``, ``embedding: (batch, embedding)`` -> ``(batch, width)``."""
        update = self.first(self.activation(h)) + self.embedding_layer(embedding)
        return h + self.second(self.activation(update))


class VelocityMLP(nn.Module):
    r"""A time-dependent velocity field :math:`v_\theta(x, t, c)` on flattened events.

    Plain variant: an MLP on the concatenation of the flattened state, the time
    embedding and the context,

    .. math:: v = \mathrm{MLP}\big([\,x \,\Vert\, e(t) \,\Vert\, c\,]\big),

    with the layers ``in -> hidden[0] -> ... -> hidden[-1] -> features`` (the shape
    of the MLPs of torchcfm and flow_matching's examples, so benchmarks compare like
    for like).

    Residual variant (``residual=True``): :math:`h_0 = W_{in} x`, then one
    :class:`ConditionedResidualBlock` per entry of ``hidden``, each adding a
    learned projection of :math:`[e(t) \Vert c]` to its pre-activation, then
    :math:`v = W_{out} \sigma(h_L)`. The blocks start as the identity, so at
    initialisation :math:`v = W_{out} \sigma(W_{in} x)`.

    Every output row depends only on the same row of ``x``, ``t`` and ``context``
    (no batch statistics); exact divergences computed by autograd rely on this.

    References:
        Lipman et al. (2023), Flow Matching for Generative Modeling;
        Tong et al. (2024), Improving and Generalizing Flow-Based Generative Models
        with Minibatch Optimal Transport.

    Args:
        features: size of one flattened event.
        context: context width (0 for unconditional).
        hidden: hidden widths; with ``residual`` they must be equal, one block each.
        time_embedding: width of the sinusoidal time embedding
            (:class:`SinusoidalTimeEmbedding`); 0 feeds the raw time as one input
            column instead.
        activation: name of the nonlinearity (see :mod:`pushforward.nn.mlp`).
        residual: use the residual variant.
        time_scale: the ``scale`` of the sinusoidal embedding (times are in [0, 1]).
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (256, 256, 256),
        time_embedding: int = 32,
        activation: str = "silu",
        residual: bool = False,
        *,
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        if int(features) < 1:
            raise ValueError(f"features must be positive, got {features}")
        if int(context) < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden widths must be positive, got {hidden}")
        if residual and (not hidden or len(set(hidden)) != 1):
            raise ValueError(
                f"the residual velocity network needs equal, non-empty hidden widths, got {hidden}"
            )
        if int(time_embedding) < 0 or int(time_embedding) == 1:
            raise ValueError(
                f"time_embedding must be 0 (raw time) or at least 2, got {time_embedding}"
            )
        make_activation(activation)  # fail early on unknown names
        self.features = int(features)
        self.context = int(context)
        self.hidden = hidden
        self.residual = bool(residual)
        self.activation_name = activation

        self.time_embedding: SinusoidalTimeEmbedding | None = (
            SinusoidalTimeEmbedding(int(time_embedding), scale=time_scale)
            if int(time_embedding) > 0
            else None
        )
        self.embedding_width = max(int(time_embedding), 1) + self.context

        if self.residual:
            width = hidden[0]
            self.input_layer = nn.Linear(self.features, width)
            self.blocks = nn.ModuleList(
                ConditionedResidualBlock(width, self.embedding_width, activation) for _ in hidden
            )
            self.output_activation = make_activation(activation)
            self.output_layer = nn.Linear(width, self.features)
        else:
            layers: list[nn.Module] = []
            width = self.features + self.embedding_width
            for size in hidden:
                layers += [nn.Linear(width, size), make_activation(activation)]
                width = size
            layers.append(nn.Linear(width, self.features))
            self.network = nn.Sequential(*layers)

    def embed(self, t: Tensor | float, context: Tensor | None, batch: int, like: Tensor) -> Tensor:
        """The conditioning vector :math:`[e(t) \\Vert c]`: ``(batch, embedding_width)``.

        Args:
            t: 0-dim, ``(1,)``, ``(batch,)`` or ``(batch, 1)`` times (a Python number
                is also accepted).
            context: ``(batch, context)``, ``(1, context)`` or ``(context,)``, or None.
            batch: the batch size to expand to.
            like: a tensor whose dtype the time takes.
        """
        if not isinstance(t, Tensor):
            t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
        t = self._check_time(t, batch).to(dtype=like.dtype, device=like.device)
        if self.time_embedding is None:
            parts = [t[:, None]]
        else:
            parts = [self.time_embedding(t)]
        if self.context > 0:
            # The context joins the same matmul as x, so it takes x's dtype.
            parts.append(self._check_context(context, batch).to(like.dtype))
        elif context is not None:
            raise ValueError("a context was given, but the network was built with context=0")
        return torch.cat(parts, dim=-1)

    def forward(self, x: Tensor, t: Tensor | float, context: Tensor | None = None) -> Tensor:
        """Evaluate the velocity.

        Args:
            x: ``(batch, *event)`` with ``prod(event) == features``.
            t: 0-dim or ``(batch,)`` times (``(1,)`` and ``(batch, 1)`` also work).
            context: ``(batch, context)`` (or one row, broadcast), or None.

        Returns:
            ``(batch, *event)``, the velocity at ``(x, t)``.
        """
        if x.dim() < 2 or math.prod(x.shape[1:]) != self.features:
            raise ValueError(
                f"x must have shape (batch, *event) with {self.features} values per event, "
                f"got shape {tuple(x.shape)}"
            )
        batch = x.shape[0]
        flat = x.reshape(batch, self.features)
        embedding = self.embed(t, context, batch, like=x)
        if self.residual:
            h = self.input_layer(flat)
            for block in self.blocks:
                h = block(h, embedding)
            out = self.output_layer(self.output_activation(h))
        else:
            out = self.network(torch.cat([flat, embedding], dim=-1))
        return out.reshape(x.shape)

    def _check_time(self, t: Tensor, batch: int) -> Tensor:
        if t.dim() == 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.dim() == 0 or (t.dim() == 1 and t.shape[0] == 1):
            return t.reshape(1).expand(batch)
        if t.dim() == 1 and t.shape[0] == batch:
            return t
        raise ValueError(
            f"time must be a scalar or have one value per sample ({batch}), "
            f"got shape {tuple(t.shape)}"
        )

    def _check_context(self, context: Tensor | None, batch: int) -> Tensor:
        if context is None:
            raise ValueError(
                f"the network was built for a context of {self.context} features, none was given"
            )
        if context.dim() == 1:
            context = context[None, :]
        if context.dim() != 2 or context.shape[1] != self.context:
            raise ValueError(
                f"context must have shape (batch, {self.context}), got {tuple(context.shape)}"
            )
        if context.shape[0] == 1:
            return context.expand(batch, self.context)
        if context.shape[0] != batch:
            raise ValueError(f"context has {context.shape[0]} rows, x has {batch}")
        return context

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, context={self.context}, hidden={self.hidden}, "
            f"residual={self.residual}"
        )
