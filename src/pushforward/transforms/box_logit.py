"""The logit of a box, then a standardisation: how a posterior stays inside a bounded prior.

A posterior estimator trained on parameters drawn from a box-uniform prior learns
the density of :math:`y = (\\operatorname{logit}(u) - \\mu)/\\sigma`, with
:math:`u = (\\theta - a)/(b - a)` in the unit box, instead of :math:`\\theta` itself.
Every sample mapped back lies in the box, and ``log_prob`` is the density on the
original space through the map's log-determinant (the "transformed space" training
of the sbi package, here part of the model's preprocessing).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pushforward.transforms.base import Transform
from pushforward.transforms.standardize import fit_standardization


class BoxLogitStandardize(Transform):
    r"""Box to unbounded units: :math:`y = (\operatorname{logit}((x - a)/(b - a)) - \mu)/\sigma`.

    .. math::
        \log\lvert\det \partial y/\partial x\rvert = \sum_i \Big[-\log(b_i - a_i)
        - \log u_i - \log(1 - u_i) - \log \sigma_i\Big], \qquad u = \frac{x - a}{b - a}

    Points outside the closed box have density zero: their log-determinant is
    :math:`-\infty` (so ``log_prob`` is ``-inf`` there, never NaN), and :math:`u` is
    clamped to :math:`[\epsilon, 1 - \epsilon]` (the dtype's machine epsilon) before the
    logit so that points on a face stay finite. The inverse maps every real ``y`` into
    the closed box (clamped against rounding), so samples never leave it.

    ``low``, ``high``, ``mean``, ``std`` are buffers, saved with the model.

    References:
        Papamakarios et al. (2021), Normalizing Flows for Probabilistic Modeling and
        Inference (section 5: bounded domains through an elementwise logit).

    Args:
        low, high: ``(d,)`` bounds of the box, ``high > low``.
        mean, std: ``(d,)`` statistics of the logit of the training rows.

    Example:
        >>> low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 5.0])
        >>> x = low + (high - low) * torch.rand(100, 2)
        >>> box = BoxLogitStandardize.fitted(x, low, high)
        >>> y, _ = box(x)
        >>> back, _ = box.inverse(y)
        >>> bool(torch.allclose(back, x, atol=1e-5))
        True
    """

    low: Tensor
    high: Tensor
    mean: Tensor
    std: Tensor

    deterministic = True
    kind = "box-logit-standardize"

    def __init__(
        self,
        low: Tensor | np.ndarray,
        high: Tensor | np.ndarray,
        mean: Tensor | np.ndarray,
        std: Tensor | np.ndarray,
    ) -> None:
        super().__init__()
        parts = [torch.as_tensor(v, dtype=torch.float64) for v in (low, high, mean, std)]
        shape = parts[0].shape
        if any(p.shape != shape for p in parts) or len(shape) != 1:
            raise ValueError("low, high, mean and std of a box logit must all be (features,)")
        low_t, high_t, mean_t, std_t = parts
        if not bool((high_t > low_t).all()):
            raise ValueError("the box needs high > low in every dimension")
        if not bool((torch.isfinite(std_t) & (std_t > 0) & torch.isfinite(mean_t)).all()):
            raise ValueError("the logit standardisation needs a finite mean and positive std")
        for name, value in zip(("low", "high", "mean", "std"), parts, strict=True):
            self.register_buffer(name, value.clone())

    @classmethod
    def fitted(
        cls, data: Tensor | np.ndarray, low: Tensor | np.ndarray, high: Tensor | np.ndarray
    ) -> BoxLogitStandardize:
        """The map whose standardisation is fitted to the logit of ``data: (rows, d)``.

        Raises:
            ValueError: for rows outside the closed box (the count and the first one).
        """
        values = torch.as_tensor(data, dtype=torch.float64)
        low_t = torch.as_tensor(low, dtype=torch.float64)
        high_t = torch.as_tensor(high, dtype=torch.float64)
        outside = ((values < low_t) | (values > high_t)).any(dim=-1)
        if bool(outside.any()):
            first = int(torch.nonzero(outside)[0])
            raise ValueError(
                f"{int(outside.sum())} rows lie outside the box (the first is row {first})"
            )
        placeholder = cls(low_t, high_t, torch.zeros_like(low_t), torch.ones_like(low_t))
        mean, std = fit_standardization(placeholder._logit(values)[0])
        return cls(low_t, high_t, mean, std)

    def description(self) -> dict[str, Any]:
        """What :meth:`placeholder` needs to rebuild this map before its buffers are loaded."""
        return {"kind": self.kind, "shape": list(self.mean.shape)}

    @classmethod
    def placeholder(cls, description: dict[str, Any], dtype: torch.dtype) -> BoxLogitStandardize:
        """The unit box with no standardisation, of the described shape, to load into."""
        shape = tuple(int(d) for d in description["shape"])
        zeros, ones = torch.zeros(shape, dtype=dtype), torch.ones(shape, dtype=dtype)
        return cls(zeros, ones, zeros, ones)

    def _logit(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``logit(u)``, ``log u + log(1 - u)`` and the rows outside the closed box."""
        low, high = self.low.to(x), self.high.to(x)
        outside = ((x < low) | (x > high)).any(dim=-1)
        eps = torch.finfo(x.dtype).eps
        u = ((x - low) / (high - low)).clamp(eps, 1 - eps)
        return torch.log(u) - torch.log1p(-u), torch.log(u) + torch.log1p(-u), outside

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logit, log_u_one_minus_u, outside = self._logit(x)
        std = self.std.to(x)
        y = (logit - self.mean.to(x)) / std
        width = torch.log(self.high.to(x) - self.low.to(x))
        logabsdet = -(width + log_u_one_minus_u + torch.log(std)).sum(dim=-1)
        return y, torch.where(outside, torch.full_like(logabsdet, -math.inf), logabsdet)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        low, high = self.low.to(y), self.high.to(y)
        std = self.std.to(y)
        s = y * std + self.mean.to(y)
        x = (low + (high - low) * torch.sigmoid(s)).clamp(low, high)
        # log u + log(1 - u) from s itself: finite where sigmoid(s) rounds to 0 or 1.
        log_u_one_minus_u = F.logsigmoid(s) + F.logsigmoid(-s)
        logabsdet = (torch.log(high - low) + log_u_one_minus_u + torch.log(std)).sum(dim=-1)
        return x, logabsdet
