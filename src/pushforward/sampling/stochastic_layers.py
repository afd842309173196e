r"""The stochastic layers of a stochastic normalizing flow: Langevin, Metropolis and HMC steps.

A stochastic layer moves a batch :math:`y_t \to y_{t+1}` by a Markov kernel :math:`q_t`
aimed at an unnormalized density :math:`\rho_t = e^{-u_t}` and returns, with the new
points, the log ratio of the backward to the forward transition density,

.. math:: \Delta S_t = \log \frac{\bar q_t(y_{t+1} \to y_t)}{q_t(y_t \to y_{t+1})},

the term the layer adds to a path's log-weight (Wu et al. 2020, eq. 8), as a
deterministic layer adds its log-determinant. Whatever :math:`\rho_t` is, the path
weights stay exact: :math:`\mathbb E[w] = Z`.

* :class:`LangevinLayer` (unadjusted overdamped Langevin) has explicit Gaussian
  transitions both ways: :math:`\Delta S = \tfrac12\lVert\eta\rVert^2
  - \tfrac12\lVert\tilde\eta\rVert^2`.
* :class:`MetropolisLayer` (Gaussian random walk) and :class:`HamiltonianLayer`
  satisfy detailed balance with :math:`\rho_t`, which makes the kernel its own
  backward kernel: :math:`\Delta S = \log\rho_t(y_t) - \log\rho_t(y_{t+1})`, zero
  where the proposal is rejected.

Steps are reparameterised (the noise is drawn, the points are differentiable functions
of it), so gradients reach the flow before the layer and the step size. The
Metropolis decision is held constant, as in the paper: gradients pass through the
branch taken (the proposal where accepted, the old point where rejected).

References:
    Wu, Köhler & Noé (2020), Stochastic Normalizing Flows (NeurIPS);
    Neal (2011), MCMC Using Hamiltonian Dynamics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from pushforward.options import positive_float, positive_int
from pushforward.sampling.mcmc.metropolis import log_acceptance_ratio

LogDensity = Callable[[Tensor], Tensor]
"""An unnormalized log-density of ``(batch, features)`` points, ``(batch,)``."""


def log_density_and_score(log_density: LogDensity, y: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(log rho(y), grad log rho(y))``; differentiable in ``y`` where ``y`` carries a graph.

    Where gradients are on and ``y`` requires them (training), the score keeps its
    graph (``create_graph``), so a Langevin step is differentiable end to end; else
    (sampling without gradients) both come back detached.

    Raises:
        ValueError: the log-density does not depend differentiably on ``y``.
    """
    if torch.is_grad_enabled() and y.requires_grad:
        value = log_density(y)
        (score,) = torch.autograd.grad(value.sum(), y, create_graph=True)
        return value, score
    with torch.enable_grad():
        point = y.detach().requires_grad_(True)
        value = log_density(point)
        if not value.requires_grad:
            raise ValueError(
                "a Langevin or HMC layer needs the gradient of the target's log-density: "
                "its log_prob must be built from torch operations on its input"
            )
        (score,) = torch.autograd.grad(value.sum(), point)
    return value.detach(), score


def _accept(log_ratio: Tensor) -> Tensor:
    """``(batch,)`` bool: Metropolis acceptance, ``log u < log a`` with ``u ~ U(0, 1)``."""
    uniform = torch.rand(log_ratio.shape, dtype=log_ratio.dtype, device=log_ratio.device)
    # u == 0 would give log u = -inf and accept a ratio of -inf.
    return torch.log(uniform.clamp_min(torch.finfo(log_ratio.dtype).tiny)) < log_ratio


class StochasticLayer(nn.Module):
    r"""A stochastic block of an SNF: ``forward(y, log_density) -> (y', Delta S)``.

    The step size is stored as its logarithm, a parameter when ``learn_step_size``
    (trained with the flow) and a buffer otherwise; both are saved with the model.

    Args:
        step_size: the layer's step size (its meaning is the kind's; see each class).
        learn_step_size: train the step size with the flow.
    """

    kind: ClassVar[str]
    log_step_size: Tensor

    def __init__(self, step_size: float = 0.1, learn_step_size: bool = True) -> None:
        super().__init__()
        value = torch.tensor(math.log(positive_float("step_size", step_size)))
        if learn_step_size:
            self.log_step_size = nn.Parameter(value)
        else:
            self.register_buffer("log_step_size", value)

    @property
    def step_size(self) -> Tensor:
        """The step size, a scalar tensor in the layer's dtype."""
        return self.log_step_size.exp()

    def forward(self, y: Tensor, log_density: LogDensity) -> tuple[Tensor, Tensor]:
        """One step from ``y: (batch, features)`` towards ``log_density``.

        Returns:
            ``y': (batch, features)`` and ``Delta S: (batch,)``.
        """
        raise NotImplementedError


