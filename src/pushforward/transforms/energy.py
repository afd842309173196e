"""The layers of an energy-based normalizing flow: a full linear map and a smooth leaky ReLU.

An unconstrained weight matrix makes the most expressive linear layer, but its
log-determinant costs :math:`O(D^3)`. An energy-based flow trained by score
matching never needs it (:class:`~pushforward.flows.energy.EnergyFlow`), so the
linear layer here computes it only when asked, through ``forward`` or
:meth:`FullLinear.logabsdet`, and offers :meth:`FullLinear.affine` for the map alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pushforward.nn.mlp import MLP
from pushforward.transforms.base import Transform, sum_except_batch
from pushforward.transforms.functional.smooth_leaky_relu import (
    smooth_leaky_relu,
    smooth_leaky_relu_inverse,
)


def _check_rows(name: str, x: Tensor, features: int) -> None:
    if x.dim() != 2 or x.shape[1] != features:
        raise ValueError(
            f"{name} was built for inputs (batch, {features}), got shape {tuple(x.shape)}"
        )


class FullLinear(Transform):
    r"""An invertible linear map :math:`y = W x + b + t(c)` with an unconstrained weight :math:`W`.

    .. math:: \log|\det J| = \log|\det W|

    is computed by ``slogdet`` (:math:`O(D^3)`) only in ``forward``, ``inverse`` and
    :meth:`logabsdet`; :meth:`affine` applies the map alone (:math:`O(D^2)` a
    row), which is all an energy-based flow's score-matching loss needs. The
    inverse solves :math:`W x = y - b - t(c)` by an LU factorisation. Nothing keeps
    :math:`W` away from singular matrices: training by maximum likelihood pushes it
    away through the log-determinant, score matching does not see it.

    With a context, the shift :math:`t(c)` is an MLP of it (its last layer starts at
    zero); the Jacobian stays :math:`W`, so the log-determinant does not depend on
    the context either and the normaliser of a conditional energy-based flow is the
    same for every context.

    References:
        Chao et al. (2023), Training Energy-Based Normalizing Flow with
        Score-Matching Objectives (the fully connected layers of EBFlow).

    Args:
        features: ``D``, inputs are ``(batch, D)``.
        context: context size (0 for none).
        hidden: hidden widths of the context's shift network.
        identity_init: start at :math:`W = I`; otherwise at a random orthogonal
            matrix (drawn with ``generator``), so :math:`\log|\det W| = 0` either way.
        generator: seeds the random orthogonal start.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (64,),
        identity_init: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.features = int(features)
        self.context_features = int(context)
        if identity_init:
            weight = torch.eye(self.features)
        else:
            gaussian = torch.randn(self.features, self.features, generator=generator)
            weight, _ = torch.linalg.qr(gaussian)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(self.features))
        self.shift: MLP | None = None
        if self.context_features > 0:
            self.shift = MLP(self.context_features, self.features, hidden, zero_last=True)
            self.conditional = True

    def _offset(self, context: Tensor | None) -> Tensor:
        if self.shift is None:
            return self.bias
        if context is None:
            raise ValueError(
                f"this layer is conditional on {self.context_features} context features; "
                "pass context"
            )
        return self.bias + self.shift(context)

    def affine(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``x: (batch, features) -> W x + b + t(c)``, without the log-determinant."""
        _check_rows("FullLinear", x, self.features)
        return F.linear(x, self.weight) + self._offset(context)

    def logabsdet(self) -> Tensor:
        r""":math:`\log|\det W|`, a scalar, by ``torch.linalg.slogdet``."""
        return torch.linalg.slogdet(self.weight)[1]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x: (batch, features) -> (W x + b + t(c), log|det W|)``, logabsdet ``(batch,)``."""
        y = self.affine(x, context)
        return y, self.logabsdet() * x.new_ones(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``y: (batch, features) -> (W^{-1}(y - b - t(c)), -log|det W|)`` by one solve."""
        _check_rows("FullLinear", y, self.features)
        # Row form: x W^T = y - b - t(c), i.e. X A = B with A = W^T.
        x = torch.linalg.solve(self.weight.T, y - self._offset(context), left=False)
        return x, -self.logabsdet() * y.new_ones(y.shape[0])

    def extra_repr(self) -> str:
        return f"features={self.features}, context={self.context_features}"


class SmoothLeakyReLU(Transform):
    r"""The element-wise smooth leaky ReLU :math:`y = \alpha x + (1 - \alpha)\log(1 + e^x)`.

    One learnable slope per feature, :math:`\alpha = e^{a} > 0` (any positive
    slope gives a bijection, see
    :func:`~pushforward.transforms.functional.smooth_leaky_relu.smooth_leaky_relu`);
    :math:`\alpha = 1` is the identity. The log-determinant is the closed form

    .. math:: \log|\det J| = \sum_i \log\big(\alpha_i \sigma(-x_i) + \sigma(x_i)\big)

    and the inverse runs Newton's method (a few steps to round-off).

    References:
        Gresele et al. (2020), Relative gradient optimization of the Jacobian
        term in unsupervised deep learning; Chao et al. (2023), Training
        Energy-Based Normalizing Flow with Score-Matching Objectives.

    Args:
        features: ``D``, inputs are ``(batch, D)``.
        slope: the starting slope :math:`\alpha` of every feature (1: the identity).
    """

    def __init__(self, features: int, slope: float = 1.0) -> None:
        super().__init__()
        if not slope > 0:
            raise ValueError(f"the slope of a smooth leaky ReLU must be positive, got {slope}")
        self.features = int(features)
        self.log_slope = nn.Parameter(torch.full((self.features,), math.log(slope)))

    def slope(self) -> Tensor:
        r"""The slopes :math:`\alpha`: ``(features,)``."""
        return torch.exp(self.log_slope)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_rows("SmoothLeakyReLU", x, self.features)
        y, log_derivative = smooth_leaky_relu(x, self.slope())
        return y, sum_except_batch(log_derivative)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_rows("SmoothLeakyReLU", y, self.features)
        x, log_derivative = smooth_leaky_relu_inverse(y, self.slope())
        return x, sum_except_batch(log_derivative)

    def extra_repr(self) -> str:
        return f"features={self.features}"
