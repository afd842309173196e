"""A flow's whole base-to-data map, and a target pulled back through it (NeuTra's density)."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor

from pushforward.distributions.base import Distribution
from pushforward.model import Model
from pushforward.sampling.mcmc.density import DataLogDensity
from pushforward.transforms.base import Transform


def is_flow(model: Model) -> bool:
    """Whether ``model`` has an explicit bijection: a ``transform`` and a ``base``."""
    transform, base = getattr(model, "transform", None), getattr(model, "base", None)
    return isinstance(transform, Transform) and isinstance(base, Distribution)


def flow_parts(model: Model, what: str = "this sampler") -> tuple[Transform, Distribution]:
    """The flow's ``transform`` (data to base) and ``base``, or a clear error naming ``what``."""
    if not is_flow(model):
        raise TypeError(
            f"{what} needs a model with an explicit bijection (a 'transform' and a 'base', "
            f"as the discrete flows realnvp, nsf, maf have); {type(model).__name__} has not"
        )
    if model.context_features > 0:
        raise ValueError(
            f"{what} samples unconditional models; this one takes a context of "
            f"{model.context_features} features"
        )
    return cast(Transform, model.transform), cast(Distribution, model.base)


def base_to_data(model: Model, z: Tensor) -> tuple[Tensor, Tensor]:
    r"""The flow's map :math:`T` from base to data and :math:`\log|\det \partial T/\partial z|`.

    :math:`T` is the flow's ``transform.inverse`` followed by the model's
    preprocessing ``decode`` (its standardisation, say), so ``x`` is in the data's
    own units; the log-determinants of the two add. Differentiable in ``z``.

    Args:
        model: a flow (a model with ``transform`` and ``base``), unconditional.
        z: ``(batch, d)`` base points.

    Returns:
        ``x: (batch, d)`` and ``logabsdet: (batch,)``.

    Raises:
        TypeError: a model without ``transform`` and ``base``.
    """
    transform, _ = flow_parts(model, "base_to_data")
    y, logabsdet = transform.inverse(z, None)
    x, decoded = model.preprocessing.decode(y)
    return x, logabsdet if decoded is None else logabsdet + decoded


def data_to_base(model: Model, x: Tensor) -> Tensor:
    """The inverse of :func:`base_to_data`: base points ``(batch, d)`` of data ``x: (batch, d)``."""
    transform, _ = flow_parts(model, "data_to_base")
    y, _ = model.preprocessing.encode(x)
    z, _ = transform(y, None)
    return z


class PulledBackLogDensity:
    r"""A target seen through a flow: the density NeuTra samples in the latent space.

    .. math:: \log \pi(z) = \log \tilde p\big(T(z)\big)
              + \log\left|\det \frac{\partial T}{\partial z}(z)\right|

    with :math:`T` the flow's base-to-data map (:func:`base_to_data`). Where the
    flow matches the target, :math:`\pi` is close to the flow's base, a standard
    normal, whose geometry suits HMC and MALA.

    References:
        Hoffman et al. (2019), NeuTra-lizing Bad Geometry in Hamiltonian Monte
        Carlo Using Neural Transport.

    Args:
        density: the target in the data's units.
        model: the flow, unconditional.
    """

    def __init__(self, density: DataLogDensity, model: Model) -> None:
        flow_parts(model, "NeuTra")
        self.density = density
        self.model = model

    def log_prob(self, z: Tensor) -> Tensor:
        """``(batch,)`` :math:`\\log \\pi(z)` of ``z: (batch, d)``, differentiable in ``z``."""
        x, logabsdet = base_to_data(self.model, z)
        values = self.density.log_prob(x)
        # A latent point the flow sends to infinity has no density; never form inf - inf.
        finite = torch.isfinite(logabsdet) & torch.isfinite(values)
        safe = torch.where(finite, logabsdet, torch.zeros_like(logabsdet))
        return torch.where(finite, values + safe, torch.full_like(values, -math.inf))

    def to_position(self, x: Tensor) -> Tensor:
        """Latent points of data points ``x: (batch, d)``."""
        return data_to_base(self.model, x)

    def to_data(self, position: Tensor) -> Tensor:
        """Data points of latent points ``(batch, d)``."""
        return base_to_data(self.model, position)[0]
