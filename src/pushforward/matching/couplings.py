"""Couplings: how source points x0 are paired with data points x1 in a training batch.

Every coupling takes ``(x0, x1, context=None)`` with the same batch size and
returns a :class:`PairedBatch` whose rows are paired: ``x0[i]`` goes with ``x1[i]``
and ``context[i]``. ``x1`` and ``context`` are never reordered; only the source
side is permuted (exact OT) or redrawn from an entropic plan (Sinkhorn).

Conditional couplings (Albergo et al. 2024, Stochastic Interpolants with
Data-Dependent Couplings): with a ``context``, rows of ``x1`` with identical
context rows form a group, and source points are only re-paired inside a group,
so a source point that came with one context never meets data of another. The
source rows a group draws from are those at the group's own positions in the
batch. A continuous context where every row is distinct makes every group a
single row, so the coupling reduces to the independent one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from pushforward.matching.components import Component, make_component
from pushforward.matching.optimal_transport import (
    check_batch,
    check_sinkhorn_options,
    ot_assignment,
    sinkhorn_partners,
)
from pushforward.paired import PairedBatch


def _groups(context: Tensor | None, n: int) -> list[Tensor] | None:
    """Row indices of each group of identical context rows; ``None`` when all rows share one."""
    if context is None or context.shape[0] == 1:
        return None
    _, inverse = torch.unique(context.reshape(n, -1), dim=0, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    counts = torch.bincount(inverse).tolist()
    return list(torch.split(order, counts))


def independent_coupling(x0: Tensor, x1: Tensor, context: Tensor | None = None) -> PairedBatch:
    r"""The independent coupling :math:`\pi(x_0, x_1) = p_0(x_0)\, q(x_1)`: rows as given.

    References:
        Lipman et al. (2023), Flow Matching for Generative Modeling.

    Args:
        x0: ``(batch, *event)`` source points.
        x1: ``(batch, *event)`` data points.
        context: ``(batch, ...)`` context rows aligned with ``x1``, or ``None``.

    Returns:
        the :class:`PairedBatch` ``(x0, x1, context)`` unchanged.
    """
    check_batch(x0, x1, context)
    return PairedBatch(x0=x0, x1=x1, context=context)


def minibatch_ot_coupling(x0: Tensor, x1: Tensor, context: Tensor | None = None) -> PairedBatch:
    r"""Exact minibatch optimal transport: the source batch permuted to minimise squared distance.

    .. math:: x_0 \leftarrow x_0[\pi^\star], \quad \pi^\star = \arg\min_{\pi}
              \sum_i \lVert x_0[\pi(i)] - x_1[i] \rVert^2.

    Every source point is used exactly once (a permutation, not pairs resampled
    with replacement from the plan), so the marginal of ``x0`` is unchanged.
    With a ``context``, the assignment is solved within each group of identical
    context rows (see the module docstring); all-distinct contexts give the
    independent coupling.

    References:
        Tong et al. (2023), Improving and Generalizing Flow-Based Generative Models
        with Minibatch Optimal Transport;
        Pooladian et al. (2023), Multisample Flow Matching;
        Albergo et al. (2024), Stochastic Interpolants with Data-Dependent Couplings.

    Args:
        x0: ``(batch, *event)`` source points.
        x1: ``(batch, *event)`` data points.
        context: ``(batch, ...)`` context rows aligned with ``x1``, or ``None``.

    Returns:
        the :class:`PairedBatch` with ``x0`` permuted; ``x1`` and ``context`` unchanged.
    """
    check_batch(x0, x1, context)
    groups = _groups(context, x1.shape[0])
    if groups is None:
        return PairedBatch(x0=x0[ot_assignment(x0, x1)], x1=x1, context=context)
    index = torch.arange(x1.shape[0], device=x0.device)
    for rows in groups:
        if rows.numel() > 1:
            rows = rows.to(x0.device)
            index[rows] = rows[ot_assignment(x0[rows], x1[rows])]
    return PairedBatch(x0=x0[index], x1=x1, context=context)


def sinkhorn_coupling(
    x0: Tensor,
    x1: Tensor,
    context: Tensor | None = None,
    *,
    epsilon: float = 0.05,
    iterations: int = 100,
    generator: torch.Generator | None = None,
) -> PairedBatch:
    r"""Entropic minibatch OT: each data point draws its source partner from a Sinkhorn plan.

    For every :math:`x_1[j]`, :math:`i \sim P_{:, j} / \sum_i P_{ij}` with
    :math:`P` the plan of :func:`sinkhorn_plan`, and ``x0[i]`` becomes its
    partner. Source points may repeat or go unused (the plan is sampled
    column by column), unlike :func:`minibatch_ot_coupling`. With a
    ``context`` each group of identical context rows gets its own plan, with
    ``epsilon`` relative to the group's mean cost.

    References:
        Cuturi (2013), Sinkhorn Distances: Lightspeed Computation of Optimal Transport;
        Tong et al. (2023), Improving and Generalizing Flow-Based Generative Models
        with Minibatch Optimal Transport;
        Albergo et al. (2024), Stochastic Interpolants with Data-Dependent Couplings.

    Args:
        x0: ``(batch, *event)`` source points.
        x1: ``(batch, *event)`` data points.
        context: ``(batch, ...)`` context rows aligned with ``x1``, or ``None``.
        epsilon: entropic regularisation relative to the mean squared distance.
        iterations: Sinkhorn rounds.
        generator: random generator for drawing partners (on ``x0``'s device).

    Returns:
        the :class:`PairedBatch` with re-drawn ``x0``; ``x1`` and ``context`` unchanged.
    """
    check_batch(x0, x1, context)
    check_sinkhorn_options(epsilon, iterations)
    groups = _groups(context, x1.shape[0])
    if groups is None:
        index = sinkhorn_partners(x0, x1, float(epsilon), iterations, generator)
        return PairedBatch(x0=x0[index], x1=x1, context=context)
    index = torch.arange(x1.shape[0], device=x0.device)
    for rows in groups:
        if rows.numel() > 1:
            rows = rows.to(x0.device)
            local = sinkhorn_partners(x0[rows], x1[rows], float(epsilon), iterations, generator)
            index[rows] = rows[local]
    return PairedBatch(x0=x0[index], x1=x1, context=context)


class BatchCoupling(Component, ABC):
    r"""How a training batch pairs source points with data points, as a small object.

    Calling it on ``(source, data, context, generator)`` returns the
    :class:`PairedBatch`, computed without gradients. It holds no tensors and no
    learnable state: it is rebuilt exactly by
    ``make_coupling(coupling.name, **coupling.options())``.

    Attributes:
        name: the coupling's name in configs (``independent``, ``ot``, ``sinkhorn``).
        costs_something: whether pairing takes real work (an assignment or a plan),
            so that the training engine prepares the pairs ahead of the step, in
            its worker threads (``Model.prepare_batch``).

    References:
        Tong et al. (2024), Improving and Generalizing Flow-Based Generative
        Models with Minibatch Optimal Transport.
    """

    name: ClassVar[str]
    costs_something: ClassVar[bool]

    def __call__(
        self,
        source: Tensor,
        data: Tensor,
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PairedBatch:
        """Pairs ``source`` with ``data`` (both ``(batch, *event)``), without gradients.

        Args:
            source: ``(batch, *event)`` source points.
            data: ``(batch, *event)`` data points, kept in their order.
            context: ``(batch, ...)`` context rows aligned with ``data``, or ``None``.
            generator: random generator of a coupling that draws (on ``source``'s device).
        """
        with torch.no_grad():
            return self._pair(source, data, context, generator)

    @abstractmethod
    def _pair(
        self,
        source: Tensor,
        data: Tensor,
        context: Tensor | None,
        generator: torch.Generator | None,
    ) -> PairedBatch:
        """The pairing itself (gradients are already off)."""


class IndependentCoupling(BatchCoupling):
    r"""The independent coupling :math:`\pi(x_0, x_1) = p_0(x_0)\, q(x_1)`: rows as drawn.

    References:
        Lipman et al. (2023), Flow Matching for Generative Modeling.
    """

    name = "independent"
    costs_something = False

    def _pair(
        self,
        source: Tensor,
        data: Tensor,
        context: Tensor | None,
        generator: torch.Generator | None,
    ) -> PairedBatch:
        return independent_coupling(source, data, context)


class OTCoupling(BatchCoupling):
    r"""Exact minibatch optimal transport: the source rows permuted to minimise
    :math:`\sum_i \lVert x_0[\pi(i)] - x_1[i] \rVert^2` (see :func:`minibatch_ot_coupling`),
    within each group of identical context rows.

    References:
        Tong et al. (2023), Improving and Generalizing Flow-Based Generative Models
        with Minibatch Optimal Transport;
        Pooladian et al. (2023), Multisample Flow Matching.
    """

    name = "ot"
    costs_something = True

    def _pair(
        self,
        source: Tensor,
        data: Tensor,
        context: Tensor | None,
        generator: torch.Generator | None,
    ) -> PairedBatch:
        return minibatch_ot_coupling(source, data, context)


class SinkhornCoupling(BatchCoupling):
    r"""Entropic minibatch OT: each data point draws its source partner from the Sinkhorn plan
    :math:`P = \arg\min_{P \in U(a, b)} \langle P, C \rangle - \varepsilon H(P)`
    (see :func:`sinkhorn_coupling`); ``generator`` drives the draw.

    References:
        Cuturi (2013), Sinkhorn Distances: Lightspeed Computation of Optimal Transport;
        Tong et al. (2023), Improving and Generalizing Flow-Based Generative Models
        with Minibatch Optimal Transport.

    Args:
        epsilon: entropic regularisation relative to the mean squared distance.
        iterations: Sinkhorn rounds.
    """

    name = "sinkhorn"
    costs_something = True

    def __init__(self, epsilon: float = 0.05, iterations: int = 100) -> None:
        check_sinkhorn_options(epsilon, iterations)
        self.epsilon = float(epsilon)
        self.iterations = int(iterations)

    def _pair(
        self,
        source: Tensor,
        data: Tensor,
        context: Tensor | None,
        generator: torch.Generator | None,
    ) -> PairedBatch:
        return sinkhorn_coupling(
            source,
            data,
            context,
            epsilon=self.epsilon,
            iterations=self.iterations,
            generator=generator,
        )

    def options(self) -> dict[str, Any]:
        """``{"epsilon": ..., "iterations": ...}``."""
        return {"epsilon": self.epsilon, "iterations": self.iterations}


COUPLINGS: dict[str, type[BatchCoupling]] = {
    IndependentCoupling.name: IndependentCoupling,
    OTCoupling.name: OTCoupling,
    SinkhornCoupling.name: SinkhornCoupling,
}
"""Coupling classes by name."""


def make_coupling(name: str, **options: Any) -> BatchCoupling:
    """Builds the coupling registered as ``name`` with keyword ``options``.

    Args:
        name: one of :data:`COUPLINGS` (``independent``, ``ot``, ``sinkhorn``).
        **options: keyword options of that coupling, e.g. ``epsilon=0.1`` for Sinkhorn.

    Returns:
        the coupling, called as ``coupling(source, data, context=None, generator=None)``;
        unknown names or options raise a ValueError listing the valid ones.
    """
    return make_component("coupling", COUPLINGS, name, options)
