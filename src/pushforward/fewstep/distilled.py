"""One-step distillation of a (rectified) flow: x1 = x0 + v(x0, 0, c), learnt by regression."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pushforward.distributions import Distribution
from pushforward.inference import NoOptions
from pushforward.matching.losses import LOSSES, row_regression_loss
from pushforward.matching.options import DEFAULT_NETWORK, NetworkOptions
from pushforward.model import Model
from pushforward.option_groups import grouped_options
from pushforward.options import choice, sizes
from pushforward.paired import PairedBatch
from pushforward.registry import register


class DistilledFlow(Model):
    r"""A one-step generator distilled from a flow: one network evaluation per sample.

    .. math:: x_1 = T_\theta(x_0, c) = x_0 + v_\theta(x_0, 0, c), \qquad x_0 \sim p_0

    :math:`v_\theta` is a velocity network of the same shape as the teacher's, read
    at :math:`t = 0` only, so it starts as the teacher's network and the map starts
    as the teacher's one-step Euler map. It is trained by regression on pairs
    :math:`(x_0, x_1)` from the teacher's ODE (see
    :func:`~pushforward.recipes.pairs.reflow_pairs`):

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
    learns_from_pairs = True
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

        ``x0``, the context and the result are in the data's units (the model's
        preprocessing maps them in and out).

        Args:
            x0: ``(batch, *event)`` source points.
            context: ``(batch, context)``, one row, or ``None``.

        Returns:
            ``(batch, *event)``, differentiable in ``x0`` and the parameters.
        """
        x0 = self.check_input(x0)
        context = self.check_context(context, x0.shape[0])
        z0 = self.preprocessing.encode_source(x0)
        z1 = self._transport(z0, self.encode_context(context))
        return self.preprocessing.decode(z1)[0]

    def _transport(self, x0: Tensor, context: Tensor | None) -> Tensor:
        t = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        return x0 + self.network(x0, t, self._network_context(context))

    def regression_loss(self, pairs: PairedBatch) -> Tensor:
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

    def _loss(self, x: Tensor, context: Tensor | None, prepared: Any = None) -> Tensor:
        """The one-step regression on the batch's fixed pairs ``prepared``.

        The map learns from (source, end point) pairs, not from data alone: the
        training engine hands them over when it is given aligned source rows
        (``fit(model, ends, context, source=starts)``), and
        :func:`~pushforward.recipes.distill.distill` does it all. Without pairs the
        call is refused.
        """
        if isinstance(prepared, PairedBatch):
            return self.regression_loss(prepared)
        raise ValueError(
            "a distilled model learns from (source, end point) pairs of a teacher flow, "
            "not from data alone; pass the sources aligned with the ends "
            "(fit(model, ends, context, source=starts)), or train it with "
            "pushforward.recipes.distill.distill (CLI: pushforward distill)"
        )

    def _rsample_and_log_prob(
        self, n: int, context: Tensor | None, options: NoOptions, log_prob_options: None
    ) -> tuple[Tensor, Tensor | None]:
        """One network evaluation a sample (``log_prob_options`` is never given: no density)."""
        return self._transport(self.base.rsample(n), context), None


@register("distilled")
@grouped_options(network=NetworkOptions)
def distilled(
    features: int,
    context: int = 0,
    network: NetworkOptions = DEFAULT_NETWORK,
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
        presence_flag: the network takes a context-presence column (teachers trained
            with ``context_dropout``).
        loss: ``mse`` or ``pseudo-huber``.
        source_rows: rows of an ``empirical`` base (a teacher that transports a
            source data set); the teacher's rows fill it.
    """
    features, context = sizes(features, context)
    event_shape = network.event_shape(features)
    return DistilledFlow(
        network.build_network(features, context + (1 if presence_flag and context else 0)),
        network.source(event_shape, source_rows),
        context,
        loss=loss,
        presence_flag=bool(presence_flag),
    )
