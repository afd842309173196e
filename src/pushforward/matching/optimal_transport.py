r"""Optimal transport between two point sets: the exact assignment and the entropic plan.

The maths behind the minibatch couplings of :mod:`pushforward.matching.couplings`:
squared Euclidean costs between flattened rows, the exact assignment (Hungarian
method through scipy) and the log-domain Sinkhorn plan with a column-wise draw.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_batch(x0: Tensor, x1: Tensor, context: Tensor | None) -> None:
    """Checks that ``x0`` and ``x1`` pair row by row, and ``context`` has their rows (or one)."""
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
    check_batch(x0, x1, None)
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


def check_sinkhorn_options(epsilon: float, iterations: int) -> None:
    """Sinkhorn's ``epsilon`` (positive) and ``iterations`` (at least 1), or a ValueError."""
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
    check_sinkhorn_options(epsilon, iterations)
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


def sinkhorn_partners(
    x0: Tensor, x1: Tensor, epsilon: float, iterations: int, generator: torch.Generator | None
) -> Tensor:
    """For each row j of ``x1``, the index of a source row drawn from column j of the
    Sinkhorn plan of :func:`sinkhorn_plan`; ``(m,)`` long on ``x0``'s device."""
    dtype = _working_dtype(x1)
    with torch.no_grad():
        cost = _squared_distances(x0.detach().to(dtype), x1.detach().to(dtype))
        f, _, scaled = _sinkhorn_potential(cost, epsilon, iterations)
        # P_ij / sum_i P_ij = softmax_i(f_i - C_ij / eps): g_j cancels.
        columns = torch.softmax(f[None, :] - scaled.T, dim=1)
        return torch.multinomial(columns, 1, generator=generator).squeeze(1)
