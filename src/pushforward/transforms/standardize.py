"""Standardisation as a bijection that is part of the model, not a side table.

A model holds it in its :class:`~pushforward.transforms.preprocessing.Preprocessing`:
the model learns :math:`z = (x - \\mu)/\\sigma`, and the log-determinant is the
change-of-units correction, so ``log_prob`` and ``sample`` speak the data's
original units.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pushforward.transforms.base import Transform


class Standardize(Transform):
    r"""The affine map to standardised units, :math:`y = (x - \mu) / \sigma`.

    .. math::
        y = \frac{x - \mu}{\sigma}, \qquad
        \log\lvert\det \partial y/\partial x\rvert = -\sum_{i} \log \sigma_i

    where the sum runs over every event element (``mean``/``std`` broadcast to
    the event shape, so per-feature ``(D,)`` or per-channel ``(C, 1, 1)``
    statistics both work). ``mean`` and ``std`` are buffers: they move with the
    module, are saved in its ``state_dict`` and are not trained. Held as a model's
    preprocessing, it turns a model fitted to standardised data into one on the
    original scale:

    .. math:: \log p_X(x) = \log p_Y\big((x - \mu)/\sigma\big) - \sum_i \log \sigma_i

    References:
        Papamakarios et al. (2021), Normalizing Flows for Probabilistic Modeling
        and Inference (change of variables under composition).

    Args:
        mean: :math:`\mu`, shape broadcastable to the event shape.
        std: :math:`\sigma`, same shape as ``mean``, every entry positive and finite.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Tensor | np.ndarray, std: Tensor | np.ndarray) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean)
        std_t = torch.as_tensor(std)
        if not (mean_t.is_floating_point() and std_t.is_floating_point()):
            mean_t, std_t = mean_t.double(), std_t.double()
        if mean_t.shape != std_t.shape:
            raise ValueError(
                f"mean has shape {tuple(mean_t.shape)} but std has shape {tuple(std_t.shape)}"
            )
        if not bool(torch.isfinite(mean_t).all()):
            raise ValueError("the standardisation mean must be finite")
        if not bool((torch.isfinite(std_t) & (std_t > 0)).all()):
            raise ValueError("the standardisation std must be positive and finite")
        self.register_buffer("mean", mean_t.clone())
        self.register_buffer("std", std_t.clone())

    # A deterministic map: the training engine may apply it to a data set once.
    deterministic = True
    kind = "standardize"

    @classmethod
    def identity(
        cls, event_shape: tuple[int, ...], dtype: torch.dtype = torch.float64
    ) -> Standardize:
        """A placeholder (mean 0, std 1) of ``event_shape``, to be filled by ``load_state_dict``."""
        return cls(torch.zeros(event_shape, dtype=dtype), torch.ones(event_shape, dtype=dtype))

    @classmethod
    def fitted(cls, data: Tensor | np.ndarray) -> Standardize:
        """The standardisation fitted to ``data: (rows, *event_shape)``.

        See :func:`fit_standardization` for the statistics.
        """
        return cls(*fit_standardization(data))

    def description(self) -> dict[str, Any]:
        """What :meth:`placeholder` needs to rebuild this map before its buffers are loaded."""
        return {"kind": self.kind, "shape": list(self.mean.shape)}

    @classmethod
    def placeholder(cls, description: dict[str, Any], dtype: torch.dtype) -> Standardize:
        """An identity map of the described shape, to load saved statistics into."""
        return cls.identity(tuple(int(d) for d in description["shape"]), dtype)

    def _logabsdet(self, x: Tensor) -> Tensor:
        log_std = torch.log(self.std.to(x)).expand(x.shape[1:])
        return (-log_std.sum()).expand(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y = (x - self.mean.to(x)) / self.std.to(x)
        return y, self._logabsdet(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = y * self.std.to(y) + self.mean.to(y)
        return x, -self._logabsdet(y)


def fit_standardization(data: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    r"""Per-element mean and standard deviation over the rows of ``data``.

    .. math:: \mu = \frac1n \sum_j x_j, \qquad
              \sigma = \sqrt{\frac1n \sum_j (x_j - \mu)^2}

    An element with zero spread (a constant column, or a single row) would make
    :math:`1/\sigma` infinite; its :math:`\sigma` is set to 1 (a pure shift) and
    a ``UserWarning`` names it. Spread below 1e-12 of the mean's magnitude counts
    as zero: those values differ only by rounding.

    Args:
        data: ``(n, *event_shape)`` finite values (numpy arrays are read as float64).

    Returns:
        ``mean`` and ``std``, each ``event_shape``, in ``data``'s floating dtype
        (float64 for numpy or integer input).

    Raises:
        ValueError: for no rows or non-finite values.
    """
    values = torch.as_tensor(data)
    if not values.is_floating_point():
        values = values.double()
    if values.ndim < 2 or values.shape[0] == 0:
        raise ValueError(
            f"cannot fit a standardisation to data of shape {tuple(values.shape)}; "
            "expected (rows, *event_shape) with at least one row"
        )
    if not bool(torch.isfinite(values).all()):
        raise ValueError("cannot fit a standardisation to data holding NaN or Inf")
    mean = values.mean(dim=0)
    std = values.std(dim=0, correction=0)
    constant = (std == 0) | (std < 1e-12 * mean.abs())
    if bool(constant.any()):
        where = torch.nonzero(constant.reshape(-1)).reshape(-1).tolist()
        shown = ", ".join(str(i) for i in where[:10]) + (", ..." if len(where) > 10 else "")
        warnings.warn(
            f"{len(where)} constant feature{'s' * (len(where) > 1)} (flat index {shown}): "
            "zero spread, so the scale is set to 1",
            UserWarning,
            stacklevel=2,
        )
        std = torch.where(constant, torch.ones_like(std), std)
    return mean, std
