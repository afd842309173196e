"""What the flow-matching family shares: training on coupled pairs, and the density of a flow.

Every model of the family (``fm``, ``meanflow``, ``shortcut``, ``consistency-fm``)
learns from source points :math:`x_0 \\sim p_0` paired with data points :math:`x_1`
by a coupling (independent, minibatch optimal transport, Sinkhorn);
:class:`CoupledModel` draws and pairs them, ahead of the training step where the
coupling costs something. Those with an instantaneous velocity
:math:`v_\\theta(x, t)` also have a density, that of the flow of
:math:`v_\\theta`; :class:`CoupledVelocityModel` integrates it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from pushforward.distributions import Distribution
from pushforward.matching.couplings import COUPLINGS, BatchCoupling, make_coupling
from pushforward.model import Model
from pushforward.ode import FIXED_STEP_METHODS, ODESolution
from pushforward.ode.likelihood import DIVERGENCES, log_likelihood
from pushforward.ode.options import SOLVERS, ODELogProbOptions
from pushforward.ode.solvers import StepHook
from pushforward.options import choice, positive_int
from pushforward.paired import PairedBatch

# -- coupled pairs ------------------------------------------------------------------


def coupling_option(coupling: str | BatchCoupling) -> BatchCoupling:
    """The ``coupling`` option: a name of :data:`COUPLINGS` (built with its defaults), or a
    coupling object as it is."""
    if isinstance(coupling, BatchCoupling):
        return coupling
    return make_coupling(choice("coupling", coupling, tuple(COUPLINGS)))


def prepare_pairs(
    coupling: BatchCoupling, base: Distribution, x: Tensor, context: Tensor | None, seed: int
) -> PairedBatch | None:
    """Source points drawn and coupled to a batch ahead of its training step.

    Only couplings that cost something (``ot``, ``sinkhorn``) with a base free of
    parameters are prepared (``None`` otherwise: the loss draws them itself).
    Randomness comes from a generator seeded with ``seed``.
    """
    if not coupling.costs_something or any(True for _ in base.parameters()):
        return None
    generator = torch.Generator(device=x.device).manual_seed(seed)
    try:
        source = base.sample(x.shape[0], generator).to(x)
    except ValueError:  # a base that cannot draw from a given generator
        return None
    return coupling(source, x.detach(), context, generator)


def batch_pairs(
    model: Model,
    coupling: BatchCoupling,
    base: Distribution,
    x: Tensor,
    context: Tensor | None,
    prepared: PairedBatch | None,
) -> PairedBatch:
    """The coupled pairs of a checked training batch: ``prepared`` ones, or drawn here."""
    if prepared is None:
        return coupling(base.sample(x.shape[0]).to(x), x, context)
    if prepared.x1.shape != x.shape:
        raise ValueError(
            f"the prepared coupling holds data of shape {tuple(prepared.x1.shape)}, "
            f"the batch has shape {tuple(x.shape)}"
        )
    return prepared


def broadcast_rows(values: Tensor, like: Tensor) -> Tensor:
    """``(batch,)`` values shaped to broadcast against ``like: (batch, *event)``."""
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))


def row_mse(error: Tensor) -> Tensor:
    """Mean squared error of each row, ``(batch,)``."""
    return error.reshape(error.shape[0], -1).square().mean(dim=1)


class CoupledModel(Model):
    """A model trained on data points paired with source points by a coupling.

    Holds the network, the source distribution (``base``) and the coupling
    (:class:`~pushforward.matching.couplings.BatchCoupling`); pairs each training
    batch with source points, ahead of its step in the training engine's thread
    (:meth:`prepare_batch`) or in :meth:`loss`, and leaves the objective on the
    pairs to the subclass (``_pairs_loss``).

    References: Tong et al. (2024), Improving and Generalizing Flow-Based
    Generative Models with Minibatch Optimal Transport.

    Args:
        network: the model's network.
        base: the source distribution :math:`p_0`.
        context_features: size of the context (0 for unconditional).
        coupling: ``independent``, ``ot`` or ``sinkhorn``, or a coupling object.
    """

    learns_from_pairs = True

    def __init__(
        self,
        network: nn.Module,
        base: Distribution,
        context_features: int,
        coupling: str | BatchCoupling,
    ) -> None:
        super().__init__()
        self.network = network
        self.base = base
        self.event_shape = tuple(base.event_shape)
        self.context_features = int(context_features)
        self.coupling = coupling_option(coupling)

    def prepare_batch(self, x: Tensor, context: Tensor | None, seed: int) -> PairedBatch | None:
        """Draws source points and solves the coupling for a batch, ahead of its step.

        Only couplings that cost something (``ot``, ``sinkhorn``) and sources
        without parameters are prepared; otherwise ``None`` (the loss draws them).
        """
        return prepare_pairs(self.coupling, self.base, x, context, seed)

    def _loss(
        self, x: Tensor, context: Tensor | None, prepared: PairedBatch | None = None
    ) -> Tensor:
        """The model's training objective on a batch ``x: (batch, *event)`` in its units.

        ``prepared`` is the batch's coupling made ahead by :meth:`prepare_batch`
        (the training engine passes it); without it the source points are drawn
        and coupled here. A model with a moving-average target network moves it
        one step first, in training mode with gradients on, so that it moves once
        per training step.
        """
        return self._pairs_loss(batch_pairs(self, self.coupling, self.base, x, context, prepared))

    def _pairs_loss(self, pairs: PairedBatch) -> Tensor:
        """The training objective on coupled points ``pairs`` (``x0`` source, ``x1`` data)."""
        raise NotImplementedError


# -- the density of the flow of an instantaneous velocity ---------------------------


def final_state(solution: ODESolution) -> Tensor:
    """The final state of a solve whose state is one tensor."""
    if not isinstance(solution.state, Tensor):
        raise TypeError("expected a single-tensor ODE state")
    return solution.state


Fold = Callable[[Tensor], Tensor]
"""``fold(x) -> x``: ODE states mapped into a model's domain (a reflection into a box)."""


