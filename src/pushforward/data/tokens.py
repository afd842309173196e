"""Token data: integer arrays ``(n, L)`` over a vocabulary, from files, arrays or built-ins.

Position ``i`` of a row takes a token in ``[0, vocab[i])``: one shared vocabulary
for sequences, one size per column for a categorical table. Tokens are read as
they are stored, never converted through floats: a ``.npy``/``.npz`` array must
have an integer dtype, a text file (``.csv``, ``.tsv``, ``.txt``) must hold
whole numbers. The vocabulary is given (``vocab=V`` or one size per column) or
inferred: ``max + 1`` over the whole array, or per column with
``vocab="columns"``.

``builtin:NAME`` loads a discrete set with exact probabilities
(:mod:`pushforward.data.discrete_toys`): ``8gaussians-grid``, ``first-k-ones``,
``markov-chain``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pushforward.data.discrete_toys import DISCRETE_TOYS, DiscreteToy
from pushforward.data.files import check_shape, read_numeric
from pushforward.options import closest

BUILTIN_PREFIX = "builtin:"
DEFAULT_TOKEN_SAMPLES = 20_000
"""Sequences drawn from a built-in discrete set when ``n`` is not given."""

VocabOption = int | Sequence[int] | str | None
"""A vocabulary as the loaders take it: a size, one size per column, ``"columns"``
(inferred per column) or ``None`` (inferred, shared)."""


@dataclass(frozen=True)
class TokenData:
    """Loaded tokens and what is known about them.

    Attributes:
        values: int64 ``(n, L)``.
        vocab: the vocabulary size of each position.
        source: ``"builtin:NAME"``, the file path as given, or ``"array"``.
        exact: the built-in set with exact probabilities, else ``None``.
    """

    values: Tensor
    vocab: tuple[int, ...]
    source: str
    exact: DiscreteToy | None = None


def discrete_builtin_names() -> list[str]:
    """Every name ``builtin:NAME`` accepts for token data."""
    return sorted(DISCRETE_TOYS)


def load_tokens(
    source: str | os.PathLike[str] | Tensor | np.ndarray,
    *,
    vocab: VocabOption = None,
    n: int | None = None,
    seed: int = 0,
) -> TokenData:
    """Loads and checks token data.

    Args:
        source: ``builtin:NAME``, a ``.npy``/``.npz[:key]``/``.csv`` file of
            integers, or an integer array ``(n, L)``.
        vocab: the vocabulary: a size shared by every position, one size per
            position, ``"columns"`` (each column's ``max + 1``) or ``None``
            (``max + 1`` over all tokens). A given vocabulary must hold every token.
        n: rows to return: fresh draws from a built-in set (default 20,000), the
            first ``n`` rows of a file or array (default all).
        seed: seeds the draws from a built-in set.

    Returns:
        :class:`TokenData` with int64 values.

    Raises:
        ValueError: a float array, negative tokens, tokens outside a given
            vocabulary, ragged rows, an unknown built-in name, ``n`` too large.
        FileNotFoundError: the file does not exist.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    exact = None
    if isinstance(source, Tensor | np.ndarray):
        name = "the token array"
        array = source.detach().cpu().numpy() if isinstance(source, Tensor) else source
        label = "array"
        values = _integers(np.asarray(array), name, None)
    else:
        label = os.fspath(source)
        if label.startswith(BUILTIN_PREFIX):
            exact = _builtin(label[len(BUILTIN_PREFIX) :])
            tokens = exact.sample(DEFAULT_TOKEN_SAMPLES if n is None else n, seed)
            values = tokens.numpy()
            n = None
            if vocab is None:
                vocab = list(exact.vocab)
        else:
            array, name, lines = read_numeric(label)
            values = _integers(array, name, lines)
    if n is not None:
        if n > values.shape[0]:
            raise ValueError(f"asked for {n} rows but {label} has {values.shape[0]}")
        values = values[:n]
    sizes = _vocabulary(values, vocab, label)
    result = torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64))
    return TokenData(result, sizes, label, exact)


