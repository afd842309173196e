"""A batch of scikit-learn-style MLP classifiers trained side by side in torch.

The network, its initialisation, the log-loss gradient written out by hand and the Adam
step of scikit-learn's ``MLPClassifier`` (its defaults below), for many models at once:
weights of shape ``(models, in, out)`` in one flat buffer, so that one ``bmm`` serves every
model. :func:`~pushforward.metrics.sbibm_c2st.sbibm_c2st` trains its folds and pairs with it.

References:
    Pedregosa et al. (2011), Scikit-learn: Machine Learning in Python (the MLPClassifier
    whose training this follows); Kingma & Ba (2015), Adam.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# scikit-learn's MLPClassifier defaults, which sbibm leaves as they are.
ALPHA = 1e-4  # L2 penalty of the weights (not the biases)
LEARNING_RATE = 1e-3
BETA1 = 0.9
BETA2 = 0.999
EPSILON = 1e-8
BATCH_SIZE = 200  # batch_size="auto" is min(200, n_samples)
TOL = 1e-4
N_ITER_NO_CHANGE = 10


def glorot_uniform_mlp(sizes: Sequence[int], generator: torch.Generator) -> list[Tensor]:
    r"""Weights and biases drawn as scikit-learn's MLP draws them, in float64 on the CPU.

    Layer by layer, first the weight ``(fan_in, fan_out)`` then the bias ``(fan_out,)``,
    both uniform on :math:`[-b, b]` with :math:`b = \sqrt{6 / (\text{fan\_in} +
    \text{fan\_out})}`, the output layer included (scikit-learn takes the factor 2
    instead of 6 only for logistic hidden units).

    References:
        Glorot & Bengio (2010), Understanding the difficulty of training deep
        feedforward neural networks.

    Returns:
        ``[W_1, b_1, W_2, b_2, ...]``.
    """
    parameters: list[Tensor] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        for shape in ((fan_in, fan_out), (fan_out,)):
            uniform = torch.rand(shape, generator=generator, dtype=torch.float64)
            parameters.append((2.0 * uniform - 1.0) * bound)
    return parameters


@dataclass(frozen=True)
class MLPLayout:
    """Where the ``d -> H -> H -> 1`` MLP's parameters sit in one flat row per model.

    Each layer is one block ``(in + 1, out)``: the weight ``(in, out)`` with the bias
    as its last row, so that one ``bmm`` with inputs carrying a column of ones applies
    the layer, and one ``bmm`` gives the gradient of weight and bias together. The
    output block has a second column that stays 0: MKL's matrix-vector path (one
    column) rounds differently with the number of matrices, which would make a pair's
    result depend on the batch.
    """

    features: int
    hidden: int

    @property
    def blocks(self) -> list[tuple[int, int]]:
        d, h = self.features, self.hidden
        return [(d + 1, h), (h + 1, h), (h + 1, 2)]

    @property
    def size(self) -> int:
        return sum(rows * cols for rows, cols in self.blocks)

    def views(self, flat: Tensor) -> list[Tensor]:
        """The three blocks ``(models, in + 1, out)``, views of ``flat`` ``(models, size)``."""
        out, start = [], 0
        for rows, cols in self.blocks:
            out.append(flat[:, start : start + rows * cols].view(-1, rows, cols))
            start += rows * cols
        return out

    def flatten(self, parameters: Sequence[Tensor]) -> Tensor:
        """``[W_1, b_1, W_2, b_2, W_3, b_3]`` as one row ``(size,)`` in this layout."""
        rows = []
        pairs = zip(parameters[0::2], parameters[1::2], strict=True)
        for (weight, bias), (_, cols) in zip(pairs, self.blocks, strict=True):
            block = torch.cat([weight, bias.unsqueeze(0)])
            rows.append(F.pad(block, (0, cols - block.shape[1])).flatten())
        return torch.cat(rows)

    def weight_mask(self, like: Tensor) -> Tensor:
        """``(size,)`` 1 on the weights, 0 on the biases (the L2 penalty spares biases)."""
        mask = [like.new_ones(rows, cols) for rows, cols in self.blocks]
        for block in mask:
            block[-1] = 0.0
        return torch.cat([block.flatten() for block in mask])


def padded_rows(rows: int) -> int:
    """``rows`` rounded up to a multiple of 64.

    torch's vectorised ``sigmoid`` and ``softplus`` round differently from their scalar
    tail loops; with every model's row a multiple of the vector width, every element
    takes the vector path whatever the number of models.
    """
    return -(-rows // 64) * 64


@dataclass(frozen=True)
class MLPBuffers:
    """Work space for ``M`` MLPs on minibatches of ``B`` rows, reused from step to step.

    Attributes:
        hidden: two ``(M, B, H + 1)`` activations whose last column is 1 (the bias input
            of the next layer).
        logits: ``(M, padded_rows(B))`` the logits in ``[:, :B]``, 0 beyond.
        delta: ``(M, B, 2)`` the loss's derivative in the logits, second column 0.
    """

    hidden: tuple[Tensor, Tensor]
    logits: Tensor
    delta: Tensor

    @staticmethod
    def create(models: int, rows: int, layout: MLPLayout, like: Tensor) -> MLPBuffers:
        hidden = (
            like.new_ones(models, rows, layout.hidden + 1),
            like.new_ones(models, rows, layout.hidden + 1),
        )
        logits = like.new_zeros(models, padded_rows(rows))
        return MLPBuffers(hidden, logits, like.new_zeros(models, rows, 2))


def mlp_forward(
    blocks: Sequence[Tensor], inputs: Tensor, buffers: MLPBuffers
) -> tuple[Tensor, Tensor]:
    """Runs ``M`` ReLU MLPs on ``inputs`` ``(M, B, d + 1)`` (last column 1).

    The activations and the logits are written into ``buffers``.

    Returns:
        The two pre-activations ``(M, B, H)``, which the backward pass reads.
    """
    h1, h2 = buffers.hidden
    width, rows = h1.shape[-1] - 1, h1.shape[1]
    z1 = torch.bmm(inputs, blocks[0])
    torch.clamp(z1, min=0.0, out=h1[..., :width])
    z2 = torch.bmm(h1, blocks[1])
    torch.clamp(z2, min=0.0, out=h2[..., :width])
    buffers.logits[:, :rows] = torch.bmm(h2, blocks[2])[..., 0]
    return z1, z2


def relu_backward(grad: Tensor, preactivation: Tensor) -> Tensor:
    """``grad`` where the ReLU's input is positive, else 0 (sklearn's ``delta[Z == 0] = 0``).

    One fused kernel; ``masked_fill_(output == 0, 0)`` is many times slower on the CPU.
    """
    return torch.ops.aten.threshold_backward(grad, preactivation, 0.0)


def log_loss_gradient(
    blocks: Sequence[Tensor], inputs: Tensor, targets: Tensor, weight: Tensor, buffers: MLPBuffers
) -> Tensor:
    r"""The gradient of a weighted log-loss of ``M`` MLPs, by backpropagation.

    The loss is :math:`\sum_i w_i\, \ell(\sigma(f(x_i)), y_i)` with the log-loss
    :math:`\ell`; its derivative in the logit is :math:`w_i (\sigma(f(x_i)) - y_i)`
    (sklearn's output ``delta``, here pre-scaled by the weight), carried back through
    the ReLU layers. The logits are left in ``buffers.logits``.

    Args:
        blocks: the layer blocks of :meth:`MLPLayout.views`.
        inputs: ``(M, B, d + 1)`` with a last column of ones.
        targets: ``(M, padded_rows(B))`` labels in {0, 1}.
        weight: ``(M, padded_rows(B))`` row weights (``1 / B`` for a mean, 0 on padding).
        buffers: from :meth:`MLPBuffers.create` for ``(M, B)``.

    Returns:
        The gradient ``(M, size)`` in the flat layout.
    """
    z1, z2 = mlp_forward(blocks, inputs, buffers)
    rows = inputs.shape[1]
    delta = torch.sigmoid(buffers.logits).sub_(targets).mul_(weight)
    buffers.delta[..., 0] = delta[:, :rows]
    delta2 = relu_backward(torch.bmm(buffers.delta, blocks[2][:, :-1].mT), z2)
    delta1 = relu_backward(torch.bmm(delta2, blocks[1][:, :-1].mT), z1)
    h1, h2 = buffers.hidden
    parts = [(inputs, delta1), (h1, delta2), (h2, buffers.delta)]
    return torch.cat([torch.bmm(a.mT, d).flatten(1) for a, d in parts], dim=1)


def adam_step(flat: Tensor, first: Tensor, second: Tensor, grad: Tensor, rate: Tensor) -> None:
    r"""scikit-learn's Adam update, in place, one learning rate per model.

    :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`, :math:`v \leftarrow \beta_2 v +
    (1-\beta_2) g^2`, :math:`\theta \leftarrow \theta - \eta_t\, m / (\sqrt v +
    \epsilon)` with :math:`\eta_t = \eta \sqrt{1-\beta_2^t} / (1-\beta_1^t)` given as
    ``rate`` ``(M, 1)``; :math:`\epsilon` is added to the uncorrected :math:`\sqrt v`,
    unlike ``torch.optim.Adam``.

    References:
        Kingma & Ba (2015), Adam: A Method for Stochastic Optimization.
    """
    first.mul_(BETA1).add_(grad, alpha=1.0 - BETA1)
    second.mul_(BETA2).addcmul_(grad, grad, value=1.0 - BETA2)
    flat.sub_(first / second.sqrt().add_(EPSILON) * rate)
