r"""Coupling and autoregressive layers on angles: conditioners that see cosines and sines.

On the torus :math:`T^d = [-\pi, \pi)^d` a layer's conditioner must be a smooth function
of the angles it reads *as points of the circle*, or the flow's density jumps across the
seam :math:`-\pi \equiv \pi`. These layers feed their conditioners
:math:`(\cos x_j, \sin x_j)` instead of :math:`x_j`; with a circle diffeomorphism as the
element-wise map
(:class:`~pushforward.transforms.maps.CircularRationalQuadraticSplineMap`) the layer is a
diffeomorphism of the torus, smooth across every seam (Rezende et al. 2020).

References:
    Rezende et al. (2020), Normalizing Flows on Tori and Spheres;
    Durkan et al. (2019), Neural Spline Flows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pushforward.transforms.autoregressive import MaskedAutoregressive
from pushforward.transforms.coupling import Coupling


def angle_features(x: Tensor) -> Tensor:
    """``(B, n) -> (B, 2n)``: the cosines of the angles, then their sines."""
    return torch.cat([torch.cos(x), torch.sin(x)], dim=1)


class CircularCoupling(Coupling):
    r"""A coupling layer whose untransformed features are angles, seen through
    :math:`(\cos, \sin)`:

    .. math:: y_A = x_A, \quad y_B = \tau(x_B; \theta), \quad
              \theta = \mathrm{MLP}([\cos x_A, \sin x_A, c])

    With :class:`~pushforward.transforms.maps.CircularRationalQuadraticSplineMap` as
    :math:`\tau` it is the circular spline coupling of Rezende et al. (2020), a
    diffeomorphism of :math:`T^d`; with another map the transformed features need not be
    angles (the height of the sphere's cylindrical coordinates, conditioned on its
    longitude). Arguments, masks and the identity start as in
    :class:`~pushforward.transforms.coupling.Coupling`.

    References:
        Rezende et al. (2020), Normalizing Flows on Tori and Spheres;
        Dinh et al. (2017), Density estimation using Real NVP.

    Example:
        >>> import math
        >>> from pushforward.transforms.maps import CircularRationalQuadraticSplineMap
        >>> layer = CircularCoupling(2, CircularRationalQuadraticSplineMap(4), [False, True])
        >>> x = torch.tensor([[math.pi - 1e-9, 1.0]])
        >>> y, logabsdet = layer(x)
        >>> bool(torch.allclose(y, x)), float(logabsdet.detach())  # starts as the identity
        (True, 0.0)
    """

    inputs_per_feature = 2

    def _conditioner_input(self, x_identity: Tensor) -> Tensor:
        return angle_features(x_identity)


class CircularAutoregressive(MaskedAutoregressive):
    r"""A masked autoregressive layer on angles: MADE reads :math:`(\cos x_j, \sin x_j)`.

    .. math:: z_i = \tau(x_i; \theta_i), \quad
              \theta_i = g_i(\cos x_{<i}, \sin x_{<i}, c)

    Each feature's cosine and sine carry its degree in MADE, so the layer stays
    autoregressive; with
    :class:`~pushforward.transforms.maps.CircularRationalQuadraticSplineMap` it is the
    autoregressive circular spline flow of Rezende et al. (2020) (zuko's NCSF is of this
    kind). Density in one pass, sampling in one pass per rank, as for
    :class:`~pushforward.transforms.autoregressive.MaskedAutoregressive`.

    References:
        Rezende et al. (2020), Normalizing Flows on Tori and Spheres;
        Papamakarios et al. (2017), Masked Autoregressive Flow for Density Estimation.
    """

    inputs_per_feature = 2

    def _conditioner_input(self, x: Tensor) -> Tensor:
        return angle_features(x)
