"""The training engine: one loop for every model that speaks the protocol."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pushforward.model import Model


@dataclass
class History:
    """What a training run recorded.

    Attributes:
        steps: the step index of every recorded loss.
        loss: the training loss at those steps.
        skipped: how many steps were skipped for a non-finite loss.
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    skipped: int = 0


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    r"""Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0.

    .. math:: f(s) = \min(1, s / w) \cdot \tfrac12 (1 + \cos(\pi \max(0, s - w) / (T - w)))
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def fit(
    model: Model,
    data: Tensor,
    context: Tensor | None = None,
    *,
    steps: int = 2000,
    batch_size: int = 512,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    warmup: int = 100,
    clip: float | None = 5.0,
    seed: int = 0,
    log_every: int = 100,
    max_skipped_in_a_row: int = 50,
    callback: Callable[[int, float], None] | None = None,
) -> History:
    """Trains ``model`` by minimising ``model.loss`` on minibatches of ``data``.

    AdamW with linear warm-up and cosine decay, gradient-norm clipping, and a
    seeded minibatch order (so the same seed gives the same run). A step whose
    loss is NaN or Inf is skipped and counted; ``max_skipped_in_a_row`` such
    steps stop the run with an error.

    Args:
        model: any pushforward model.
        data: ``(n, *event_shape)`` training data.
        context: ``(n, context)`` conditioning inputs, or ``None``.

    Returns:
        The loss history.
    """
    if data.shape[0] == 0:
        raise ValueError("the training data is empty")
    if context is not None and context.shape[0] != data.shape[0]:
        raise ValueError(
            f"context has {context.shape[0]} rows but there are {data.shape[0]} data rows"
        )
    model.check_input(data[:1])
    model.check_context(None if context is None else context[:1], 1)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, steps, warmup)
    )
    history = History()
    in_a_row = 0
    model.train()
    for step in range(steps):
        index = torch.randint(
            0, data.shape[0], (min(batch_size, data.shape[0]),), generator=generator
        )
        batch = data[index]
        batch_context = None if context is None else context[index]
        loss = model.loss(batch, batch_context)
        if not torch.isfinite(loss):
            history.skipped += 1
            in_a_row += 1
            if in_a_row >= max_skipped_in_a_row:
                raise RuntimeError(
                    f"the loss was NaN or Inf for {in_a_row} steps in a row (at step {step}); "
                    "lower the learning rate or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            continue
        in_a_row = 0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps - 1:
            value = loss.item()
            history.steps.append(step)
            history.loss.append(value)
            if callback is not None:
                callback(step, value)
    model.eval()
    return history
