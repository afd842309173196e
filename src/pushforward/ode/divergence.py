"""Divergence of a vector field: exact (forward-mode Jacobian trace) and Hutchinson's estimator.

Every function here assumes ``f`` acts row-wise: row ``b`` of ``f(x)`` depends only
on row ``b`` of ``x`` (true of networks applied to each point, false of batch
normalisation in training mode). One tangent broadcast to every row then yields
each row's own Jacobian-vector product in a single pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.func import jvp, vmap

from pushforward.options import closest

#: The probe distributions of :func:`make_probes`.
PROBE_KINDS: tuple[str, ...] = ("rademacher", "gaussian")

#: Directions times batch rows vectorised in one pass when ``chunk_size`` is not
#: given; the activations of that pass grow like this number times the hidden width.
ROWS_PER_PASS = 2**17

RowwiseField = Callable[[Tensor], Tensor]


def _check_field_input(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must be shaped (batch, *event), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")


def _quadratic_forms(f: RowwiseField, x: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
    """``f(x)`` and :math:`v^T J_b v` for every direction ``v`` and row ``b``, one vmapped jvp."""

    def one_direction(direction: Tensor) -> tuple[Tensor, Tensor]:
        outputs = jvp(f, (x,), (direction,))
        value, tangent = outputs[0], outputs[1]
        if tangent.shape != x.shape:
            raise ValueError(
                f"the vector field must return the shape of its input {tuple(x.shape)}, "
                f"got {tuple(tangent.shape)}"
            )
        return value, (tangent * direction).reshape(x.shape[0], -1).sum(-1)

    # The primal does not depend on the direction: out_dims=None keeps one copy of it.
    out_dims: Any = (None, 0)
    return vmap(one_direction, out_dims=out_dims)(directions)


def directions_per_pass(dims: int, batch: int, chunk_size: int | None) -> int:
    """Directions of a Jacobian trace pushed at once: ``chunk_size``, or as many as keep
    ``batch * directions`` within :data:`ROWS_PER_PASS`; a bad ``chunk_size`` is an error."""
    if chunk_size is None:
        return max(1, min(dims, ROWS_PER_PASS // max(batch, 1)))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return min(dims, chunk_size)


def exact_divergence(
    f: RowwiseField, x: Tensor, *, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    r"""The divergence :math:`\nabla \cdot f(x) = \operatorname{tr} J_f(x)` of each row, exactly.

    The trace is :math:`\sum_{i=1}^{D} e_i^T J e_i` over the :math:`D = \prod`
    event one-hot directions :math:`e_i`, each a forward-mode Jacobian-vector
    product (``torch.func.jvp``) broadcast to every row and vectorised with
    ``torch.func.vmap``. ``chunk_size`` directions go through one pass and the
    passes are looped, so memory grows like ``chunk_size * batch * hidden``
    instead of ``D * batch * hidden``. ``f(x)`` comes from the same pass.
    Differentiable with respect to ``x`` and to parameters used inside ``f``.
    ``f`` must act row-wise (see the module docstring).

    References: Chen et al. (2018), Neural Ordinary Differential Equations;
    Grathwohl et al. (2019), FFJORD: Free-form Continuous Dynamics for Scalable
    Reversible Generative Models.

    Args:
        f: a row-wise map ``(batch, *event) -> (batch, *event)``.
        x: the points, ``(batch, *event)``.
        chunk_size: directions per vectorised pass; by default all of them when
            ``D * batch <= ROWS_PER_PASS``, else as many as fit.

    Returns:
        ``(f(x), div)`` with ``f(x): (batch, *event)`` and ``div: (batch,)``.
    """
    _check_field_input(x)
    dims = math.prod(x.shape[1:])
    per_pass = directions_per_pass(dims, x.shape[0], chunk_size)
    basis = torch.eye(dims, dtype=x.dtype, device=x.device)
    value: Tensor | None = None
    divergence = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, dims, per_pass):
        block = basis[start : start + per_pass]
        directions = block.reshape(-1, 1, *x.shape[1:]).expand(-1, *x.shape)
        block_value, forms = _quadratic_forms(f, x, directions)
        value = block_value if value is None else value
        divergence = divergence + forms.sum(0)
    if value is None:  # an empty event (D = 0): no direction, zero divergence
        value = f(x)
    return value, divergence


def make_probes(
    x: Tensor,
    probes: int = 1,
    kind: str = "rademacher",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Random Hutchinson probes :math:`\epsilon` with :math:`E[\epsilon \epsilon^T] = I`.

    Rademacher probes take :math:`\pm 1` with probability 1/2 each (the
    minimum-variance choice, Hutchinson 1989); Gaussian probes are
    :math:`N(0, I)`.

    References: Hutchinson (1989), A stochastic estimator of the trace of the
    influence matrix for Laplacian smoothing splines.

    Args:
        x: the points the probes are for, ``(batch, *event)``; gives shape, dtype, device.
        probes: probes per point.
        kind: ``"rademacher"`` or ``"gaussian"``.
        generator: random generator (on the device of ``x``); ``None`` uses the global one.

    Returns:
        ``(probes, batch, *event)`` in the dtype and device of ``x``.
    """
    _check_field_input(x)
    if kind not in PROBE_KINDS:
        raise ValueError(
            f"unknown probe kind {kind!r}{closest(str(kind), list(PROBE_KINDS))}; "
            f"valid kinds: {', '.join(PROBE_KINDS)}"
        )
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be a positive integer, got {probes!r}")
    shape = (probes, *x.shape)
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
    bits = torch.randint(0, 2, shape, generator=generator, device=x.device)
    return bits.to(x.dtype) * 2 - 1


def hutchinson_divergence(f: RowwiseField, x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    r"""Hutchinson's unbiased estimate of the divergence of each row.

    .. math::
        \nabla \cdot f(x) = E_\epsilon[\epsilon^T J_f(x) \epsilon]
        \approx \frac{1}{P} \sum_{p=1}^{P} \epsilon_p^T J_f(x) \epsilon_p,

    each term one forward-mode Jacobian-vector product, vectorised over the
    probes. Unbiased whenever :math:`E[\epsilon \epsilon^T] = I`. ``f`` must act
    row-wise (see the module docstring). Differentiable with respect to ``x`` and
    to parameters used inside ``f``.

    References: Hutchinson (1989), A stochastic estimator of the trace of the
    influence matrix for Laplacian smoothing splines; Grathwohl et al. (2019),
    FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models.

    Args:
        f: a row-wise map ``(batch, *event) -> (batch, *event)``.
        x: the points, ``(batch, *event)``.
        noise: the probes ``(probes, batch, *event)`` (see :func:`make_probes`),
            or one probe ``(batch, *event)``.

    Returns:
        ``(f(x), estimate)`` with ``f(x): (batch, *event)`` and ``estimate: (batch,)``.
    """
    _check_field_input(x)
    if not isinstance(noise, Tensor):
        raise TypeError(f"noise must be a tensor, got {type(noise).__name__}")
    if noise.shape == x.shape:
        noise = noise.unsqueeze(0)
    if noise.dim() != x.dim() + 1 or noise.shape[1:] != x.shape:
        raise ValueError(
            f"noise must be shaped (probes, *{tuple(x.shape)}) to match x, got {tuple(noise.shape)}"
        )
    value, forms = _quadratic_forms(f, x, noise.to(dtype=x.dtype, device=x.device))
    return value, forms.mean(0)