def _fold_state(fold: Fold, t: Tensor, x: Tensor) -> Tensor:
    return fold(x)


def fold_step_hook(fold: Fold | None, method: str) -> StepHook | None:
    """``fold`` as the step hook of a fixed-step solve (``None`` for an adaptive one, or
    without a fold): the state is folded into the domain after every step."""
    if fold is None or method not in FIXED_STEP_METHODS:
        return None
    return partial(_fold_state, fold)


def zero_interval_velocity_and_divergence(
    network: nn.Module, x: Tensor, t: Tensor, context: Tensor | None
) -> tuple[Tensor, Tensor]:
    r"""A two-time network at a zero interval, :math:`f(x, t, 0, c)`, and its exact divergence.

    A two-time network (:class:`~pushforward.nn.two_time.TwoTimeVelocityMLP`) of
    an average velocity or a shortcut is the instantaneous velocity where its
    second time (the interval's length, the step) is 0; its own Jacobian trace
    gives :math:`\nabla_x \cdot f(x, t, 0, c)`.

    Args:
        network: a network with ``velocity_and_divergence(x, t, s, context)``.
        x: ``(batch, *event)`` states.
        t: ``(batch,)`` times, or a 0-dim time for all rows.
        context: ``(batch, context)`` or ``None``.

    Returns:
        ``(velocity: (batch, *event), divergence: (batch,))``.
    """
    trace = getattr(network, "velocity_and_divergence", None)
    if not callable(trace):
        raise TypeError(
            f"the network ({type(network).__name__}) has no velocity_and_divergence; "
            "use pushforward.ode.exact_divergence on velocity instead"
        )
    t = t.expand(x.shape[0]) if t.ndim == 0 else t
    result: tuple[Tensor, Tensor] = trace(x, t, torch.zeros_like(t), context)
    return result


