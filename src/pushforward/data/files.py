"""Loading and validating user data files: ``.npy``, ``.npz``, ``.csv``.

Every problem with a file is reported at this boundary as one line that names
the file and the problem (missing or empty file, no rows, a cell that is not a
number with its line and column, NaN/Inf with their count and first position,
ragged rows, wrong number of dimensions, unsupported extension), so the command
line can print it and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
"""Suffixes read as delimited text (comma, or whitespace when a line has no comma)."""

SUFFIXES = (".npy", ".npz", *TEXT_SUFFIXES)
"""Every suffix :func:`load_array` reads."""


def split_npz_key(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """Splits ``"file.npz:key"`` into the file and the array name (``None`` if not given).

    A path that exists as written is never split, so a file whose name holds a
    colon still loads.
    """
    text = os.fspath(path)
    head, sep, key = text.rpartition(":")
    if sep and head.lower().endswith(".npz") and not Path(text).exists():
        return Path(head), key
    return Path(text), None


def load_array(path: str | os.PathLike[str], *, ndim: int | None = 2) -> np.ndarray:
    """Reads a numeric data file into a float64 array ``(n, *event_shape)``.

    Formats: ``.npy``; ``.npz`` (its only array, or the one named by
    ``"file.npz:key"``); ``.csv``/``.tsv``/``.txt`` text with one example a line,
    values separated by commas (if the first line has one) or whitespace, an
    optional header line (recognised when none of its fields is a number), blank
    lines and lines starting with ``#`` skipped.

    Args:
        path: the file, optionally ``"file.npz:key"``.
        ndim: the number of dimensions the array must have (2 for ``(n, d)``
            vectors); ``None`` accepts any number from 2 up (images ``(n, C, H, W)``).

    Returns:
        A C-contiguous float64 array with at least one row and one value per row.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: anything else wrong with the file, in one line naming it.
    """
    array, name, lines = read_numeric(path)
    array = _as_float(array, name)
    check_shape(array, name, ndim)
    _check_finite(array, name, lines)
    return np.ascontiguousarray(array)


def load_context_rows(path: str | os.PathLike[str]) -> tuple[np.ndarray, tuple[int, ...]]:
    """A context file as flat rows ``(n, c)``, and the layout of one row as stored.

    A file of shape ``(n, *layout)`` (a set of observations ``(n, elements, features)``,
    a time series ``(n, channels, length)``) is flattened row by row; a model's
    embedding network reads the layout back (its ``observation_shape``).
    """
    array = load_array(path, ndim=None)
    return np.ascontiguousarray(array.reshape(array.shape[0], -1)), tuple(array.shape[1:])


def read_numeric(path: str | os.PathLike[str]) -> tuple[np.ndarray, str, list[int] | None]:
    """Reads a data file as stored: the array, the file's name for messages, text lines.

    The array keeps the file's dtype (a ``.npy`` of int8 stays int8; text is
    float64); the lines are the file line of each row for text files, ``None``
    for binary ones. :func:`load_array` and the token loader build on it.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a missing, empty, unreadable file or an unsupported extension.
    """
    file, key = split_npz_key(path)
    name = f"data file '{file}'"
    if not file.exists():
        raise FileNotFoundError(f"{name} does not exist")
    if file.is_dir():
        raise ValueError(f"{name} is a directory, not a file")
    suffix = file.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"{name} has unsupported extension {file.suffix or '(none)'!r}; "
            f"use one of {', '.join(SUFFIXES)}"
        )
    if file.stat().st_size == 0:
        raise ValueError(f"{name} is empty")

    lines: list[int] | None = None
    if suffix == ".npy":
        array = _read_npy(file, name)
    elif suffix == ".npz":
        array, name = _read_npz(file, key, name)
    else:
        array, lines = _read_text(file, name)
    return array, name, lines


def _read_npy(file: Path, name: str) -> np.ndarray:
    with open(file, "rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY":
        # np.load would otherwise try it as a pickle and blame allow_pickle.
        raise ValueError(f"{name} is not a readable .npy file (no NumPy header)")
    try:
        return np.load(file, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ValueError(
                f"{name} holds Python objects, which are not loaded (pickle is unsafe); "
                "save a numeric array"
            ) from None
        raise ValueError(f"{name} is not a readable .npy file ({error})") from None
    except (OSError, EOFError) as error:
        raise ValueError(f"{name} is not a readable .npy file ({error})") from None


def _read_npz(file: Path, key: str | None, name: str) -> tuple[np.ndarray, str]:
    try:
        with np.load(file, allow_pickle=False) as archive:
            keys = list(archive.files)
            if not keys:
                raise ValueError(f"{name} holds no arrays")
            if key is None:
                if len(keys) > 1:
                    raise ValueError(
                        f"{name} holds {len(keys)} arrays ({', '.join(keys)}); "
                        f"name one as '{file}:{keys[0]}'"
                    )
                key = keys[0]
            elif key not in keys:
                raise ValueError(f"{name} has no array {key!r}; it holds: {', '.join(keys)}")
            try:
                return archive[key], f"array {key!r} of {name}"
            except ValueError as error:
                if "allow_pickle" in str(error):
                    raise ValueError(
                        f"array {key!r} of {name} holds Python objects, which are not loaded "
                        "(pickle is unsafe); save a numeric array"
                    ) from None
                raise
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{name} is not a readable .npz file ({error})") from None


def _as_float(array: np.ndarray, name: str) -> np.ndarray:
    kind = array.dtype.kind
    if kind in "biuf":
        return array.astype(np.float64, copy=False)
    what = {
        "c": "complex numbers",
        "U": "text",
        "S": "bytes",
        "O": "Python objects",
        "V": "structured records",
        "M": "dates",
        "m": "time deltas",
    }.get(kind, f"values of type {array.dtype}")
    raise ValueError(f"{name} holds {what}, not real numbers")


def check_shape(array: np.ndarray, name: str, ndim: int | None) -> None:
    """Raises a ValueError naming ``name`` unless ``array`` has rows and values per row.

    ``ndim`` is the number of dimensions it must have (``None``: any from 2 up).
    """
    if array.ndim < 2:
        shape = tuple(array.shape)
        raise ValueError(
            f"{name} has shape {shape}; expected (rows, features)"
            + (" -- reshape a single feature to (n, 1)" if array.ndim == 1 else "")
        )
    if ndim is not None and array.ndim != ndim:
        raise ValueError(
            f"{name} has {array.ndim} dimensions (shape {tuple(array.shape)}), expected {ndim}"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    if math.prod(array.shape[1:]) == 0:
        raise ValueError(f"{name} has no values per row (shape {tuple(array.shape)})")


def _check_finite(array: np.ndarray, name: str, lines: list[int] | None) -> None:
    bad = ~np.isfinite(array)
    count = int(bad.sum())
    if count == 0:
        return
    first = np.argwhere(bad)[0]
    row = int(first[0])
    if lines is not None:
        where = f"line {lines[row]}, column {int(first[1]) + 1}"
    else:
        where = f"row {row}" + (f", column {int(first[1])}" if array.ndim == 2 else "")
        where += " (counting from 0)"
    raise ValueError(f"{name} holds {count} NaN/Inf value{'s' * (count > 1)}; the first at {where}")


def _parse_field(field: str) -> float | None:
    try:
        return float(field)
    except ValueError:
        return None


def _split(line: str, comma: bool) -> list[str]:
    if not comma:
        return line.split()
    fields = []
    for field in line.split(","):
        field = field.strip()
        if len(field) >= 2 and field[0] == field[-1] and field[0] in "\"'":
            field = field[1:-1].strip()
        fields.append(field)
    return fields


def _read_text(file: Path, name: str) -> tuple[np.ndarray, list[int]]:
    """Parses delimited text; returns the values and the file line of each row."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not UTF-8 text") from None
    content = [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not content:
        raise ValueError(f"{name} has no rows (only blank or comment lines)")
    comma = "," in content[0][1]
    first = _split(content[0][1], comma)
    # A header has no numeric field; empty names are allowed (pandas leaves the index unnamed).
    header = any(first) and all(_parse_field(field) is None for field in first)
    rows = content[1:] if header else content
    if not rows:
        raise ValueError(f"{name} has a header line but no rows")

    columns = len(_split(rows[0][1], comma))
    reference = rows[0][0]
    if header and len(first) != columns:
        raise ValueError(
            f"{name}: the header (line {content[0][0]}) has {len(first)} names "
            f"but line {reference} has {columns} values"
        )
    values = np.empty((len(rows), columns), dtype=np.float64)
    lines = []
    for index, (number, line) in enumerate(rows):
        fields = _split(line, comma)
        if len(fields) != columns:
            raise ValueError(
                f"{name}: line {number} has {len(fields)} values, "
                f"expected {columns} (as on line {reference})"
            )
        for column, field in enumerate(fields):
            value = _parse_field(field)
            if value is None:
                problem = "an empty value" if not field else f"non-numeric value {field!r}"
                raise ValueError(f"{name}: {problem} at line {number}, column {column + 1}")
            values[index, column] = value
        lines.append(number)
    return values, lines
