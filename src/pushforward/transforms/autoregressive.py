"""Masked autoregressive transforms: MAF, autoregressive neural spline flows and (inverted) IAF."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pushforward.nn.made import MADE
from pushforward.transforms.base import Transform
from pushforward.transforms.maps import ElementwiseMap


class MaskedAutoregressive(Transform):
    r"""An element-wise map whose parameters are a MADE output of the earlier features.

    Data to base (``forward``, one MADE pass):

    .. math:: z_i = \tau(x_i; \theta_i), \quad \theta_i = g_i(x_{\{j : o_j < o_i\}}, c),
              \quad \log |\det J| = \sum_i \log |\partial \tau / \partial x_i|

    Base to data (``inverse``) solves for :math:`x` group by group along the order:
    one MADE pass per distinct value of ``order`` (``D`` passes for a permutation).
    Pass ``k`` sees exact values of every feature of rank ``< k``, so the
    parameters of rank ``k`` are exact and the inversion is exact, not iterative.

    With :class:`~pushforward.transforms.maps.AffineMap` this is the masked
    autoregressive flow (MAF); with
    :class:`~pushforward.transforms.maps.RationalQuadraticSplineMap` the
    autoregressive neural spline flow. Wrapped in
    :class:`~pushforward.transforms.base.Inverse` it is the inverse autoregressive
    flow (IAF), whose sampling direction is the single pass.

    References:
        Papamakarios et al. (2017), Masked Autoregressive Flow for Density Estimation;
        Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow;
        Durkan et al. (2019), Neural Spline Flows;
        Germain et al. (2015), MADE: Masked Autoencoder for Distribution Estimation.

    Args:
        features: ``D``.
        map: the element-wise map :math:`\tau`; its ``params_per_feature`` sets the
            MADE output size.
        hidden: MADE hidden widths.
        context: context width (0 for unconditional).
        order: ``(D,)`` integers, the position of each feature in the order
            (ties allowed); a buffer. ``None``: ``0 .. D-1``.
        residual: MADE with masked residual blocks.
        activation: hidden nonlinearity.
    """

    cheap_inverse = False
    # Columns MADE reads per feature (see _conditioner_input).
    inputs_per_feature: int = 1

    def __init__(
        self,
        features: int,
        map: ElementwiseMap,
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        order: Sequence[int] | Tensor | None = None,
        residual: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.features = int(features)
        self.map = map
        self.made = MADE(
            self.features,
            map.params_per_feature,
            hidden=hidden,
            context=context,
            order=order,
            residual=residual,
            activation=activation,
            zero_last=True,
            inputs_per_feature=self.inputs_per_feature,
        )
        self.conditional = context > 0
        self._groups: tuple[Tensor, ...] | None = None
        self._first_rank_constant = False

    @property
    def order(self) -> Tensor:
        """``(D,)``: the position of each feature in the autoregressive order."""
        return self.made.order

    def _conditioner_input(self, x: Tensor) -> Tensor:
        """What MADE sees of the features ``(B, D)``: the values themselves,
        ``(B, D * inputs_per_feature)`` in blocks of ``D`` columns."""
        return x

    def _check(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(
                f"expected input of shape (batch, {self.features}), got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to base in one pass: ``x: (B, D)`` -> ``(z: (B, D), logabsdet: (B,))``."""
        self._check(x)
        params = self.made(self._conditioner_input(x), context)
        z, logabsdet = self.map(x, params)
        return z, logabsdet.sum(dim=1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Base to data, one MADE pass per rank: ``y: (B, D)`` -> ``(x, logabsdet: (B,))``."""
        self._check(y)
        groups = self._rank_groups()
        # Features not yet solved stay at zero: they never feed a solved feature, and
        # zeros (unlike stale values) cannot overflow into NaN through the masked matmul.
        x = torch.zeros_like(y)
        logabsdet = y.new_zeros(y.shape[0])
        with self.made.masks_applied_once():
            for position, index in enumerate(groups):
                if position == 0 and self._first_rank_constant:
                    # The first rank reads no input: its parameters are the last bias.
                    params = self.made.first_rank_params(index, y.shape[0])
                else:
                    params = self.made.forward_subset(self._conditioner_input(x), index, context)
                solved, group_logabsdet = self.map.inverse(y.index_select(1, index), params)
                x = x.index_copy(1, index, solved)
                logabsdet = logabsdet + group_logabsdet.sum(dim=1)
        return x, logabsdet

    def _rank_groups(self) -> tuple[Tensor, ...]:
        """Features sorted by rank, split into groups of equal rank (solved together).

        Computed once (it costs a host sync) and again only after the order buffer is
        replaced by ``load_state_dict`` or moved to another device.
        """
        rank = self.made.rank
        if self._groups is None or self._groups[0].device != rank.device:
            order = torch.argsort(rank, stable=True)
            self._groups = order.split(torch.bincount(rank).tolist())
            # Without a context, the first rank's outputs often read nothing at all
            # (zero rows in the last mask): their parameters are then the last bias
            # and the inversion skips a network pass.
            made = self.made
            rows = made.last.mask.view(made.features, made.params_per_feature, -1)
            self._first_rank_constant = made.context == 0 and not bool(
                rows.index_select(0, self._groups[0]).any()
            )
        return self._groups

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._groups = None
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"features={self.features}, conditional={self.conditional}"
