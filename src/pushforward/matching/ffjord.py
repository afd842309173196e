"""Continuous normalizing flows trained by maximum likelihood: the registered ``ffjord``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import jvp

from pushforward.distributions import Distribution
from pushforward.matching.model import FlowMatching
from pushforward.matching.options import (
    DEFAULT_LIKELIHOOD,
    DEFAULT_NETWORK,
    LikelihoodOptions,
    NetworkOptions,
    divergence_option,
)
from pushforward.matching.schedulers import make_scheduler
from pushforward.ode.adjoint import solve_ode_adjoint
from pushforward.ode.divergence import PROBE_KINDS, exact_divergence, make_probes
from pushforward.ode.likelihood import DIVERGENCES
from pushforward.ode.options import SOLVERS
from pushforward.ode.solvers import FIXED_STEP_METHODS, State, solve_ode
from pushforward.option_groups import grouped_options
from pushforward.options import choice, non_negative, positive_float, positive_int, sizes
from pushforward.paired import PairedBatch
from pushforward.registry import register

FFJORD_TRAIN_DEFAULTS = {"lr": 1e-3}
"""The peak learning rate ``pushforward train`` uses for ``ffjord`` (FFJORD's own)."""


@dataclass
class LikelihoodTerms:
    """The terms of one maximum-likelihood solve (see :meth:`FFJORD.likelihood_terms`).

    Attributes:
        log_prob: :math:`\\log p(x)`, exact or Hutchinson's unbiased estimate, ``(batch,)``.
        kinetic: :math:`\\int_0^T \\lVert v(x_t, t) \\rVert^2 dt` per row, ``(batch,)``
            (zeros unless asked).
        jacobian: :math:`\\int_0^T \\lVert \\varepsilon^\\top \\partial v / \\partial x
            \\rVert^2 dt` per row, an unbiased estimate of the integrated squared
            Frobenius norm of the Jacobian, ``(batch,)`` (zeros unless asked).
        base_point: where the flow carries ``x`` at :math:`t = 0`, ``(batch, *event)``.
        nfe: evaluations of the augmented dynamics.
    """

    log_prob: Tensor
    kinetic: Tensor
    jacobian: Tensor
    base_point: Tensor
    nfe: int


class _TrainingDynamics:
    r"""The augmented state :math:`(x, \ell, E, F, c)` of a likelihood solve, as a field.

    :math:`\dot x = v`, :math:`\dot\ell = \nabla\cdot v` (exact, or
    :math:`\varepsilon^\top J \varepsilon`), :math:`\dot E = \lVert v\rVert^2`,
    :math:`\dot F = \lVert J \varepsilon \rVert^2`, and a context :math:`c` with
    :math:`\dot c = 0` when it rides along (so the adjoint carries its gradient).
    """

    def __init__(
        self,
        model: FFJORD,
        probe: Tensor | None,
        exact: bool,
        kinetic: bool,
        jacobian: bool,
        context: Tensor | None,
        context_in_state: bool,
    ) -> None:
        self.model = model
        self.probe = probe
        self.exact = exact
        self.kinetic = kinetic
        self.jacobian = jacobian
        self.context = context
        self.context_in_state = context_in_state
        # A network that traces its own Jacobian (VelocityMLP) beats the generic trace.
        self.own_trace = callable(getattr(model.network, "velocity_and_divergence", None))
        self.own_jvp = model.has_own_jvp()

    def __call__(self, t: Tensor, state: State) -> tuple[Tensor, ...]:
        if not isinstance(state, tuple):
            raise TypeError("expected the augmented state of a likelihood solve (a tuple)")
        x = state[0]
        context = state[-1] if self.context_in_state else self.context
        tangent: Tensor | None = None
        if self.exact and self.own_trace:
            velocity, divergence = self.model.velocity_and_divergence(x, t, context)
            if self.jacobian:
                assert self.probe is not None
                _, tangent = self._jvp(x, t, context, self.probe)
        elif self.exact:
            velocity, divergence = exact_divergence(
                partial(self.model.velocity, t=t, context=context), x
            )
            if self.jacobian:
                assert self.probe is not None
                _, tangent = self._jvp(x, t, context, self.probe)
        else:
            assert self.probe is not None
            velocity, tangent = self._jvp(x, t, context, self.probe)
            divergence = (tangent * self.probe).flatten(1).sum(1)
        derivatives = [velocity, divergence]
        if self.kinetic:
            derivatives.append(velocity.square().flatten(1).sum(1))
        if self.jacobian:
            assert tangent is not None
            derivatives.append(tangent.square().flatten(1).sum(1))
        if self.context_in_state:
            assert context is not None
            derivatives.append(torch.zeros_like(context))
        return tuple(derivatives)

    def _jvp(
        self, x: Tensor, t: Tensor, context: Tensor | None, direction: Tensor
    ) -> tuple[Tensor, Tensor]:
        if self.own_jvp:
            return self.model.velocity_and_jvp(x, t, context, direction)

        def field(point: Tensor) -> Tensor:
            return self.model.velocity(point, t, context)

        outputs = jvp(field, (x,), (direction,))
        return outputs[0], outputs[1]


class FFJORD(FlowMatching):
    r"""A continuous normalizing flow trained by maximum likelihood (FFJORD).

    The velocity :math:`v_\theta(x, t, c)` defines the flow from the base at
    :math:`t = 0` to the data at :math:`t = 1`, as for ``fm``, but it is trained on
    the likelihood itself: each step integrates the instantaneous change of
    variables from the data back to the base,

    .. math::
        \log p(x) = \log p_0(z(0)) + \int_1^0 -\nabla\cdot v_\theta(z(t), t)\,dt
        \;\;\text{with}\;\; z(1) = x,

    with the exact divergence (the network's own Jacobian trace) or Hutchinson's
    estimator :math:`\varepsilon^\top J \varepsilon` with one probe per solve,
    Rademacher or Gaussian (FFJORD), and minimises
    :math:`-\mathbb E \log p(x) + \lambda_K \mathbb E\,E + \lambda_J \mathbb E\,F`,
    where :math:`E = \int \lVert v \rVert^2 dt` (kinetic energy) and
    :math:`F = \int \lVert \varepsilon^\top \partial v/\partial x \rVert^2 dt` (the
    Jacobian's Frobenius norm, by the same probe) are integrated as extra ODE
    states along the same solve (RNODE, Finlay et al. 2020). The regularisers enter
    the loss in training mode only; in evaluation mode the loss is the negative
    log-likelihood. Gradients come by back-propagation through the solver, or by
    the adjoint method (``adjoint=True``), whose memory does not grow with the
    number of function evaluations.

    A learnable end time :math:`T` (``learn_end_time``) rescales the field, so the
    flow of :math:`\dot x = T v_\theta(x, s)` over :math:`s \in [0, 1]` is that of
    :math:`v_\theta` over :math:`[0, T]` in the network's own clock.

    Sampling, ``log_prob`` at evaluation and every ODE option are ``fm``'s; an ``fm``
    run's weights initialise an ``ffjord`` run (``pushforward train --init RUN``), as
    the fine-tuning by maximum likelihood of a field trained by regression.

    References:
        Chen et al. (2018), Neural Ordinary Differential Equations;
        Grathwohl et al. (2019), FFJORD: Free-form Continuous Dynamics for Scalable
        Reversible Generative Models;
        Finlay et al. (2020), How to Train Your Neural ODE: the World of Jacobian and
        Kinetic Regularization.

    Args:
        network: the velocity network ``network(x, t, context) -> like x``.
        base: the base distribution :math:`p_0`.
        context_features: size of the context (0 for unconditional).
        training_solver: the ODE method of a training solve.
        training_steps: steps of a fixed-step training solve.
        training_atol, training_rtol: tolerances of an adaptive training solve.
        training_divergence: ``"exact"`` or ``"hutchinson"`` in training.
        noise: Hutchinson's probe, ``"rademacher"`` or ``"gaussian"``.
        adjoint: back-propagate by the adjoint method.
        kinetic: weight :math:`\lambda_K` of the kinetic-energy regulariser.
        jacobian: weight :math:`\lambda_J` of the Jacobian-Frobenius regulariser.
        end_time: the initial end time :math:`T`.
        learn_end_time: learn :math:`T` (a parameter, :math:`\log T`).
        **options: :class:`~pushforward.matching.model.FlowMatching`'s sampling and
            likelihood options (``solver``, ``steps``, ``likelihood_solver``, ...).
    """

    learns_from_pairs = False
    # An fm run's weights initialise ffjord (train --init): it has no end time.
    fresh_on_init: ClassVar[tuple[str, ...]] = ("log_end_time",)

    def __init__(
        self,
        network: nn.Module,
        base: Distribution,
        context_features: int = 0,
        *,
        training_solver: str = "dopri5",
        training_steps: int | None = None,
        training_atol: float = 1e-5,
        training_rtol: float = 1e-5,
        training_divergence: str = "exact",
        noise: str = "rademacher",
        adjoint: bool = False,
        kinetic: float = 0.0,
        jacobian: float = 0.0,
        end_time: float = 1.0,
        learn_end_time: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(network, base, make_scheduler("cond-ot"), context_features, **options)
        if not getattr(base, "has_density", True):
            raise ValueError(
                f"ffjord is trained on its likelihood, which needs a base with a density; "
                f"base {type(base).__name__} has none"
            )
        self.training_solver = choice("training_solver", training_solver, SOLVERS)
        fixed = self.training_solver in FIXED_STEP_METHODS
        if fixed and training_steps is None:
            raise ValueError(
                f"training_solver {training_solver!r} is a fixed-step method: set training_steps"
            )
        if not fixed and training_steps is not None:
            raise ValueError(
                f"option 'training_steps' applies to a fixed-step training_solver "
                f"({', '.join(FIXED_STEP_METHODS)}); {training_solver!r} chooses its own steps"
            )
        self.training_steps = (
            None if training_steps is None else positive_int("training_steps", training_steps)
        )
        self.training_atol = positive_float("training_atol", training_atol)
        self.training_rtol = positive_float("training_rtol", training_rtol)
        self.training_divergence = choice("training_divergence", training_divergence, DIVERGENCES)
        self.noise = choice("noise", noise, PROBE_KINDS)
        if noise != "rademacher" and self.training_divergence == "exact" and not jacobian:
            raise ValueError(
                f"option 'noise' ({noise!r}) draws Hutchinson's probe, which "
                "training_divergence='exact' without the jacobian regulariser does not use"
            )
        if not isinstance(adjoint, bool):
            raise ValueError(f"option 'adjoint' must be true or false, got {adjoint!r}")
        self.adjoint = adjoint
        self.kinetic = non_negative("kinetic", kinetic)
        self.jacobian = non_negative("jacobian", jacobian)
        self.fixed_end_time = positive_float("end_time", end_time)
        self.learn_end_time = bool(learn_end_time)
        self.log_end_time: nn.Parameter | None = None
        if learn_end_time:
            self.log_end_time = nn.Parameter(torch.tensor(math.log(self.fixed_end_time)))

    @property
    def end_time(self) -> Tensor | float:
        """The end time :math:`T`: a 0-dim tensor when learnt, else the float given."""
        if self.log_end_time is None:
            return self.fixed_end_time
        return self.log_end_time.exp()

    def _scaled(self, value: Tensor) -> Tensor:
        end_time = self.end_time
        if isinstance(end_time, float):
            return value if end_time == 1.0 else value * end_time
        return value * end_time.to(value)

    def prepare_batch(self, x: Tensor, context: Tensor | None, seed: int) -> PairedBatch | None:
        """Nothing to prepare: a likelihood step pairs no source points."""
        return None

    # -- the field, scaled by the end time ----------------------------------------

    def _velocity_of(self, x: Tensor, t: Tensor, network_context: Tensor | None) -> tuple[Tensor]:
        (velocity,) = super()._velocity_of(x, t, network_context)
        return (self._scaled(velocity),)

    def _velocity_and_divergence_of(
        self, x: Tensor, t: Tensor, network_context: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        velocity, divergence = super()._velocity_and_divergence_of(x, t, network_context)
        return self._scaled(velocity), self._scaled(divergence)

    def _velocity_and_jvp_of(
        self, x: Tensor, t: Tensor, network_context: Tensor | None, direction: Tensor
    ) -> tuple[Tensor, Tensor]:
        velocity, tangent = super()._velocity_and_jvp_of(x, t, network_context, direction)
        return self._scaled(velocity), self._scaled(tangent)

    # -- training -------------------------------------------------------------------

    def likelihood_terms(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        kinetic: bool = False,
        jacobian: bool = False,
        generator: torch.Generator | None = None,
    ) -> LikelihoodTerms:
        """The log-likelihood of a training solve and the regularisers along it.

        On values in the model's units (preprocessed); the training objective's solve,
        with the training solver, divergence and gradient method. Hutchinson's probe
        (one per row, shared by the divergence and the Jacobian regulariser) is drawn
        from ``generator``.

        Args:
            x: ``(batch, *event)`` points in the model's units.
            context: ``(batch, context)`` (embedded) or ``None``.
            kinetic: integrate the kinetic energy too.
            jacobian: integrate the Jacobian-Frobenius estimate too.
            generator: random generator of the probe.
        """
        exact = self.training_divergence == "exact"
        # One probe per row for the whole solve, so the dynamics are smooth in time.
        probe = make_probes(x, 1, self.noise, generator)[0] if jacobian or not exact else None
        adjoint = self.adjoint and torch.is_grad_enabled()
        ride_along = adjoint and context is not None and context.requires_grad
        dynamics = _TrainingDynamics(self, probe, exact, kinetic, jacobian, context, ride_along)
        zeros = x.new_zeros(x.shape[0])
        state: list[Tensor] = [x, zeros]
        if kinetic:
            state.append(zeros)
        if jacobian:
            state.append(zeros)
        if ride_along:
            assert context is not None
            state.append(context)
        grid = [1.0, 0.0]
        if adjoint:
            parameters = [p for p in self.parameters() if p.requires_grad]
            solution = solve_ode_adjoint(
                dynamics,
                tuple(state),
                grid,
                self.training_solver,
                parameters,
                steps=self.training_steps,
                atol=self.training_atol,
                rtol=self.training_rtol,
            )
        else:
            solution = solve_ode(
                dynamics,
                tuple(state),
                grid,
                self.training_solver,
                steps=self.training_steps,
                atol=self.training_atol,
                rtol=self.training_rtol,
            )
        final = solution.state
        assert isinstance(final, tuple)
        z, change = final[0], final[1]
        # Integrated from t = 1 down to 0, the accumulators hold minus the forward integrals.
        rest = list(final[2:])
        kinetic_energy = -rest.pop(0) if kinetic else zeros
        frobenius = -rest.pop(0) if jacobian else zeros
        log_prob = self.base.log_prob(z) + change
        return LikelihoodTerms(log_prob, kinetic_energy, frobenius, z, solution.nfe)

    def _loss(
        self, x: Tensor, context: Tensor | None, prepared: PairedBatch | None = None
    ) -> Tensor:
        regularised = self.training
        kinetic = regularised and self.kinetic > 0
        jacobian = regularised and self.jacobian > 0
        terms = self.likelihood_terms(x, context, kinetic=kinetic, jacobian=jacobian)
        loss = -terms.log_prob.mean()
        if kinetic:
            loss = loss + self.kinetic * terms.kinetic.mean()
        if jacobian:
            loss = loss + self.jacobian * terms.jacobian.mean()
        return loss


@register("ffjord", train=FFJORD_TRAIN_DEFAULTS)
@grouped_options(network=NetworkOptions, likelihood=LikelihoodOptions)
def ffjord(
    features: int,
    context: int = 0,
    network: NetworkOptions = DEFAULT_NETWORK,
    training_solver: str = "dopri5",
    training_steps: int | None = None,
    training_atol: float = 1e-5,
    training_rtol: float = 1e-5,
    training_divergence: str | None = None,
    noise: str = "rademacher",
    adjoint: bool = False,
    kinetic: float = 0.0,
    jacobian: float = 0.0,
    end_time: float = 1.0,
    learn_end_time: bool = False,
    solver: str = "dopri5",
    steps: int = 20,
    likelihood: LikelihoodOptions = DEFAULT_LIKELIHOOD,
) -> FFJORD:
    """A continuous normalizing flow trained by maximum likelihood (Grathwohl et al. 2019).

    The same velocity networks and ODE core as ``fm`` (see :class:`FFJORD`), trained
    on the log-likelihood of an ODE solve per step, optionally regularised by the
    kinetic energy and the Jacobian's Frobenius norm (Finlay et al. 2020).

    Args:
        features: number of values per event (``prod(shape)``).
        context: context size (0 for unconditional).
        training_solver: ODE method of a training solve (``dopri5``, as in FFJORD, or a
            fixed-step method with ``training_steps``).
        training_steps: steps of a fixed-step training solve.
        training_atol, training_rtol: tolerances of an adaptive training solve.
        training_divergence: ``exact`` (the network's own Jacobian trace) or
            ``hutchinson`` (one probe per solve); default exact up to 64 features.
        noise: Hutchinson's probe: ``rademacher`` or ``gaussian``.
        adjoint: gradients by the adjoint method (memory independent of the number of
            function evaluations) instead of back-propagation through the solver.
        kinetic: weight of the kinetic-energy regulariser (0: off).
        jacobian: weight of the Jacobian-Frobenius regulariser (0: off).
        end_time: the flow's end time ``T`` (the field is ``T v(x, s)``, ``s`` in [0, 1]).
        learn_end_time: learn ``T``.
        solver, steps: default sampling solver and steps of a fixed-step one.
    """
    features, context = sizes(features, context)
    if network.base == "empirical":
        raise ValueError(
            "ffjord is trained on its likelihood, which an empirical source (base "
            "'empirical') does not have; use fm to transport a source data set"
        )
    event_shape = network.event_shape(features)
    return FFJORD(
        network.build_network(features, context),
        network.source(event_shape),
        context,
        training_solver=training_solver,
        training_steps=training_steps,
        training_atol=training_atol,
        training_rtol=training_rtol,
        training_divergence=choice(
            "training_divergence", divergence_option(training_divergence, features), DIVERGENCES
        ),
        noise=noise,
        adjoint=adjoint,
        kinetic=kinetic,
        jacobian=jacobian,
        end_time=end_time,
        learn_end_time=learn_end_time,
        solver=solver,
        steps=steps,
        **likelihood.model_options(features),
    )
