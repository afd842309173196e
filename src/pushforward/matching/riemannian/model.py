"""Riemannian flow matching: geodesic paths on a manifold, a tangent velocity field, and
the exact likelihood by the manifold's change of variables."""

from __future__ import annotations

from torch import Tensor

from pushforward.distributions.manifold import ManifoldUniform
from pushforward.geometry import Manifold
from pushforward.matching.coupled import Fold, final_state
from pushforward.matching.couplings import BatchCoupling
from pushforward.matching.losses import LossWeighting
from pushforward.matching.model import FlowMatching
from pushforward.matching.riemannian.options import MANIFOLD_STEPS, ManifoldSampleOptions
from pushforward.matching.schedulers import CondOTScheduler
from pushforward.matching.time_sampling import TimeSampler
from pushforward.nn.manifold_velocity import ManifoldVelocity
from pushforward.ode import FIXED_STEP_METHODS
from pushforward.ode.options import ODESampleOptions
from pushforward.ode.solvers import State
from pushforward.options import choice
from pushforward.paired import PairedBatch


class RiemannianFlowMatching(FlowMatching):
    r"""Flow matching on a manifold along geodesics (Chen & Lipman 2024).

    Source points :math:`x_0` are uniform on the manifold (standard normal on a
    Euclidean factor); each is paired with a data point :math:`x_1` and moved along the
    shortest geodesic,

    .. math:: x_t = \exp_{x_0}\bigl(t \log_{x_0} x_1\bigr), \qquad
              u_t(x_t \mid x_0, x_1) = \dot x_t,

    with :math:`\dot x_t` in closed form (the parallel transport of
    :math:`\log_{x_0} x_1` along the geodesic). A tangent field
    :math:`v_\theta` (:class:`~pushforward.nn.manifold_velocity.ManifoldVelocity`) is
    fitted by the regression :math:`\mathbb E\,\lVert v_\theta(x_t, t) - u_t\rVert_g^2`
    in the Riemannian norm (the Euclidean norm of the coordinates, every manifold here
    being embedded with the induced metric).

    Sampling integrates :math:`\dot x = v_\theta(x, t)` from the source with projected
    Runge-Kutta steps (each fixed step followed by the projection onto the manifold),
    exponential-map steps (``step="exp"``) or an adaptive solver (projected at the
    end), and returns points on the manifold
    (unit vectors; angles in :math:`[-\pi, \pi)`; unit quaternions). ``log_prob`` is
    exact: the reversed ODE from the data to the source with

    .. math:: \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \operatorname{div}_g v_\theta(x_t,
              t)\,dt,

    the density with respect to the Riemannian volume measure (the surface area on a
    sphere, Lebesgue measure on :math:`[-\pi, \pi)^d`, the surface measure of
    :math:`S^3` on SO(3)). The field depends on ``x`` only through its projection, so
    its ambient Jacobian trace is the Riemannian divergence, computed exactly by
    forward-mode differentiation or by Hutchinson's estimator. On SO(3) the field is
    odd in the quaternion and the source symmetric, so ``log_prob(q) == log_prob(-q)``.

    Classifier-free guidance and conditional models work as for
    :class:`~pushforward.matching.model.FlowMatching`; a guided field stays tangent.

    References:
        Chen & Lipman (2024), Flow Matching on General Geometries;
        Mathieu & Nickel (2020), Riemannian Continuous Normalizing Flows;
        Köhler et al. (2023), Rigid Body Flows for Sampling Molecular Crystal Structures.

    Args:
        network: the tangent field.
        context_features: size of the context (0 for unconditional).
        normalize: accept rows of a sphere (or quaternions) that are not unit vectors and
            take their directions, instead of refusing them.
        step: how a fixed-step solver moves: ``projected`` (each Runge-Kutta step in
            the coordinates, then the projection onto the manifold) or ``exp`` (every
            stage and step along the exponential map from the current point, the
            slopes projected onto its tangent space: a Runge-Kutta-Munthe-Kaas scheme
            without the inverse-dexp correction, so at most second-order accurate
            whatever the tableau; ``projected`` keeps the tableau's order).
        Other arguments as for :class:`~pushforward.matching.model.FlowMatching`.
    """

    sample_options = ManifoldSampleOptions

    def __init__(
        self,
        network: ManifoldVelocity,
        context_features: int = 0,
        *,
        coupling: str | BatchCoupling = "independent",
        time_sampling: str | TimeSampler = "uniform",
        loss: str = "mse",
        loss_weighting: str | LossWeighting = "none",
        context_dropout: float = 0.0,
        solver: str = "rk4",
        steps: int = 20,
        likelihood_solver: str = "dopri5",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        divergence: str = "exact",
        probes: int = 1,
        normalize: bool = False,
        step: str = "projected",
    ) -> None:
        if not isinstance(network, ManifoldVelocity):
            raise TypeError(
                f"Riemannian flow matching needs a ManifoldVelocity network, got "
                f"{type(network).__name__}"
            )
        super().__init__(
            network,
            ManifoldUniform(network.manifold),
            CondOTScheduler(),
            context_features,
            coupling=coupling,
            time_sampling=time_sampling,
            loss=loss,
            loss_weighting=loss_weighting,
            context_dropout=context_dropout,
            solver=solver,
            steps=steps,
            likelihood_solver=likelihood_solver,
            atol=atol,
            rtol=rtol,
            divergence=divergence,
            probes=probes,
        )
        # Geodesic paths: the Euclidean linear-path shortcut does not apply.
        self._linear_velocity = False
        self.normalize = bool(normalize)
        self.step = choice("step", step, MANIFOLD_STEPS)
        self._manifold = network.manifold

    @property
    def manifold(self) -> Manifold:
        """The manifold the model's points live on."""
        return self._manifold

    def check_points(self, x: Tensor, normalize: bool | None = None) -> Tensor:
        """Rows ``x: (n, ambient)`` checked to be points of the manifold, canonicalised
        (torus angles wrapped; sphere rows normalised when ``normalize``, by default the
        model's own option).

        Raises:
            ValueError: naming the first row that is not on the manifold.
        """
        return self.manifold.check(x, normalize=self.normalize if normalize is None else normalize)

    def check_input(self, x: Tensor, match_dtype: bool = True) -> Tensor:
        x = super().check_input(x, match_dtype)
        return self.check_points(x)

    def _path_point_and_target(self, pairs: PairedBatch, t: Tensor) -> tuple[Tensor, Tensor]:
        point = self.manifold.geodesic(pairs.x0, pairs.x1, t)
        return point.x_t, point.dx_t

    def _domain_fold(self) -> Fold | None:
        # The projection onto the manifold after every fixed step and at the end of a
        # solve; on the states of the likelihood's ODE it changes nothing the field sees,
        # since the field depends on a point only through its projection.
        return self.manifold.project

    def _transport(self, x0: Tensor, context: Tensor | None, options: ODESampleOptions) -> Tensor:
        step = getattr(options, "step", None) or self.step
        method = options.solver or self.solver
        if step == "exp" and method not in FIXED_STEP_METHODS:
            raise ValueError(
                f"step='exp' needs a fixed-step solver ({', '.join(FIXED_STEP_METHODS)}); "
                f"{method!r} chooses its own steps"
            )
        solution = self.solve(
            x0,
            context,
            solver=options.solver,
            steps=options.steps,
            guidance=options.guidance,
            advance=self._exponential_step if step == "exp" else None,
        )
        return self.manifold.project(final_state(solution))

    def _exponential_step(self, x: State, increment: State) -> State:
        if not isinstance(x, Tensor) or not isinstance(increment, Tensor):
            raise TypeError("the sampling state of a manifold flow is one tensor of points")
        return self.manifold.exp(x, self.manifold.tangent(x, increment))