class CoupledVelocityModel(CoupledModel):
    r"""A coupled model with an instantaneous velocity, scored by the flow that velocity defines.

    ``log_prob`` integrates the instantaneous change of variables from data at
    :math:`t = 1` to the base at :math:`t = 0`,

    .. math:: \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \nabla\cdot v_\theta(x_t, t)\,dt,

    with the exact divergence (by the network's own Jacobian trace where it has
    one, else forward-mode) or Hutchinson's estimator. The likelihood is
    differentiable in the inputs and parameters.

    Subclasses implement ``velocity(x, t, context)``,
    ``velocity_and_divergence(x, t, context)`` (called only for a network with
    ``velocity_and_divergence``) and ``_likelihood_steps``, and set the
    likelihood options (:meth:`_set_likelihood_options`).

    References:
        Chen et al. (2018), Neural Ordinary Differential Equations;
        Grathwohl et al. (2019), FFJORD: Free-form Continuous Dynamics for
        Scalable Reversible Generative Models.
    """

    log_prob_options = ODELogProbOptions

    likelihood_solver: str
    atol: float
    rtol: float
    divergence: str
    probes: int

    def _set_likelihood_options(
        self, likelihood_solver: str, atol: float, rtol: float, divergence: str, probes: int
    ) -> None:
        self.likelihood_solver = choice("likelihood_solver", likelihood_solver, SOLVERS)
        self.atol = float(atol)
        self.rtol = float(rtol)
        self.divergence = choice("divergence", divergence, DIVERGENCES)
        self.probes = positive_int("probes", probes)

    def velocity(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        """The instantaneous velocity at ``x: (batch, *event)``, ``t: (batch,)`` or 0-dim."""
        raise NotImplementedError

    def velocity_and_divergence(
        self, x: Tensor, t: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The instantaneous velocity and its exact divergence ``(batch,)``."""
        raise NotImplementedError

    def velocity_and_jvp(
        self, x: Tensor, t: Tensor, context: Tensor | None, direction: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The instantaneous velocity and its Jacobian-vector product with ``direction``
        (called only where :meth:`has_own_jvp`)."""
        raise NotImplementedError

    def has_own_jvp(self) -> bool:
        """Whether :meth:`velocity_and_jvp` is implemented and the network has its own
        ``velocity_and_jvp`` (so Hutchinson's estimator needs no ``torch.func.jvp``)."""
        implemented = type(self).velocity_and_jvp is not CoupledVelocityModel.velocity_and_jvp
        return implemented and callable(getattr(self.network, "velocity_and_jvp", None))

    def _likelihood_steps(self, method: str, steps: int | None) -> int | None:
        """The steps ``log_prob`` gives the solver ``method`` when asked for ``steps``."""
        raise NotImplementedError

    def _domain_fold(self) -> Fold | None:
        """The map of ODE states into the model's domain, applied after every fixed step
        and to the end point of a solve (a reflected flow's fold into its box); ``None``
        (the default) for a flow on all of :math:`\\mathbb R^D`. It must preserve volume,
        since no log-determinant is added for it."""
        return None

    def _log_prob(self, x: Tensor, context: Tensor | None, options: ODELogProbOptions) -> Tensor:
        """Log-density by the instantaneous change of variables; see the class docstring.

        ``options`` (``solver``, ``steps``, ``atol``, ``rtol``, ``divergence``,
        ``probes``, ``generator``) override the model's likelihood settings; the
        result is differentiable with respect to ``x`` and the parameters.
        """
        self._require("log_prob", self.has_log_prob)
        method = options.solver or self.likelihood_solver
        kind = options.divergence or self.divergence
        steps, atol, rtol = options.steps, options.atol, options.rtol
        probes, generator = options.probes, options.generator

        def field(t: Tensor, state: Tensor) -> Tensor:
            return self.velocity(state, t, context)

        def field_and_divergence(t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
            return self.velocity_and_divergence(state, t, context)

        def field_and_jvp(t: Tensor, state: Tensor, direction: Tensor) -> tuple[Tensor, Tensor]:
            return self.velocity_and_jvp(state, t, context, direction)

        # A network that traces its own Jacobian (VelocityMLP) beats the generic
        # forward-mode trace; other networks take the generic path.
        fast = kind == "exact" and callable(getattr(self.network, "velocity_and_divergence", None))
        fold = self._domain_fold()

        def base_log_prob(z: Tensor) -> Tensor:
            # An adaptive solve is not folded step by step: its end point is folded here.
            return self.base.log_prob(z if fold is None else fold(z))

        result = log_likelihood(
            field,
            x,
            base_log_prob,
            method=method,
            steps=self._likelihood_steps(method, steps),
            atol=self.atol if atol is None else atol,
            rtol=self.rtol if rtol is None else rtol,
            divergence=kind,
            probes=probes or self.probes,
            generator=generator,
            velocity_and_divergence=field_and_divergence if fast else None,
            step_hook=fold_step_hook(fold, method),
            velocity_and_jvp=field_and_jvp if self.has_own_jvp() else None,
        )
        return result.log_prob
