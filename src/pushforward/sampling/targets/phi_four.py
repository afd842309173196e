r"""The 1-D lattice :math:`\phi^4` field (stochastic Allen--Cahn) (``phi4-64``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pushforward.options import positive_float, positive_int
from pushforward.sampling.target import Target
from pushforward.sampling.targets.points import check_points


class PhiFour(Target):
    r"""A discretised :math:`\phi^4` field on :math:`[0, 1]` with zero Dirichlet boundaries.

    With :math:`N` sites :math:`\phi_1, \dots, \phi_N`, :math:`\phi_0 = \phi_{N+1} = 0`
    and spacing :math:`\Delta x = 1/N`,

    .. math::
        U(\phi) = \frac{a}{2\Delta x} \sum_{i=1}^{N+1} (\phi_i - \phi_{i-1})^2
                + \frac{\Delta x}{a} \sum_{i=1}^{N} \Big(\frac{(1 - \phi_i^2)^2}{4}
                + b\, \phi_i\Big), \qquad \log \tilde p(\phi) = -\beta U(\phi)

    the form and constants of the authors' code (``PhiFour`` of
    marylou-gabrie/flonaco, reused by h2o64/flow_mcmc: coupling coefficient
    :math:`aN`, local term divided by :math:`aN`, Gibbs factor
    :math:`e^{-\beta U}`). The defaults :math:`N = 64`, :math:`a = 0.1`, :math:`b = 0`,
    :math:`\beta = 20` give two modes, the fields near :math:`+1` and near
    :math:`-1` away from the walls, which :math:`b = 0` makes exactly symmetric
    (:math:`U(\phi) = U(-\phi)`, so each holds half the mass); :math:`b \ne 0`
    tilts the balance. :math:`Z` is not known (``log_z`` None) and there is no exact
    sampler; :meth:`mode_sign` tells the mode of each sample.

    References:
        Gabrié, Rotskoff & Vanden-Eijnden (2022), Adaptive Monte Carlo augmented
        with normalizing flows (PNAS); Grenioux et al. (2023), On Sampling with
        Approximate Transport Maps.

    Args:
        sites: the number of lattice sites :math:`N` (64), the dimension.
        a: the coupling :math:`a > 0` (0.1).
        b: the local field :math:`b` (0).
        beta: the inverse temperature :math:`\beta > 0` (20).

    Example:
        >>> import torch
        >>> target = PhiFour()
        >>> target.log_prob(torch.zeros(1, 64)).item()  # -beta N dx / (4a) = -20 / 0.4
        -50.0
    """

    def __init__(self, sites: int = 64, a: float = 0.1, b: float = 0.0, beta: float = 20.0) -> None:
        self.features = positive_int("sites", sites)
        self.a = positive_float("a", a)
        if isinstance(b, bool) or not isinstance(b, int | float) or not math.isfinite(b):
            raise ValueError(f"option 'b' must be a finite number, got {b!r}")
        self.b = float(b)
        self.beta = positive_float("beta", beta)
        self.spacing = 1.0 / self.features
        self.name = f"phi4-{self.features}"

    def energy(self, x: Tensor) -> Tensor:
        r""":math:`U(\phi)` of ``x: (batch, N)``, shape ``(batch,)``."""
        check_points(x, self.features, self.name)
        # The N + 1 bonds: the N - 1 inner ones and the two to the walls at 0.
        bonds = x.diff(dim=1).square().sum(dim=1) + x[:, 0].square() + x[:, -1].square()
        local = (1 - x.square()).square() / 4 + self.b * x
        return (self.a / (2 * self.spacing)) * bonds + (self.spacing / self.a) * local.sum(dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        return -self.beta * self.energy(x)

    def mode_sign(self, x: Tensor) -> Tensor:
        r"""``(batch,)`` +1 where the mean field :math:`\frac1N \sum_i \phi_i \ge 0`, else -1.

        The fraction of +1 estimates the weight of the positive mode, 1/2 when
        :math:`b = 0`.
        """
        check_points(x, self.features, self.name)
        positive = x.mean(dim=1) >= 0
        return torch.where(positive, 1, -1).to(torch.int64)
