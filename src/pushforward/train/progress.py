"""A tqdm progress bar for training: loss, validation loss and steps per second."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from pushforward.train.callbacks import Callback


class ProgressBar(Callback):
    """Shows the step, a smoothed training loss, the last validation loss and steps/s.

    The smoothed loss is an exponential moving average of the step losses,
    ``m <- 0.9 m + 0.1 loss``. The bar is silent when ``quiet`` is set, when
    ``stream`` (standard error by default) is not a terminal, or when tqdm is
    not installed; training never depends on it.

    Args:
        quiet: never show anything.
        stream: where to draw the bar.
    """

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = not quiet and callable(isatty) and bool(isatty())
        self.bar: Any = None
        self.smoothed: float | None = None
        self.val_loss: float | None = None

    def on_start(self, step: int, total: int) -> None:
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self.bar = tqdm(
            total=total, initial=step, file=self.stream, unit="step", dynamic_ncols=True
        )

    def on_step(self, step: int, logs: dict[str, Any]) -> None:
        loss = logs["loss"]
        if loss == loss:  # skipped steps carry NaN and leave the average alone
            self.smoothed = loss if self.smoothed is None else 0.9 * self.smoothed + 0.1 * loss
        if self.bar is None:
            return None
        self.bar.update(1)
        postfix = {} if self.smoothed is None else {"loss": f"{self.smoothed:.4f}"}
        if self.val_loss is not None:
            postfix["val"] = f"{self.val_loss:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        return None

    def on_eval(self, step: int, logs: dict[str, Any]) -> None:
        self.val_loss = logs["val_loss"]
        return None

    def on_end(self, history: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the bar (safe to call twice)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
