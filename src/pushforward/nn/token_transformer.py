"""A bidirectional transformer denoiser over token sequences, conditioned by adaLN-zero."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from pushforward.nn.one_hot_mlp import (
    checked_sizes,
    checked_times,
    checked_token_context,
    checked_tokens,
)
from pushforward.nn.time_embedding import SinusoidalTimeEmbedding
from pushforward.options import positive_int

# Width of the sinusoidal time features before the time MLP maps them to the model width.
TIME_FREQUENCIES = 64


def modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    r"""The adaptive LayerNorm modulation :math:`h (1 + \gamma) + \beta`.

    References:
        Peebles & Xie (2023), Scalable Diffusion Models with Transformers.

    Args:
        h: ``(batch, L, width)`` normalised activations.
        shift: :math:`\beta`, ``(batch, 1, width)``.
        scale: :math:`\gamma`, ``(batch, 1, width)``.

    Returns:
        ``(batch, L, width)``.
    """
    return h * (1 + scale) + shift


class MultiHeadSelfAttention(nn.Module):
    r"""Bidirectional (non-causal) multi-head self-attention.

    .. math:: \mathrm{head}_j = \mathrm{softmax}\big(Q_j K_j^\top / \sqrt{d}\big) V_j,
        \qquad \mathrm{out} = [\mathrm{head}_1 \Vert \dots \Vert \mathrm{head}_H]\, W_O

    with :math:`Q_j, K_j, V_j` the ``j``-th slices of width :math:`d = width / H` of one
    linear map of the input, computed by
    :func:`torch.nn.functional.scaled_dot_product_attention`. Every position sees every
    other, so permuting the positions of the input permutes the output.

    References:
        Vaswani et al. (2017), Attention Is All You Need.

    Args:
        width: model width, divisible by ``heads``.
        heads: number of attention heads :math:`H`.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.width = width
        self.heads = heads
        self.query_key_value = nn.Linear(width, 3 * width)
        self.output = nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        """``h: (batch, L, width)`` -> ``(batch, L, width)``."""
        batch, length, width = h.shape
        head_width = width // self.heads
        # (batch, L, 3, heads, d) -> three of (batch, heads, L, d)
        projected = self.query_key_value(h).reshape(batch, length, 3, self.heads, head_width)
        query, key, value = projected.permute(2, 0, 3, 1, 4).unbind(0)
        attended = functional.scaled_dot_product_attention(query, key, value)
        return self.output(attended.transpose(1, 2).reshape(batch, length, width))


