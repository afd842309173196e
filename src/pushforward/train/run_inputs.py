"""What a run trains on: data, context and a transport source, read with errors naming them."""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pushforward.data import BUILTIN_PREFIX, Dataset, load_context_rows, load_dataset
from pushforward.data.earth import check_coordinates, latlon_rows
from pushforward.data.tokens import load_tokens
from pushforward.registry import builder_for

SET_FROM_DATA = ("features", "context")
"""Model options a run sets from its data, which may not be given."""

DataInput = str | os.PathLike[str] | Tensor | np.ndarray


def read_data(data: DataInput, n: int | None, seed: int, coordinates: str = "native") -> Dataset:
    """A data file, ``builtin:NAME``, or rows given as an array (float64); with
    ``coordinates="latlon"`` a file or array of latitudes and longitudes in degrees, read
    as unit vectors of :math:`S^2`."""
    if isinstance(data, str | os.PathLike):
        return load_dataset(data, n=n, seed=seed, coordinates=coordinates)
    check_coordinates(coordinates)
    values = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data)
    values = values.detach().cpu().to(torch.float64)
    if values.ndim < 2 or values.shape[0] == 0:
        raise ValueError(f"data must be (rows, *event_shape) with rows, got {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()):
        raise ValueError("data contains NaN or Inf values")
    if n is not None:
        values = values[:n]
    if coordinates == "latlon":
        return Dataset(latlon_rows(values, "the data array"), "array", domain="sphere")
    return Dataset(values, "array")


def read_tokens(data: DataInput, vocab: Any, n: int | None, seed: int) -> Dataset:
    """Token data: an integer file, ``builtin:NAME`` of a discrete set, or integer rows.

    ``vocab`` is the model's ``vocab`` option (``None``: inferred from the data).
    """
    tokens = load_tokens(data, vocab=vocab, n=n, seed=seed)
    source = tokens.source if isinstance(data, str | os.PathLike) else "array"
    return Dataset(tokens.values, source, vocab=tuple(tokens.vocab))


def read_context(
    context: DataInput | None, rows: int
) -> tuple[Tensor | None, tuple[int, ...] | None]:
    """The context as float64 ``(rows, c)``, checked to have ``rows`` rows, and the layout
    of one row as given (``(c,)``, or ``(elements, features)`` for a file or array of shape
    ``(rows, elements, features)``, flattened row by row)."""
    if context is None:
        return None, None
    if isinstance(context, str | os.PathLike):
        flat, layout = load_context_rows(context)
        values = torch.from_numpy(flat.copy())
        where = f"context file '{context}'"
    else:
        values = torch.as_tensor(context).detach().cpu().to(torch.float64)
        where = "the context"
        if values.ndim < 2:
            raise ValueError(f"{where} must be (rows, features), got {tuple(values.shape)}")
        layout = tuple(values.shape[1:])
        values = values.reshape(values.shape[0], -1)
        if not bool(torch.isfinite(values).all()):
            raise ValueError("context contains NaN or Inf values")
    if values.shape[0] != rows:
        raise ValueError(
            f"{where} has {values.shape[0]} rows but the data has {rows}; "
            "they must match row for row"
        )
    return values, layout


def read_source(path: str, n: int | None = None, seed: int = 0) -> Dataset:
    """The source data set of a transport run (``--source``), errors naming it as the source.

    Args:
        path: a data file or ``builtin:NAME``.
        n: a built-in set draws ``n`` examples; a file gives its first ``n`` rows
            (all of them when it has fewer: the source need not match the data's rows).
        seed: seed of a built-in set.
    """
    try:
        if path.startswith(BUILTIN_PREFIX):
            return load_dataset(path, n=n, seed=seed)
        dataset = load_dataset(path, seed=seed)
    except (ValueError, FileNotFoundError) as error:
        message = str(error)
        renamed = message.replace("data file '", "source file '", 1)
        if renamed == message:
            renamed = f"--source {path!r}: {message}"
        raise type(error)(renamed) from None
    if n is not None and n < len(dataset):
        dataset = dataclasses.replace(dataset, values=dataset.values[:n])
    return dataset


def check_model_options(name: str, options: dict[str, Any], source: str | None) -> None:
    """Refuses model options set from the data, or that contradict ``source`` (or its absence)."""
    given = [key for key in SET_FROM_DATA if key in options]
    if given:
        raise ValueError(f"option {given[0]!r} is set from the data and cannot be given; remove it")
    if "source_rows" in options:
        raise ValueError("option 'source_rows' is set from --source FILE and cannot be given")
    if source is None:
        if options.get("base") == "empirical":
            raise ValueError("base 'empirical' needs --source FILE, the data set to transport")
        return
    if "source_rows" not in inspect.signature(builder_for(name)).parameters:
        raise ValueError(
            f"model {name!r} cannot transport a source data set; "
            "--source needs a flow-matching model (fm)"
        )
    if options.get("base", "empirical") != "empirical":
        raise ValueError(
            f"--source makes the rows of '{source}' the source; remove option "
            f"base={options['base']!r}"
        )
