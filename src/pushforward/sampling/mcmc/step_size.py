"""Dual averaging of a step size towards a target acceptance rate, during warm-up."""

from __future__ import annotations

import math


class DualAveraging:
    r"""Nesterov's dual averaging of :math:`\log \epsilon`, as Hoffman & Gelman tune HMC.

    After warm-up iteration :math:`m` with mean acceptance probability :math:`\alpha_m`:

    .. math::
        \bar H_m = \left(1 - \tfrac{1}{m + t_0}\right) \bar H_{m-1}
                   + \tfrac{1}{m + t_0} (\delta - \alpha_m), \qquad
        \log \epsilon_m = \mu - \tfrac{\sqrt m}{\gamma} \bar H_m,

    .. math::
        \log \bar\epsilon_m = m^{-\kappa} \log \epsilon_m
                              + (1 - m^{-\kappa}) \log \bar\epsilon_{m-1},

    with :math:`\mu = \log(10 \epsilon_0)`. The iterate :math:`\epsilon_m` is used
    during warm-up, the average :math:`\bar\epsilon` afterwards.

    References:
        Hoffman & Gelman (2014), The No-U-Turn Sampler: Adaptively Setting Path
        Lengths in Hamiltonian Monte Carlo, Section 3.2; Nesterov (2009),
        Primal-Dual Subgradient Methods for Convex Problems.

    Args:
        step_size: the initial :math:`\epsilon_0`.
        target_acceptance: :math:`\delta`.
        gamma, t0, kappa: the scheme's constants (the paper's defaults).
    """

    def __init__(
        self,
        step_size: float,
        target_acceptance: float,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ) -> None:
        self.step_size = float(step_size)
        self.target_acceptance = float(target_acceptance)
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.mu = math.log(10.0 * step_size)
        self.iteration = 0
        self.statistic = 0.0
        self.log_average = 0.0

    def update(self, acceptance: float) -> float:
        """Takes the mean acceptance probability of one iteration; returns the next step size."""
        self.iteration += 1
        m = self.iteration
        weight = 1.0 / (m + self.t0)
        self.statistic = (1.0 - weight) * self.statistic + weight * (
            self.target_acceptance - acceptance
        )
        log_step = self.mu - math.sqrt(m) / self.gamma * self.statistic
        decay = m ** (-self.kappa)
        self.log_average = decay * log_step + (1.0 - decay) * self.log_average
        self.step_size = math.exp(log_step)
        return self.step_size

    def final(self) -> float:
        """The averaged step size :math:`\\bar\\epsilon` to keep after warm-up."""
        return math.exp(self.log_average) if self.iteration > 0 else self.step_size
