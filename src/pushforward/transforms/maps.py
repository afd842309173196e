"""Element-wise maps driven by conditioner outputs, shared by coupling and autoregressive layers.

A map holds hyperparameters only (no learnable state). Given raw parameters
``params`` of shape ``x.shape + (params_per_feature,)`` from a conditioner
network, it transforms every element of ``x`` independently and returns the
per-element log-derivative. All-zero raw parameters give the identity map, so a
conditioner whose last layer starts at zero starts the flow at the identity.
"""

from __future__ import annotations

from torch import Tensor, nn

from pushforward.transforms.functional.affine import (
    LOG_SCALE_BOUND,
    affine_forward,
    affine_inverse,
)
from pushforward.transforms.functional.circular_spline import circular_rational_quadratic_spline
from pushforward.transforms.functional.interval_spline import interval_rational_quadratic_spline
from pushforward.transforms.functional.spline import packed_rational_quadratic_spline
from pushforward.transforms.functional.spline_parameterization import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
    check_parameterization,
)


def check_spline_options(
    bins: int,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
    parameterization: str,
) -> str:
    """The options every spline map shares, checked; returns the parameterisation.

    Raises:
        ValueError: fewer than one bin, a minimum derivative outside ``(0, 1)`` (0 is
            allowed by ``"minimum"``), an unknown parameterisation, or minimum bin sizes
            given to ``"soft-clip"``, which has none.
    """
    if bins < 1:
        raise ValueError(f"a spline needs at least one bin, got bins={bins}")
    check_parameterization(parameterization)
    # log(1/s) bounds the soft clip, so s = 0 is allowed by "minimum" only.
    if not (0 < min_derivative < 1 or (min_derivative == 0 and parameterization == "minimum")):
        raise ValueError(f"min_derivative must lie in (0, 1), got {min_derivative}")
    if parameterization == "soft-clip" and (
        min_bin_width != DEFAULT_MIN_BIN_WIDTH or min_bin_height != DEFAULT_MIN_BIN_HEIGHT
    ):
        raise ValueError(
            "the 'soft-clip' spline parameterization has no minimum bin width or height; "
            "leave min_bin_width and min_bin_height unset or use 'minimum'"
        )
    return parameterization


class ElementwiseMap(nn.Module):
    """Base class: ``forward(x, params)``, ``inverse(y, params)`` return ``(out, log|dout/din|)``.

    ``params`` has shape ``x.shape + (params_per_feature,)``.
    """

    params_per_feature: int
    # Whether log|dout/din| varies with the input (not only with the parameters): an
    # affine map's does not, so a score pushed through it skips that derivative.
    logabsdet_depends_on_input: bool = True

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class AffineMap(ElementwiseMap):
    r"""The affine map :math:`y = x e^{s} + t`; raw parameters are ``(t, s~)`` per feature.

    See :func:`pushforward.transforms.functional.affine.affine_forward`.
    """

    params_per_feature = 2
    logabsdet_depends_on_input = False

    def __init__(self, log_scale_bound: float = LOG_SCALE_BOUND) -> None:
        super().__init__()
        self.log_scale_bound = float(log_scale_bound)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return affine_forward(x, params[..., 0], params[..., 1], self.log_scale_bound)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return affine_inverse(y, params[..., 0], params[..., 1], self.log_scale_bound)

    def extra_repr(self) -> str:
        return f"log_scale_bound={self.log_scale_bound}"