def check_tokens(x: Tensor, vocab: Sequence[int]) -> Tensor:
    """Checks a tensor of tokens for a model of vocabulary ``vocab`` and returns it as int64.

    Args:
        x: ``(batch, L)`` integer tokens, position ``i`` in ``[0, vocab[i])``.
        vocab: the vocabulary size of each position.

    Raises:
        TypeError: ``x`` is not an integer tensor.
        ValueError: a wrong shape, or a token outside the vocabulary (its position
            and value named).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor of tokens, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(
            f"tokens must be an integer tensor, got dtype {x.dtype} "
            "(a model of tokens takes int64 indices, not values)"
        )
    length = len(vocab)
    if x.ndim != 2 or x.shape[1] != length:
        raise ValueError(
            f"tokens have shape {tuple(x.shape)}; the model takes (batch, {length}) "
            f"sequences of length {length}"
        )
    x = x.to(torch.int64)
    limit = torch.tensor(tuple(vocab), dtype=torch.int64, device=x.device)
    bad = (x < 0) | (x >= limit)
    if bool(bad.any()):
        row, column = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"token {int(x[row, column])} at row {row}, position {column} is outside the "
            f"vocabulary [0, {int(limit[column])})"
        )
    return x


def _builtin(name: str) -> DiscreteToy:
    if name not in DISCRETE_TOYS:
        names = discrete_builtin_names()
        raise ValueError(
            f"unknown built-in token set {name!r}{closest(name, names)}; "
            f"valid: {', '.join(BUILTIN_PREFIX + v for v in names)}"
        )
    return DISCRETE_TOYS[name]


def _integers(array: np.ndarray, name: str, lines: list[int] | None) -> np.ndarray:
    """The array as int64 after checking it holds whole numbers in rows ``(n, L)``."""
    if array.dtype == object:
        raise ValueError(f"{name} holds Python objects, not integer tokens")
    check_shape(array, name, 2)
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.int64)
    if kind in "iu":
        if kind == "u" and array.size and int(array.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds tokens too large for int64")
        values = array.astype(np.int64)
    elif kind == "f" and lines is not None:
        # Text is parsed as numbers; a token is a whole number written as one.
        whole = np.isfinite(array) & (np.floor(array) == array)
        if not bool(whole.all()):
            row, column = (int(v) for v in np.argwhere(~whole)[0])
            raise ValueError(
                f"{name} holds {array[row, column]!r} at line {lines[row]}, column "
                f"{column + 1}; tokens must be whole numbers"
            )
        values = array.astype(np.int64)
    elif kind == "f":
        raise ValueError(
            f"{name} holds floats (dtype {array.dtype}); tokens must be an integer array "
            "(save it with an integer dtype, e.g. numpy's astype(np.int64))"
        )
    else:
        raise ValueError(f"{name} holds values of type {array.dtype}, not integer tokens")
    if values.size and int(values.min()) < 0:
        row, column = (int(v) for v in np.argwhere(values < 0)[0])
        raise ValueError(
            f"{name} holds a negative token ({int(values[row, column])} at row {row}, "
            f"column {column}); tokens are indices from 0"
        )
    return values


def _vocabulary(values: np.ndarray, vocab: VocabOption, label: str) -> tuple[int, ...]:
    length = values.shape[1]
    if vocab is None:
        return (max(2, int(values.max()) + 1),) * length
    if isinstance(vocab, str):
        if vocab != "columns":
            raise ValueError(
                f"option 'vocab' must be a size, a list of sizes or 'columns', got {vocab!r}"
            )
        return tuple(max(2, int(top) + 1) for top in values.max(axis=0))
    if isinstance(vocab, bool):
        raise ValueError(f"option 'vocab' must be a token count, got {vocab!r}")
    sizes = (int(vocab),) * length if isinstance(vocab, int) else tuple(vocab)
    if len(sizes) != length:
        raise ValueError(f"vocab lists {len(sizes)} sizes but {label} has {length} columns")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 2:
            raise ValueError(f"every vocabulary size must be an int of at least 2, got {size!r}")
    tops = values.max(axis=0)
    for column, (top, size) in enumerate(zip(tops, sizes, strict=True)):
        if int(top) >= size:
            raise ValueError(
                f"{label} holds token {int(top)} in column {column}, outside the "
                f"vocabulary [0, {size}) (set vocab to at least {int(top) + 1})"
            )
    return tuple(int(size) for size in sizes)
