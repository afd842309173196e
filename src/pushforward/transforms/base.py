"""The transform contract: bijections that return their log-determinant both ways."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn


class Transform(nn.Module):
    r"""A bijection :math:`f` with a tractable log-determinant.

    ``forward`` runs the normalizing direction (data to base), ``inverse`` the
    generative one (base to data). Both return the output and
    :math:`\log |\det J|` of the map they applied, with shape ``(batch,)``:

    .. math:: y = f(x), \quad \ell = \log |\det \partial f / \partial x|

    Class attributes state the contract explicitly (as flowjax does):

    * ``cheap_forward`` / ``cheap_inverse``: whether that direction costs one
      pass (an autoregressive map is cheap one way and needs ``D`` passes the
      other);
    * ``conditional``: set on instances that read a context.

    **Scores.** :meth:`forward_and_score` and :meth:`inverse_and_score` also carry
    the gradient of a log-density through the map (the pass path-gradient
    estimators need, Vaitl et al. 2024): if :math:`y = m(x)` pushes a density
    :math:`p_x` forward, :math:`\log p_y(y) = \log p_x(x) - \log|\det J_m(x)|` and

    .. math:: \nabla_y \log p_y(y) = J_m(x)^{-\top}
              \big(\nabla_x \log p_x(x) - \nabla_x \log|\det J_m(x)|\big)

    The default evaluates the opposite direction :math:`g = m^{-1}` at the output and
    takes one vector-Jacobian product through it,
    :math:`\nabla_y \log p_y = J_g(y)^\top \nabla_x \log p_x + \nabla_y \log|\det J_g(y)|`,
    the cost of the "drop-in" path gradient; coupling layers override it with the
    triangular solve that needs no pass the other way. The scores returned carry
    no graph (they are constants of the parameters); the points carry the usual one.

    References:
        Vaitl et al. (2024), Fast and Unified Path Gradient Estimators for
        Normalizing Flows.
    """

    cheap_forward: bool = True
    cheap_inverse: bool = True
    conditional: bool = False

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward_and_score(
        self, x: Tensor, score: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``forward`` and the score pushed through it: ``(y, logabsdet, score at y)``.

        Args:
            x: ``(batch, *shape)`` points.
            score: ``(batch, *shape)``, the gradient of a log-density at ``x``.
        """
        y, logabsdet = self(x, context)
        return y, logabsdet, score_through_opposite(self.inverse, y, score, context)

    def inverse_and_score(
        self, y: Tensor, score: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``inverse`` and the score pushed through it: ``(x, logabsdet, score at x)``."""
        x, logabsdet = self.inverse(y, context)
        return x, logabsdet, score_through_opposite(self.forward, x, score, context)


def score_through_opposite(
    opposite: Any, out: Tensor, score: Tensor, context: Tensor | None
) -> Tensor:
    r"""The score at ``out`` of a density pushed by a map whose inverse is ``opposite``.

    .. math:: \nabla_y \log p_y(y) = J_{g}(y)^\top s + \nabla_y \log|\det J_g(y)|,
              \quad g = m^{-1}

    one pass of ``opposite`` at ``out`` and one vector-Jacobian product (no
    parameter gradients). The result is detached.
    """
    with torch.enable_grad():
        point = out.detach().requires_grad_(True)
        back, logabsdet = opposite(point, context)
        (gradient,) = torch.autograd.grad((back * score.detach()).sum() + logabsdet.sum(), point)
    return gradient


class Compose(Transform):
    r"""The composition :math:`f_K \circ \dots \circ f_1`; log-determinants add.

    ``forward`` applies the transforms in the given order, ``inverse`` in reverse.
    """

    def __init__(self, transforms: Iterable[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        self.cheap_forward = all(t.cheap_forward for t in self.transforms)
        self.cheap_inverse = all(t.cheap_inverse for t in self.transforms)
        self.conditional = any(t.conditional for t in self.transforms)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for transform in self.transforms:
            x, logabsdet = transform(x, context)
            total = total + logabsdet
        return x, total

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = y.new_zeros(y.shape[0])
        for transform in reversed(self.transforms):
            y, logabsdet = transform.inverse(y, context)  # type: ignore[operator]
            total = total + logabsdet
        return y, total

    def forward_and_score(
        self, x: Tensor, score: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for transform in self.transforms:
            x, logabsdet, score = transform.forward_and_score(x, score, context)  # type: ignore[operator]
            total = total + logabsdet
        return x, total, score

    def inverse_and_score(
        self, y: Tensor, score: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        total = y.new_zeros(y.shape[0])
        for transform in reversed(self.transforms):
            y, logabsdet, score = transform.inverse_and_score(y, score, context)  # type: ignore[operator]
            total = total + logabsdet
        return y, total, score

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, index: int) -> Transform:
        return self.transforms[index]  # type: ignore[return-value]


class Inverse(Transform):
    r"""The inverse :math:`f^{-1}` of a transform: its two directions swapped.

    Wrapping a masked autoregressive transform in ``Inverse`` gives the inverse
    autoregressive flow (Kingma et al. 2016): sampling becomes the single pass
    and density evaluation the ``D``-pass direction.
    """

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        self.transform = transform
        self.cheap_forward = transform.cheap_inverse
        self.cheap_inverse = transform.cheap_forward
        self.conditional = transform.conditional

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(y, context)

    def forward_and_score(
        self, x: Tensor, score: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.transform.inverse_and_score(x, score, context)

    def inverse_and_score(
        self, y: Tensor, score: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.transform.forward_and_score(y, score, context)


def sum_except_batch(values: Tensor) -> Tensor:
    """Sums a per-element tensor over every dimension but the first: ``(B, ...) -> (B,)``."""
    return values.reshape(values.shape[0], -1).sum(dim=1)


def identity_logabsdet(x: Tensor) -> Tensor:
    """A zero log-determinant of shape ``(batch,)`` in the input's dtype and device."""
    return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