class RationalQuadraticSplineMap(ElementwiseMap):
    r"""A monotonic rational-quadratic spline on ``[-B, B]`` with linear (identity) tails.

    Raw parameters per feature: ``K`` widths, ``K`` heights and ``K - 1`` interior
    knot derivatives (the two boundary derivatives are 1 so the tails join
    smoothly). See
    :func:`pushforward.transforms.functional.spline.rational_quadratic_spline`.

    The parameterisation says how raw values become knots
    (:func:`pushforward.transforms.functional.spline_parameterization.spline_knots`):
    ``"minimum"`` adds minimum bin sizes to a softmax and a minimum derivative to a
    softplus; ``"soft-clip"`` soft-clips the raw values before a softmax and an
    exponential, as zuko does, and has no minimum bin size. Both map all-zero raw
    values to the identity.

    References:
        Durkan et al. (2019), Neural Spline Flows; Rozet et al. (2022), Zuko:
        Normalizing flows in PyTorch (the soft-clipped parameterisation).

    Args:
        bins: number of bins :math:`K`.
        tail_bound: :math:`B`; the identity outside ``[-B, B]``.
        min_bin_width, min_bin_height: smallest bin sizes as fractions of :math:`2B`
            (``"minimum"`` only).
        min_derivative: smallest knot derivative (for ``"soft-clip"``, the bound
            :math:`s` with derivatives in :math:`(s, 1/s)`).
        parameterization: ``"minimum"`` or ``"soft-clip"``.
    """

    def __init__(
        self,
        bins: int = 8,
        tail_bound: float = 5.0,
        min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
        min_derivative: float = DEFAULT_MIN_DERIVATIVE,
        parameterization: str = "minimum",
    ) -> None:
        super().__init__()
        if tail_bound <= 0:
            raise ValueError(f"tail_bound must be positive, got {tail_bound}")
        self.parameterization = check_spline_options(
            bins, min_bin_width, min_bin_height, min_derivative, parameterization
        )
        self.bins = int(bins)
        self.tail_bound = float(tail_bound)
        self.min_bin_width = float(min_bin_width)
        self.min_bin_height = float(min_bin_height)
        self.min_derivative = float(min_derivative)
        self.params_per_feature = 3 * self.bins - 1

    def _spline(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        if params.shape[-1] != self.params_per_feature:
            raise ValueError(
                f"a {self.bins}-bin spline takes {self.params_per_feature} raw parameters per "
                f"feature, got {params.shape[-1]}"
            )
        # The packed kernel reads widths, heights and derivatives from one tensor:
        # slicing them apart first would cost strided copies.
        return packed_rational_quadratic_spline(
            x,
            params,
            inverse=inverse,
            tail_bound=self.tail_bound,
            min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative,
            parameterization=self.parameterization,
        )

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return self._spline(x, params, inverse=False)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._spline(y, params, inverse=True)

    def extra_repr(self) -> str:
        return (
            f"bins={self.bins}, tail_bound={self.tail_bound}, "
            f"parameterization={self.parameterization!r}"
        )


class CircularRationalQuadraticSplineMap(ElementwiseMap):
    r"""A diffeomorphism of the circle :math:`[-\pi, \pi)`: a circular rational-quadratic
    spline followed by a rotation (Rezende et al. 2020).

    .. math:: y = \operatorname{wrap}\bigl(s(x) + \theta\bigr)

    Raw parameters per feature: ``K`` widths, ``K`` heights, ``K`` knot derivatives (the
    last knot shares the first one's, so the map is :math:`C^1` across the seam) and,
    with ``rotation``, the angle :math:`\theta`. Inputs may be any reals (they are
    wrapped); outputs lie in :math:`[-\pi, \pi)`. See
    :func:`pushforward.transforms.functional.circular_spline.circular_rational_quadratic_spline`.

    References:
        Rezende et al. (2020), Normalizing Flows on Tori and Spheres;
        Durkan et al. (2019), Neural Spline Flows.

    Args:
        bins: number of bins :math:`K`.
        rotation: follow the spline by a learned rotation (without it the spline fixes
            the point :math:`\pm\pi`).
        min_bin_width, min_bin_height, min_derivative, parameterization: as in
            :class:`RationalQuadraticSplineMap`.
    """

    def __init__(
        self,
        bins: int = 8,
        rotation: bool = True,
        min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
        min_derivative: float = DEFAULT_MIN_DERIVATIVE,
        parameterization: str = "minimum",
    ) -> None:
        super().__init__()
        self.parameterization = check_spline_options(
            bins, min_bin_width, min_bin_height, min_derivative, parameterization
        )
        self.bins = int(bins)
        self.rotation = bool(rotation)
        self.min_bin_width = float(min_bin_width)
        self.min_bin_height = float(min_bin_height)
        self.min_derivative = float(min_derivative)
        self.params_per_feature = 3 * self.bins + int(self.rotation)

    def _spline(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        if params.shape[-1] != self.params_per_feature:
            raise ValueError(
                f"a {self.bins}-bin circular spline takes {self.params_per_feature} raw "
                f"parameters per feature, got {params.shape[-1]}"
            )
        shift = params[..., -1] if self.rotation else None
        return circular_rational_quadratic_spline(
            x,
            params[..., : 3 * self.bins],
            shift,
            inverse=inverse,
            min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative,
            parameterization=self.parameterization,
        )

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return self._spline(x, params, inverse=False)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._spline(y, params, inverse=True)

    def extra_repr(self) -> str:
        return (
            f"bins={self.bins}, rotation={self.rotation}, "
            f"parameterization={self.parameterization!r}"
        )


class IntervalRationalQuadraticSplineMap(ElementwiseMap):
    r"""A monotonic rational-quadratic spline of :math:`[-B, B]` onto itself, with learned
    derivatives at both ends (no tails).

    Raw parameters per feature: ``K`` widths, ``K`` heights and ``K + 1`` knot
    derivatives. The map is defined on the interval only: inputs are clamped into it
    first, against rounding. See
    :func:`pushforward.transforms.functional.interval_spline.interval_rational_quadratic_spline`.

    References:
        Durkan et al. (2019), Neural Spline Flows;
        Rezende et al. (2020), Normalizing Flows on Tori and Spheres.

    Args:
        bins: number of bins :math:`K`.
        bound: :math:`B`.
        min_bin_width, min_bin_height, min_derivative, parameterization: as in
            :class:`RationalQuadraticSplineMap`.
    """

    def __init__(
        self,
        bins: int = 8,
        bound: float = 1.0,
        min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
        min_derivative: float = DEFAULT_MIN_DERIVATIVE,
        parameterization: str = "minimum",
    ) -> None:
        super().__init__()
        if bound <= 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.parameterization = check_spline_options(
            bins, min_bin_width, min_bin_height, min_derivative, parameterization
        )
        self.bins = int(bins)
        self.bound = float(bound)
        self.min_bin_width = float(min_bin_width)
        self.min_bin_height = float(min_bin_height)
        self.min_derivative = float(min_derivative)
        self.params_per_feature = 3 * self.bins + 1

    def _spline(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        if params.shape[-1] != self.params_per_feature:
            raise ValueError(
                f"a {self.bins}-bin interval spline takes {self.params_per_feature} raw "
                f"parameters per feature, got {params.shape[-1]}"
            )
        return interval_rational_quadratic_spline(
            x.clamp(-self.bound, self.bound),
            params,
            bound=self.bound,
            inverse=inverse,
            min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative,
            parameterization=self.parameterization,
        )

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return self._spline(x, params, inverse=False)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._spline(y, params, inverse=True)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, bound={self.bound}, parameterization={self.parameterization!r}"
