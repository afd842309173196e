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

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pushforward.options import closest


@dataclass
class PairedBatch:
    """Source and data points paired row by row.

    Attributes:
        x0: ``(batch, *event)`` source points; ``x0[i]`` is paired with ``x1[i]``.
        x1: ``(batch, *event)`` data points, in the order they were given.
        context: ``(batch, ...)`` context rows aligned with ``x1``, or ``None``.
    """

    x0: Tensor
    x1: Tensor
    context: Tensor | None


def _check_batch(x0: Tensor, x1: Tensor, context: Tensor | None) -> None:
    for name, value in (("x0", x0), ("x1", x1)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
    if x0.ndim == 0 or x1.ndim == 0:
        raise ValueError("x0 and x1 need a batch dimension: shape (batch, *event)")
    if x0.shape != x1.shape:
        raise ValueError(
            f"source x0 has shape {tuple(x0.shape)} but data x1 has shape {tuple(x1.shape)}; "
            "a coupling pairs them row by row, so they must match"
        )
    if x0.dtype != x1.dtype:
        raise TypeError(f"source x0 is {x0.dtype} but data x1 is {x1.dtype}; they must match")
    if context is not None:
        if not isinstance(context, Tensor):
            raise TypeError(f"context must be a tensor or None, got {type(context).__name__}")
        if context.ndim == 0 or context.shape[0] not in (1, x1.shape[0]):
            raise ValueError(
                f"context has shape {tuple(context.shape)}; it needs one row per data point "
                f"({x1.shape[0]}) or a single row for all"
            )


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``(n, m)`` squared Euclidean distances between the flattened rows of ``a`` and ``b``."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    # Distances do not change under a common shift; centring first keeps the
    # |a|^2 + |b|^2 - 2 a.b expansion from cancelling catastrophically for data far
    # from the origin.
    centre = torch.cat([a, b]).mean(dim=0)
    a = a - centre
    b = b - centre
    cost = a.square().sum(dim=1)[:, None] + b.square().sum(dim=1)[None, :] - 2.0 * (a @ b.T)
    return cost.clamp_min(0.0)


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
    _check_batch(x0, x1, context)
    return PairedBatch(x0=x0, x1=x1, context=context)


def ot_assignment(x0: Tensor, x1: Tensor) -> Tensor:
    r"""The exact optimal-transport assignment between two equal-size point sets.

    .. math:: \pi^\star = \arg\min_{\pi \in S_n} \sum_i \lVert x_0[\pi(i)] - x_1[i] \rVert^2,

    on flattened rows, solved by the Hungarian-type algorithm of
    ``scipy.optimize.linear_sum_assignment`` (O(n^3), on the CPU) after the
    Hungarian method's row and column reduction (Kuhn 1955), which leaves the
    optimal assignments unchanged and shortens scipy's search. The cost is
    computed in the inputs' dtype and device and copied to the host.

    References:
        Tong et al. (2023), Improving and Generalizing Flow-Based Generative Models
        with Minibatch Optimal Transport;
        Pooladian et al. (2023), Multisample Flow Matching;
        Kuhn (1955), The Hungarian Method for the Assignment Problem.

    Args:
        x0: ``(n, *event)`` source points.
        x1: ``(n, *event)`` data points.

    Returns:
        ``(n,)`` long tensor ``perm`` on ``x0``'s device: ``x0[perm][i]`` is paired with ``x1[i]``.
    """
    _check_batch(x0, x1, None)
    n = x1.shape[0]
    if n <= 1:
        return torch.arange(n, device=x0.device)
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as error:
        raise ImportError(
            "exact optimal-transport couplings need scipy, a dependency of pushforward: "
            "pip install scipy"
        ) from error
    with torch.no_grad():
        cost = _squared_distances(x1.detach(), x0.detach())
        # The Hungarian method's opening step: subtracting each row's and then each
        # column's minimum changes every assignment's cost by the same constant, so
        # the optimal assignments stay the same, and scipy finds them 1.0-2.8x faster
        # on batches of 512 (bench/README.md).
        cost = cost - cost.amin(dim=1, keepdim=True)
        cost = (cost - cost.amin(dim=0, keepdim=True)).cpu()
    if cost.dtype not in (torch.float32, torch.float64):
        cost = cost.to(torch.float64)
    matrix = cost.numpy()
    if not math.isfinite(float(matrix.sum())):
        raise ValueError("x0 or x1 holds NaN or infinite values; no optimal pairing exists")
    rows, columns = linear_sum_assignment(matrix)
    perm = torch.empty(n, dtype=torch.long)
    perm[torch.as_tensor(rows, dtype=torch.long)] = torch.as_tensor(columns, dtype=torch.long)
    return perm.to(x0.device)


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
    _check_batch(x0, x1, context)
    groups = _groups(context, x1.shape[0])
    if groups is None:
        return PairedBatch(x0=x0[ot_assignment(x0, x1)], x1=x1, context=context)
    index = torch.arange(x1.shape[0], device=x0.device)
    for rows in groups:
        if rows.numel() > 1:
            rows = rows.to(x0.device)
            index[rows] = rows[ot_assignment(x0[rows], x1[rows])]
    return PairedBatch(x0=x0[index], x1=x1, context=context)


def _sinkhorn_potential(
    cost: Tensor, epsilon: float, iterations: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Log-domain Sinkhorn on ``cost: (n, m)``; returns ``(f, g, cost / reg)`` in units of reg."""
    n, m = cost.shape
    reg = epsilon * cost.mean()
    # All points identical gives a zero mean cost; any positive scale then works.
    reg = torch.where(reg > 0, reg, torch.ones_like(reg))
    scaled = cost / reg
    log_a = -math.log(n)
    log_b = -math.log(m)
    f = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    g = torch.zeros(m, dtype=cost.dtype, device=cost.device)
    for _ in range(iterations):
        f = log_a - torch.logsumexp(g[None, :] - scaled, dim=1)
        g = log_b - torch.logsumexp(f[:, None] - scaled, dim=0)
    return f, g, scaled


def _check_sinkhorn_options(epsilon: float, iterations: int) -> None:
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not epsilon > 0:
        raise ValueError(f"option 'epsilon' must be a positive number, got {epsilon!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"option 'iterations' must be an integer >= 1, got {iterations!r}")


def _working_dtype(x: Tensor) -> torch.dtype:
    # Dozens of log-sum-exp sweeps are too coarse in half precision.
    return torch.promote_types(x.dtype, torch.float32)


def sinkhorn_plan(
    x0: Tensor, x1: Tensor, *, epsilon: float = 0.05, iterations: int = 100
) -> Tensor:
    r"""The entropic optimal-transport plan between two point sets with uniform weights.

    .. math:: P = \arg\min_{P \in U(a, b)} \langle P, C \rangle - \varepsilon\, H(P),
              \quad C_{ij} = \lVert x_0[i] - x_1[j] \rVert^2,

    with :math:`a = 1/n`, :math:`b = 1/m` and :math:`\varepsilon` = ``epsilon``
    times the mean cost (so ``epsilon`` does not depend on the data's scale).
    Computed by ``iterations`` rounds of log-domain Sinkhorn updates
    :math:`f_i = \log a_i - \mathrm{LSE}_j(g_j - C_{ij}/\varepsilon)`,
    :math:`g_j = \log b_j - \mathrm{LSE}_i(f_i - C_{ij}/\varepsilon)`, so the
    column sums are exact and the row sums converge. Small ``epsilon`` approaches
    exact OT but converges slowly (about 1/epsilon rounds: 0.05 is converged in
    100, 0.01 needs about 400); large ``epsilon`` approaches the independent plan
    :math:`1/(nm)`.

    References:
        Cuturi (2013), Sinkhorn Distances: Lightspeed Computation of Optimal Transport.

    Args:
        x0: ``(n, *event)`` source points.
        x1: ``(m, *event)`` data points.
        epsilon: entropic regularisation relative to the mean cost.
        iterations: Sinkhorn rounds.

    Returns:
        ``(n, m)`` plan, entries summing to 1, in the inputs' dtype (float32 at least).
    """
    _check_sinkhorn_options(epsilon, iterations)
    if not isinstance(x0, Tensor) or not isinstance(x1, Tensor):
        raise TypeError("x0 and x1 must be tensors")
    if x0.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"x0 has event shape {tuple(x0.shape[1:])} but x1 has {tuple(x1.shape[1:])}"
        )
    dtype = _working_dtype(x1)
    with torch.no_grad():
        cost = _squared_distances(x0.detach().to(dtype), x1.detach().to(dtype))
        f, g, scaled = _sinkhorn_potential(cost, float(epsilon), iterations)
        return torch.exp(f[:, None] + g[None, :] - scaled)


def _sinkhorn_partners(
    x0: Tensor, x1: Tensor, epsilon: float, iterations: int, generator: torch.Generator | None
) -> Tensor:
    """For each row j of ``x1``, a source row drawn from column j of the Sinkhorn plan."""
    dtype = _working_dtype(x1)
    with torch.no_grad():
        cost = _squared_distances(x0.detach().to(dtype), x1.detach().to(dtype))
        f, _, scaled = _sinkhorn_potential(cost, epsilon, iterations)
        # P_ij / sum_i P_ij = softmax_i(f_i - C_ij / eps): g_j cancels.
        columns = torch.softmax(f[None, :] - scaled.T, dim=1)
        return torch.multinomial(columns, 1, generator=generator).squeeze(1)


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
    _check_batch(x0, x1, context)
    _check_sinkhorn_options(epsilon, iterations)
    groups = _groups(context, x1.shape[0])
    if groups is None:
        index = _sinkhorn_partners(x0, x1, float(epsilon), iterations, generator)
        return PairedBatch(x0=x0[index], x1=x1, context=context)
    index = torch.arange(x1.shape[0], device=x0.device)
    for rows in groups:
        if rows.numel() > 1:
            rows = rows.to(x0.device)
            local = _sinkhorn_partners(x0[rows], x1[rows], float(epsilon), iterations, generator)
            index[rows] = rows[local]
    return PairedBatch(x0=x0[index], x1=x1, context=context)


COUPLINGS: dict[str, Callable[..., PairedBatch]] = {
    "independent": independent_coupling,
    "ot": minibatch_ot_coupling,
    "sinkhorn": sinkhorn_coupling,
}
"""PairedBatch functions ``(x0, x1, context=None) -> PairedBatch`` by name."""


def make_coupling(name: str, **options: Any) -> Callable[..., PairedBatch]:
    """The coupling function registered as ``name``, with keyword ``options`` bound.

    Args:
        name: one of :data:`COUPLINGS` (``independent``, ``ot``, ``sinkhorn``).
        **options: keyword options of that coupling, e.g. ``epsilon=0.1`` for Sinkhorn.

    Returns:
        a function ``(x0, x1, context=None) -> PairedBatch``; unknown names or
        options raise a ValueError listing the valid ones.
    """
    if name not in COUPLINGS:
        names = list(COUPLINGS)
        raise ValueError(
            f"unknown coupling {name!r}{closest(str(name), names)}; "
            f"valid couplings: {', '.join(names)}"
        )
    function = COUPLINGS[name]
    if not options:
        return function
    valid = [
        p.name for p in inspect.signature(function).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    for key in options:
        if key not in valid:
            hint = f"valid options: {', '.join(valid)}" if valid else "it takes no options"
            raise ValueError(
                f"unknown option {key!r} for coupling {name!r}{closest(key, valid)}; {hint}"
            )
    return functools.partial(function, **options)
