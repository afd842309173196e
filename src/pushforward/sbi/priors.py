"""Priors of simulation-based inference: a box-uniform or a Gaussian, read from JSON.

A prior states its support, so a posterior estimator trained with it keeps every
sample inside (the logit of the box is part of the model's preprocessing:
:class:`~pushforward.transforms.box_logit.BoxLogitStandardize`), and so a model
trained without it can be checked for leakage (:func:`~pushforward.sbi.posterior.leakage`).

The JSON forms, one object per file::

    {"type": "box_uniform", "low": [-1, -1], "high": [1, 1]}
    {"type": "gaussian", "mean": [0, 0], "std": [1, 2]}
    {"type": "gaussian", "mean": [0, 0], "cov": [[1, 0.5], [0.5, 2]]}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

PRIOR_TYPES = ("box_uniform", "gaussian")


class Prior:
    r"""A prior :math:`p(\theta)` on :math:`\mathbb{R}^d`: density, exact samples, support.

    Values are float64 on the CPU; ``log_prob`` follows its input's dtype and device.

    Attributes:
        features: the dimension :math:`d`.
        low, high: ``(d,)`` bounds of the support where it is a box, else ``None``.
    """

    features: int
    low: Tensor | None = None
    high: Tensor | None = None

    def log_prob(self, theta: Tensor) -> Tensor:
        """:math:`\\log p(\\theta)` of ``theta: (batch, d)``, ``-inf`` outside the support."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact draws ``(n, d)`` in float64."""
        raise NotImplementedError

    def contains(self, theta: Tensor) -> Tensor:
        """``(batch,)`` booleans: which rows lie in the support (the closed box)."""
        if self.low is None or self.high is None:
            return torch.isfinite(theta).all(dim=-1)
        low = self.low.to(theta)
        high = self.high.to(theta)
        return ((theta >= low) & (theta <= high)).all(dim=-1)

    def description(self) -> dict[str, Any]:
        """The JSON object that :func:`prior_from_description` reads back."""
        raise NotImplementedError


class BoxUniformPrior(Prior):
    r"""The uniform prior on the box :math:`\prod_i [a_i, b_i]`.

    .. math:: \log p(\theta) = -\sum_i \log(b_i - a_i) \quad (a \le \theta \le b)

    Args:
        low: ``(d,)`` lower bounds.
        high: ``(d,)`` upper bounds, above ``low`` everywhere.

    Example:
        >>> prior = BoxUniformPrior([-1.0, 0.0], [1.0, 2.0])
        >>> prior.log_prob(torch.tensor([[0.0, 1.0], [2.0, 1.0]], dtype=torch.float64))
        tensor([-1.3863,    -inf], dtype=torch.float64)
    """

    def __init__(self, low: Sequence[float] | Tensor, high: Sequence[float] | Tensor) -> None:
        low_t = _vector("low", low)
        high_t = _vector("high", high)
        if low_t.shape != high_t.shape:
            raise ValueError(
                f"the box prior's low has {low_t.numel()} values and high has {high_t.numel()}"
            )
        if not bool((high_t > low_t).all()):
            bad = int(torch.nonzero(high_t <= low_t)[0])
            raise ValueError(f"the box prior needs high > low; dimension {bad} has not")
        self.low, self.high = low_t, high_t
        self.features = int(low_t.numel())

    def log_prob(self, theta: Tensor) -> Tensor:
        assert self.low is not None and self.high is not None
        volume = torch.log(self.high - self.low).sum().to(theta)
        inside = self.contains(theta)
        return torch.where(inside, -volume, torch.full_like(volume, -math.inf))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        assert self.low is not None and self.high is not None
        u = torch.rand(n, self.features, generator=generator, dtype=torch.float64)
        return self.low + (self.high - self.low) * u

    def description(self) -> dict[str, Any]:
        assert self.low is not None and self.high is not None
        return {"type": "box_uniform", "low": self.low.tolist(), "high": self.high.tolist()}


