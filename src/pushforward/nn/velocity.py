"""Velocity networks ``v_theta(x, t, c)`` for flow matching and continuous normalizing flows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pushforward.nn.jacobian_trace import (
    activation_and_slope,
    mlp_divergence,
    residual_mlp_divergence,
)
from pushforward.nn.mlp import activation as make_activation
from pushforward.nn.time_embedding import SinusoidalTimeEmbedding
from pushforward.ode.divergence import directions_per_pass


def checked_context(context: Tensor | None, width: int, batch: int) -> Tensor:
    """``context`` as ``(batch, width)``: one row or a vector is broadcast to the batch;
    a missing context, a wrong width or a wrong row count is an error naming it."""
    if context is None:
        raise ValueError(f"the network was built for a context of {width} features, none was given")
    if context.dim() == 1:
        context = context[None, :]
    if context.dim() != 2 or context.shape[1] != width:
        raise ValueError(f"context must have shape (batch, {width}), got {tuple(context.shape)}")
    if context.shape[0] == 1:
        return context.expand(batch, width)
    if context.shape[0] != batch:
        raise ValueError(f"context has {context.shape[0]} rows, x has {batch}")
    return context


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
        outputs: size of the output when it differs from the input's (a network whose
            input is a point's features and whose output a manifold turns into a tangent
            vector); ``None`` for a vector field of ``x``.
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
        outputs: int | None = None,
    ) -> None:
        super().__init__()
        if int(features) < 1:
            raise ValueError(f"features must be positive, got {features}")
        if outputs is not None and int(outputs) < 1:
            raise ValueError(f"outputs must be positive, got {outputs}")
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
        self.outputs = self.features if outputs is None else int(outputs)
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
            self.output_layer = nn.Linear(width, self.outputs)
        else:
            layers: list[nn.Module] = []
            width = self.features + self.embedding_width
            for size in hidden:
                layers += [nn.Linear(width, size), make_activation(activation)]
                width = size
            layers.append(nn.Linear(width, self.outputs))
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
            ``(batch, *event)``, the velocity at ``(x, t)`` (``(batch, outputs)`` for a
            network built with another output size).
        """
        flat = self._flat_input(x)
        batch = x.shape[0]
        embedding = self.embed(t, context, batch, like=x)
        if self.residual:
            h = self.input_layer(flat)
            for block in self.blocks:
                h = block(h, embedding)
            out = self.output_layer(self.output_activation(h))
        else:
            out = self.network(torch.cat([flat, embedding], dim=-1))
        if self.outputs != self.features:
            return out
        return out.reshape(x.shape)

    def velocity_and_divergence(
        self,
        x: Tensor,
        t: Tensor | float,
        context: Tensor | None = None,
        *,
        chunk_size: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        r"""The velocity and its exact divergence in ``x``, :math:`\nabla_x \cdot v(x, t, c)`.

        The trace :math:`\sum_d e_d^T J e_d` of the Jacobian in ``x`` (the time
        embedding and the context are held fixed), with the one-hot tangents pushed
        through the layers by hand: they enter as columns of the first weight and
        leave as rows of the last, and the activations' derivatives are closed forms
        (:func:`~pushforward.nn.jacobian_trace.activation_and_slope`); see
        :func:`~pushforward.nn.jacobian_trace.mlp_divergence` and
        :func:`~pushforward.nn.jacobian_trace.residual_mlp_divergence`. The same numbers as
        :func:`pushforward.ode.divergence.exact_divergence` of :meth:`forward`, in
        fewer operations. Differentiable by plain autograd with respect to ``x`` and
        the parameters; dtype and device follow ``x``.

        References: Chen et al. (2018), Neural Ordinary Differential Equations;
        Grathwohl et al. (2019), FFJORD: Free-form Continuous Dynamics for Scalable
        Reversible Generative Models.

        Args:
            x: ``(batch, *event)`` with ``prod(event) == features``.
            t: 0-dim or ``(batch,)`` times (``(1,)`` and ``(batch, 1)`` also work).
            context: ``(batch, context)`` (or one row, broadcast), or None.
            chunk_size: directions per pass (bounds memory to about
                ``chunk_size * batch * hidden``); by default as many as
                :data:`~pushforward.ode.divergence.ROWS_PER_PASS` allows.

        Returns:
            ``(velocity, divergence)``: ``(batch, *event)`` and ``(batch,)``.
        """
        if self.outputs != self.features:
            raise ValueError(
                f"the network maps {self.features} inputs to {self.outputs} outputs: it is not "
                "a vector field of its input and has no divergence"
            )
        flat = self._flat_input(x)
        batch = x.shape[0]
        directions_per_pass(self.features, batch, chunk_size)  # a bad chunk_size fails here
        embedding = self.embed(t, context, batch, like=x)
        if self.residual:
            out, divergence = self._residual_velocity_and_divergence(flat, embedding, chunk_size)
        else:
            out, divergence = self._plain_velocity_and_divergence(flat, embedding, chunk_size)
        return out.reshape(x.shape), divergence

    def velocity_and_jvp(
        self, x: Tensor, t: Tensor | float, context: Tensor | None, direction: Tensor
    ) -> tuple[Tensor, Tensor]:
        r"""The velocity and its Jacobian-vector product :math:`J_x v \cdot \varepsilon` per row.

        One tangent per row (``direction``, such as Hutchinson's probe) pushed through
        the layers by hand beside the forward pass, with the activations' closed-form
        derivatives (:func:`~pushforward.nn.jacobian_trace.activation_and_slope`): the
        numbers of ``torch.func.jvp`` of :meth:`forward` at about the cost of a second
        forward pass, with plain autograd behind it. Hutchinson's estimate of the
        divergence is then :math:`\varepsilon^\top (J \varepsilon)`.

        References: Hutchinson (1989), A stochastic estimator of the trace of the
        influence matrix for Laplacian smoothing splines; Grathwohl et al. (2019),
        FFJORD.

        Args:
            x: ``(batch, *event)`` with ``prod(event) == features``.
            t: 0-dim or ``(batch,)`` times.
            context: ``(batch, context)`` (or one row), or None.
            direction: ``(batch, *event)``, the tangent of each row.

        Returns:
            ``(velocity, jvp)``, both ``(batch, *event)``.
        """
        if self.outputs != self.features:
            raise ValueError(
                f"the network maps {self.features} inputs to {self.outputs} outputs: it is not "
                "a vector field of its input"
            )
        flat = self._flat_input(x)
        if direction.shape != x.shape:
            raise ValueError(
                f"direction must have the shape of x {tuple(x.shape)}, got {tuple(direction.shape)}"
            )
        tangent = direction.reshape(flat.shape)
        embedding = self.embed(t, context, x.shape[0], like=x)
        if self.residual:
            h = self.input_layer(flat)
            tangent = tangent @ self.input_layer.weight.T
            for block in self.blocks:
                assert isinstance(block, ConditionedResidualBlock)
                activated, skip_slope = activation_and_slope(block.activation, h)
                update = block.first(activated) + block.embedding_layer(embedding)
                inner, inner_slope = activation_and_slope(block.activation, update)
                h = h + block.second(inner)
                pushed = ((tangent * skip_slope) @ block.first.weight.T) * inner_slope
                tangent = tangent + pushed @ block.second.weight.T
            activated, output_slope = activation_and_slope(self.output_activation, h)
            out = self.output_layer(activated)
            tangent = (tangent * output_slope) @ self.output_layer.weight.T
        else:
            modules = list(self.network)
            linears = [module for module in modules if isinstance(module, nn.Linear)]
            activations = [module for module in modules if not isinstance(module, nn.Linear)]
            h = torch.cat([flat, embedding], dim=-1)
            tangent = tangent @ linears[0].weight[:, : self.features].T
            for index, (linear, activation) in enumerate(
                zip(linears[:-1], activations, strict=True)
            ):
                if index:
                    tangent = tangent @ linear.weight.T
                h, slope = activation_and_slope(activation, linear(h))
                tangent = tangent * slope
            out = linears[-1](h)
            if len(linears) > 1:
                tangent = tangent @ linears[-1].weight.T
        return out.reshape(x.shape), tangent.reshape(x.shape)

    def _plain_velocity_and_divergence(
        self, flat: Tensor, embedding: Tensor, chunk_size: int | None
    ) -> tuple[Tensor, Tensor]:
        modules = list(self.network)
        linears = [module for module in modules if isinstance(module, nn.Linear)]
        activations = [module for module in modules if not isinstance(module, nn.Linear)]
        h = torch.cat([flat, embedding], dim=-1)
        slopes = []
        for linear, activation in zip(linears[:-1], activations, strict=True):
            h, slope = activation_and_slope(activation, linear(h))
            slopes.append(slope)
        out = linears[-1](h)
        input_weight = linears[0].weight[:, : self.features]
        if not slopes:  # no hidden layer: v is affine in x
            trace = input_weight.diagonal().sum()
            return out, trace.expand(flat.shape[0])
        divergence = mlp_divergence(
            input_weight,
            [linear.weight for linear in linears[1:-1]],
            linears[-1].weight,
            slopes,
            chunk_size=chunk_size,
        )
        return out, divergence

    def _residual_velocity_and_divergence(
        self, flat: Tensor, embedding: Tensor, chunk_size: int | None
    ) -> tuple[Tensor, Tensor]:
        h = self.input_layer(flat)
        blocks = [block for block in self.blocks if isinstance(block, ConditionedResidualBlock)]
        slopes = []
        for block in blocks:
            activated, skip_slope = activation_and_slope(block.activation, h)
            update = block.first(activated) + block.embedding_layer(embedding)
            inner, inner_slope = activation_and_slope(block.activation, update)
            h = h + block.second(inner)
            slopes.append((skip_slope, inner_slope))
        activated, output_slope = activation_and_slope(self.output_activation, h)
        out = self.output_layer(activated)
        divergence = residual_mlp_divergence(
            self.input_layer.weight,
            [block.first.weight for block in blocks],
            [block.second.weight for block in blocks],
            slopes,
            self.output_layer.weight,
            output_slope,
            chunk_size=chunk_size,
        )
        return out, divergence

    def _flat_input(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or math.prod(x.shape[1:]) != self.features:
            raise ValueError(
                f"x must have shape (batch, *event) with {self.features} values per event, "
                f"got shape {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.features)

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
        return checked_context(context, self.context, batch)

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, context={self.context}, hidden={self.hidden}, "
            f"residual={self.residual}"
        )


def flagged_context(context: Tensor | None, keep: Tensor | None, guided: bool) -> Tensor | None:
    """The context as a guidance-trained network sees it: ``[context * keep, keep]``.

    Classifier-free guidance (Ho & Salimans 2022) drops the context in training; the
    network then takes a presence flag after it, 1 where the context is kept (``keep``
    ``None``: kept everywhere) and 0 where it is dropped (the context zeroed).

    Args:
        context: ``(batch, features)`` or None.
        keep: ``(batch, 1)`` flags of 0 and 1 in the context's dtype, or None.
        guided: whether the network was built with the flag; if not, ``context`` is
            returned as it is.
    """
    if context is None or not guided:
        return context
    if keep is None:
        keep = torch.ones(context.shape[0], 1, dtype=context.dtype, device=context.device)
    return torch.cat([context * keep, keep], dim=1)
