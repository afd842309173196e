"""Shortcut models: a flow map learned by self-consistency, sampled in any number of steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pushforward.distributions import Distribution, make_base
from pushforward.flows.options import choice, hidden_widths, positive_int, sizes
from pushforward.matching.consistency import (
    TargetNetwork,
    batch_pairs,
    broadcast_rows,
    check_coupling,
    event_shape_option,
    prepare_pairs,
    row_mse,
    unit_interval,
)
from pushforward.matching.couplings import Coupling
from pushforward.model import Model
from pushforward.nn.two_time import TwoTimeVelocityMLP
from pushforward.ode import ADAPTIVE_METHODS, FIXED_STEP_METHODS, solve_ode
from pushforward.ode.likelihood import DIVERGENCES, log_likelihood
from pushforward.registry import register

STEP_SIZES: tuple[str, ...] = ("dyadic", "continuous")
"""How the self-consistency rows draw their step sizes (see :class:`ShortcutModel`)."""

SOLVERS: tuple[str, ...] = tuple(FIXED_STEP_METHODS) + tuple(ADAPTIVE_METHODS)
"""Solver names ``log_prob`` accepts."""

ShortcutField = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]
"""``field(x, t, d, context) -> (batch, *event)``: a shortcut network."""


@dataclass
class ShortcutSteps:
    """Times and step sizes of the self-consistency rows of a batch.

    Attributes:
        t: ``(n,)`` start times, with ``t + step <= 1``.
        step: ``(n,)`` the step :math:`2d` the network learns to take at once.
        half: ``(n,)`` the half step :math:`d` the target takes twice.
        query: ``(n,)`` the step size the target is evaluated at: :math:`d`, or 0
            where :math:`d` is the finest level (the flow-matching velocity).
    """

    t: Tensor
    step: Tensor
    half: Tensor
    query: Tensor


def finest_query(half: Tensor, finest: float) -> Tensor:
    """Step sizes as the network is asked them: ``half``, or 0 where ``half <= finest``."""
    return torch.where(half <= finest, torch.zeros_like(half), half)


def dyadic_steps(
    n: int,
    max_steps: int,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> ShortcutSteps:
    r"""Step sizes of the shortcut paper: powers of two, times on the step's grid.

    The step is :math:`2d = 2^{-k}` with :math:`k` uniform on
    :math:`\{0, \dots, \log_2 M - 1\}` (so :math:`2d \in \{1, \dots, 2/M\}`), the
    time :math:`t = j\, 2d` with :math:`j` uniform on :math:`\{0, \dots, 2^k - 1\}`,
    and the target's half step :math:`d` is queried at 0 when it is the finest
    level :math:`1/M`, where the network is the flow-matching velocity.

    References: Frans et al. (2025), One Step Diffusion via Shortcut Models.

    Args:
        n: number of rows.
        max_steps: :math:`M`, a power of two >= 2 (the finest step is :math:`1/M`).
        dtype, device: of the result.
        generator: random generator (on ``device``).

    Returns:
        A :class:`ShortcutSteps` of ``(n,)`` tensors.
    """
    levels = _log2(max_steps)
    k = torch.randint(levels, (n,), generator=generator, device=device)
    sections = torch.pow(2.0, k.to(dtype))
    step = 1.0 / sections
    u = torch.rand(n, generator=generator, dtype=dtype, device=device)
    # u * sections can round up to sections in low precision; the last start is sections - 1.
    index = torch.minimum(torch.floor(u * sections), sections - 1.0)
    half = step / 2
    return ShortcutSteps(
        t=index * step, step=step, half=half, query=finest_query(half, 1.0 / max_steps)
    )


def continuous_steps(
    n: int,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> ShortcutSteps:
    r"""Any step size, as for a flow map: :math:`2d \sim U(0, 1]`, :math:`t \sim U[0, 1 - 2d]`.

    The target is queried at the half step itself; small steps tie the map to the
    flow-matching velocity at :math:`d = 0` by continuity.

    References: Sabour et al. (2025), Align Your Flow: Scaling Continuous-Time
    Flow Map Distillation; Frans et al. (2025), One Step Diffusion via Shortcut Models.

    Args:
        n: number of rows.
        dtype, device: of the result.
        generator: random generator (on ``device``).

    Returns:
        A :class:`ShortcutSteps` of ``(n,)`` tensors.
    """
    step = 1.0 - torch.rand(n, generator=generator, dtype=dtype, device=device)
    t = torch.rand(n, generator=generator, dtype=dtype, device=device) * (1.0 - step)
    half = step / 2
    return ShortcutSteps(t=t, step=step, half=half, query=half)


def self_consistency_target(
    field: ShortcutField,
    x: Tensor,
    t: Tensor,
    half: Tensor,
    query: Tensor,
    context: Tensor | None = None,
) -> Tensor:
    r"""Two half steps averaged: the target of a shortcut of twice their size.

    .. math:: s_{target} = \tfrac12 \big(s(x_t, t, d) + s(x'_{t+d}, t + d, d)\big),
              \qquad x'_{t+d} = x_t + d\, s(x_t, t, d),

    with the network evaluated at step size ``query`` (:math:`d`, or 0 at the
    finest level). For an exact flow map :math:`\Phi_{t \to t+d}(x) = x + d\,
    s(x, t, d)` this equals :math:`s(x_t, t, 2d)` exactly, by
    :math:`\Phi_{t \to t+2d} = \Phi_{t+d \to t+2d} \circ \Phi_{t \to t+d}`.

    References: Frans et al. (2025), One Step Diffusion via Shortcut Models.

    Args:
        field: the network ``field(x, t, d, context)``.
        x: ``(n, *event)`` states at times ``t``.
        t: ``(n,)`` times.
        half: ``(n,)`` half steps :math:`d`.
        query: ``(n,)`` step sizes the field is evaluated at.
        context: ``(n, context)`` or ``None``.

    Returns:
        ``(n, *event)``.
    """
    first = field(x, t, query, context)
    middle = x + broadcast_rows(half, x) * first
    second = field(middle, t + half, query, context)
    return 0.5 * (first + second)


@dataclass
class ShortcutLoss:
    """The parts of the shortcut loss on one batch.

    Attributes:
        total: the training objective: the squared errors of all rows averaged
            (flow-matching and self-consistency rows weigh the same).
        flow_matching: mean squared error of the flow-matching rows (0 if none).
        self_consistency: mean squared error of the self-consistency rows (0 if none).
    """

    total: Tensor
    flow_matching: Tensor
    self_consistency: Tensor


class ShortcutModel(Model):
    r"""A shortcut model: a network :math:`s_\theta(x_t, t, d)` that jumps a step :math:`d`.

    One step of size :math:`d` is :math:`x_{t+d} = x_t + d\, s_\theta(x_t, t, d)`,
    so :math:`x \mapsto x + d\, s_\theta(x, t, d)` is a learned flow map from time
    :math:`t` to :math:`t + d` (:math:`t = 0` the source, 1 the data). A
    ``consistency_fraction`` of each batch (the paper: 1/4; its code: 1/8) trains the
    self-consistency of the map, the rest is flow matching on the linear path
    :math:`x_t = t x_1 + (1 - t) x_0` at :math:`d = 0`:

    .. math:: \mathcal L = \mathbb E \lVert s_\theta(x_t, t, 0) - (x_1 - x_0)\rVert^2
              + \mathbb E \lVert s_\theta(x_t, t, 2d) - \mathrm{sg}[s_{target}]\rVert^2,

    :math:`s_{target}` from :func:`self_consistency_target` on a stop-gradient
    (``target_ema = 0``) or moving-average copy of the network. Flow-matching
    times are uniform on :math:`[0, 1]`. Step sizes of the consistency rows
    (``step_sizes``):

    * ``dyadic`` (the paper): :math:`2d = 2^{-k}`, :math:`k` uniform in
      :math:`\{0..\log_2 M - 1\}`, times on the :math:`2d` grid, half steps of the
      finest level :math:`1/M` read as :math:`d = 0` (:func:`dyadic_steps`);
    * ``continuous`` (a flow map of any step): :math:`2d \sim U(0, 1]`,
      :math:`t \sim U[0, 1 - 2d]` (:func:`continuous_steps`).

    Sampling with ``steps`` :math:`N` takes :math:`N` jumps of :math:`d = 1/N`
    (step sizes at or below the finest dyadic level use :math:`d = 0`, the
    flow-matching velocity, i.e. Euler steps): :math:`N` network evaluations. Any
    :math:`N \ge 1` works; dyadic training covers the powers of two up to
    :math:`M` best.

    ``log_prob`` is the density of the :math:`d \to 0` flow, the ODE
    :math:`\dot x = s_\theta(x, t, 0)`, by the instantaneous change of variables
    (as for flow matching); it is exact for samples of that ODE and approximate
    for the few-step sampler, whose distribution matches it only as far as the
    shortcuts are self-consistent. ``sample_and_log_prob`` therefore draws by
    solving that ODE (with the likelihood solver), not by jumping.

    The paper's code also clips targets to ``[-4, 4]`` (for image latents); this
    model does not.

    References:
        Frans et al. (2025), One Step Diffusion via Shortcut Models;
        Sabour et al. (2025), Align Your Flow: Scaling Continuous-Time Flow Map
        Distillation;
        Lipman et al. (2023), Flow Matching for Generative Modeling;
        Chen et al. (2018), Neural Ordinary Differential Equations.

    Args:
        network: the shortcut network ``network(x, t, d, context) -> like x``.
        base: the source distribution.
        context_features: size of the context (0 for unconditional).
        coupling: how source and data points are paired (``independent``, ``ot``,
            ``sinkhorn``).
        step_sizes: ``dyadic`` or ``continuous``.
        max_steps: :math:`M`, the finest dyadic step is :math:`1/M` (a power of two).
        consistency_fraction: the fraction of each batch given self-consistency targets.
        target_ema: moving-average rate of the target network; 0 uses the online
            network without gradients.
        steps: default number of sampling steps.
        likelihood_solver, atol, rtol: ODE solver and tolerances of ``log_prob``.
        divergence: ``exact`` or ``hutchinson`` for ``log_prob``.
        probes: Hutchinson probes per point.
    """

    def __init__(
        self,
        network: nn.Module,
        base: Distribution,
        context_features: int = 0,
        *,
        coupling: str = "independent",
        step_sizes: str = "dyadic",
        max_steps: int = 128,
        consistency_fraction: float = 0.25,
        target_ema: float = 0.0,
        steps: int = 1,
        likelihood_solver: str = "dopri5",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        divergence: str = "exact",
        probes: int = 1,
    ) -> None:
        super().__init__()
        self.network = network
        self.base = base
        self.event_shape = tuple(base.event_shape)
        self.context_features = int(context_features)
        self.coupling = check_coupling(coupling)
        self.step_sizes = choice("step_sizes", step_sizes, STEP_SIZES)
        self.max_steps = positive_int("max_steps", max_steps, minimum=2)
        _log2(self.max_steps)
        self.consistency_fraction = unit_interval("consistency_fraction", consistency_fraction)
        self.target_ema = unit_interval("target_ema", target_ema)
        self.steps = positive_int("steps", steps)
        self.likelihood_solver = choice("likelihood_solver", likelihood_solver, SOLVERS)
        self.atol = float(atol)
        self.rtol = float(rtol)
        self.divergence = choice("divergence", divergence, DIVERGENCES)
        self.probes = positive_int("probes", probes)
        self.target = TargetNetwork(network, self.target_ema) if self.target_ema > 0 else None

    # -- the fields -------------------------------------------------------------

    @property
    def finest_step(self) -> float:
        """Half steps at or below this are read as ``d = 0``: ``1/M`` (dyadic) or 0."""
        return 1.0 / self.max_steps if self.step_sizes == "dyadic" else 0.0

    def shortcut(self, x: Tensor, t: Tensor, d: Tensor, context: Tensor | None = None) -> Tensor:
        r"""The shortcut :math:`s_\theta(x, t, d, c)`: ``x: (batch, *event)``, ``t`` and
        ``d`` ``(batch,)`` or 0-dim; returns ``(batch, *event)``."""
        output: Tensor = self.network(x, t, d, context)
        return output

    def velocity(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        r"""The instantaneous velocity :math:`s_\theta(x, t, 0, c)`, ``(batch, *event)``."""
        return self.shortcut(x, t, torch.zeros_like(t), context)

    def target_shortcut(
        self, x: Tensor, t: Tensor, d: Tensor, context: Tensor | None = None
    ) -> Tensor:
        r"""The target's shortcut :math:`s_{\theta^-}(x, t, d, c)`, without gradients."""
        if self.target is not None:
            return self.target(x, t, d, context)
        with torch.no_grad():
            return self.shortcut(x, t, d, context)

    # -- training ----------------------------------------------------------------

    def prepare_batch(self, x: Tensor, context: Tensor | None, seed: int) -> Coupling | None:
        """Draws and couples source points for a batch ahead of its step (``ot``, ``sinkhorn``)."""
        return prepare_pairs(self.coupling, self.base, x, context, seed)

    def loss(  # type: ignore[override]
        self, x: Tensor, context: Tensor | None = None, prepared: Coupling | None = None
    ) -> Tensor:
        """The shortcut loss on a batch of data ``x: (batch, *event)``.

        In training mode with gradients on, the EMA target network (if any) first
        takes one step towards the current weights, so it moves once per training
        step. ``prepared`` is the batch's coupling made by :meth:`prepare_batch`.
        """
        pairs = batch_pairs(self, self.coupling, self.base, x, context, prepared)
        if self.target is not None and self.training and torch.is_grad_enabled():
            self.target.update(self.network)
        return self.loss_terms(pairs).total

    def consistency_rows(self, n: int) -> int:
        """How many of ``n`` rows get self-consistency targets (the last ones)."""
        return round(n * self.consistency_fraction)

    def draw_steps(self, n: int, like: Tensor) -> ShortcutSteps:
        """Step sizes and times of ``n`` self-consistency rows (``like`` gives dtype, device)."""
        if self.step_sizes == "dyadic":
            return dyadic_steps(n, self.max_steps, dtype=like.dtype, device=like.device)
        return continuous_steps(n, dtype=like.dtype, device=like.device)

    def loss_terms(
        self,
        pairs: Coupling,
        flow_times: Tensor | None = None,
        steps: ShortcutSteps | None = None,
    ) -> ShortcutLoss:
        """The loss and its parts on coupled points ``pairs``.

        The first rows get flow-matching targets at ``flow_times`` (drawn uniformly
        first, when not given), the last :meth:`consistency_rows` rows
        self-consistency targets at ``steps`` (drawn by :meth:`draw_steps`). The
        target network does not move here.
        """
        x0, x1, context = pairs.x0, pairs.x1, pairs.context
        n = x1.shape[0]
        n_consistency = self.consistency_rows(n)
        n_flow = n - n_consistency
        if flow_times is None:
            flow_times = torch.rand(n_flow, dtype=x1.dtype, device=x1.device)
        if steps is None:
            steps = self.draw_steps(n_consistency, x1)
        if flow_times.shape != (n_flow,) or steps.t.shape != (n_consistency,):
            raise ValueError(
                f"a batch of {n} rows has {n_flow} flow-matching and {n_consistency} "
                f"self-consistency rows; got {tuple(flow_times.shape)} times and "
                f"{tuple(steps.t.shape)} steps"
            )
        zero = x1.new_zeros(())
        per_row = []
        flow_matching = self_consistency = zero
        if n_flow:
            t = flow_times
            a0, a1 = x0[:n_flow], x1[:n_flow]
            x_t = broadcast_rows(t, a1) * a1 + broadcast_rows(1.0 - t, a1) * a0
            rows = row_mse(self.velocity(x_t, t, _head(context, n_flow)) - (a1 - a0))
            per_row.append(rows)
            flow_matching = rows.mean()
        if n_consistency:
            b0, b1 = x0[n_flow:], x1[n_flow:]
            tail = _tail(context, n_flow)
            x_t = broadcast_rows(steps.t, b1) * b1 + broadcast_rows(1.0 - steps.t, b1) * b0
            target = self_consistency_target(
                self.target_shortcut, x_t, steps.t, steps.half, steps.query, tail
            )
            rows = row_mse(self.shortcut(x_t, steps.t, steps.step, tail) - target)
            per_row.append(rows)
            self_consistency = rows.mean()
        return ShortcutLoss(
            total=torch.cat(per_row).mean(),
            flow_matching=flow_matching,
            self_consistency=self_consistency,
        )

    # -- sampling -----------------------------------------------------------------

    def generate(
        self, source: Tensor, context: Tensor | None = None, *, steps: int | None = None
    ) -> Tensor:
        r"""Carries source points ``source: (n, *event)`` to data in ``steps`` jumps.

        :math:`x \leftarrow x + d\, s_\theta(x, i d, d)` for :math:`i = 0..N-1`,
        :math:`d = 1/N` (queried at 0 at or below the finest dyadic level); ``N``
        network evaluations. Gradients flow when enabled.
        """
        count = self.steps if steps is None else positive_int("steps", steps)
        d = 1.0 / count
        query = source.new_tensor(0.0 if d <= self.finest_step else d)
        x = source
        for i in range(count):
            x = x + d * self.shortcut(x, source.new_tensor(i * d), query, context)
        return x

    def sample(  # type: ignore[override]
        self, n: int, context: Tensor | None = None, *, steps: int | None = None
    ) -> Tensor:
        """Draws ``n`` samples ``(n, *event)`` in ``steps`` jumps of size ``1/steps``.

        Args:
            n: number of samples.
            context: ``(n, context)``, one row for all, or ``None``.
            steps: number of jumps (network evaluations), default the model's ``steps``.
        """
        n, context = self._sampling_args(n, context)
        count = self.steps if steps is None else positive_int("steps", steps)
        with torch.no_grad():
            return self.generate(self.base.sample(n), context, steps=count)

    def _rsample_and_log_prob(
        self, n: int, context: Tensor | None, with_log_prob: bool
    ) -> tuple[Tensor, Tensor | None]:
        source = self.base.rsample(n)
        if not with_log_prob:
            return self.generate(source, context), None
        # The density is that of the d -> 0 flow, so its samples come from that ODE.
        x = self.solve(source, context)
        return x, self._log_prob(x, context)

    def solve(
        self,
        source: Tensor,
        context: Tensor | None = None,
        *,
        solver: str | None = None,
        steps: int | None = None,
    ) -> Tensor:
        r"""Integrates the :math:`d \to 0` flow :math:`\dot x = s_\theta(x, t, 0)` from
        ``source: (n, *event)`` at :math:`t = 0` to 1 (default: the likelihood solver)."""
        method = choice("solver", solver or self.likelihood_solver, SOLVERS)
        if method in FIXED_STEP_METHODS and steps is None:
            raise ValueError(f"the fixed-step solver {method!r} needs steps")

        def field(t: Tensor, x: Any) -> Any:
            return self.velocity(x, t.expand(x.shape[0]), context)

        solution = solve_ode(
            field, source, (0.0, 1.0), method, steps=steps, atol=self.atol, rtol=self.rtol
        )
        if not isinstance(solution.state, Tensor):
            raise TypeError("expected a single-tensor ODE state")
        return solution.state

    # -- density of the d -> 0 flow ------------------------------------------------

    def log_prob(  # type: ignore[override]
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        solver: str | None = None,
        steps: int | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        divergence: str | None = None,
        probes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Log-density of ``x: (batch, *event)`` under the :math:`d \to 0` flow.

        .. math:: \log p_1(x) = \log p_0(x_0) - \int_0^1 \nabla \cdot s_\theta(x_t, t, 0)\, dt

        Args:
            x: data points.
            context: ``(batch, context)``, one row, or ``None``.
            solver: ODE method (default ``likelihood_solver``).
            steps: steps of a fixed-step solver (required for those).
            atol, rtol: tolerances of an adaptive solver.
            divergence: ``exact`` or ``hutchinson``.
            probes: Hutchinson probes per point.
            generator: random generator of the Hutchinson probes.

        Returns:
            ``(batch,)``, differentiable with respect to ``x`` and the parameters.
        """
        x = self.check_input(x)
        context = self.check_context(context, x.shape[0])
        return self._log_prob(x, context, solver, steps, atol, rtol, divergence, probes, generator)

    def _log_prob(  # type: ignore[override]
        self,
        x: Tensor,
        context: Tensor | None,
        solver: str | None = None,
        steps: int | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        divergence: str | None = None,
        probes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        method = choice("solver", solver or self.likelihood_solver, SOLVERS)
        kind = choice("divergence", divergence or self.divergence, DIVERGENCES)
        if method in FIXED_STEP_METHODS and steps is None:
            raise ValueError(f"the fixed-step solver {method!r} needs steps")

        def field(t: Tensor, state: Tensor) -> Tensor:
            return self.velocity(state, t.expand(state.shape[0]), context)

        def field_and_divergence(t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
            times = t.expand(state.shape[0])
            result: tuple[Tensor, Tensor] = self.network.velocity_and_divergence(  # type: ignore[operator]
                state, times, torch.zeros_like(times), context
            )
            return result

        # The network's own Jacobian trace beats the generic forward-mode trace.
        fast = kind == "exact" and callable(getattr(self.network, "velocity_and_divergence", None))
        result = log_likelihood(
            field,
            x,
            self.base.log_prob,
            method=method,
            steps=steps if method in FIXED_STEP_METHODS else None,
            atol=self.atol if atol is None else atol,
            rtol=self.rtol if rtol is None else rtol,
            divergence=kind,
            probes=probes or self.probes,
            generator=generator,
            velocity_and_divergence=field_and_divergence if fast else None,
        )
        return result.log_prob


def _log2(max_steps: int) -> int:
    """``log2(max_steps)`` for a power of two >= 2, else a ValueError."""
    levels = int(max_steps).bit_length() - 1
    if max_steps < 2 or 2**levels != max_steps:
        raise ValueError(f"option 'max_steps' must be a power of two >= 2, got {max_steps!r}")
    return levels


def _head(context: Tensor | None, n: int) -> Tensor | None:
    return None if context is None else context[:n]


def _tail(context: Tensor | None, n: int) -> Tensor | None:
    return None if context is None else context[n:]


SHORTCUT_TRAIN_DEFAULTS = {"lr": 5e-3}
"""The peak learning rate ``pushforward train`` uses for ``shortcut`` (see :func:`shortcut`)."""


@register("shortcut", train=SHORTCUT_TRAIN_DEFAULTS)
def shortcut(
    features: int,
    context: int = 0,
    hidden: Sequence[int] = (256, 256, 256, 256),
    shape: Sequence[int] | None = None,
    base: str = "normal",
    coupling: str = "ot",
    residual: bool = True,
    time_embedding: int = 32,
    time_scale: float = 10.0,
    activation: str = "silu",
    step_sizes: str = "dyadic",
    max_steps: int = 128,
    consistency_fraction: float = 0.25,
    target_ema: float = 0.0,
    steps: int = 1,
    likelihood_solver: str = "dopri5",
    atol: float = 1e-5,
    rtol: float = 1e-5,
    divergence: str | None = None,
    probes: int = 1,
) -> ShortcutModel:
    """A shortcut model with a two-time MLP network (Frans et al. 2025).

    The defaults were picked on moons (2000 steps, batch 512, the residual 4x256
    network, energy distance of 10,000 samples to 10,000 held-out points, whose
    noise is about 3e-4): with minibatch OT pairs 1, 2 and 4 steps were at that
    noise, as were 100 Euler steps of ``fm``; independent pairs left 1 step at
    8e-4; targets from a moving average (0.999, as the paper's code takes them)
    lagged the network and ended 35x worse than the stop-gradient target; a peak
    learning rate of 5e-3 beat 1e-3 by 4x.

    Args:
        features: number of values per event (``prod(shape)``).
        context: context size (0 for unconditional).
        hidden: widths of the network's hidden layers.
        shape: event shape (default ``[features]``).
        base: source distribution name.
        coupling: ``independent``, ``ot`` (exact minibatch OT) or ``sinkhorn``.
        residual: residual blocks in the network.
        time_embedding: width of each of the two sinusoidal embeddings (time, step).
        time_scale: the embeddings' frequency scale.
        activation: nonlinearity of the network.
        step_sizes: ``dyadic`` (the paper's powers of two) or ``continuous``.
        max_steps: the finest dyadic step is ``1/max_steps`` (a power of two).
        consistency_fraction: the fraction of each batch with self-consistency targets.
        target_ema: moving-average rate of the target network (0: stop-gradient copy).
        steps: default number of sampling steps.
        likelihood_solver, atol, rtol: ODE solver and tolerances of ``log_prob``.
        divergence: ``exact`` or ``hutchinson`` (default: exact up to 64 features).
        probes: Hutchinson probes per point.
    """
    features, context = sizes(features, context)
    event_shape = event_shape_option(features, shape)
    network = TwoTimeVelocityMLP(
        features,
        context,
        hidden=hidden_widths(hidden),
        time_embedding=positive_int("time_embedding", time_embedding, minimum=2),
        activation=activation,
        residual=bool(residual),
        time_scale=float(time_scale),
    )
    if divergence is None:
        divergence = "exact" if features <= 64 else "hutchinson"
    return ShortcutModel(
        network,
        make_base(base, event_shape),
        context,
        coupling=coupling,
        step_sizes=step_sizes,
        max_steps=max_steps,
        consistency_fraction=consistency_fraction,
        target_ema=target_ema,
        steps=steps,
        likelihood_solver=likelihood_solver,
        atol=atol,
        rtol=rtol,
        divergence=divergence,
        probes=probes,
    )
