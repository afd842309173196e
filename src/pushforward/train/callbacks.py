"""Callbacks: how code outside the loop watches or stops a training run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pushforward.train.history import History


class Callback:
    """Base class of training callbacks; override the hooks you need.

    ``fit`` calls, in this order, ``on_start`` once, ``on_step`` after every
    optimisation step, ``on_eval`` after every validation, and ``on_end`` once
    (also after early stopping, but not when an error or a signal ends the run).
    ``on_step`` and ``on_eval`` may return ``True`` to stop training after the
    current step; a checkpoint is written then when a checkpoint directory is
    set, so the run can be resumed.

    The ``logs`` dictionaries hold plain floats and ints:
    ``on_step``: ``loss`` (this step's loss, NaN for a skipped step),
    ``learning_rate``, ``grad_norm``, ``skipped`` (0 or 1);
    ``on_eval``: ``val_loss``, ``best_val_loss``, ``best_step``.

    Callbacks are plain objects held by the loop, never stored on a model.
    """

    def on_start(self, step: int, total: int) -> None:
        """Called before the first step; ``step`` is where a resumed run restarts."""

    def on_step(self, step: int, logs: dict[str, Any]) -> bool | None:
        """Called after optimisation step ``step`` (1-based)."""
        return None

    def on_eval(self, step: int, logs: dict[str, Any]) -> bool | None:
        """Called after a validation at step ``step``."""
        return None

    def on_end(self, history: History) -> None:
        """Called once when the run ends normally."""
