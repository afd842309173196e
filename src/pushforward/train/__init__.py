"""The training engine: fit loop, EMA, checkpoints and exact resume, callbacks, progress."""

from pushforward.train.callbacks import Callback
from pushforward.train.checkpoint import (
    Checkpoint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from pushforward.train.ema import EMA
from pushforward.train.fit import fit
from pushforward.train.history import History
from pushforward.train.progress import ProgressBar
from pushforward.train.schedule import warmup_cosine

__all__ = [
    "EMA",
    "Callback",
    "Checkpoint",
    "History",
    "ProgressBar",
    "fit",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
    "warmup_cosine",
]
