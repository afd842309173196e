"""One entry point for data: a built-in name (``builtin:NAME``) or a file path."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from pushforward.data.digits import DIGIT_LEVELS, load_digits
from pushforward.data.files import load_array
from pushforward.data.toys import TOYS, Toy
from pushforward.options import closest

BUILTIN_PREFIX = "builtin:"
DEFAULT_TOY_SIZE = 20_000
"""Samples drawn from a built-in toy when ``n`` is not given."""

IMAGE_SETS = ("digits",)


def builtin_names() -> list[str]:
    """Every name ``builtin:NAME`` accepts: the 2-D toys and the image sets."""
    return sorted([*TOYS, *IMAGE_SETS])


@dataclass(frozen=True)
class Dataset:
    """Loaded data and what is known about where it came from.

    Attributes:
        values: float64 ``(n, *event_shape)``, or int64 tokens ``(n, L)`` for token data.
        source: ``"builtin:NAME"`` or the file path as given.
        toy: the built-in toy (exact ``log_prob`` and ``entropy``), else ``None``.
        levels: quantisation levels of dequantised image data scaled to ``[0, 1)``
            (17 for the digits), for bits per dimension; ``None`` otherwise.
        vocab: token data's vocabulary size at each position; ``None`` for floats.
    """

    values: Tensor
    source: str
    toy: Toy | None = None
    levels: int | None = None
    vocab: tuple[int, ...] | None = None

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.values.shape[1:])

    def __len__(self) -> int:
        return self.values.shape[0]


def load_dataset(source: str | os.PathLike[str], n: int | None = None, seed: int = 0) -> Dataset:
    """Loads ``builtin:NAME`` (a 2-D toy or ``digits``) or a data file.

    Args:
        source: ``"builtin:moons"``, ``"builtin:digits"``, ... or a path accepted
            by :func:`~pushforward.data.files.load_array` (``.npy``, ``.npz[:key]``,
            ``.csv``).
        n: examples to return. Toys draw ``n`` fresh samples (default
            20,000); the digits take a seeded random subset (default all 1,797);
            a file gives its first ``n`` rows (default all), so a context file's
            first ``n`` rows still match.
        seed: seeds toy sampling and the digits' subset and dequantisation noise.

    Returns:
        A :class:`Dataset` with float64 values.

    Raises:
        ValueError: unknown built-in name (with the closest valid ones), bad file,
            or ``n`` larger than the file.
        FileNotFoundError: the file does not exist.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    text = os.fspath(source)
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX) :]
        if name in TOYS:
            toy = TOYS[name]
            return Dataset(toy.sample(DEFAULT_TOY_SIZE if n is None else n, seed), text, toy=toy)
        if name == "digits":
            return Dataset(load_digits(seed=seed, n=n), text, levels=DIGIT_LEVELS)
        names = builtin_names()
        raise ValueError(
            f"unknown built-in data set {name!r}{closest(name, names)}; "
            f"valid: {', '.join(BUILTIN_PREFIX + v for v in names)}"
        )
    array = load_array(text, ndim=None)
    if n is not None:
        if n > array.shape[0]:
            raise ValueError(f"asked for {n} rows but data file '{text}' has {array.shape[0]}")
        array = array[:n]
    return Dataset(torch.from_numpy(array.copy()), text)
