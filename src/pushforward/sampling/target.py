"""Unnormalized target densities: what a sampler is fitted to instead of data."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pushforward.geometry.box import box_contains


class Target:
    r"""An unnormalized log-density :math:`\log \tilde p(x)` on :math:`\mathbb{R}^d` or a box.

    :math:`p(x) = \tilde p(x) / Z`. A flow :math:`q` is fitted to it (reverse KL,
    path gradients, FAB) and importance weights :math:`\log w = \log \tilde p - \log q`
    estimate :math:`\log Z`.

    Subclasses set ``features`` and implement :meth:`log_prob`; where they know
    them they set ``log_z`` (exact), implement :meth:`sample` (exact samples, for
    forward metrics; ``has_sample`` True), give ``low``/``high`` (the support, a
    box, where it is not all of :math:`\mathbb{R}^d`) and, for mixtures, ``modes``
    and :meth:`mode_of` (for mode coverage).

    ``log_prob`` takes ``(batch, features)`` in any floating dtype and device and
    returns ``(batch,)`` in the same; constants follow the input (float64 works end
    to end). ``-inf`` means outside the support; NaN and ``+inf`` are errors
    (:func:`checked_log_prob`).

    Attributes:
        name: a short name (the ``builtin:NAME`` of a built-in target).
        features: the dimension ``d``.
        log_z: :math:`\log Z`, or ``None`` where it is not known.
        has_sample: whether :meth:`sample` draws exact samples.
        low, high: ``(features,)`` float64 bounds of the support, or ``None``.
        reference_scale: ``(features,)`` float64, the target's typical spread per
            coordinate, or ``None``: a run fitted to it (``train --target``) works in units
            of it, a fixed map :math:`x = s \odot z` that is part of the model (its
            log-determinant enters ``log_prob``), so a standard-normal base meets a target
            that spans tens of units (FAB's 40-component mixture) at the right size.
    """

    name: str = "target"
    features: int
    log_z: float | None = None
    has_sample: bool = False
    low: Tensor | None = None
    high: Tensor | None = None
    reference_scale: Tensor | None = None

    def log_prob(self, x: Tensor) -> Tensor:
        """The unnormalized log-density of ``x: (batch, features)``, shape ``(batch,)``."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples ``(n, features)`` in float64 on the CPU."""
        raise NotImplementedError(f"target {self.name!r} has no exact sampler")

    @property
    def modes(self) -> Tensor | None:
        """``(K, features)`` centres of a mixture's components, or ``None``."""
        return None

    def mode_of(self, x: Tensor) -> Tensor:
        """The component each row of ``x`` belongs to, ``(batch,)`` int64 in ``[0, K)``."""
        raise NotImplementedError(f"target {self.name!r} is not a mixture")

    def contains(self, x: Tensor) -> Tensor:
        """``(batch,)`` bool: the rows inside the support (all True on :math:`\\mathbb{R}^d`)."""
        if self.low is None or self.high is None:
            return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return box_contains(x, self.low.to(x), self.high.to(x))

    def __repr__(self) -> str:
        known = "unknown" if self.log_z is None else f"{self.log_z:.6g}"
        return f"{type(self).__name__}(name={self.name!r}, features={self.features}, log_z={known})"


class CallableTarget(Target):
    """A user's target: a callable ``f(x: (batch, d)) -> (batch,)``, or an object with ``log_prob``.

    ``features`` is read from the object (a ``features`` attribute) where it has
    one, else it must be given; so are ``log_z``, ``sample`` and the bounds
    ``low``/``high`` when the object has them.

    Example:
        >>> import torch
        >>> target = CallableTarget(lambda x: -0.5 * (x**2).sum(-1), features=3)
        >>> target.log_prob(torch.zeros(4, 3)).shape
        torch.Size([4])
    """

    def __init__(self, function: Any, features: int | None = None, name: str = "target") -> None:
        log_prob = getattr(function, "log_prob", function)
        if not callable(log_prob):
            raise TypeError(
                f"target {name!r} is a {type(function).__name__}: expected a callable of a "
                "(batch, D) tensor returning (batch,), or an object with a log_prob method"
            )
        own = getattr(function, "features", None)
        if own is not None and features is not None and int(own) != int(features):
            raise ValueError(
                f"target {name!r} has features={own} but features={features} was given"
            )
        chosen = own if own is not None else features
        if chosen is None:
            raise ValueError(
                f"target {name!r} does not say its dimension (no 'features' attribute); "
                "give features (--features D)"
            )
        if isinstance(chosen, bool) or int(chosen) != chosen or int(chosen) < 1:
            raise ValueError(f"target {name!r}: features must be a positive int, got {chosen!r}")
        self.function = function
        self._log_prob: Callable[[Tensor], Tensor] = log_prob
        self.name = name
        self.features = int(chosen)
        log_z = getattr(function, "log_z", None)
        self.log_z = None if log_z is None else float(log_z)
        sampler = getattr(function, "sample", None)
        self._sample = sampler if callable(sampler) else None
        self.has_sample = self._sample is not None
        for bound in ("low", "high"):
            value = getattr(function, bound, None)
            if value is not None:
                value = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
                if value.numel() == 1:
                    value = value.expand(self.features).clone()
                setattr(self, bound, value)
        scale = getattr(function, "reference_scale", None)
        if scale is not None:
            scale = torch.as_tensor(scale, dtype=torch.float64).reshape(-1)
            if scale.numel() == 1:
                scale = scale.expand(self.features).clone()
            if scale.numel() != self.features or not bool(
                (scale > 0).all() & scale.isfinite().all()
            ):
                raise ValueError(
                    f"target {name!r}: reference_scale must be one positive number or "
                    f"{self.features} of them"
                )
            self.reference_scale = scale
        if (self.low is None) != (self.high is None):
            raise ValueError(f"target {name!r} gives only one of the bounds low and high")

    def log_prob(self, x: Tensor) -> Tensor:
        return self._log_prob(x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        if self._sample is None:
            return super().sample(n, generator)
        return torch.as_tensor(self._sample(n)).to(torch.float64)


def as_target(target: Any, features: int | None = None, name: str = "target") -> Target:
    """``target`` as a :class:`Target`: itself, or a callable wrapped in :class:`CallableTarget`."""
    if isinstance(target, Target):
        if features is not None and int(features) != target.features:
            raise ValueError(
                f"target {target.name!r} has features={target.features} "
                f"but features={features} was given"
            )
        return target
    return CallableTarget(target, features, name)


def checked_log_prob(target: Target, x: Tensor) -> Tensor:
    """``target.log_prob(x)`` with its shape and values checked; errors name the target.

    ``-inf`` (outside the support) is allowed; NaN and ``+inf`` are not, nor a
    result that is not ``(batch,)``.

    Raises:
        ValueError: a wrong shape, NaN or ``+inf``.
    """
    values = target.log_prob(x)
    if not isinstance(values, Tensor):
        raise ValueError(
            f"target {target.name!r} returned a {type(values).__name__}, expected a tensor"
        )
    if tuple(values.shape) != (x.shape[0],):
        raise ValueError(
            f"target {target.name!r} returned shape {tuple(values.shape)} for a batch of "
            f"shape {tuple(x.shape)}; expected ({x.shape[0]},), one log-density per row"
        )
    if bool(torch.isnan(values).any()):
        raise ValueError(f"target {target.name!r} returned NaN log-densities")
    if bool((values == math.inf).any()):
        raise ValueError(f"target {target.name!r} returned +inf log-densities")
    return values
