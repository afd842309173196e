"""Two moons: a crescent-shaped, bimodal posterior in two dimensions."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pushforward.sbi.priors import BoxUniformPrior
from pushforward.sbi.tasks.base import Task, rejection_sample

# sbibm's constants: the angle is uniform on (-pi/2, pi/2), the radius N(0.1, 0.01^2).
RADIUS_MEAN = 0.1
RADIUS_STD = 0.01
OFFSET = 0.25


class TwoMoons(Task):
    r"""Two moons (sbibm's ``two_moons``): :math:`\theta \in [-1, 1]^2`, :math:`x \in \mathbb{R}^2`.

    .. math::
        a \sim \mathcal{U}(-\tfrac{\pi}{2}, \tfrac{\pi}{2}), \quad
        r \sim \mathcal{N}(0.1, 0.01^2), \quad
        p = (r\cos a + 0.25,\; r \sin a),

        x = p + \Big(-\tfrac{|\theta_1 + \theta_2|}{\sqrt 2},\;
                     \tfrac{-\theta_1 + \theta_2}{\sqrt 2}\Big).

    **Likelihood.** The polar map :math:`(r, a) \mapsto p - (0.25, 0)` is one-to-one from
    :math:`\mathbb{R} \times (-\pi/2, \pi/2)` onto the plane less the origin (``r > 0``
    fills the right half-plane, ``r < 0`` the left) with Jacobian :math:`|r|`, so with
    :math:`u = p_1 - 0.25`, :math:`v = p_2`, :math:`\rho = \sqrt{u^2 + v^2}`,

    .. math:: p(x \mid \theta) = \frac{\mathcal{N}(\operatorname{sign}(u)\,\rho;\,
              0.1, 0.01^2)}{\pi \rho}, \qquad p = x - g(\theta).

    (sbibm's own ``_likelihood`` keeps only the Gaussian factor of the radius; the
    :math:`1/(\pi\rho)` here makes it the density of :math:`x`.)

    **Reference posterior**, exact. In the rotated coordinates
    :math:`z = ((\theta_1 + \theta_2)/\sqrt 2, (\theta_2 - \theta_1)/\sqrt 2)` (unit
    Jacobian) the posterior is :math:`\propto f_p(x_1 + |z_1|, x_2 - z_2)` on the box:
    draw :math:`p` as the simulator does, drop it when :math:`p_1 < x_1` (no
    :math:`\theta` maps there), take :math:`|z_1| = p_1 - x_1`, :math:`z_2 = x_2 - p_2`,
    give :math:`z_1` either sign with probability 1/2 (both branches of the absolute
    value have unit Jacobian), rotate back and reject points outside the prior box.
    (sbibm's sampler keeps the draws with :math:`p_1 < x_1` by flipping their sign.)

    References:
        Greenberg, Nonnenmacher and Macke (2019), Automatic Posterior Transformation
        for Likelihood-Free Inference. ICML.
        Lueckmann et al. (2021), Benchmarking Simulation-Based Inference. AISTATS.

    Example:
        >>> task = TwoMoons()
        >>> theta, x = task.simulations(5, seed=0)
        >>> task.log_likelihood(theta, x).shape
        torch.Size([5])
    """

    name = "two_moons"
    theta_features = 2
    x_features = 2

    def __init__(self) -> None:
        self.prior = BoxUniformPrior([-1.0, -1.0], [1.0, 1.0])

    def _simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        return crescent(theta.shape[0], generator, theta) + moon_shift(theta)

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        return crescent_log_prob(x - moon_shift(theta))

    def _reference_posterior(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        def propose(count: int) -> tuple[Tensor, Tensor]:
            p = crescent(count, generator, x_o)
            z_first = p[:, 0] - x_o[0]
            sign = torch.rand(count, generator=generator, dtype=x_o.dtype, device=x_o.device)
            z_first = torch.where(sign < 0.5, z_first, -z_first)
            z_second = x_o[1] - p[:, 1]
            theta = torch.stack((z_first - z_second, z_first + z_second), dim=-1) / math.sqrt(2)
            reachable = p[:, 0] >= x_o[0]
            return theta, reachable & self.prior.contains(theta)

        return rejection_sample(propose, n)


def moon_shift(theta: Tensor) -> Tensor:
    r""":math:`g(\theta) = (-|\theta_1 + \theta_2| / \sqrt 2, (\theta_2 - \theta_1) / \sqrt 2)`.

    Args:
        theta: ``(n, 2)``.

    Returns:
        ``(n, 2)``.
    """
    first = -torch.abs(theta[:, 0] + theta[:, 1]) / math.sqrt(2)
    second = (theta[:, 1] - theta[:, 0]) / math.sqrt(2)
    return torch.stack((first, second), dim=-1)


def crescent(n: int, generator: torch.Generator, like: Tensor) -> Tensor:
    r"""``n`` draws of the half ring :math:`p = (r \cos a + 0.25, r \sin a)`, ``(n, 2)``.

    ``like`` gives the dtype and device.
    """
    dtype, device = like.dtype, like.device
    angle = (torch.rand(n, generator=generator, dtype=dtype, device=device) - 0.5) * math.pi
    noise = torch.randn(n, generator=generator, dtype=dtype, device=device)
    radius = RADIUS_MEAN + RADIUS_STD * noise
    return torch.stack((radius * torch.cos(angle) + OFFSET, radius * torch.sin(angle)), dim=-1)


def crescent_log_prob(p: Tensor) -> Tensor:
    """The half ring's log-density ``(n,)`` at ``p: (n, 2)``, by the polar change of variables."""
    u = p[:, 0] - OFFSET
    # The density has an integrable pole at the ring's centre; the floor keeps it finite.
    rho = torch.hypot(u, p[:, 1]).clamp_min(torch.finfo(p.dtype).tiny)
    radius = torch.where(u < 0, -rho, rho)
    log_normal = (
        -0.5 * ((radius - RADIUS_MEAN) / RADIUS_STD) ** 2
        - math.log(RADIUS_STD)
        - 0.5 * math.log(2 * math.pi)
    )
    return log_normal - math.log(math.pi) - torch.log(rho)
