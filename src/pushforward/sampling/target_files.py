"""Targets named on the command line: ``builtin:NAME`` or ``FILE.py:NAME``, and a first probe.

``FILE.py:NAME`` imports the file by its path and takes ``NAME`` from it: a
callable of a float tensor ``(batch, D)`` returning ``(batch,)``, or an object with
a ``log_prob`` method (and, where it has them, ``features``, ``log_z``, ``sample``,
``low``/``high``; see :class:`~pushforward.sampling.target.CallableTarget`).
Every failure is one ValueError (or FileNotFoundError) that names the problem.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from pushforward.data.dataset import BUILTIN_PREFIX
from pushforward.options import closest
from pushforward.sampling.target import Target, as_target, checked_log_prob
from pushforward.sampling.targets.registry import builtin_target

PROBE_ROWS = 4
"""How many points :func:`probe_target` evaluates."""


def load_target(spec: str, features: int | None = None) -> Target:
    """The target named by ``spec``: ``builtin:NAME`` or ``FILE.py:NAME``.

    Args:
        spec: ``builtin:NAME`` (see :data:`~pushforward.sampling.targets.BUILTIN_TARGETS`)
            or ``FILE.py:NAME``, a Python file and the name of a callable or an
            object with ``log_prob`` defined in it.
        features: the dimension, for a target that does not say it (no ``features``
            attribute); where both are known they must agree.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a spec without ``:NAME``, a file that is not Python or fails to
            import (the message gives the file and line of the exception, its type
            and message), no such name in the file, a name that is not a target, a
            missing or conflicting ``features``, an unknown built-in.

    Example:
        >>> load_target("builtin:grid-9").features
        2
    """
    if spec.startswith(BUILTIN_PREFIX):
        return as_target(builtin_target(spec[len(BUILTIN_PREFIX) :]), features)
    file, colon, name = spec.rpartition(":")
    if not colon or not file or not name.isidentifier():
        raise ValueError(
            f"target {spec!r} does not name an object: write FILE.py:NAME "
            f"(a function or an object with log_prob in FILE.py) or {BUILTIN_PREFIX}NAME"
        )
    module = import_target_file(Path(file))
    return as_target(_named_target(module, name, file), features, name=f"{file}:{name}")


def import_target_file(path: Path) -> ModuleType:
    """The Python file at ``path`` run as a fresh module, which is not left in ``sys.modules``.

    The module is registered under a name unique to the file's resolved path only
    while it runs (dataclasses and typing look themselves up there), so it never
    shadows or clashes with an importable module, nor with another file of the same
    name.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a ``.py`` file, or the import raised (where and what).
    """
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"target file '{path}' {what}")
    if path.suffix != ".py":
        raise ValueError(f"target file '{path}' must be a Python file (.py), got '{path.suffix}'")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"_pushforward_target_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"target file '{path}' cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise ValueError(f"importing target file '{path}' failed: {_where(error)}") from error
    finally:
        sys.modules.pop(module_name, None)
    return module


def _where(error: BaseException) -> str:
    """``FILE:LINE: Type: message`` of an exception, at its innermost frame."""
    if isinstance(error, SyntaxError) and error.filename is not None:
        place = f"{error.filename}:{error.lineno}"
        return f"{place}: {type(error).__name__}: {error.msg}"
    frames = traceback.extract_tb(error.__traceback__)
    place = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    return f"{place}: {type(error).__name__}: {error}"


def _public_targets(module: ModuleType) -> list[str]:
    """Names in ``module`` that could be targets: public, and callable or with ``log_prob``."""
    return sorted(
        key
        for key, value in vars(module).items()
        if not key.startswith("_")
        and not isinstance(value, ModuleType)
        and (callable(value) or hasattr(value, "log_prob"))
    )


def _named_target(module: ModuleType, name: str, file: str) -> Any:
    """The object ``name`` of the imported target file, checked to be usable as a target."""
    if not hasattr(module, name):
        names = _public_targets(module)
        listing = f"; it defines: {', '.join(names)}" if names else "; it defines no callables"
        raise ValueError(
            f"target file '{file}' has no name {name!r}{closest(name, names)}{listing}"
        )
    value = getattr(module, name)
    if isinstance(value, Target):
        return value
    if isinstance(value, type):
        raise ValueError(
            f"'{file}:{name}' is a class; name an instance (e.g. target = {name}(...)) "
            "or a function of a (batch, D) tensor"
        )
    if not callable(getattr(value, "log_prob", value)):
        raise ValueError(
            f"'{file}:{name}' is a {type(value).__name__}: expected a function of a (batch, D) "
            "tensor returning (batch,), or an object with a log_prob method"
        )
    return value


def probe_points(target: Target, dtype: torch.dtype, device: torch.device | str = "cpu") -> Tensor:
    """:data:`PROBE_ROWS` fixed points of ``target``: uniform in its box, else standard normal.

    Drawn from a private generator seeded 0, so the probe is the same every time
    and leaves the global RNG alone.
    """
    generator = torch.Generator().manual_seed(0)
    shape = (PROBE_ROWS, target.features)
    low, high = target.low, target.high
    if (
        low is not None
        and high is not None
        and bool(torch.isfinite(low).all() & torch.isfinite(high).all())
    ):
        uniform = torch.rand(shape, generator=generator, dtype=torch.float64)
        points = low + (high - low) * uniform
    else:
        points = torch.randn(shape, generator=generator, dtype=torch.float64)
    return points.to(dtype=dtype, device=device)


def probe_target(
    target: Target, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> Tensor:
    """Evaluates ``target`` on a few points and returns the ``(4,)`` log-densities.

    A target that fails here would fail later inside a long run; the probe says
    why now. ``-inf`` (outside the support) is allowed.

    Args:
        target: the target to try.
        dtype: the floating dtype of the probe points.
        device: where the probe points live.

    Raises:
        ValueError: the target raised (with where and what), or returned a
            non-tensor, a wrong shape, NaN or ``+inf`` (see
            :func:`~pushforward.sampling.target.checked_log_prob`).

    Example:
        >>> from pushforward.sampling.targets import builtin_target
        >>> probe_target(builtin_target("funnel-10")).shape
        torch.Size([4])
    """
    points = probe_points(target, dtype, device)
    try:
        values = target.log_prob(points)
    except Exception as error:
        raise ValueError(
            f"target {target.name!r} failed on a batch of shape {tuple(points.shape)} "
            f"({dtype}): {_where(error)}"
        ) from error
    return checked_log_prob(_Evaluated(target, values), points)


class _Evaluated(Target):
    """A target's values already computed, so :func:`checked_log_prob` checks them unchanged."""

    def __init__(self, target: Target, values: Tensor) -> None:
        self.name = target.name
        self.features = target.features
        self.values = values

    def log_prob(self, x: Tensor) -> Tensor:
        return self.values