class GaussianPrior(Prior):
    r"""The Gaussian prior :math:`\mathcal{N}(\mu, \Sigma)`, with a full or diagonal covariance.

    .. math:: \log p(\theta) = -\tfrac12 (\theta - \mu)^\top \Sigma^{-1} (\theta - \mu)
              - \tfrac12 \log\det(2\pi\Sigma)

    Args:
        mean: ``(d,)``.
        cov: ``(d, d)`` symmetric positive definite, or ``None`` with ``std``.
        std: ``(d,)`` positive standard deviations (a diagonal covariance).
    """

    def __init__(
        self,
        mean: Sequence[float] | Tensor,
        cov: Sequence[Sequence[float]] | Tensor | None = None,
        std: Sequence[float] | Tensor | None = None,
    ) -> None:
        mean_t = _vector("mean", mean)
        d = int(mean_t.numel())
        if (cov is None) == (std is None):
            raise ValueError("a Gaussian prior needs exactly one of 'cov' and 'std'")
        if std is not None:
            std_t = _vector("std", std)
            if std_t.shape != mean_t.shape or not bool((std_t > 0).all()):
                raise ValueError(f"the Gaussian prior's std must be {d} positive values")
            cov_t = torch.diag(std_t**2)
        else:
            cov_t = torch.as_tensor(cov, dtype=torch.float64)
            if cov_t.shape != (d, d) or not bool(torch.isfinite(cov_t).all()):
                raise ValueError(f"the Gaussian prior's cov must be a finite {d}x{d} matrix")
            if not bool(torch.allclose(cov_t, cov_t.T)):
                raise ValueError("the Gaussian prior's cov must be symmetric")
        scale, info = torch.linalg.cholesky_ex(cov_t)
        if int(info) != 0:
            raise ValueError("the Gaussian prior's cov must be positive definite")
        self.mean, self.cov, self.scale = mean_t, cov_t, scale
        self.features = d

    def log_prob(self, theta: Tensor) -> Tensor:
        scale = self.scale.to(theta)
        centred = (theta - self.mean.to(theta)).unsqueeze(-1)
        white = torch.linalg.solve_triangular(scale, centred, upper=False).squeeze(-1)
        log_det = 2 * torch.log(torch.diagonal(scale)).sum()
        return -0.5 * (white**2).sum(-1) - 0.5 * (log_det + self.features * math.log(2 * math.pi))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(n, self.features, generator=generator, dtype=torch.float64)
        return self.mean + noise @ self.scale.T

    def description(self) -> dict[str, Any]:
        return {"type": "gaussian", "mean": self.mean.tolist(), "cov": self.cov.tolist()}


def prior_from_description(description: Any, where: str = "the prior") -> Prior:
    """The prior a JSON object describes (see the module docstring for the forms).

    Raises:
        ValueError: naming ``where`` and what is wrong with the object.
    """
    if not isinstance(description, dict):
        raise ValueError(f"{where} must be a JSON object with a 'type'")
    kind = description.get("type")
    try:
        if kind == "box_uniform":
            _keys(description, {"type", "low", "high"}, {"type", "low", "high"})
            return BoxUniformPrior(description["low"], description["high"])
        if kind == "gaussian":
            _keys(description, {"type", "mean"}, {"type", "mean", "cov", "std"})
            return GaussianPrior(
                description["mean"], description.get("cov"), description.get("std")
            )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None
    raise ValueError(f"{where} has type {kind!r}; known types: {', '.join(PRIOR_TYPES)}")


def load_prior(path: str | os.PathLike[str]) -> Prior:
    """The prior a JSON file describes; a file that does not parse is an error naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            description = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"prior file '{path}' does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"prior file '{path}' is not valid JSON: {error}") from None
    return prior_from_description(description, f"prior file '{path}'")


def check_theta_in_prior(theta: Tensor, prior: Prior, where: str = "theta") -> None:
    """Refuses rows of ``theta`` of the wrong size or outside the prior's support.

    Raises:
        ValueError: naming the dimensions, or the count of rows outside and the first one.
    """
    if theta.ndim != 2 or theta.shape[1] != prior.features:
        got = theta.shape[-1] if theta.ndim else 0
        raise ValueError(f"the prior has {prior.features} dimensions but {where} has {got}")
    outside = ~prior.contains(theta)
    if bool(outside.any()):
        first = int(torch.nonzero(outside)[0])
        row = ", ".join(f"{v:.6g}" for v in theta[first].tolist())
        raise ValueError(
            f"{int(outside.sum())} rows of {where} lie outside the prior's support "
            f"(the first is row {first}: [{row}])"
        )


def _vector(name: str, values: Any) -> Tensor:
    try:
        tensor = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"'{name}' must be a list of numbers") from None
    if tensor.ndim != 1 or tensor.numel() == 0:
        raise ValueError(f"'{name}' must be a non-empty list of numbers")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"'{name}' must be finite")
    return tensor.clone()


def _keys(description: dict[str, Any], required: set[str], allowed: set[str]) -> None:
    missing = sorted(required - set(description))
    if missing:
        raise ValueError(f"missing key {missing[0]!r}")
    unknown = sorted(set(description) - allowed)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
