"""The training engine."""

from pushforward.train.fit import History, fit, warmup_cosine

__all__ = ["History", "fit", "warmup_cosine"]
