r"""FAB's prioritised replay buffer: AIS samples drawn again in proportion to their weights.

The buffer holds points :math:`x_i` with AIS log-weights :math:`\log w_i` for
:math:`g = \tilde p^\alpha q_{\theta_i}^{1-\alpha}` and the :math:`\log q_{\theta_i}(x_i)` the
weight was computed with. Sampled in proportion to :math:`w_i`, a point is a sample of
:math:`g` for the flow that was; once the flow has moved to :math:`\theta`, its weight for
the new :math:`g` is

.. math:: \log w_i \leftarrow \log w_i + (1 - \alpha)\big(\log q_\theta(x_i)
          - \log q_{\theta_i}(x_i)\big)

(:math:`\alpha = 2`: :math:`\log w_i - (\log q_\theta - \log q_{\theta_i})`), which FAB
applies to each point when it is used and stores with the new :math:`\log q_\theta(x_i)`.

References:
    Midgley et al. (2023), Flow Annealed Importance Sampling Bootstrap, section 3.3 and
    Algorithm 2; Schaul et al. (2016), Prioritized Experience Replay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pushforward.options import positive_int


def log_weight_correction(log_q_new: Tensor, log_q_old: Tensor, alpha: float = 2.0) -> Tensor:
    r"""``(batch,)`` :math:`(1 - \alpha)(\log q_{\theta}(x) - \log q_{\theta_{old}}(x))`.

    What a buffered log-weight for :math:`\tilde p^\alpha q^{1-\alpha}` gains when the flow
    moves from :math:`\theta_{old}` to :math:`\theta`.
    """
    return (1.0 - alpha) * (log_q_new - log_q_old)


def gumbel_top_k(logits: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    r"""``k`` distinct indices drawn without replacement with probabilities :math:`\propto e^{l_i}`.

    The ``k`` largest of :math:`l_i + G_i`, :math:`G_i` standard Gumbel (the Gumbel-top-k
    trick), in random order. Entries at ``-inf`` are drawn only when fewer than ``k``
    others are left.

    References:
        Kool et al. (2019), Stochastic Beams and Where to Find Them: The Gumbel-Top-k Trick.
    """
    uniform = torch.rand(
        logits.shape, dtype=logits.dtype, device=logits.device, generator=generator
    )
    # u in (0, 1): -log(-log u) stays finite.
    tiny = torch.finfo(logits.dtype).tiny
    gumbel = -torch.log(-torch.log(uniform.clamp(tiny, 1.0 - 1e-7)))
    chosen = torch.topk(logits + gumbel, k, sorted=False).indices
    order = torch.randperm(k, device=logits.device, generator=generator)
    return chosen[order]


@dataclass(frozen=True)
class BufferBatch:
    """Points drawn from the buffer.

    Attributes:
        x: ``(batch, d)`` points.
        log_w: ``(batch,)`` their current log-weights.
        log_q: ``(batch,)`` the :math:`\\log q` their weights were last computed with.
        indices: ``(batch,)`` int64 their places in the buffer (for :meth:`update`).
    """

    x: Tensor
    log_w: Tensor
    log_q: Tensor
    indices: Tensor


class PrioritisedReplayBuffer:
    r"""A ring buffer of AIS samples, sampled in proportion to their importance weights.

    New points overwrite the oldest once ``capacity`` is reached; sampling starts once
    ``min_fill`` points are held. Points with a non-finite position, log-weight or
    :math:`\log q` are not added; a point whose :math:`\log q` turns non-finite at an
    :meth:`update` gets weight zero (FAB: "kill" it). The contents are state
    (:meth:`state`, :meth:`restore`), saved in checkpoints for an exact resume.

    References:
        Midgley et al. (2023), Flow Annealed Importance Sampling Bootstrap.

    Args:
        capacity: the most points held.
        min_fill: the points needed before :meth:`sample` may be called.

    Example:
        >>> import torch
        >>> buffer = PrioritisedReplayBuffer(capacity=8, min_fill=4)
        >>> buffer.add(torch.randn(4, 2), torch.zeros(4), torch.zeros(4))
        >>> batch = buffer.sample(2)
        >>> batch.x.shape, buffer.can_sample
        (torch.Size([2, 2]), True)
    """

    def __init__(self, capacity: int, min_fill: int) -> None:
        positive_int("buffer_capacity", capacity)
        positive_int("buffer_min", min_fill)
        if min_fill > capacity:
            raise ValueError(
                f"buffer_min ({min_fill}) must not exceed buffer_capacity ({capacity})"
            )
        self.capacity = capacity
        self.min_fill = min_fill
        self.size = 0
        self.next = 0
        self.x: Tensor | None = None
        self.log_w: Tensor | None = None
        self.log_q: Tensor | None = None

    @property
    def can_sample(self) -> bool:
        return self.size >= self.min_fill

    def add(self, x: Tensor, log_w: Tensor, log_q: Tensor) -> None:
        """Adds ``x: (batch, d)`` with their log-weights and log q (non-finite rows left out)."""
        x, log_w, log_q = x.detach(), log_w.detach(), log_q.detach()
        valid = torch.isfinite(x).all(-1) & torch.isfinite(log_w) & torch.isfinite(log_q)
        x, log_w, log_q = x[valid], log_w[valid], log_q[valid]
        if self.x is None or self.log_w is None or self.log_q is None:
            self.x = x.new_zeros((self.capacity, x.shape[1]))
            self.log_w = log_w.new_full((self.capacity,), -math.inf)
            self.log_q = log_q.new_zeros((self.capacity,))
        elif x.shape[1] != self.x.shape[1]:
            raise ValueError(f"points have {x.shape[1]} features, the buffer {self.x.shape[1]}")
        count = x.shape[0]
        if count > self.capacity:  # only the newest fit
            x, log_w, log_q = x[-self.capacity :], log_w[-self.capacity :], log_q[-self.capacity :]
            count = self.capacity
        places = (torch.arange(count, device=self.x.device) + self.next) % self.capacity
        self.x[places] = x.to(self.x)
        self.log_w[places] = log_w.to(self.log_w)
        self.log_q[places] = log_q.to(self.log_q)
        self.next = (self.next + count) % self.capacity
        self.size = min(self.size + count, self.capacity)

    def sample(
        self, n: int, replacement: bool = False, generator: torch.Generator | None = None
    ) -> BufferBatch:
        """``n`` points drawn with probabilities :math:`w_i / \\sum_j w_j`.

        Without replacement (FAB's default) by the Gumbel-top-k trick, so ``n`` may not
        exceed the points held; with replacement by a categorical draw.
        """
        positive_int("n", n)
        if not self.can_sample or self.x is None or self.log_w is None or self.log_q is None:
            raise ValueError(
                f"the buffer holds {self.size} points; sampling needs at least {self.min_fill}"
            )
        logits = self.log_w[: self.size]
        if replacement:
            probabilities = torch.softmax(logits.to(torch.float64), dim=0)
            indices = torch.multinomial(probabilities, n, replacement=True, generator=generator)
        else:
            if n > self.size:
                raise ValueError(
                    f"cannot draw {n} distinct points from a buffer of {self.size}; raise "
                    "buffer_min or lower the batch size or buffer_updates"
                )
            indices = gumbel_top_k(logits, n, generator)
        return BufferBatch(self.x[indices], self.log_w[indices], self.log_q[indices], indices)

    def update(self, indices: Tensor, log_q_new: Tensor, alpha: float = 2.0) -> Tensor:
        """Moves the weights of the points at ``indices`` to the flow of ``log_q_new``.

        Applies :func:`log_weight_correction` to their log-weights and stores
        ``log_q_new`` as their :math:`\\log q`; a point with a non-finite new
        :math:`\\log q` gets weight zero.

        Returns:
            ``(batch,)`` the log-weight corrections (non-finite where a point was killed).
        """
        if self.log_w is None or self.log_q is None:
            raise ValueError("the buffer is empty")
        log_q_new = log_q_new.detach().to(self.log_q)
        correction = log_weight_correction(log_q_new, self.log_q[indices], alpha)
        valid = torch.isfinite(correction)
        kept = indices[valid]
        self.log_w[kept] += correction[valid]
        self.log_q[kept] = log_q_new[valid]
        self.log_w[indices[~valid]] = -math.inf
        return correction

    def follow(self, reference: Tensor) -> None:
        """Moves the contents to ``reference``'s device (after a restore from a CPU checkpoint)."""
        if self.x is not None and self.log_w is not None and self.log_q is not None:
            device = reference.device
            self.x, self.log_w, self.log_q = (
                self.x.to(device),
                self.log_w.to(device),
                self.log_q.to(device),
            )

    def state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """``(json_part, tensors)``: the sizes, and the points held with their weights."""
        json_part = {
            "capacity": self.capacity,
            "min_fill": self.min_fill,
            "size": self.size,
            "next": self.next,
        }
        if self.x is None or self.log_w is None or self.log_q is None:
            return json_part, {}
        tensors = {
            "x": self.x.clone(),
            "log_w": self.log_w.clone(),
            "log_q": self.log_q.clone(),
        }
        return json_part, tensors

    def restore(self, json_part: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        """Inverse of :meth:`state`."""
        if json_part["capacity"] != self.capacity or json_part["min_fill"] != self.min_fill:
            raise ValueError(
                f"the saved buffer has capacity {json_part['capacity']} and minimum "
                f"{json_part['min_fill']}; this one {self.capacity} and {self.min_fill}"
            )
        self.size, self.next = int(json_part["size"]), int(json_part["next"])
        if not tensors:
            self.x = self.log_w = self.log_q = None
            return
        self.x = tensors["x"].clone()
        self.log_w = tensors["log_w"].clone()
        self.log_q = tensors["log_q"].clone()
