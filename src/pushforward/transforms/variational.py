r"""Planar, radial and Sylvester layers: the flows of variational inference as transforms.

Each layer's generative map :math:`z \mapsto z'` (as the papers write it) is this
library's ``inverse`` (base to data); ``forward`` (data to base) is its inverse.
Parameters are learned constants, or a hypernetwork of the context (amortised, as in
van den Berg et al. 2018) when the layer is built with ``context > 0``; the maths is
in :mod:`pushforward.transforms.functional.variational`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from pushforward.nn.amortized import AmortizedParameters
from pushforward.nn.made import broadcast_context
from pushforward.transforms.base import Transform
from pushforward.transforms.functional.variational import (
    SylvesterParameters,
    planar,
    planar_inverse,
    radial,
    radial_inverse,
    sylvester,
    sylvester_inverse,
)


def _layer_parameters(
    amortized: AmortizedParameters, features: int, x: Tensor, context: Tensor | None
) -> Tensor:
    """The layer's flat parameters for the rows of ``x``: ``(batch or 1, P)``."""
    if x.ndim != 2 or x.shape[1] != features:
        raise ValueError(f"expected input of shape (batch, {features}), got {tuple(x.shape)}")
    return amortized(broadcast_context(context, amortized.context, x))


class Planar(Transform):
    r"""Planar layer :math:`z' = z + \hat u \tanh(w^\top z + b)` with :math:`w^\top \hat u > -1`.

    .. math:: \log |\det \partial z' / \partial z| = \log |1 + \hat u^\top w\, h'(w^\top z + b)|

    The generative direction (``inverse``) is one pass; ``forward`` solves the scalar
    equation along :math:`w` exactly (bracketed bisection with a fixed number of
    halvings that provably reaches the dtype's precision, then one Newton step that
    carries the implicit-function gradient; see
    :func:`~pushforward.transforms.functional.variational.planar_inverse`), about 60
    cheap passes. :math:`u` starts at zero: the layer starts at the identity.

    References:
        Rezende & Mohamed (2015), Variational Inference with Normalizing Flows.

    Args:
        features: ``D``.
        context: context width (0 for unconditional); with one, :math:`u, w, b` are
            an MLP of it.
        hidden: the hypernetwork's hidden widths.

    Example:
        >>> import torch
        >>> layer = Planar(3).double()
        >>> z = torch.randn(4, 3, dtype=torch.float64)
        >>> x, logabsdet = layer.inverse(z)  # base to data: closed form
        >>> back, _ = layer(x)  # data to base: the exact root-find
        >>> torch.allclose(back, z, atol=1e-12), logabsdet.shape
        (True, torch.Size([4]))
    """

    cheap_forward = False

    def __init__(self, features: int, context: int = 0, hidden: Sequence[int] = (64,)) -> None:
        super().__init__()
        self.features = int(features)
        initial = torch.cat(
            [
                torch.zeros(features),
                torch.randn(features) / math.sqrt(features),
                torch.zeros(1),
            ]
        )
        self.amortized = AmortizedParameters(initial, context, hidden)
        self.conditional = self.amortized.context > 0

    def _split(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        theta = _layer_parameters(self.amortized, self.features, x, context)
        d = self.features
        return theta[:, :d], theta[:, d : 2 * d], theta[:, 2 * d]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to base: ``x: (B, D)`` -> ``(z: (B, D), logabsdet: (B,))``, by the root-find."""
        return planar_inverse(x, *self._split(x, context))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Base to data: ``y: (B, D)`` -> ``(x: (B, D), logabsdet: (B,))``, one pass."""
        return planar(y, *self._split(y, context))

    def extra_repr(self) -> str:
        return f"features={self.features}, context={self.amortized.context}"


class Radial(Transform):
    r"""The radial flow layer :math:`z' = z + \hat\beta (z - z_0) / (\alpha + \|z - z_0\|)`.

    :math:`\alpha > 0` and :math:`\hat\beta = -\alpha + \mathrm{softplus}(\tilde\beta) > -\alpha`
    keep it invertible. With :math:`h = 1/(\alpha + r)`, :math:`r = \|z - z_0\|`:

    .. math:: \log |\det \partial z' / \partial z| = (D - 1) \log(1 + \hat\beta h)
              + \log(1 + \hat\beta h + \hat\beta h'(r) r)

    Both directions are closed form (the inverse solves a quadratic in :math:`r`;
    see :func:`~pushforward.transforms.functional.variational.radial_inverse`). It
    starts at :math:`\hat\beta = 0`, the identity, with a random centre :math:`z_0`.

    References:
        Rezende & Mohamed (2015), Variational Inference with Normalizing Flows.

    Args: as :class:`Planar`.

    Example:
        >>> import torch
        >>> layer = Radial(2).double()
        >>> x = torch.randn(5, 2, dtype=torch.float64)
        >>> z, logabsdet = layer(x)
        >>> torch.allclose(layer.inverse(z)[0], x), logabsdet.shape
        (True, torch.Size([5]))
    """

    def __init__(self, features: int, context: int = 0, hidden: Sequence[int] = (64,)) -> None:
        super().__init__()
        self.features = int(features)
        # alpha = softplus(0) = log 2 and beta_hat = -alpha + softplus(0) = 0: the identity.
        initial = torch.cat([torch.randn(features), torch.zeros(2)])
        self.amortized = AmortizedParameters(initial, context, hidden)
        self.conditional = self.amortized.context > 0

    def _split(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        theta = _layer_parameters(self.amortized, self.features, x, context)
        d = self.features
        return theta[:, :d], theta[:, d], theta[:, d + 1]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to base: ``x: (B, D)`` -> ``(z: (B, D), logabsdet: (B,))``."""
        return radial_inverse(x, *self._split(x, context))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Base to data: ``y: (B, D)`` -> ``(x: (B, D), logabsdet: (B,))``."""
        return radial(y, *self._split(y, context))

    def extra_repr(self) -> str:
        return f"features={self.features}, context={self.amortized.context}"


class Sylvester(Transform):
    r"""The orthogonal Sylvester layer :math:`z' = z + Q R \tanh(\tilde R Q^\top z + b)`.

    :math:`Q` (``D x M``) is the first ``M`` columns of a product of ``D`` Householder
    reflections (always orthonormal, no re-orthogonalisation), :math:`R` and
    :math:`\tilde R` are upper triangular with :math:`R_{ii} = \tanh(\cdot)` and
    :math:`\tilde R_{ii} = \tanh(\cdot)`, so :math:`R_{ii} \tilde R_{ii} > -1 = -1/h'_{max}`
    (invertibility), as in van den Berg et al.:

    .. math:: \log |\det \partial z' / \partial z| = \sum_i \log |1 + R_{ii} \tilde R_{ii}
              h'\big((\tilde R Q^\top z + b)_i\big)|

    The generative direction (``inverse``) is one pass. ``forward`` is exact too:
    the map is triangular in :math:`Q`'s coordinates, so back-substitution solves
    ``M`` increasing scalar equations in turn, each by the bracketed bisection of the
    planar layer (:func:`~pushforward.transforms.functional.variational.sylvester_inverse`);
    it is ``M`` times as slow as a planar solve. :math:`R` starts at zero (the
    identity), :math:`\tilde R` at :math:`\tanh(1) I`, the reflections at random.

    References:
        van den Berg et al. (2018), Sylvester Normalizing Flows for Variational Inference.

    Args:
        features: ``D``.
        columns: ``M``, ``1 <= M <= D`` (``None``: ``D``).
        context: context width (0 for unconditional); with one, every parameter
            (:math:`Q` included) is an MLP of it.
        hidden: the hypernetwork's hidden widths.

    Example:
        >>> import torch
        >>> layer = Sylvester(4, columns=2).double()
        >>> z = torch.randn(3, 4, dtype=torch.float64)
        >>> x, logabsdet = layer.inverse(z)
        >>> torch.allclose(layer(x)[0], z, atol=1e-12), logabsdet.shape
        (True, torch.Size([3]))
    """

    cheap_forward = False
    upper_index: Tensor

    def __init__(
        self,
        features: int,
        columns: int | None = None,
        context: int = 0,
        hidden: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        columns = features if columns is None else int(columns)
        if not 1 <= columns <= features:
            raise ValueError(f"columns must be between 1 and features={features}, got {columns}")
        self.features, self.columns = int(features), columns
        rows, cols = torch.triu_indices(columns, columns, offset=1)
        self.register_buffer("upper_index", rows * columns + cols, persistent=False)
        strict = self.upper_index.numel()
        initial = torch.cat(
            [
                torch.randn(features * features),  # Householder vectors
                torch.zeros(2 * strict),  # R and R~ above the diagonal
                torch.zeros(columns),  # R's diagonal, tanh(0) = 0
                torch.ones(columns),  # R~'s diagonal, tanh(1)
                torch.zeros(columns),  # b
            ]
        )
        self.amortized = AmortizedParameters(initial, context, hidden)
        self.conditional = self.amortized.context > 0

    def _upper(self, packed: Tensor) -> Tensor:
        m = self.columns
        flat = packed.new_zeros(packed.shape[0], m * m).index_copy(1, self.upper_index, packed)
        return flat.view(packed.shape[0], m, m)

    def _sylvester_parameters(self, x: Tensor, context: Tensor | None) -> SylvesterParameters:
        theta = _layer_parameters(self.amortized, self.features, x, context)
        d, m = self.features, self.columns
        sizes = [d * d, self.upper_index.numel(), self.upper_index.numel(), m, m, m]
        householder, r, r_tilde, r_diagonal, r_tilde_diagonal, shift = theta.split(sizes, 1)
        return SylvesterParameters(
            householder=householder.view(-1, d, d),
            r=self._upper(r),
            r_tilde=self._upper(r_tilde),
            r_diagonal=r_diagonal,
            r_tilde_diagonal=r_tilde_diagonal,
            shift=shift,
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to base: ``x: (B, D)`` -> ``(z: (B, D), logabsdet: (B,))``, by back-substitution."""
        return sylvester_inverse(x, self._sylvester_parameters(x, context))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Base to data: ``y: (B, D)`` -> ``(x: (B, D), logabsdet: (B,))``, one pass."""
        return sylvester(y, self._sylvester_parameters(y, context))

    def extra_repr(self) -> str:
        return f"features={self.features}, columns={self.columns}, context={self.amortized.context}"
