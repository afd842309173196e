"""One-step distillation of a (rectified) flow: x1 = x0 + v(x0, 0, c), learnt by regression."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pushforward.distributions import Distribution, Empirical, make_base
from pushforward.flows.options import choice, positive_int, sizes
from pushforward.matching.couplings import Coupling
from pushforward.matching.losses import row_regression_loss
from pushforward.matching.model import LOSSES, FlowMatching
from pushforward.matching.options import velocity_network
from pushforward.matching.reflow import INITIALIZATIONS, fit_pairs, reflow_pairs
from pushforward.model import Model
from pushforward.registry import build, register
from pushforward.train.history import History

STUDENT_ARCHITECTURE: tuple[str, ...] = (
    "hidden",
    "residual",
    "time_embedding",
    "time_scale",
    "activation",
)
"""Options of ``distilled`` that shape its network; a student that starts from the
teacher's weights takes the teacher's values of these."""


class DistilledFlow(Model):
    r"""A one-step generator distilled from a flow: one network evaluation per sample.

    .. math:: x_1 = T_\theta(x_0, c) = x_0 + v_\theta(x_0, 0, c), \qquad x_0 \sim p_0

    :math:`v_\theta` is a velocity network of the same shape as the teacher's, read
    at :math:`t = 0` only, so it starts as the teacher's network and the map starts
    as the teacher's one-step Euler map. It is trained by regression on pairs
    :math:`(x_0, x_1)` from the teacher's ODE (see
    :func:`~pushforward.matching.reflow.reflow_pairs`):

    .. math:: \mathcal L(\theta) = \mathbb E_{(x_0, x_1)}\,
              d\big(T_\theta(x_0, c),\, x_1\big)

    with :math:`d` the mean squared error or the pseudo-Huber distance
    :math:`(\sqrt{\lVert a - b\rVert^2 + c^2} - c)/D`, :math:`c = 0.00054\sqrt D`
    (Lee et al. 2024). InstaFlow distils a 2-rectified flow, whose straight
    trajectories make the one-step map easy to fit.

    The map is not known to be invertible (nothing constrains its Jacobian), so
    the model has no density: ``has_log_prob`` is False; compare it with data by
    sample metrics (energy distance, sliced Wasserstein). Samples are
    reparameterised (``rsample``).

    References: Liu et al. (2024), InstaFlow: One Step is Enough for High-Quality
    Diffusion-Based Text-to-Image Generation; Liu et al. (2023), Flow Straight and
    Fast: Learning to Generate and Transfer Data with Rectified Flow; Lee et al.
    (2024), Improving the Training of Rectified Flows.

    Args:
        network: ``network(x, t, context) -> like x``, evaluated at ``t = 0``.
        base: the source distribution :math:`p_0`.
        context_features: size of the context (0 for unconditional).
        loss: ``"mse"`` or ``"pseudo-huber"``.
        presence_flag: the network takes a context-presence column after the
            context (a teacher trained for classifier-free guidance); it is always 1.
    """

    has_log_prob = False
    # Trained from a teacher's pairs by ``distill``, not from data by ``pushforward train``.
    trains_from_data = False
    has_rsample = True

    def __init__(
        self,
        network: nn.Module,
        base: Distribution,
        context_features: int = 0,
        *,
        loss: str = "mse",
        presence_flag: bool = False,
    ) -> None:
        super().__init__()
        self.network = network
        self.base = base
        self.event_shape = tuple(base.event_shape)
        self.context_features = int(context_features)
        self.loss_kind = choice("loss", loss, LOSSES)
        if presence_flag and not self.context_features:
            raise ValueError("option 'presence_flag' needs a conditional model (context > 0)")
        self.presence_flag = bool(presence_flag)

    def _network_context(self, context: Tensor | None) -> Tensor | None:
        if context is None or not self.presence_flag:
            return context
        ones = torch.ones(context.shape[0], 1, dtype=context.dtype, device=context.device)
        return torch.cat([context, ones], dim=1)

    def transport(self, x0: Tensor, context: Tensor | None = None) -> Tensor:
        r"""The one-step map :math:`x_0 + v_\theta(x_0, 0, c)` of source points.

        Args:
            x0: ``(batch, *event)`` source points.
            context: ``(batch, context)``, one row, or ``None``.

        Returns:
            ``(batch, *event)``, differentiable in ``x0`` and the parameters.
        """
        x0 = self.check_input(x0)
        context = self.check_context(context, x0.shape[0])
        return self._transport(x0, context)

    def _transport(self, x0: Tensor, context: Tensor | None) -> Tensor:
        t = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        return x0 + self.network(x0, t, self._network_context(context))

    def regression_loss(self, pairs: Coupling) -> Tensor:
        """The regression of the one-step map at ``pairs.x0`` onto ``pairs.x1``.

        Args:
            pairs: ``x0``, ``x1`` ``(batch, *event)`` and ``context`` or ``None``.

        Returns:
            The scalar loss (mean over rows).
        """
        prediction = self._transport(pairs.x0, pairs.context)
        error = (prediction - pairs.x1).reshape(pairs.x1.shape[0], -1)
        if self.loss_kind == "mse":
            return error.square().mean()
        return row_regression_loss(error, self.loss_kind).mean()

    def loss(  # type: ignore[override]
        self, x: Tensor, context: Tensor | None = None, source: Tensor | None = None
    ) -> Tensor:
        """The regression loss onto a teacher's end points ``x`` from their ``source`` points.

        The one-step map learns from (source, end point) pairs, not from data
        alone; :class:`~pushforward.matching.reflow.PairRegression` feeds pairs to
        the training engine, :func:`distill` does it all.

        Args:
            x: ``(batch, *event)`` the teacher's ODE end points.
            context: ``(batch, context)``, one row, or ``None``.
            source: ``(batch, *event)`` the source points they came from.
        """
        x = self.check_input(x)
        context = self.check_context(context, x.shape[0])
        if source is None:
            raise ValueError(
                "a distilled model learns from (source, end point) pairs of a teacher flow, "
                "not from data alone; pass source=, or train it with "
                "pushforward.matching.distill.distill (CLI: pushforward distill)"
            )
        source = self.check_input(source)
        if source.shape != x.shape:
            raise ValueError(
                f"source has shape {tuple(source.shape)}, the end points {tuple(x.shape)}"
            )
        return self.regression_loss(Coupling(source, x, context))

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """Draws ``n`` samples ``(n, *event)`` with one network evaluation, without gradients.

        Args:
            n: number of samples.
            context: ``(n, context)`` or one row for all, or ``None``.
        """
        n, context = self._sampling_args(n, context)
        with torch.no_grad():
            return self._transport(self.base.sample(n), context)

    def _rsample_and_log_prob(
        self, n: int, context: Tensor | None, with_log_prob: bool
    ) -> tuple[Tensor, Tensor | None]:
        # with_log_prob is never True: Model refuses it, has_log_prob being False.
        return self._transport(self.base.rsample(n), context), None


@register("distilled")
def distilled(
    features: int,
    context: int = 0,
    hidden: Sequence[int] = (256, 256, 256, 256),
    shape: Sequence[int] | None = None,
    base: str = "normal",
    residual: bool = True,
    time_embedding: int = 32,
    time_scale: float = 10.0,
    activation: str = "silu",
    presence_flag: bool = False,
    loss: str = "mse",
    source_rows: int = 0,
) -> DistilledFlow:
    """A one-step generator with ``fm``'s velocity network (InstaFlow, Liu et al. 2024).

    The network options and their defaults are ``fm``'s, so a student built with its
    teacher's values takes the teacher's weights (:func:`student_for` does this).
    Trained on pairs of a teacher flow, not on data: ``pushforward distill RUN_DIR``.

    Args:
        features: number of values per event (``prod(shape)``).
        context: context size (0 for unconditional).
        hidden: widths of the network's hidden layers.
        shape: event shape (default ``[features]``).
        base: source distribution name (the teacher's).
        residual: residual blocks in the network.
        time_embedding: width of the sinusoidal time embedding.
        time_scale: scale of the time embedding (as the teacher's).
        activation: nonlinearity of the network.
        presence_flag: the network takes a context-presence column (teachers trained
            with ``context_dropout``).
        loss: ``mse`` or ``pseudo-huber``.
        source_rows: rows of an ``empirical`` base (a teacher that transports a
            source data set); the teacher's rows fill it.
    """
    features, context = sizes(features, context)
    event_shape = (features,) if shape is None else tuple(positive_int("shape", d) for d in shape)
    if math.prod(event_shape) != features:
        raise ValueError(
            f"option 'shape' {list(event_shape)} holds {math.prod(event_shape)} values, "
            f"but features is {features}"
        )
    network = velocity_network(
        features,
        context + (1 if presence_flag and context else 0),
        hidden,
        time_embedding,
        time_scale,
        activation,
        residual,
    )
    return DistilledFlow(
        network,
        _source(base, event_shape, positive_int("source_rows", source_rows, minimum=0)),
        context,
        loss=loss,
        presence_flag=bool(presence_flag),
    )


def _source(base: str, event_shape: tuple[int, ...], rows: int) -> Distribution:
    """The base: a named density, or an empirical source of ``rows`` rows to be filled."""
    if base == "empirical":
        if rows < 1:
            raise ValueError("base 'empirical' needs source_rows, the number of stored rows")
        return Empirical.zeros(rows, event_shape)
    if rows:
        raise ValueError(f"option 'source_rows' applies to base 'empirical', not {base!r}")
    return make_base(base, event_shape)


def student_for(teacher: FlowMatching, *, init: str = "parent", **options: Any) -> DistilledFlow:
    """A ``distilled`` model shaped like ``teacher``'s network, starting from its weights.

    Args:
        teacher: a trained ``fm`` model (built by ``pushforward.build``).
        init: ``"parent"`` (the teacher's network weights) or ``"fresh"`` (drawn
            from torch's global generator).
        **options: ``distilled`` options: ``loss``, and with ``init="fresh"`` the
            network's (:data:`STUDENT_ARCHITECTURE`).

    Returns:
        The untrained :class:`DistilledFlow`, in the teacher's dtype and device.
    """
    init = choice("init", init, INITIALIZATIONS)
    config = getattr(teacher, "config", None) or {}
    if config.get("model") != "fm" or not isinstance(teacher, FlowMatching):
        raise ValueError(
            "distillation needs a teacher built by pushforward.build('fm', ...) "
            f"(its config names {config.get('model')!r})"
        )
    parent = config["options"]
    for key in options:
        if key not in ("loss", *STUDENT_ARCHITECTURE):
            raise ValueError(
                f"option {key!r} of the distilled model comes from the teacher; "
                f"options that may be set: loss, {', '.join(STUDENT_ARCHITECTURE)}"
            )
    if init == "parent":
        fixed = [key for key in options if key in STUDENT_ARCHITECTURE]
        if fixed and any(options[key] != parent.get(key) for key in fixed):
            raise ValueError(
                f"option {fixed[0]!r} changes the network, which starts from the teacher's "
                'weights; set init="fresh" to change it'
            )
        if teacher.parameterization != "velocity":
            raise ValueError(
                f"the teacher predicts {teacher.parameterization!r}, not the velocity, so its "
                'weights do not start a one-step map; set init="fresh"'
            )
    resolved: dict[str, Any] = {
        "features": parent["features"],
        "context": parent["context"],
        "shape": parent.get("shape"),
        "base": parent.get("base", "normal"),
        "presence_flag": teacher.guided,
        "source_rows": parent.get("source_rows", 0),
    }
    resolved.update({key: parent[key] for key in STUDENT_ARCHITECTURE if key in parent})
    resolved.update(options)
    student = build("distilled", **resolved)
    if not isinstance(student, DistilledFlow):
        raise TypeError("the 'distilled' builder did not return a DistilledFlow")
    reference = next(iter(teacher.parameters()), None)
    if reference is not None:
        student.to(dtype=reference.dtype, device=reference.device)
    # The source (an empirical base's rows) is the teacher's, whatever the initial weights.
    student.base.load_state_dict(teacher.base.state_dict())
    if init == "parent":
        student.network.load_state_dict(teacher.network.state_dict())
    return student


@dataclass
class DistillationResult:
    """The outcome of :func:`distill`.

    Attributes:
        model: the trained one-step model.
        pairs: the teacher's pairs it was trained on.
        history: the training history.
    """

    model: DistilledFlow
    pairs: Coupling
    history: History


def distill(
    teacher: FlowMatching,
    pairs: int | Coupling,
    context: Tensor | None = None,
    *,
    solver: str = "dopri5",
    solver_steps: int | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-6,
    guidance: float = 1.0,
    init: str = "parent",
    options: dict[str, Any] | None = None,
    seed: int = 0,
    **fit_options: Any,
) -> DistillationResult:
    r"""Distils ``teacher`` into a one-step model by regression on its ODE's pairs.

    .. math:: \theta^\star = \arg\min_\theta \mathbb E_{x_0}\,
              d\big(x_0 + v_\theta(x_0, 0, c),\; \Phi_1(x_0)\big)

    with :math:`\Phi_1` the teacher's ODE map (:func:`reflow_pairs`), the student
    started from the teacher's velocity network (:func:`student_for`) and trained
    through :func:`pushforward.train.fit`.

    References: Liu et al. (2024), InstaFlow: One Step is Enough for High-Quality
    Diffusion-Based Text-to-Image Generation.

    Args:
        teacher: the trained (ideally reflowed) ``fm`` model.
        pairs: how many pairs to draw, or pairs already made by :func:`reflow_pairs`.
        context: ``(n, context)`` context rows of the pairs (conditional models).
        solver, solver_steps, atol, rtol: the teacher's ODE solve.
        guidance: classifier-free guidance scale of the teacher's field.
        init: ``"parent"`` (the teacher's weights) or ``"fresh"``.
        options: ``distilled`` options (``loss="pseudo-huber"``, ...).
        seed: seeds the source points, fresh weights and the training run.
        **fit_options: keywords of :func:`pushforward.train.fit`.

    Returns:
        A :class:`DistillationResult`.
    """
    if isinstance(pairs, Coupling):
        coupling = pairs
    else:
        reference = next(iter(teacher.parameters()), None)
        device = torch.device("cpu") if reference is None else reference.device
        coupling = reflow_pairs(
            teacher,
            pairs,
            context,
            solver=solver,
            steps=solver_steps,
            atol=atol,
            rtol=rtol,
            guidance=guidance,
            generator=torch.Generator(device=device).manual_seed(seed),
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = student_for(teacher, init=init, **(options or {}))
    history = fit_pairs(student, coupling, seed=seed, **fit_options)
    return DistillationResult(student, coupling, history)
