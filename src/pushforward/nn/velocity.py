"""Velocity networks ``v_theta(x, t, c)`` for flow matching and continuous normalizing flows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pushforward.nn.mlp import activation as make_activation
from pushforward.nn.time_embedding import SinusoidalTimeEmbedding
from pushforward.ode.divergence import ROWS_PER_PASS

# sqrt(2 / pi) and the cubic coefficient of the tanh approximation of GELU.
_GELU_TANH_SCALE = math.sqrt(2.0 / math.pi)
_GELU_TANH_CUBIC = 0.044715
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def activation_and_slope(activation: nn.Module, h: Tensor) -> tuple[Tensor, Tensor]:
    r"""An element-wise activation and its derivative, :math:`(\sigma(h), \sigma'(h))`.

    The value is the module's own output; the derivative is written per activation,
    reusing the value where it can:

    * SiLU, :math:`\sigma = h\,g(h)` with :math:`g` the logistic function:
      :math:`\sigma' = g\,(1 + h(1 - g)) = g + \sigma (1 - g)`;
    * tanh: :math:`\sigma' = 1 - \sigma^2`;
    * GELU, exact form :math:`\sigma = h\,\Phi(h)`: :math:`\sigma' = \Phi(h) + h\,\varphi(h)`;
      tanh form :math:`\sigma = \tfrac12 h (1 + \tanh u)`,
      :math:`u = \sqrt{2/\pi}\,(h + 0.044715 h^3)`:
      :math:`\sigma' = \tfrac12 (1 + \tanh u) + \tfrac12 h (1 - \tanh^2 u)
      \sqrt{2/\pi}\,(1 + 3 \cdot 0.044715 h^2)`;
    * ELU: :math:`\sigma' = 1` for :math:`h > 0`, else :math:`\alpha e^h = \sigma + \alpha`;
    * ReLU: :math:`\sigma' = 1[h > 0]`; leaky ReLU: :math:`1` for :math:`h > 0`, else
      the negative slope.

    At the kinks the derivative is the one PyTorch's autograd uses (0 for ReLU at 0,
    the negative slope for leaky ReLU at 0, :math:`\alpha` for ELU at 0). Any other
    module is treated as an element-wise map and differentiated by one forward-mode
    Jacobian-vector product with a tangent of ones. Differentiable (the slopes carry
    second derivatives for autograd).

    References: Hendrycks & Gimpel (2016), Gaussian Error Linear Units (GELUs);
    Elfwing et al. (2018), Sigmoid-Weighted Linear Units for Neural Network Function
    Approximation in Reinforcement Learning; Clevert et al. (2016), Fast and Accurate
    Deep Network Learning by Exponential Linear Units (ELUs).

    Args:
        activation: the activation module (applied element-wise).
        h: pre-activations, any shape.

    Returns:
        ``(value, slope)``, both of the shape, dtype and device of ``h``.
    """
    if isinstance(activation, nn.SiLU):
        value = activation(h)
        logistic = torch.sigmoid(h)
        return value, logistic + value * (1.0 - logistic)
    if isinstance(activation, nn.Tanh):
        value = activation(h)
        return value, 1.0 - value.square()
    if isinstance(activation, nn.GELU):
        value = activation(h)
        if activation.approximate == "tanh":
            inner = torch.tanh(_GELU_TANH_SCALE * (h + _GELU_TANH_CUBIC * h.pow(3)))
            du = _GELU_TANH_SCALE * (1.0 + 3.0 * _GELU_TANH_CUBIC * h.square())
            return value, 0.5 * (1.0 + inner) + 0.5 * h * (1.0 - inner.square()) * du
        cdf = 0.5 * (1.0 + torch.erf(h * _INV_SQRT_2))
        return value, cdf + h * _INV_SQRT_2PI * torch.exp(-0.5 * h.square())
    if isinstance(activation, nn.ELU):
        value = activation(h)
        return value, torch.where(h > 0, torch.ones_like(h), value + activation.alpha)
    if isinstance(activation, nn.LeakyReLU):
        value = activation(h)
        slope = torch.full_like(h, activation.negative_slope)
        return value, torch.where(h > 0, torch.ones_like(h), slope)
    if isinstance(activation, nn.ReLU):
        value = activation(h)
        return value, (h > 0).to(h.dtype)
    outputs = torch.func.jvp(activation, (h,), (torch.ones_like(h),))
    return outputs[0], outputs[1]


def _directions_per_pass(dims: int, batch: int, chunk_size: int | None) -> int:
    if chunk_size is None:
        return max(1, min(dims, ROWS_PER_PASS // max(batch, 1)))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return min(dims, chunk_size)


def _tangents_through(slope: Tensor, columns: Tensor, weight: Tensor) -> Tensor:
    """``(s_b * columns[:, d]) @ weight.T`` for every row ``b`` and direction ``d``.

    ``slope: (batch, H)``, ``columns: (H, n)``, ``weight: (H_out, H)`` ->
    ``(batch, n, H_out)``. The directions do not depend on the row, so they can be
    folded into the weight instead of into the tangents: one matrix product either
    way, and the smaller intermediate (``n H_out H`` or ``batch n H``) is built.
    """
    batch, width = slope.shape
    count, out_width = columns.shape[1], weight.shape[0]
    if batch >= out_width:
        # A contiguous small factor makes the broadcast product come out contiguous,
        # so the reshape below is a view, not a copy.
        folded = columns.T.contiguous()[:, None, :] * weight[None, :, :]  # (n, H_out, H)
        product = slope @ folded.reshape(count * out_width, width).T
        return product.reshape(batch, count, out_width)
    return (slope[:, None, :] * columns.T[None, :, :]) @ weight.T


def _scale_rows(tangent: Tensor, slope: Tensor) -> Tensor:
    """``tangent * slope[:, None, :]``: ``(batch, n, H)`` times ``(batch, H)``."""
    if tangent.requires_grad or slope.requires_grad:
        return tangent * slope[:, None, :]
    # Without a graph to record, scaling in place saves a pass over the largest
    # tensor of the trace (about 7% of a 16-direction divergence).
    return tangent.mul_(slope[:, None, :])


def _contract_with_rows(tangent: Tensor, weight: Tensor, rows: Tensor, slope: Tensor) -> Tensor:
    """``sum_{d, h} rows[d, h] slope[b, h] (tangent[b, d] @ weight.T)[h]`` for every row ``b``.

    ``tangent: (batch, n, H)``, ``weight: (H_out, H)``, ``rows: (n, H_out)``,
    ``slope: (batch, H_out)`` -> ``(batch,)``. As in :func:`_tangents_through`, the
    rows can be folded into the weight, so that the product contracts over
    ``(d, h)`` at once and writes ``(batch, H_out)`` instead of ``(batch, n, H_out)``.
    """
    batch, count, width = tangent.shape
    out_width = weight.shape[0]
    if batch >= out_width:
        folded = rows.T.contiguous()[:, :, None] * weight[:, None, :]  # (H_out, n, H)
        product = tangent.reshape(batch, count * width) @ folded.reshape(out_width, -1).T
        return (product * slope).sum(dim=1)
    pushed = tangent @ weight.T
    return ((pushed * rows[None, :, :]).sum(dim=1) * slope).sum(dim=1)


def mlp_divergence(
    input_weight: Tensor,
    hidden_weights: Sequence[Tensor],
    output_weight: Tensor,
    slopes: Sequence[Tensor],
    *,
    chunk_size: int | None = None,
) -> Tensor:
    r"""The trace of an MLP's Jacobian with respect to its first ``D`` inputs, row by row.

    With pre-activations :math:`h_k = W_k a_{k-1} + b_k`, :math:`a_k = \sigma(h_k)` and
    :math:`S_k = \mathrm{diag}\,\sigma'(h_k)` for the hidden layers :math:`k = 1..L`, and
    :math:`v = W_{out} a_L + b_{out}`, the Jacobian in the inputs ``x`` (the first
    ``D`` columns :math:`W_{in}` of :math:`W_1`) is
    :math:`J = W_{out} S_L W_L \cdots W_2 S_1 W_{in}`, so

    .. math:: \operatorname{tr} J = \sum_{d=1}^{D} w^{out}_d\, S_L W_L \cdots W_2 S_1\, w^{in}_d

    with :math:`w^{in}_d` the ``d``-th column of :math:`W_{in}` and :math:`w^{out}_d`
    the ``d``-th row of :math:`W_{out}`. The one-hot tangents cost nothing at either
    end: they enter as weight columns and leave as weight rows. Hence

    * :math:`L = 1`: :math:`\operatorname{tr} J = \sum_h s_1[h]\,c[h]`,
      :math:`c[h] = \sum_d W_{in}[h, d] W_{out}[d, h]`;
    * :math:`L = 2`: :math:`\operatorname{tr} J = s_2^T (W_2 \odot P^T) s_1` with
      :math:`P = W_{in} W_{out}`: one matrix product whatever ``D``;
    * :math:`L \ge 3`: the tangents :math:`u_d = W_2 S_1 w^{in}_d` come from one
      matrix product against :math:`W_2` with the columns :math:`w^{in}_d` folded in,
      are pushed on through :math:`W_3 .. W_{L-1}`, and the last product is
      contracted at once with the rows folded into :math:`W_L`:
      :math:`\operatorname{tr} J = \sum_{h} s_L[h] \sum_{d, h'}
      w^{out}_d[h]\, W_L[h, h']\, (S_{L-1} u_d)[h']`. That is ``L - 1`` products
      with ``D`` times the rows of a forward pass, as many as forward-mode
      differentiation needs, with no one-hot tangent materialised.

    Differentiable with respect to the weights and the slopes (so to ``x`` and the
    parameters through them).

    References: Chen et al. (2018), Neural Ordinary Differential Equations;
    Grathwohl et al. (2019), FFJORD: Free-form Continuous Dynamics for Scalable
    Reversible Generative Models.

    Args:
        input_weight: :math:`W_{in}`, ``(H_1, D)``.
        hidden_weights: :math:`W_2, ..., W_L`, each ``(H_k, H_{k-1})`` (``L - 1`` of them).
        output_weight: :math:`W_{out}`, ``(D, H_L)``.
        slopes: :math:`\sigma'(h_1), ..., \sigma'(h_L)`, each ``(batch, H_k)``; at least one.
        chunk_size: directions per pass for :math:`L \ge 3` (bounds memory to about
            ``chunk_size * batch * H``); by default as many as
            :data:`~pushforward.ode.divergence.ROWS_PER_PASS` allows.

    Returns:
        ``(batch,)``, the divergence of each row.
    """
    if not slopes or len(hidden_weights) != len(slopes) - 1:
        raise ValueError(
            f"an MLP with {len(slopes)} hidden layers has {max(len(slopes) - 1, 0)} "
            f"hidden-to-hidden weights, got {len(hidden_weights)}"
        )
    dims = input_weight.shape[1]
    per_pass = _directions_per_pass(dims, slopes[0].shape[0], chunk_size)
    if len(slopes) == 1:
        return slopes[0] @ (input_weight * output_weight.T).sum(dim=1)
    if len(slopes) == 2:
        coupling = hidden_weights[0] * (input_weight @ output_weight).T  # (H_2, H_1)
        return ((slopes[0] @ coupling.T) * slopes[1]).sum(dim=1)
    total = slopes[0].new_zeros(slopes[0].shape[0])
    for start in range(0, dims, per_pass):
        columns = input_weight[:, start : start + per_pass]
        rows = output_weight[start : start + per_pass]
        tangent = _tangents_through(slopes[0], columns, hidden_weights[0])
        for weight, slope in zip(hidden_weights[1:-1], slopes[1:-2], strict=True):
            tangent = _scale_rows(tangent, slope) @ weight.T
        tangent = _scale_rows(tangent, slopes[-2])
        total = total + _contract_with_rows(tangent, hidden_weights[-1], rows, slopes[-1])
    return total


def residual_mlp_divergence(
    input_weight: Tensor,
    first_weights: Sequence[Tensor],
    second_weights: Sequence[Tensor],
    slopes: Sequence[tuple[Tensor, Tensor]],
    output_weight: Tensor,
    output_slope: Tensor,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    r"""The Jacobian trace of a residual MLP (:class:`ConditionedResidualBlock` stack).

    With :math:`h_0 = W_{in} x + b`, blocks
    :math:`h_k = h_{k-1} + V_k \sigma(u_k) + c_k`,
    :math:`u_k = U_k \sigma(h_{k-1}) + \dots` and :math:`v = W_{out} \sigma(h_L) + b_{out}`,
    the tangent of direction ``d`` starts as the column :math:`w^{in}_d` and follows

    .. math:: \dot h_k = \dot h_{k-1} + V_k\, \sigma'(u_k) \odot
              \big(U_k\, \sigma'(h_{k-1}) \odot \dot h_{k-1}\big),
              \qquad \operatorname{tr} J = \sum_d w^{out}_d\,
              \big(\sigma'(h_L) \odot \dot h_{L,d}\big).

    The first block's inner product takes the batch-independent column directly;
    each block costs two matrix products with ``D`` times the rows of a forward pass.
    Differentiable with respect to the weights and the slopes.

    References: He et al. (2016), Identity Mappings in Deep Residual Networks;
    Grathwohl et al. (2019), FFJORD: Free-form Continuous Dynamics for Scalable
    Reversible Generative Models.

    Args:
        input_weight: :math:`W_{in}`, ``(H, D)``.
        first_weights: :math:`U_k`, each ``(H, H)``.
        second_weights: :math:`V_k`, each ``(H, H)``.
        slopes: per block ``(sigma'(h_{k-1}), sigma'(u_k))``, each ``(batch, H)``.
        output_weight: :math:`W_{out}`, ``(D, H)``.
        output_slope: :math:`\sigma'(h_L)`, ``(batch, H)``.
        chunk_size: directions per pass (bounds memory to about ``chunk_size * batch * H``).

    Returns:
        ``(batch,)``, the divergence of each row.
    """
    if not (len(first_weights) == len(second_weights) == len(slopes)) or not slopes:
        raise ValueError(
            f"every block needs a first weight, a second weight and two slopes, got "
            f"{len(first_weights)}, {len(second_weights)} and {len(slopes)}"
        )
    dims = input_weight.shape[1]
    per_pass = _directions_per_pass(dims, output_slope.shape[0], chunk_size)
    total = output_slope.new_zeros(output_slope.shape[0])
    for start in range(0, dims, per_pass):
        columns = input_weight[:, start : start + per_pass]
        tangent: Tensor = columns.T[None, :, :]  # the same for every row
        for index, (first, second, (skip_slope, inner_slope)) in enumerate(
            zip(first_weights, second_weights, slopes, strict=True)
        ):
            if index == 0:
                inner = _tangents_through(skip_slope, columns, first)
            else:
                inner = (tangent * skip_slope[:, None, :]) @ first.T
            tangent = tangent + _scale_rows(inner, inner_slope) @ second.T
        rows = output_weight[start : start + per_pass]
        total = total + ((tangent * rows[None, :, :]).sum(dim=1) * output_slope).sum(dim=1)
    return total


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
        (:func:`activation_and_slope`); see :func:`mlp_divergence` and
        :func:`residual_mlp_divergence`. The same numbers as
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
        flat = self._flat_input(x)
        batch = x.shape[0]
        _directions_per_pass(self.features, batch, chunk_size)  # a bad chunk_size fails here
        embedding = self.embed(t, context, batch, like=x)
        if self.residual:
            out, divergence = self._residual_velocity_and_divergence(flat, embedding, chunk_size)
        else:
            out, divergence = self._plain_velocity_and_divergence(flat, embedding, chunk_size)
        return out.reshape(x.shape), divergence

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