class LangevinLayer(StochasticLayer):
    r"""One step of unadjusted overdamped Langevin dynamics with time step :math:`h`.

    .. math:: y' = y + h \nabla\log\rho(y) + \sqrt{2h}\,\eta, \qquad \eta \sim \mathcal N(0, I)

    The backward step from :math:`y'` needs the noise
    :math:`\tilde\eta = -\sqrt{h/2}\,\big(\nabla\log\rho(y) + \nabla\log\rho(y')\big) - \eta`,
    and the two Gaussians share their normaliser, so

    .. math:: \Delta S = \tfrac12 \lVert\eta\rVert^2 - \tfrac12 \lVert\tilde\eta\rVert^2.

    References:
        Wu, Köhler & Noé (2020), Stochastic Normalizing Flows (section 4, Langevin).
    """

    kind = "langevin"

    def forward(self, y: Tensor, log_density: LogDensity) -> tuple[Tensor, Tensor]:
        h = self.step_size
        _, score = log_density_and_score(log_density, y)
        noise = torch.randn_like(y)
        moved = y + h * score + torch.sqrt(2.0 * h) * noise
        _, moved_score = log_density_and_score(log_density, moved)
        # The closed form of the backward noise: no cancellation of y' - y.
        backward = noise + torch.sqrt(0.5 * h) * (score + moved_score)
        delta = 0.5 * (noise.square().sum(dim=1) - backward.square().sum(dim=1))
        return moved, delta


class MetropolisLayer(StochasticLayer):
    r"""Metropolis-Hastings with a Gaussian random-walk proposal of scale :math:`\sigma`.

    .. math:: y^* = y + \sigma\xi, \quad \xi \sim \mathcal N(0, I), \qquad
              y' = y^* \text{ with probability } \min\big(1, \rho(y^*)/\rho(y)\big),
              \text{ else } y

    The kernel is reversible with respect to :math:`\rho`, so
    :math:`\Delta S = \log\rho(y) - \log\rho(y')` (zero where rejected). A proposal of
    density zero is never accepted.

    References:
        Wu, Köhler & Noé (2020), Stochastic Normalizing Flows (section 4, MCMC);
        Metropolis et al. (1953); Hastings (1970).
    """

    kind = "metropolis"

    def forward(self, y: Tensor, log_density: LogDensity) -> tuple[Tensor, Tensor]:
        current = log_density(y)
        proposal = y + self.step_size * torch.randn_like(y)
        # The decision is a constant of the gradient: no graph for the proposal's density.
        with torch.no_grad():
            proposed = log_density(proposal)
        accept = _accept(log_acceptance_ratio(proposed, current.detach()))
        return _settle(y, proposal, accept, current, log_density)


class HamiltonianLayer(StochasticLayer):
    r"""Hamiltonian Monte Carlo: :math:`L` leapfrog steps of size :math:`\epsilon`, then Metropolis.

    With a fresh momentum :math:`r \sim \mathcal N(0, I)` and
    :math:`H(y, r) = -\log\rho(y) + \tfrac12\lVert r\rVert^2`, the end point of the
    trajectory is accepted with probability :math:`\min(1, e^{H - H'})`. With the
    momentum drawn anew the kernel on :math:`y` is reversible with respect to
    :math:`\rho`, so :math:`\Delta S = \log\rho(y) - \log\rho(y')` as for Metropolis.

    References:
        Wu, Köhler & Noé (2020), Stochastic Normalizing Flows; Duane et al. (1987),
        Hybrid Monte Carlo; Neal (2011), MCMC Using Hamiltonian Dynamics.

    Args:
        step_size: :math:`\epsilon`.
        learn_step_size: train :math:`\epsilon` with the flow.
        leapfrog_steps: :math:`L`.
    """

    kind = "hmc"

    def __init__(
        self, step_size: float = 0.1, learn_step_size: bool = True, leapfrog_steps: int = 5
    ) -> None:
        super().__init__(step_size, learn_step_size)
        self.leapfrog_steps = positive_int("leapfrog_steps", leapfrog_steps)

    def forward(self, y: Tensor, log_density: LogDensity) -> tuple[Tensor, Tensor]:
        epsilon = self.step_size
        current, score = log_density_and_score(log_density, y)
        momentum = torch.randn_like(y)
        position, velocity = y, momentum + 0.5 * epsilon * score
        for step in range(self.leapfrog_steps):
            position = position + epsilon * velocity
            value, gradient = log_density_and_score(log_density, position)
            last = step == self.leapfrog_steps - 1
            velocity = velocity + (0.5 if last else 1.0) * epsilon * gradient
        energy = 0.5 * momentum.square().sum(dim=1)
        final_energy = 0.5 * velocity.detach().square().sum(dim=1)
        accept = _accept(
            log_acceptance_ratio(value.detach() - final_energy, current.detach() - energy)
        )
        return _settle(y, position, accept, current, log_density)


def _settle(
    y: Tensor, proposal: Tensor, accept: Tensor, current: Tensor, log_density: LogDensity
) -> tuple[Tensor, Tensor]:
    r"""The new points of a reversible kernel and :math:`\Delta S = \log\rho(y) - \log\rho(y')`.

    The density is evaluated again at the points kept, so a rejected proposal's value
    (perhaps ``-inf``, with a NaN gradient) never enters the graph, even in the branch
    ``torch.where`` discards.
    """
    moved = torch.where(accept[:, None], proposal, y)
    delta = torch.where(accept, current - log_density(moved), torch.zeros_like(current))
    return moved, delta


STOCHASTIC_LAYERS: dict[str, type[StochasticLayer]] = {
    layer.kind: layer for layer in (LangevinLayer, MetropolisLayer, HamiltonianLayer)
}
"""The stochastic layers by the name the ``snf`` model's ``stochastic`` option uses."""
