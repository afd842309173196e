"""Learning-rate schedule: linear warm-up, then cosine decay."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, final: float = 0.0) -> float:
    r"""Learning-rate factor at ``step``: linear warm-up, then cosine decay to ``final``.

    .. math::
        f(s) = \frac{s + 1}{w} \quad (s < w), \qquad
        f(s) = f_\infty + (1 - f_\infty)\,\tfrac12\bigl(1 + \cos(\pi \min(1, (s - w)/(T - w)))\bigr)

    The factor multiplies the base learning rate; it is a pure function of the
    step, so resuming a run needs nothing but the step counter.

    References: Loshchilov & Hutter (2017), SGDR: Stochastic Gradient Descent
    with Warm Restarts; Goyal et al. (2017), Accurate, Large Minibatch SGD:
    Training ImageNet in 1 Hour (linear warm-up).

    Args:
        step: the 0-based optimisation step.
        total: the planned number of steps ``T``.
        warmup: warm-up steps ``w`` (0 for none).
        final: the factor ``f_inf`` reached at the end of the decay.

    Returns:
        The factor, in ``(0, 1]`` during warm-up and ``[final, 1]`` afterwards.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return final + (1.0 - final) * cosine
