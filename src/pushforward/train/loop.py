"""The state of a training run: one step, validation, checkpoint and restore."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from pushforward.model import Model
from pushforward.train.batches import EpochBatches, Rows
from pushforward.train.checkpoint import (
    Checkpoint,
    global_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_global_rng_state,
    save_checkpoint,
)
from pushforward.train.distributed import Placement, all_reduce_mean
from pushforward.train.ema import EMA
from pushforward.train.history import History
from pushforward.train.interrupts import raise_for

# Options that fix the trajectory: a resume with other values would not continue
# the same run, so it is refused.
TRAJECTORY_OPTIONS = ("seed", "batch_size", "optimizer", "train_size", "validation_size")
CARRIED = "carried_"
"""The key prefix of the carried state's tensors among a checkpoint's random states."""


class TrainingLoop:
    """The mutable state of one training run and the operations that change it.

    ``fit`` drives it; it holds the step counter, the optimizer, the EMA, the
    minibatch order, early-stopping counters and the history, and turns all of
    them into a :class:`~pushforward.train.checkpoint.Checkpoint` and back.
    """

    def __init__(
        self,
        model: Model,
        optim: torch.optim.Optimizer,
        averager: EMA | None,
        batches: EpochBatches | None,
        where: Placement,
        options: dict[str, Any],
        directory: str | os.PathLike[str] | None,
        carried: Any = None,
    ) -> None:
        self.model = model
        # What else carries state from step to step (an objective's replay buffer): an
        # object with state() -> (json, tensors) and restore(json, tensors), or None.
        self.carried = carried
        self.optim = optim
        self.averager = averager
        self.batches = batches
        self.where = where
        self.options = options
        self.directory = directory
        self.history = History()
        self.step = 0
        self.written = -1
        self.in_a_row = 0
        self.evals_since_best = 0
        self.best: dict[str, Tensor] | None = None
        self.interval_sum = 0.0
        self.interval_count = 0
        self.parameters = [p for p in model.parameters() if p.requires_grad]

    def train_step(
        self,
        compute_loss: Callable[[], Tensor],
        lr: float,
        clip: float | None,
        request: Any,
    ) -> dict[str, Any]:
        """One optimisation step on the scalar ``compute_loss()`` (skipped if non-finite)."""
        self.model.train()
        self.optim.zero_grad(set_to_none=True)
        loss = compute_loss()
        # One reduction carries the loss and any stop request, so all ranks agree
        # on skipping and stopping.
        flag = 0.0 if request.signal is None else 1.0
        shared = all_reduce_mean(torch.stack([loss.detach(), loss.new_tensor(flag)]), self.where)
        if shared[1] > 0 and request.signal is None:
            request.signal = 15
        value = float(shared[0])
        grad_norm = math.nan
        if math.isfinite(value):
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(
                self.parameters, math.inf if clip is None else clip
            )
            grad_norm = float(norm)
        self.step += 1
        self.history.steps_done = self.step
        if not math.isfinite(grad_norm):
            self.optim.zero_grad(set_to_none=True)
            self.history.skipped += 1
            self.history.skipped_steps.append(self.step)
            self.in_a_row += 1
            self.model.after_step()
            return {"loss": value, "learning_rate": lr, "grad_norm": grad_norm, "skipped": 1}
        self.in_a_row = 0
        for group in self.optim.param_groups:
            group["lr"] = lr
        self.optim.step()
        if self.averager is not None:
            self.averager.update(self.model)
        # After the average: it then sees the state a target network had when the
        # step's loss used it.
        self.model.after_step()
        self.interval_sum += value
        self.interval_count += 1
        return {"loss": value, "learning_rate": lr, "grad_norm": grad_norm, "skipped": 0}

    def end_step(
        self, lr: float, stop: bool, request: Any, log_every: int, checkpoint_every: int | None
    ) -> None:
        """After a step's callbacks: logs the interval, checkpoints, and honours a signal.

        A record is taken every ``log_every`` steps, at the last step and when the run
        stops; a checkpoint every ``checkpoint_every`` steps and when it stops (callback,
        early stopping or signal). A signal is a pause, not an end: its partial interval
        stays in the checkpoint so a resumed history equals an uninterrupted one; then it
        is raised (``KeyboardInterrupt`` or ``SystemExit``).
        """
        step = self.step
        ending = stop or self.history.stopped_early
        if step % log_every == 0 or step == self.options["steps"] or ending:
            self.record(lr)
        stopping = ending or request.signal is not None
        if (checkpoint_every and step % checkpoint_every == 0) or stopping:
            self.checkpoint()
        if request.signal is not None:
            raise_for(request.signal)

    def record(self, lr: float) -> None:
        mean = self.interval_sum / self.interval_count if self.interval_count else math.nan
        self.history.steps.append(self.step)
        self.history.loss.append(mean)
        self.history.learning_rate.append(lr)
        self.interval_sum, self.interval_count = 0.0, 0

    @torch.no_grad()
    def evaluate(
        self,
        held_out: Rows,
        chunk: int,
        seed: int,
        patience: int | None,
        min_delta: float,
    ) -> dict[str, Any]:
        """Validation loss of the weights in use (EMA if on), with fixed noise."""
        self.model.eval()
        context = nullcontext() if self.averager is None else self.averager.applied(self.model)
        total = 0.0
        devices = rng_devices(self.model)
        # A fixed seed gives stochastic losses the same noise at every validation
        # (comparable values), and the fork keeps the training stream untouched.
        with context, torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed + 2)
            size = held_out.x.shape[0]
            for begin in range(0, size, chunk):
                rows = held_out.between(begin, begin + chunk)
                if rows.source is None:
                    value = self.model.loss_preprocessed(rows.x, rows.context)
                else:
                    value = self.model.loss_preprocessed(rows.x, rows.context, rows.pairs())
                total += float(value) * rows.x.shape[0]
            loss = total / size
            best = self.history.best_val_loss
            if math.isfinite(loss) and (best is None or loss < best - min_delta):
                self.history.best_val_loss, self.history.best_step = loss, self.step
                self.best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.evals_since_best = 0
            else:
                self.evals_since_best += 1
        self.history.eval_steps.append(self.step)
        self.history.val_loss.append(loss)
        if patience is not None and self.evals_since_best >= patience:
            self.history.stopped_early = True
        return {
            "val_loss": loss,
            "best_val_loss": self.history.best_val_loss,
            "best_step": self.history.best_step,
        }

    # -- checkpoints ------------------------------------------------------------

    def checkpoint(self) -> None:
        self.written = self.step
        if self.directory is None or not self.where.writes:
            return
        model_state = self.model.state_dict()
        for name, tensor in model_state.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise RuntimeError(
                    f"weight {name!r} holds NaN or Inf at step {self.step}; "
                    "no checkpoint was written (the previous one is intact)"
                )
        batch_json, batch_tensors = ({}, {}) if self.batches is None else self.batches.state()
        rng = global_rng_state()
        rng.update(batch_tensors)
        carried_json: dict[str, Any] = {}
        if self.carried is not None:
            carried_json, carried_tensors = self.carried.state()
            rng.update({CARRIED + key: value for key, value in carried_tensors.items()})
        state = {
            "options": self.options,
            "history": self.history.to_dict(),
            "batches": batch_json,
            "scheduler": {
                "name": "warmup_cosine",
                "total": self.options["steps"],
                "warmup": self.options["warmup"],
                "final": self.options["final_lr"],
            },
            "in_a_row": self.in_a_row,
            "evals_since_best": self.evals_since_best,
            "interval_sum": self.interval_sum,
            "interval_count": self.interval_count,
            "ema_updates": None if self.averager is None else self.averager.updates,
            "carried": carried_json,
        }
        save_checkpoint(
            self.directory,
            Checkpoint(
                step=self.step,
                model=model_state,
                optimizer=self.optim.state_dict(),
                rng=rng,
                state=state,
                ema=None if self.averager is None else self.averager.module_state(self.model),
                best=self.best,
            ),
        )

    def restore(self) -> None:
        assert self.directory is not None
        path = latest_checkpoint(self.directory)
        if path is None:
            return
        saved = load_checkpoint(path)
        state = saved.state
        differing = [
            f"{name}={state['options'].get(name)!r} (now {self.options[name]!r})"
            for name in TRAJECTORY_OPTIONS
            if state["options"].get(name) != self.options[name]
        ]
        if differing:
            raise ValueError(
                f"cannot resume from {path}: it was trained with " + ", ".join(differing)
            )
        own = _own_keys(saved.model, self.model)
        try:
            self.model.load_state_dict(own(saved.model), strict=True)
        except RuntimeError as error:
            raise ValueError(f"{path} does not fit this model: {error}") from None
        self.optim.load_state_dict(saved.optimizer)
        if self.averager is not None:
            if saved.ema is None:
                raise ValueError(f"{path} holds no EMA weights but ema={self.averager.decay}")
            self.averager.load_state_dict(own(saved.ema), state["ema_updates"])
        self.best = None if saved.best is None else own(saved.best)
        restore_global_rng_state(saved.rng)
        if self.batches is not None:
            self.batches.restore(state["batches"], saved.rng)
        if self.carried is not None:
            self.carried.restore(
                state.get("carried", {}),
                {
                    key[len(CARRIED) :]: value
                    for key, value in saved.rng.items()
                    if key.startswith(CARRIED)
                },
            )
        self.history = History.from_dict(state["history"])
        self.step = saved.step
        self.written = saved.step
        self.in_a_row = state["in_a_row"]
        self.evals_since_best = state["evals_since_best"]
        self.interval_sum = state["interval_sum"]
        self.interval_count = state["interval_count"]

    def finish(self) -> None:
        """Puts the weights ``fit`` returns into the model (see ``fit``)."""
        self.model.eval()
        if self.best is None and self.averager is None:
            self.history.weights = "last"
            return
        self.history.last_weights = {
            k: v.detach().clone() for k, v in self.model.state_dict().items()
        }
        if self.best is not None:
            self.model.load_state_dict(self.best)
            self.history.weights = "best"
        elif self.averager is not None:
            self.averager.copy_to(self.model)
            self.history.weights = "ema"


def model_device(model: Model) -> torch.device:
    """The device of the model's first parameter or floating buffer (CPU if none)."""
    reference = model._reference()
    return torch.device("cpu") if reference is None else reference.device


def rng_devices(model: Model) -> list[int]:
    """The CUDA devices whose generators ``torch.random.fork_rng`` forks for ``model``."""
    device = model_device(model)
    return [device.index or 0] if device.type == "cuda" else []


WRAPPED = "model."
"""The key prefix of checkpoints that reflow and distill runs wrote before ``fit`` took
fixed pairs (``source=``): they trained the model inside a wrapper module."""


def _own_keys(
    state: dict[str, Tensor], model: torch.nn.Module
) -> Callable[[dict[str, Tensor]], dict[str, Tensor]]:
    """Maps a checkpoint's state-dict keys onto ``model``'s: as they are, or without the
    wrapper prefix of an earlier pair run (same tensors, same order), so that such a run
    resumes instead of starting again."""
    expected = set(model.state_dict())
    if set(state) == expected or not all(key.startswith(WRAPPED) for key in state):
        return lambda entries: entries
    if {key[len(WRAPPED) :] for key in state} != expected:
        return lambda entries: entries
    return lambda entries: {key.removeprefix(WRAPPED): value for key, value in entries.items()}