class AdaLNZeroBlock(nn.Module):
    r"""A pre-norm transformer block whose LayerNorms and residual gates follow a condition.

    .. math:: (\beta_1, \gamma_1, \alpha_1, \beta_2, \gamma_2, \alpha_2)
        = W\, \mathrm{SiLU}(c) + b,

    .. math:: h \leftarrow h + \alpha_1 \odot \mathrm{Attention}\big(
        \mathrm{LN}(h)(1 + \gamma_1) + \beta_1\big),

    .. math:: h \leftarrow h + \alpha_2 \odot \mathrm{MLP}\big(
        \mathrm{LN}(h)(1 + \gamma_2) + \beta_2\big),

    with LayerNorms without their own affine parameters and a GELU MLP of hidden width
    ``4 width``. :math:`W, b` start at zero (adaLN-zero), so every block starts as the
    identity.

    References:
        Peebles & Xie (2023), Scalable Diffusion Models with Transformers;
        Vaswani et al. (2017), Attention Is All You Need.

    Args:
        width: model width, divisible by ``heads``.
        heads: number of attention heads.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attention = MultiHeadSelfAttention(width, heads)
        self.mlp_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )
        self.modulation = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: Tensor, condition: Tensor) -> Tensor:
        """``h: (batch, L, width)``, ``condition: (batch, width)`` -> ``(batch, L, width)``."""
        parameters = self.modulation(functional.silu(condition))[:, None, :]
        shift_1, scale_1, gate_1, shift_2, scale_2, gate_2 = parameters.chunk(6, dim=-1)
        h = h + gate_1 * self.attention(modulate(self.attention_norm(h), shift_1, scale_1))
        return h + gate_2 * self.mlp(modulate(self.mlp_norm(h), shift_2, scale_2))


class TokenTransformer(nn.Module):
    r"""A token denoiser: a bidirectional transformer with adaLN-zero time and context.

    .. math:: h_0^i = E[x_t^i] + P_i, \qquad c = \mathrm{MLP}(e(t)) + W_c\, \mathrm{context},

    then ``depth`` :class:`AdaLNZeroBlock` s :math:`h_{k+1} = B_k(h_k, c)`, and

    .. math:: \ell^i = W_\ell \big(\mathrm{LN}(h^i)(1 + \gamma) + \beta\big) + b_\ell,
        \quad (\beta, \gamma) = W\, \mathrm{SiLU}(c) + b,

    with :math:`E` the ``(states, width)`` token embedding, :math:`P` the learned
    ``(length, width)`` position embedding and :math:`e` the sinusoidal time embedding.
    A floating ``x_t`` of shape ``(batch, L, states)`` is embedded as :math:`x_t E`,
    the weighted mean of the token embeddings (exact for a one-hot). The final
    modulation and head start at zero, as in DiT, so the initial logits are zero: the
    uniform denoiser. The logits :math:`\ell` parameterise the factorised probability
    denoiser :math:`p_{1|t}(x_1^i \mid x_t) = \mathrm{softmax}(\ell^i)` of discrete
    flow matching over the ``vocab`` real tokens (never the mask).

    References:
        Gat et al. (2024), Discrete Flow Matching;
        Vaswani et al. (2017), Attention Is All You Need;
        Peebles & Xie (2023), Scalable Diffusion Models with Transformers.

    Args:
        states: tokens ``x_t`` can take: ``vocab + 1`` on a masked path (the last is
            the mask), ``vocab`` on a uniform path.
        vocab: real tokens, the width of the logits.
        length: sequence length ``L``.
        context_features: context width, 0 for an unconditional denoiser.
        width: model width, divisible by ``heads``.
        depth: number of transformer blocks.
        heads: attention heads per block.

    Example:
        >>> network = TokenTransformer(5, 4, 3, width=16, depth=1, heads=2)
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
        width: int = 128,
        depth: int = 2,
        heads: int = 4,
    ) -> None:
        super().__init__()
        checked_sizes(states, vocab, length, context_features)
        self.width = positive_int("width", width)
        self.depth = positive_int("depth", depth)
        self.heads = positive_int("heads", heads)
        if width % heads != 0:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.states = states
        self.vocab = vocab
        self.length = length
        self.context_features = context_features

        self.token_embedding = nn.Embedding(states, width)
        self.position_embedding = nn.Parameter(0.02 * torch.randn(length, width))
        self.time_embedding = SinusoidalTimeEmbedding(TIME_FREQUENCIES)
        self.time_mlp = nn.Sequential(
            nn.Linear(TIME_FREQUENCIES, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.context_layer = nn.Linear(context_features, width) if context_features else None
        self.blocks = nn.ModuleList(AdaLNZeroBlock(width, heads) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(width, 2 * width)
        self.head = nn.Linear(width, vocab)
        for layer in (self.final_modulation, self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

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
        table = self.token_embedding.weight
        times = checked_times(t, batch, table)
        rows = checked_token_context(context, self.context_features, batch, table)
        if x_t.is_floating_point():
            h = x_t.to(dtype=table.dtype, device=table.device) @ table
        else:
            h = self.token_embedding(x_t.to(table.device))
        h = h + self.position_embedding
        condition = self.time_mlp(self.time_embedding(times))
        if self.context_layer is not None and rows is not None:
            condition = condition + self.context_layer(rows)
        for block in self.blocks:
            h = block(h, condition)
        shift, scale = self.final_modulation(functional.silu(condition))[:, None, :].chunk(2, -1)
        return self.head(modulate(self.final_norm(h), shift, scale))

    def extra_repr(self) -> str:
        return (
            f"states={self.states}, vocab={self.vocab}, length={self.length}, "
            f"context_features={self.context_features}"
        )
