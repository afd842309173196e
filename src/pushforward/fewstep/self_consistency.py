r"""Self-consistency of a flow map: the shortcut objective's step sizes and targets.

Pure functions of tensors behind :class:`~pushforward.fewstep.shortcut.ShortcutModel`;
:math:`t = 0` is the source, 1 the data, and a shortcut :math:`s(x, t, d)` jumps a
step :math:`d`, :math:`x_{t+d} = x_t + d\, s(x_t, t, d)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pushforward.matching.coupled import broadcast_rows

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
    levels = dyadic_levels(max_steps)
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


def dyadic_levels(max_steps: int) -> int:
    """The number of dyadic step levels, ``log2(max_steps)``, for a power of two >= 2.

    Raises a ValueError naming the ``max_steps`` option otherwise.
    """
    levels = int(max_steps).bit_length() - 1
    if max_steps < 2 or 2**levels != max_steps:
        raise ValueError(f"option 'max_steps' must be a power of two >= 2, got {max_steps!r}")
    return levels
