"""Coupling transforms: half the features, conditioned on the other half, in one pass both ways."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from pushforward.nn.made import broadcast_context
from pushforward.nn.mlp import MLP
from pushforward.transforms.base import Transform
from pushforward.transforms.maps import ElementwiseMap


def alternating_mask(features: int, parity: int = 0) -> Tensor:
    """The boolean mask of the features whose index has the given parity (``i % 2 == parity``).

    For ``features == 1`` the single feature is transformed whatever the parity
    (a mask with nothing to transform would be the identity).

    Returns:
        ``(features,)`` bool, True where a feature is transformed.
    """
    if features < 1:
        raise ValueError(f"a mask needs at least one feature, got features={features}")
    if features == 1:
        return torch.ones(1, dtype=torch.bool)
    return torch.arange(features) % 2 == parity % 2


def random_mask(features: int, generator: torch.Generator | None = None) -> Tensor:
    """A random boolean mask transforming ``ceil(features / 2)`` features.

    At least one feature is on each side when ``features >= 2``; for
    ``features == 1`` the single feature is transformed.

    Args:
        features: ``D``.
        generator: a CPU generator for reproducible masks.

    Returns:
        ``(features,)`` bool, True where a feature is transformed.
    """
    if features < 1:
        raise ValueError(f"a mask needs at least one feature, got features={features}")
    chosen = torch.randperm(features, generator=generator)[: (features + 1) // 2]
    mask = torch.zeros(features, dtype=torch.bool)
    mask[chosen] = True
    return mask


class Conditioner(Protocol):
    """What a coupling layer needs of its conditioner: ``(batch, in) -> (batch, out)`` and a
    resettable output layer (:class:`~pushforward.nn.mlp.MLP`,
    :class:`~pushforward.nn.kernel.KernelConditioner`)."""

    def __call__(self, h: Tensor) -> Tensor: ...

    def initialize_last_layer(self, init: str) -> None: ...


ConditionerFactory = Callable[[int, int], Conditioner]
"""``(in_features, out_features) -> conditioner``: an ``nn.Module`` whose outputs start at zero."""


class Coupling(Transform):
    r"""A coupling layer: the masked features pass through a map conditioned on the rest.

    With :math:`B` the transformed features (``mask`` True) and :math:`A` the others:

    .. math:: y_A = x_A, \quad y_B = \tau(x_B; \theta), \quad \theta = \mathrm{MLP}([x_A, c]),
              \quad \log |\det J| = \sum_{i \in B} \log |\partial \tau / \partial x_i|

    Both directions are one pass. With
    :class:`~pushforward.transforms.maps.AffineMap` this is the RealNVP coupling,
    with :class:`~pushforward.transforms.maps.RationalQuadraticSplineMap` the
    neural spline coupling. The conditioner's last layer starts at zero, so the
    layer starts at the identity. ``conditioner`` builds another network in place of
    the MLP (with :class:`~pushforward.nn.kernel.KernelConditioner`, the kernelised
    coupling of English et al. 2024).

    Features are gathered with index buffers and written back with one
    out-of-place ``index_copy`` (no multiplications by masks).

    When no feature is left to condition on (``features == 1``, or a mask with
    every feature True), the conditioner sees only the context; without a
    context it sees the constant 1, so the parameters are learned constants and
    the layer is a learnable element-wise map.

    References:
        Dinh et al. (2017), Density estimation using Real NVP;
        Durkan et al. (2019), Neural Spline Flows;
        English, Kirchler & Lippert (2024), Kernelised Normalising Flows.

    Args:
        features: ``D``.
        map: the element-wise map :math:`\tau`.
        mask: ``(D,)`` bool, True for the transformed features (at least one).
        hidden: conditioner hidden widths.
        context: context width (0 for unconditional).
        activation: hidden nonlinearity.
        conditioner: ``(in_features, out_features) -> module`` building the conditioner in
            place of the MLP (``hidden`` and ``activation`` then unused); its outputs should
            start at zero, so the layer starts at the identity.
    """

    mask: Tensor
    identity_index: Tensor
    transformed_index: Tensor
    conditioner: Conditioner
    # Columns the conditioner reads per untransformed feature (see _conditioner_input).
    inputs_per_feature: int = 1

    def __init__(
        self,
        features: int,
        map: ElementwiseMap,
        mask: Sequence[bool] | Tensor,
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        activation: str = "relu",
        conditioner: ConditionerFactory | None = None,
    ) -> None:
        super().__init__()
        mask = torch.as_tensor(mask).detach().cpu()
        if tuple(mask.shape) != (features,):
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected ({features},)")
        mask = mask.to(torch.bool)
        if not bool(mask.any()):
            raise ValueError("the coupling mask transforms no feature (it is all False)")
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        self.features = int(features)
        self.context = int(context)
        self.map = map
        identity_index = torch.nonzero(~mask).squeeze(1)
        transformed_index = torch.nonzero(mask).squeeze(1)
        self.register_buffer("mask", mask.clone())
        self.register_buffer("identity_index", identity_index)
        self.register_buffer("transformed_index", transformed_index)
        self.conditioner_inputs = identity_index.numel() * self.inputs_per_feature + self.context
        inputs = max(self.conditioner_inputs, 1)
        outputs = transformed_index.numel() * map.params_per_feature
        if conditioner is None:
            self.conditioner = MLP(
                inputs, outputs, hidden=hidden, activation_name=activation, zero_last=True
            )
        else:
            built = conditioner(inputs, outputs)
            if not isinstance(built, nn.Module):
                raise TypeError(f"a conditioner must be an nn.Module, got {type(built).__name__}")
            self.conditioner = built
        self.conditional = self.context > 0

    def _conditioner_input(self, x_identity: Tensor) -> Tensor:
        """What the conditioner sees of the untransformed features ``(B, |A|)``: the
        values themselves, ``(B, |A| * inputs_per_feature)``."""
        return x_identity

    def _params(self, x_identity: Tensor, context: Tensor | None) -> Tensor:
        seen = self._conditioner_input(x_identity)
        if context is not None:
            h = torch.cat([seen, context], dim=1)
        elif self.conditioner_inputs > 0:
            h = seen
        else:
            # Nothing to condition on: a constant input makes the parameters learned constants.
            h = x_identity.new_ones(x_identity.shape[0], 1)
        params = self.conditioner(h)
        return params.view(x_identity.shape[0], self.transformed_index.numel(), -1)

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(
                f"expected input of shape (batch, {self.features}), got {tuple(x.shape)}"
            )
        context = broadcast_context(context, self.context, x)
        x_identity = x.index_select(1, self.identity_index)
        x_transformed = x.index_select(1, self.transformed_index)
        params = self._params(x_identity, context)
        if inverse:
            y_transformed, logabsdet = self.map.inverse(x_transformed, params)
        else:
            y_transformed, logabsdet = self.map(x_transformed, params)
        y = x.index_copy(1, self.transformed_index, y_transformed)
        return y, logabsdet.sum(dim=1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to base: ``x: (B, D)`` -> ``(y: (B, D), logabsdet: (B,))``."""
        return self._couple(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Base to data: ``y: (B, D)`` -> ``(x: (B, D), logabsdet: (B,))``."""
        return self._couple(y, context, inverse=True)

    def forward_and_score(
        self, x: Tensor, score: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``forward`` carrying a score by the triangular solve (see :meth:`_couple_with_score`)."""
        return self._couple_with_score(x, score, context, inverse=False)

    def inverse_and_score(
        self, y: Tensor, score: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``inverse`` carrying a score by the triangular solve (see :meth:`_couple_with_score`)."""
        return self._couple_with_score(y, score, context, inverse=True)

    def _couple_with_score(
        self, x: Tensor, score: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""One coupling pass that also pushes the score :math:`s = \nabla \log p` through it.

        Either direction is :math:`(a, b) \mapsto (a, h(b; \theta(a)))` with ``h``
        element-wise in ``b`` and :math:`\ell = \sum_i \log h'_i`. Its Jacobian is
        block lower-triangular with diagonal :math:`h'`, so
        :math:`J^{-\top}(s - \nabla\ell)` is a back-substitution:

        .. math:: s'_b = \frac{s_b - \partial_b \ell}{h'}, \qquad
                  s'_a = s_a - \partial_a\big(\ell + \langle h, s'_b \rangle\big)

        :math:`\partial_b \ell` back-propagates through the element-wise map only;
        the second term is one vector-Jacobian product through the conditioner,
        with respect to its input only. No pass in the other direction is needed
        (Vaitl et al. 2024). The scores come back detached.

        References:
            Vaitl et al. (2024), Fast and Unified Path Gradient Estimators for
            Normalizing Flows.
        """
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(
                f"expected input of shape (batch, {self.features}), got {tuple(x.shape)}"
            )
        context = broadcast_context(context, self.context, x)
        score = score.detach()
        with torch.enable_grad():
            if not x.requires_grad:
                # A leaf without history: the score needs a graph from here on.
                x = x.detach().requires_grad_(True)
            x_identity = x.index_select(1, self.identity_index)
            x_transformed = x.index_select(1, self.transformed_index)
            params = self._params(x_identity, context)
            if inverse:
                y_transformed, logabsdet = self.map.inverse(x_transformed, params)
            else:
                y_transformed, logabsdet = self.map(x_transformed, params)
            total = logabsdet.sum()
            d_transformed = None
            if self.map.logabsdet_depends_on_input:
                (d_transformed,) = torch.autograd.grad(
                    total, x_transformed, retain_graph=True, allow_unused=True
                )
            score_identity = score.index_select(1, self.identity_index)
            score_transformed = score.index_select(1, self.transformed_index)
            if d_transformed is not None:
                score_transformed = score_transformed - d_transformed
            score_transformed = score_transformed * torch.exp(-logabsdet.detach())
            (d_identity,) = torch.autograd.grad(
                total + (y_transformed * score_transformed).sum(),
                x_identity,
                retain_graph=True,
                allow_unused=True,
            )
        if d_identity is not None:
            score_identity = score_identity - d_identity
        y = x.index_copy(1, self.transformed_index, y_transformed)
        pushed = score.index_copy(1, self.transformed_index, score_transformed)
        pushed = pushed.index_copy(1, self.identity_index, score_identity)
        return y, logabsdet.sum(dim=1), pushed.detach()

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, transformed={self.transformed_index.numel()}, "
            f"conditional={self.conditional}"
        )
