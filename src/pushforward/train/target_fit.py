"""Training against an unnormalized target: the engine's loop with samples of the model for data."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from pushforward.model import Model
from pushforward.sampling.importance import (
    LogWeights,
    importance_log_weights,
    log_z_estimate,
    reverse_ess,
)
from pushforward.sampling.objectives import Objective, make_objective
from pushforward.sampling.target import Target, as_target
from pushforward.train.callbacks import Callback
from pushforward.train.distributed import Placement
from pushforward.train.ema import EMA
from pushforward.train.history import History
from pushforward.train.interrupts import stop_on_signals
from pushforward.train.loop import TrainingLoop, rng_devices
from pushforward.train.progress import ProgressBar
from pushforward.train.schedule import warmup_cosine


def inverse_temperature(step: int, beta: float, anneal: int) -> float:
    r"""The inverse temperature of step ``step`` (0-based): linear from ``beta`` to 1.

    .. math:: \beta_k = \beta_0 + (1 - \beta_0) \min(1, k / K)

    over the first ``anneal`` = :math:`K` steps (1 throughout when ``anneal`` is 0).
    Fitting :math:`\tilde p^{\beta}` with a small :math:`\beta` first spreads the flow over
    the modes a cold target would let it miss.
    """
    if anneal <= 0:
        return 1.0
    return beta + (1.0 - beta) * min(1.0, step / anneal)


def sample_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of step ``step``'s exact target samples: the same on a resume."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


class TargetLoss(nn.Module):
    """The model's objective against a target as a module's ``forward`` (what DDP hooks into)."""

    def __init__(self, model: Model, target: Target, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.target = target
        self.objective = objective

    def forward(self, n: int, beta: float, generator: torch.Generator | None) -> Tensor:
        return self.objective.loss(self.model, self.target, n, beta, generator)


def check_target_options(beta: float, anneal: int, eval_samples: int) -> None:
    """Raises ``ValueError`` for an inverse temperature outside (0, 1] or negative counts."""
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"the initial inverse temperature beta must lie in (0, 1], got {beta}")
    if anneal < 0 or eval_samples < 0:
        raise ValueError(
            f"anneal and eval_samples must be >= 0, got anneal={anneal}, "
            f"eval_samples={eval_samples}"
        )
    if beta < 1.0 and anneal == 0:
        raise ValueError(f"beta={beta} needs anneal > 0 (the steps over which it reaches 1)")


def fit_target(
    model: Model,
    target: Any,
    objective: str | Objective | None,
    objective_options: dict[str, Any] | None,
    *,
    optim: torch.optim.Optimizer,
    where: Placement,
    optimizer: str,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    final_lr: float,
    clip: float | None,
    ema: float | None,
    beta: float,
    anneal: int,
    eval_every: int,
    eval_samples: int,
    seed: int,
    log_every: int,
    max_skipped_in_a_row: int,
    callbacks: Sequence[Callback],
    quiet: bool,
    checkpoint_dir: str | os.PathLike[str] | None,
    checkpoint_every: int | None,
    resume: bool,
    handle_signals: bool,
) -> History:
    """The loop of :func:`pushforward.fit` with a ``target``: see there."""
    # A plain callable takes the model's dimension.
    given = target.features if isinstance(target, Target) else getattr(target, "features", None)
    target = as_target(target, model.features if given is None else None, name="target")
    if target.features != model.features:
        raise ValueError(
            f"the target has {target.features} features, the model was built for {model.features}"
        )
    objective = make_objective(objective or "reverse-kl", **(objective_options or {}))
    objective.check(model, target)
    check_target_options(beta, anneal, eval_samples)
    if steps < 0 or eval_every < 1 or log_every < 1:
        raise ValueError("steps must be >= 0 and eval_every, log_every >= 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    # What fixes the trajectory, checked on a resume (no data rows: sizes 0).
    options = {
        "seed": seed,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "train_size": 0,
        "validation_size": 0,
        "steps": steps,
        "lr": lr,
        "warmup": warmup,
        "final_lr": final_lr,
        "ema": ema,
        "world_size": where.world_size,
        "objective": objective.name,
    }
    if batch_size % where.world_size:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the {where.world_size} processes"
        )
    local = batch_size // where.world_size
    loss_of: nn.Module = TargetLoss(model, target, objective)
    if where.distributed:
        reference = next(model.parameters())
        ids = [reference.device] if reference.device.type == "cuda" else None
        loss_of = nn.parallel.DistributedDataParallel(loss_of, device_ids=ids)
    averager = None if ema is None else EMA(model, ema)
    progress = ProgressBar(quiet=quiet or not where.writes)
    watchers = [progress, *callbacks]
    loop = TrainingLoop(
        model, optim, averager, None, where, options, checkpoint_dir, carried=objective
    )
    devices = rng_devices(model)
    with torch.random.fork_rng(devices=devices), stop_on_signals(handle_signals) as request:
        torch.manual_seed(seed + 7919 * where.rank)
        if resume and checkpoint_dir is not None:
            loop.restore()
        start = time.perf_counter()
        seconds_before = loop.history.seconds
        for watcher in watchers:
            watcher.on_start(loop.step, steps)
        try:
            while loop.step < steps and not loop.history.stopped_early:
                temperature = inverse_temperature(loop.step, beta, anneal)
                generator = None
                if objective.needs_samples:
                    generator = sample_generator(seed + 7919 * where.rank, loop.step)
                lr_now = lr * warmup_cosine(loop.step, steps, warmup, final_lr)
                compute = partial(loss_of, local, temperature, generator)
                logs = loop.train_step(compute, lr_now, clip, request)
                logs["beta"] = temperature
                step = loop.step
                if logs["skipped"] and loop.in_a_row >= max_skipped_in_a_row:
                    raise RuntimeError(
                        f"the {objective.name} loss or its gradient was NaN or Inf for "
                        f"{loop.in_a_row} steps in a row (up to step {step}); lower the "
                        f"learning rate (lr={lr}), set clip, or check that the target's "
                        "log-density is finite where the flow puts its samples"
                    )
                stop = any([bool(w.on_step(step, logs)) for w in watchers])
                if eval_samples and (step % eval_every == 0 or step == steps):
                    eval_logs = _evaluate(loop, target, eval_samples, seed)
                    stop = any([bool(w.on_eval(step, eval_logs)) for w in watchers]) or stop
                loop.history.seconds = seconds_before + time.perf_counter() - start
                loop.end_step(lr_now, stop, request, log_every, checkpoint_every)
                if stop:
                    break
            if loop.written != loop.step:
                loop.checkpoint()
        finally:
            progress.close()
    loop.finish()
    for watcher in watchers:
        watcher.on_end(loop.history)
    return loop.history


@torch.no_grad()
def _evaluate(loop: TrainingLoop, target: Target, n: int, seed: int) -> dict[str, Any]:
    """Importance weights of ``n`` samples with fixed noise: ``val_loss`` is minus the ELBO."""
    model = loop.model
    model.eval()
    applied = nullcontext() if loop.averager is None else loop.averager.applied(model)
    devices = rng_devices(model)
    with applied, torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + 2)
        _, log_w = importance_log_weights(model, target, n)
    weights = LogWeights.of(log_w)
    elbo = float(weights.values.mean()) if weights.n else -math.inf
    log_z = log_z_estimate(log_w)[0] if weights.n else math.nan
    loss = -elbo
    loop.history.eval_steps.append(loop.step)
    loop.history.val_loss.append(loss)
    return {
        "val_loss": loss,
        "best_val_loss": None,
        "best_step": None,
        "ess": reverse_ess(log_w),
        "log_z": log_z,
    }
