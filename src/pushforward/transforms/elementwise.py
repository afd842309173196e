"""Element-wise transforms with their own parameters (no conditioner).

Each layer applies one scalar bijection to every element of the input, so its
Jacobian is diagonal and the log-determinant is the sum of per-element
log-derivatives over all non-batch dimensions. Contexts are accepted and ignored,
so these layers drop into conditional flows unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pushforward.transforms.base import Transform, sum_except_batch
from pushforward.transforms.functional.affine import (
    LOG_SCALE_BOUND,
    affine_forward,
    affine_inverse,
)
from pushforward.transforms.functional.sigmoid import logit, sigmoid_forward
from pushforward.transforms.functional.spline_parameterization import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
)
from pushforward.transforms.maps import RationalQuadraticSplineMap


def _event_shape(features: int | Sequence[int]) -> tuple[int, ...]:
    shape = (int(features),) if isinstance(features, int) else tuple(int(f) for f in features)
    if not shape or any(f < 1 for f in shape):
        raise ValueError(f"features must be a positive size or shape, got {features}")
    return shape


class ElementwiseAffine(Transform):
    r"""A learnable per-feature affine map :math:`y = x e^{s} + t`.

    The log-scale is soft-clamped, :math:`s = b \tanh(\tilde s / b)`, and both
    parameters start at zero, so the layer starts as the identity. The
    log-determinant is :math:`\sum_i s_i`, the same for every sample.

    References:
        Dinh et al. (2017), Density estimation using Real NVP (the affine map);
        Kingma & Dhariwal (2018), Glow (per-channel learnable scale and shift).

    Args:
        features: the event size, or the event shape (e.g. ``(C, 1, 1)`` for a
            per-channel map on images); parameters broadcast against the event.
        log_scale_bound: the soft bound :math:`b` on the log-scale.

    Shapes:
        ``x``: ``(batch, *event)``; log-determinant ``(batch,)``.
    """

    def __init__(
        self, features: int | Sequence[int], log_scale_bound: float = LOG_SCALE_BOUND
    ) -> None:
        super().__init__()
        shape = _event_shape(features)
        self.log_scale_bound = float(log_scale_bound)
        self.shift = nn.Parameter(torch.zeros(shape))
        self.unconstrained_scale = nn.Parameter(torch.zeros(shape))

    def _logabsdet(self, x: Tensor, log_scale: Tensor) -> Tensor:
        return sum_except_batch(log_scale.expand(x.shape))

    def _parameters_like(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.shift.to(x.dtype), self.unconstrained_scale.to(x.dtype)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, log_scale = affine_forward(x, *self._parameters_like(x), self.log_scale_bound)
        return y, self._logabsdet(x, log_scale)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, log_scale = affine_inverse(y, *self._parameters_like(y), self.log_scale_bound)
        return x, self._logabsdet(y, log_scale)

    def extra_repr(self) -> str:
        return f"features={tuple(self.shift.shape)}, log_scale_bound={self.log_scale_bound}"


class ElementwiseSpline(Transform):
    r"""A learnable monotonic rational-quadratic spline per feature, identity outside ``[-B, B]``.

    Every feature has its own ``3K - 1`` raw parameters (``K`` widths, ``K``
    heights, ``K - 1`` interior derivatives); all zero, as initialised, gives the
    identity map. See
    :func:`pushforward.transforms.functional.spline.rational_quadratic_spline`.

    References:
        Durkan et al. (2019), Neural Spline Flows.

    Args:
        features: the event size or shape.
        bins: number of bins :math:`K`.
        tail_bound: :math:`B`.

    Shapes:
        ``x``: ``(batch, *event)``; log-determinant ``(batch,)``.
    """

    def __init__(
        self,
        features: int | Sequence[int],
        bins: int = 8,
        tail_bound: float = 5.0,
        min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
        min_derivative: float = DEFAULT_MIN_DERIVATIVE,
    ) -> None:
        super().__init__()
        # The map validates the options and holds them; this layer adds the parameters.
        self.map = RationalQuadraticSplineMap(
            bins, tail_bound, min_bin_width, min_bin_height, min_derivative
        )
        self.bins = self.map.bins
        self.tail_bound = self.map.tail_bound
        self.params = nn.Parameter(
            torch.zeros(*_event_shape(features), self.map.params_per_feature)
        )

    def _spline(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        params = self.params.to(x.dtype).expand(*x.shape, self.params.shape[-1])
        y, logabsdet = self.map.inverse(x, params) if inverse else self.map(x, params)
        return y, sum_except_batch(logabsdet)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(x, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(y, inverse=True)

    def extra_repr(self) -> str:
        features = tuple(self.params.shape[:-1])
        return f"features={features}, bins={self.bins}, tail_bound={self.tail_bound}"


class Sigmoid(Transform):
    r"""The fixed map :math:`y = (\sigma(x) - \alpha)/(1 - 2\alpha)` from the reals to ``[0, 1]``.

    ``forward`` squashes (data on the real line, base on the unit box); the inverse
    is the logit. See :func:`pushforward.transforms.functional.sigmoid.sigmoid_forward`.

    References:
        Dinh et al. (2017), Density estimation using Real NVP.

    Args:
        alpha: squashing constant in ``[0, 0.5)``; 0 gives the plain sigmoid.
    """

    def __init__(self, alpha: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must lie in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, logabsdet = sigmoid_forward(x, self.alpha)
        return y, sum_except_batch(logabsdet)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, logabsdet = logit(y, self.alpha)
        return x, sum_except_batch(logabsdet)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Logit(Transform):
    r"""The fixed map :math:`y = \mathrm{logit}(\alpha + (1 - 2\alpha)x)` from ``[0, 1]`` to R.

    RealNVP's preprocessing of bounded data (pixels in ``[0, 1]``): ``forward``
    sends data to the real line, where the rest of the flow works; ``alpha > 0``
    keeps values at exactly 0 or 1 finite. The inverse is :class:`Sigmoid`'s forward.

    References:
        Dinh et al. (2017), Density estimation using Real NVP, section 4.1.

    Args:
        alpha: squashing constant in ``[0, 0.5)``; RealNVP uses 0.05 on images.
    """

    def __init__(self, alpha: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must lie in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, logabsdet = logit(x, self.alpha)
        return y, sum_except_batch(logabsdet)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, logabsdet = sigmoid_forward(y, self.alpha)
        return x, sum_except_batch(logabsdet)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
