"""MADE: a masked autoencoder whose outputs are autoregressive in its inputs.

Every unit carries a degree. Input ``j`` has degree ``r_j + 1``, where ``r_j`` is
the (dense) rank of feature ``j`` in the autoregressive order; hidden units get
degrees cyclically, so the masks are a deterministic function of the order and
the widths. A hidden unit of degree ``m`` sees the inputs of degree ``<= m`` and
the hidden units below it of degree ``<= m``; output ``i`` sees the hidden units of
degree ``< r_i + 1``. The product of the masks therefore connects input ``j`` to
output ``i`` only if ``r_j < r_i``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pushforward.nn.mlp import activation as make_activation
from pushforward.nn.mlp import initialize_linear


class MaskedLinear(nn.Linear):
    r"""A linear layer with a fixed binary mask on its weight: :math:`y = (W \odot M) x + b`.

    The mask is a buffer (saved with the weights). The masked weight is formed once
    per call, so the layer costs one element-wise product on the weight plus the
    matmul of a plain :class:`torch.nn.Linear`.

    References:
        Germain et al. (2015), MADE: Masked Autoencoder for Distribution Estimation.

    Args:
        in_features: input width.
        out_features: output width.
        mask: ``(out_features, in_features)``, nonzero where a connection exists.
        bias: whether the layer has a bias.
    """

    mask: Tensor

    def __init__(
        self, in_features: int, out_features: int, mask: Tensor, bias: bool = True
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if tuple(mask.shape) != (out_features, in_features):
            raise ValueError(
                f"mask has shape {tuple(mask.shape)}, expected ({out_features}, {in_features})"
            )
        # Stored in the weight's dtype (and converted with it): a bool mask would make
        # every forward allocate a promoted copy before the product.
        self.register_buffer("mask", (mask.detach() != 0).to(self.weight.dtype))
        # Set only inside MADE.masks_applied_once (a transient, never saved).
        self.frozen_weight: Tensor | None = None

    def masked_weight(self) -> Tensor:
        """:math:`W \\odot M`, or the product formed once by :meth:`MADE.masks_applied_once`."""
        if self.frozen_weight is not None:
            return self.frozen_weight
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return F.linear(x, self.masked_weight(), self.bias)


class MaskedResidualBlock(nn.Module):
    r"""A residual block of two masked layers: :math:`h + W_2 \sigma(W_1 \sigma(h) + V c)`.

    Both masks connect hidden units of degree :math:`m` to units of degree
    :math:`m' \ge m`, so the block (identity path included) keeps the degrees of
    its input; the context (if any) is added unmasked, as in nflows' MADE with
    residual blocks.

    References:
        Germain et al. (2015), MADE: Masked Autoencoder for Distribution Estimation;
        He et al. (2016), Identity Mappings in Deep Residual Networks.

    Args:
        mask: ``(width, width)`` hidden-to-hidden mask.
        context: context width (0 for none).
        activation_name: name of the nonlinearity.
    """

    def __init__(self, mask: Tensor, context: int = 0, activation_name: str = "relu") -> None:
        super().__init__()
        width = mask.shape[0]
        self.activation = make_activation(activation_name)
        self.first = MaskedLinear(width, width, mask)
        self.second = MaskedLinear(width, width, mask)
        self.context_layer = nn.Linear(context, width) if context > 0 else None

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        """``h: (batch, width)``, ``context: (batch, context)`` -> ``(batch, width)``."""
        update = self.first(self.activation(h))
        if self.context_layer is not None and context is not None:
            update = update + self.context_layer(context)
        return h + self.second(self.activation(update))


def dense_rank(order: Tensor) -> Tensor:
    """The rank of every entry among the distinct values of ``order`` (ties share a rank).

    Example: ``[3, 0, 3, 7] -> [1, 0, 1, 2]``.
    """
    return torch.unique(order, return_inverse=True)[1]


def hidden_degrees(width: int, low: int, high: int) -> Tensor:
    """Degrees ``low, low + 1, ..., high, low, ...`` assigned cyclically to ``width`` units."""
    return low + torch.arange(width, dtype=torch.long) % (high - low + 1)


class MADE(nn.Module):
    r"""A masked autoencoder mapping ``x: (B, D)`` to per-feature parameters ``(B, D, P)``.

    For every output feature :math:`i`, ``params[:, i, :]`` depends only on the
    features :math:`x_j` strictly earlier in the order (:math:`o_j < o_i`) and on
    the whole context, so the Jacobian of the parameters with respect to ``x`` is
    strictly triangular after sorting the features by ``order``:

    .. math:: \theta_i = g_i(x_{\{j : o_j < o_i\}}, c)

    Hidden degrees are assigned cyclically over ``1 .. K - 1`` (``K`` distinct
    values in ``order``). With a context, degree 0 is added: such units see the
    context but no input and feed every output, so the context reaches the
    parameters of the first feature too (it would not otherwise). The context is
    concatenated to ``x`` and enters the first layer unmasked (and every residual
    block, when ``residual``).

    Output unit ``i * P + p`` holds parameter ``p`` of feature ``i``, so the last
    layer's output is reshaped to ``(B, D, P)`` without a copy.

    References:
        Germain et al. (2015), MADE: Masked Autoencoder for Distribution Estimation;
        Papamakarios et al. (2017), Masked Autoregressive Flow for Density Estimation.

    Args:
        features: ``D``.
        params_per_feature: ``P``.
        hidden: widths of the hidden layers; with ``residual`` they must be equal
            and each entry is one residual block (two masked layers) after a first
            masked layer of that width.
        context: context width (0 for unconditional).
        order: ``(D,)`` integers, ``order[j]`` the position of feature ``j`` in the
            autoregressive order (smaller comes first; equal values are allowed and
            make those features independent of each other). ``None``: ``0 .. D-1``.
        residual: use masked residual blocks.
        activation: name of the nonlinearity (see :mod:`pushforward.nn.mlp`).
        zero_last: start the last layer at zero, so the parameters start at zero
            (the identity for every :class:`~pushforward.transforms.maps.ElementwiseMap`).
        inputs_per_feature: columns of the input per feature, laid out in blocks of
            ``D``: column ``b * D + j`` belongs to feature ``j`` and carries its degree
            (an angle seen as its cosine and its sine takes two). The input is then
            ``(B, D * inputs_per_feature)``; the outputs stay ``(B, D, P)``.
    """

    order: Tensor
    rank: Tensor

    def __init__(
        self,
        features: int,
        params_per_feature: int,
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        order: Sequence[int] | Tensor | None = None,
        residual: bool = False,
        activation: str = "relu",
        zero_last: bool = True,
        inputs_per_feature: int = 1,
    ) -> None:
        super().__init__()
        if inputs_per_feature < 1:
            raise ValueError(f"inputs_per_feature must be positive, got {inputs_per_feature}")
        if features < 1:
            raise ValueError(f"MADE needs at least one feature, got features={features}")
        if params_per_feature < 1:
            raise ValueError(f"params_per_feature must be positive, got {params_per_feature}")
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden widths must be positive, got {hidden}")
        if residual and (not hidden or len(set(hidden)) != 1):
            raise ValueError(f"residual MADE needs equal, non-empty hidden widths, got {hidden}")
        self.features = int(features)
        self.params_per_feature = int(params_per_feature)
        self.context = int(context)
        self.residual = bool(residual)

        order_tensor = self._check_order(order, self.features)
        rank = dense_rank(order_tensor)
        self.register_buffer("order", order_tensor)
        self.register_buffer("rank", rank)

        distinct = int(rank.max()) + 1
        feature_degrees = rank + 1
        input_degrees = feature_degrees.repeat(int(inputs_per_feature))
        # Degree-0 hidden units (context only) let the context reach the first feature.
        low = 0 if self.context > 0 else min(1, distinct - 1)
        high = max(distinct - 1, low)
        output_degrees = feature_degrees.repeat_interleave(self.params_per_feature)
        out_width = self.features * self.params_per_feature
        in_width = input_degrees.shape[0] + self.context

        # Context columns come after the inputs and connect to every first-layer unit.
        def context_columns(mask: Tensor) -> Tensor:
            ones = torch.ones(mask.shape[0], self.context, dtype=torch.bool)
            return torch.cat([mask, ones], dim=1)

        self.activation = make_activation(activation)
        self.blocks = nn.ModuleList()
        if not hidden:
            self.first = None
            mask = context_columns(output_degrees[:, None] > input_degrees[None, :])
            self.last = MaskedLinear(in_width, out_width, mask)
        else:
            degrees = hidden_degrees(hidden[0], low, high)
            self.first = MaskedLinear(
                in_width, hidden[0], context_columns(degrees[:, None] >= input_degrees[None, :])
            )
            for width in hidden[1:] if not residual else hidden:
                previous, degrees = degrees, hidden_degrees(width, low, high)
                mask = degrees[:, None] >= previous[None, :]
                if residual:
                    self.blocks.append(MaskedResidualBlock(mask, self.context, activation))
                else:
                    self.blocks.append(MaskedLinear(previous.shape[0], width, mask))
            self.last = MaskedLinear(
                degrees.shape[0], out_width, output_degrees[:, None] > degrees[None, :]
            )
        if zero_last:
            initialize_linear(self.last, "zero")

    def initialize_last_layer(self, init: str) -> None:
        """Re-initialises the output layer: ``"zero"`` or ``"random"`` (PyTorch's default).

        See :func:`pushforward.nn.mlp.initialize_linear`; the mask is kept, and
        ``"random"`` draws every weight, masked or not, as an unmasked layer would.
        """
        initialize_linear(self.last, init)

    @staticmethod
    def _check_order(order: Sequence[int] | Tensor | None, features: int) -> Tensor:
        if order is None:
            return torch.arange(features, dtype=torch.long)
        tensor = torch.as_tensor(order).detach().cpu()
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise ValueError(f"order must hold integers, got dtype {tensor.dtype}")
        if tuple(tensor.shape) != (features,):
            raise ValueError(f"order has shape {tuple(tensor.shape)}, expected ({features},)")
        return tensor.to(torch.long).clone()

    def trunk(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The input of the last layer: the last hidden activations, or ``[x, context]``.

        Args:
            x: ``(batch, features)``.
            context: ``(batch, context)`` or one row ``(1, context)`` / ``(context,)``
                broadcast to the batch; required iff the model was built with ``context > 0``.

        Returns:
            ``(batch, width)``.
        """
        context = broadcast_context(context, self.context, x)
        h = x if context is None else torch.cat([x, context], dim=1)
        if self.first is None:
            return h
        h = self.first(h)
        for block in self.blocks:
            h = block(h, context) if self.residual else block(self.activation(h))
        return self.activation(h)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Autoregressive parameters of every feature.

        Args:
            x: ``(batch, features)``.
            context: as in :meth:`trunk`.

        Returns:
            ``(batch, features, params_per_feature)``.
        """
        out = self.last(self.trunk(x, context))
        return out.view(x.shape[0], self.features, self.params_per_feature)

    def first_rank_params(self, index: Tensor, batch: int) -> Tensor:
        """Parameters of features of rank 0 in a MADE without context: its last bias.

        Such features have no inputs (their rows of the last mask are zero), so no
        pass through the network is needed; equal to ``forward(x)[:, index]`` for any
        ``x``. Shape ``(batch, n, params_per_feature)``.
        """
        if self.context > 0:
            raise ValueError("with a context, rank-0 parameters depend on the context")
        bias = self.last.bias.view(self.features, self.params_per_feature).index_select(0, index)
        return bias.expand(batch, *bias.shape)

    @contextmanager
    def masks_applied_once(self) -> Iterator[None]:
        """Within this block every masked layer reuses one product :math:`W \\odot M`.

        The sequential inversion of an autoregressive transform runs the network once
        per rank; forming the masked weights once instead of once per pass saves a
        product per layer and pass. Gradients still flow to the weights.
        """
        layers = [module for module in self.modules() if isinstance(module, MaskedLinear)]
        for layer in layers:
            layer.frozen_weight = layer.weight * layer.mask
        try:
            yield
        finally:
            for layer in layers:
                layer.frozen_weight = None

    def forward_subset(self, x: Tensor, index: Tensor, context: Tensor | None = None) -> Tensor:
        """The parameters of the features ``index`` only, equal to ``forward(x)[:, index]``.

        Only the last layer's rows of those features are evaluated, which saves most
        of that layer in the sequential inversion of an autoregressive transform.

        Args:
            x: ``(batch, features)``.
            index: ``(n,)`` long, feature indices.
            context: as in :meth:`trunk`.

        Returns:
            ``(batch, n, params_per_feature)``.
        """
        h = self.trunk(x, context)
        shape = (self.features, self.params_per_feature, h.shape[1])
        weight = self.last.masked_weight().view(shape).index_select(0, index)
        bias = self.last.bias.view(shape[:2]).index_select(0, index)
        out = F.linear(h, weight.flatten(0, 1), bias.flatten())
        return out.view(x.shape[0], index.shape[0], self.params_per_feature)

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, params_per_feature={self.params_per_feature}, "
            f"context={self.context}, residual={self.residual}"
        )


def broadcast_context(context: Tensor | None, width: int, x: Tensor) -> Tensor | None:
    """Checks a context against the expected width and expands one row to ``x``'s batch.

    Returns ``None`` when ``width == 0`` (a context given to an unconditional
    layer inside a conditional flow is ignored).
    """
    if width == 0:
        return None
    if context is None:
        raise ValueError(f"this layer is conditional on {width} context features; pass context")
    if context.ndim == 1:
        context = context.unsqueeze(0)
    if context.ndim != 2 or context.shape[1] != width:
        raise ValueError(
            f"context has shape {tuple(context.shape)}, expected (batch, {width}) or ({width},)"
        )
    if context.shape[0] == 1 and x.shape[0] != 1:
        context = context.expand(x.shape[0], width)
    elif context.shape[0] != x.shape[0]:
        raise ValueError(f"context has {context.shape[0]} rows but x has {x.shape[0]}")
    return context
