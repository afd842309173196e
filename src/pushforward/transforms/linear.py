"""Invertible linear maps with a cheap log-determinant: the LU-decomposed linear layer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pushforward.transforms.base import Transform

DEFAULT_DIAGONAL_EPS = 1e-3
"""Added to ``softplus`` of the diagonal of ``U``, so the map never becomes singular."""


class LULinear(Transform):
    r"""An invertible linear map :math:`y = W x + b` with :math:`W = P L U`.

    * :math:`P` is a fixed random permutation (a buffer, saved with the model);
    * :math:`L` is unit lower-triangular (free entries below the diagonal);
    * :math:`U` is upper-triangular with diagonal
      :math:`u_i = \operatorname{softplus}(\tilde u_i) + \epsilon > 0`.

    .. math:: \log|\det J| = \sum_i \log u_i

    is independent of :math:`x`. The factors are the parameters, so the inverse
    solves two triangular systems (:math:`O(D^2)` per row) instead of inverting
    :math:`W`:

    .. math:: x = U^{-1} L^{-1} P^{\top} (y - b)

    References:
        Kingma & Dhariwal (2018), Glow: Generative Flow with Invertible 1x1 Convolutions.
        Durkan et al. (2019), Neural Spline Flows (the LU linear layer between couplings).

    Args:
        features: ``D``, inputs are ``(batch, D)``.
        identity_init: start at :math:`W = P` (``L = U = I``, ``b = 0``); otherwise
            draw the triangular entries from :math:`U(-1/\sqrt D, 1/\sqrt D)`.
        eps: :math:`\epsilon`, the floor of the diagonal of ``U``.
        generator: seeds the random permutation ``P``.
    """

    permutation: Tensor
    inverse_permutation: Tensor
    lower_indices: Tensor
    upper_indices: Tensor
    diagonal_indices: Tensor

    def __init__(
        self,
        features: int,
        identity_init: bool = True,
        eps: float = DEFAULT_DIAGONAL_EPS,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.features = int(features)
        self.eps = float(eps)
        self.register_buffer("permutation", torch.randperm(self.features, generator=generator))
        self.register_buffer("inverse_permutation", torch.argsort(self.permutation))
        # Where the free entries sit; rebuilt from ``features``, so not saved.
        lower = torch.tril_indices(self.features, self.features, offset=-1)
        upper = torch.triu_indices(self.features, self.features, offset=1)
        self.register_buffer("lower_indices", lower, persistent=False)
        self.register_buffer("upper_indices", upper, persistent=False)
        self.register_buffer("diagonal_indices", torch.arange(self.features), persistent=False)

        entries = lower.shape[1]
        self.lower_entries = nn.Parameter(torch.zeros(entries))
        self.upper_entries = nn.Parameter(torch.zeros(entries))
        one = math.log(math.expm1(1.0 - self.eps))  # softplus^{-1}(1 - eps): u_i = 1
        self.unconstrained_upper_diagonal = nn.Parameter(torch.full((self.features,), one))
        self.bias = nn.Parameter(torch.zeros(self.features))
        if not identity_init:
            bound = 1.0 / math.sqrt(self.features)
            with torch.no_grad():
                self.lower_entries.uniform_(-bound, bound, generator=generator)
                self.upper_entries.uniform_(-bound, bound, generator=generator)

    def upper_diagonal(self) -> Tensor:
        """The positive diagonal of ``U``: ``(features,)``."""
        return F.softplus(self.unconstrained_upper_diagonal) + self.eps

    def factors(self) -> tuple[Tensor, Tensor]:
        """The triangular factors ``(L, U)``, each ``(features, features)``."""
        zeros = self.lower_entries.new_zeros(self.features, self.features)
        d = self.diagonal_indices
        lower = zeros.index_put((self.lower_indices[0], self.lower_indices[1]), self.lower_entries)
        lower = lower.index_put((d, d), torch.ones_like(self.unconstrained_upper_diagonal))
        upper = zeros.index_put((self.upper_indices[0], self.upper_indices[1]), self.upper_entries)
        upper = upper.index_put((d, d), self.upper_diagonal())
        return lower, upper

    def weight(self) -> Tensor:
        """The assembled matrix ``W = P L U``: ``(features, features)``."""
        lower, upper = self.factors()
        return (lower @ upper).index_select(0, self.permutation)

    def logabsdet(self) -> Tensor:
        r""":math:`\log|\det W| = \sum_i \log u_i`, a scalar."""
        return torch.log(self.upper_diagonal()).sum()

    def _check(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ValueError(
                f"LULinear was built for inputs (batch, {self.features}), "
                f"got shape {tuple(x.shape)}"
            )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x: (batch, features) -> (W x + b, log|det W|)``, logabsdet ``(batch,)``."""
        self._check(x)
        y = F.linear(x, self.weight(), self.bias)
        return y, self.logabsdet() * x.new_ones(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``y: (batch, features) -> (W^{-1}(y - b), -log|det W|)`` by two triangular solves."""
        self._check(y)
        lower, upper = self.factors()
        # Row form: x U^T L^T = (y - b) P, solved right-to-left as X A = B twice.
        h = (y - self.bias).index_select(1, self.inverse_permutation)
        h = torch.linalg.solve_triangular(lower.T, h, upper=True, left=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper.T, h, upper=False, left=False)
        return x, -self.logabsdet() * y.new_ones(y.shape[0])

    def extra_repr(self) -> str:
        return f"features={self.features}, eps={self.eps}"
