"""What a training run records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from torch import Tensor


@dataclass
class History:
    """The record of a training run, returned by :func:`pushforward.train.fit`.

    Attributes:
        steps: the step (1-based count of optimisation steps done) of every
            entry of ``loss``.
        loss: the training loss averaged over the steps since the previous entry
            (non-finite steps excluded).
        learning_rate: the learning rate at those steps.
        eval_steps: the steps at which the validation loss was computed.
        val_loss: the validation loss at those steps (with the EMA weights when
            EMA is on).
        skipped: how many steps were skipped for a non-finite loss or gradient.
        skipped_steps: which steps those were (1-based, as ``steps``).
        best_step: the step of the lowest validation loss (``None`` without
            validation).
        best_val_loss: that loss.
        stopped_early: whether early stopping ended the run.
        steps_done: optimisation steps done in all (including skipped ones).
        seconds: wall-clock seconds spent in training (summed over resumes).
        weights: which weights the model holds after ``fit``: ``"best"``,
            ``"ema"`` or ``"last"``.
        last_weights: the raw (non-averaged) weights of the last step when the
            model was returned with other weights, else ``None``; not saved in
            checkpoints (the checkpoint holds them as ``model.safetensors``).
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    skipped: int = 0
    skipped_steps: list[int] = field(default_factory=list)
    best_step: int | None = None
    best_val_loss: float | None = None
    stopped_early: bool = False
    steps_done: int = 0
    seconds: float = 0.0
    weights: str = "last"
    last_weights: dict[str, Tensor] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (without ``last_weights``)."""
        record = asdict(self)
        record.pop("last_weights")
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> History:
        """Rebuilds a history from :meth:`to_dict`'s output."""
        names = {item.name for item in fields(cls)} - {"last_weights"}
        unknown = sorted(set(record) - names)
        if unknown:
            raise ValueError(f"unknown history fields {unknown}")
        return cls(**record)
