"""One entry point for data: a built-in name (``builtin:NAME``) or a file path."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from pushforward.data.digits import DIGIT_LEVELS, load_digits
from pushforward.data.earth import (
    EARTH_SETS,
    check_coordinates,
    check_split,
    latlon_rows,
    load_earth,
)
from pushforward.data.files import load_array
from pushforward.data.manifold_toys import MANIFOLD_TOYS, ManifoldToy
from pushforward.data.toys import TOYS, Toy
from pushforward.options import closest

BUILTIN_PREFIX = "builtin:"
DEFAULT_TOY_SIZE = 20_000
"""Samples drawn from a built-in toy when ``n`` is not given."""

IMAGE_SETS = ("digits",)


def builtin_names() -> list[str]:
    """Every name ``builtin:NAME`` accepts: the 2-D toys, the image sets, the earth sets
    on the sphere and the built-in sets on the sphere, torus, SO(3) and a box."""
    return sorted([*TOYS, *IMAGE_SETS, *EARTH_SETS, *MANIFOLD_TOYS])


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
        domain: the space the points live on, ``"sphere"`` (unit vectors of R^3),
            ``"torus"`` (angles in ``[-pi, pi)``), ``"so3"`` (unit quaternions) or
            ``"box"`` (the toy's ``low``/``high``), for data that must not be
            standardised; ``None`` for points of Euclidean space.
    """

    values: Tensor
    source: str
    toy: Toy | ManifoldToy | None = None
    levels: int | None = None
    vocab: tuple[int, ...] | None = None
    domain: str | None = None

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.values.shape[1:])

    def __len__(self) -> int:
        return self.values.shape[0]


def load_dataset(
    source: str | os.PathLike[str],
    n: int | None = None,
    seed: int = 0,
    split: str | None = None,
    coordinates: str = "native",
) -> Dataset:
    """Loads ``builtin:NAME`` (a toy, ``digits``, an earth set) or a data file.

    Args:
        source: ``"builtin:moons"``, ``"builtin:digits"``, ``"builtin:volcano"``, ... or a
            path accepted by :func:`~pushforward.data.files.load_array` (``.npy``,
            ``.npz[:key]``, ``.csv``). An earth set takes a split after a second colon,
            ``"builtin:volcano:test"``, the same as ``split="test"``.
        n: examples to return. Toys (2-D and manifold) draw ``n`` fresh samples
            (default 20,000); the digits take a seeded random subset (default all
            1,797); an earth set gives the first ``n`` rows of its split (default all);
            a file gives its first ``n`` rows (default all), so a context file's first
            ``n`` rows still match.
        seed: seeds toy sampling and the digits' subset and dequantisation noise. It
            does not move the earth sets' split, which is fixed (seed 0 of
            :func:`~pushforward.data.earth.load_earth`) so that every run and every
            evaluation sees the same test rows.
        split: for the earth sets only: ``"train"`` (80% of the rows, the default),
            ``"val"`` (10%), ``"test"`` (10%) or ``"all"``.
        coordinates: ``"native"`` (the rows as they are) or ``"latlon"``: a file of two
            columns, latitude and longitude in degrees, read as unit vectors of
            :math:`S^2` (:func:`~pushforward.data.earth.latlon_rows`; the data set's
            ``domain`` is then ``"sphere"``). Built-in sets are always native.

    Returns:
        A :class:`Dataset` with float64 values; the earth and manifold sets carry their
        ``domain``.

    Raises:
        ValueError: unknown built-in name or split (with the closest valid ones), a
            split for a set without splits, bad file, or ``n`` larger than the file
            or split.
        FileNotFoundError: the file does not exist.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    text = os.fspath(source)
    check_coordinates(coordinates)
    if not text.startswith(BUILTIN_PREFIX):
        if split is not None:
            raise ValueError(f"split={split!r} applies to the earth sets, not to the file '{text}'")
        dataset = _load_file(text, n)
        if coordinates == "latlon":
            values = latlon_rows(dataset.values, f"data file '{text}'")
            return Dataset(values, text, domain="sphere")
        return dataset
    if coordinates != "native":
        raise ValueError(
            f"coordinates={coordinates!r} reads a file of latitudes and longitudes; the "
            f"built-in set '{text}' is given in its native coordinates"
        )
    name, _, named_split = text[len(BUILTIN_PREFIX) :].partition(":")
    if name in EARTH_SETS:
        return _load_earth_set(name, named_split or None, split, n)
    names = builtin_names()
    if name not in names:
        raise ValueError(
            f"unknown built-in data set {name!r}{closest(name, names)}; "
            f"valid: {', '.join(BUILTIN_PREFIX + v for v in names)}"
        )
    if named_split or split is not None:
        raise ValueError(
            f"only the earth sets ({', '.join(EARTH_SETS)}) have splits; "
            f"'{text}' with split={split!r} has none"
        )
    if name == "digits":
        return Dataset(load_digits(seed=seed, n=n), text, levels=DIGIT_LEVELS)
    size = DEFAULT_TOY_SIZE if n is None else n
    if name in MANIFOLD_TOYS:
        manifold_toy = MANIFOLD_TOYS[name]
        return Dataset(
            manifold_toy.sample(size, seed), text, toy=manifold_toy, domain=manifold_toy.manifold
        )
    toy = TOYS[name]
    return Dataset(toy.sample(size, seed), text, toy=toy)


def _load_earth_set(name: str, named: str | None, keyword: str | None, n: int | None) -> Dataset:
    """An earth set's split, named in the source (``builtin:NAME:SPLIT``) or by keyword."""
    if named is not None and keyword is not None and named != keyword:
        raise ValueError(
            f"'{BUILTIN_PREFIX}{name}:{named}' names split {named!r} but split={keyword!r}"
        )
    split = named or keyword or "train"
    check_split(split)
    values = load_earth(name, split)
    if n is not None:
        if n > values.shape[0]:
            raise ValueError(
                f"asked for {n} rows but the {split} split of {BUILTIN_PREFIX}{name} "
                f"has {values.shape[0]}"
            )
        values = values[:n]
    source = BUILTIN_PREFIX + name + ("" if split == "train" else f":{split}")
    return Dataset(values, source, domain="sphere")


def _load_file(path: str, n: int | None) -> Dataset:
    array = load_array(path, ndim=None)
    if n is not None:
        if n > array.shape[0]:
            raise ValueError(f"asked for {n} rows but data file '{path}' has {array.shape[0]}")
        array = array[:n]
    return Dataset(torch.from_numpy(array.copy()), path)
