"""Base distributions: the simple densities every pushforward model starts from.

``make_base(name, event_shape)`` builds one by the name configs and the CLI use
(the ``base`` keyword); ``BASES`` lists the valid names. :class:`Empirical`
(stored data rows, no density) is the source of a flow between two data sets;
it is built from rows, not by name, so it is not among ``BASES``.
:class:`ModelDistribution` is the other way round: any pushforward model, given
its context, seen as a ``torch.distributions.Distribution``.
"""

from __future__ import annotations

import difflib
from typing import Any

from pushforward.distributions.base import Distribution
from pushforward.distributions.empirical import Empirical
from pushforward.distributions.manifold import ManifoldUniform
from pushforward.distributions.normal import DiagonalNormal, StandardNormal
from pushforward.distributions.student_t import StudentT
from pushforward.distributions.torch_view import ModelDistribution
from pushforward.distributions.uniform import BoxUniform

_BASE_CLASSES: dict[str, type[Distribution]] = {
    "normal": StandardNormal,
    "diag-normal": DiagonalNormal,
    "uniform": BoxUniform,
    "student-t": StudentT,
}

BASES: tuple[str, ...] = tuple(_BASE_CLASSES)
"""The names :func:`make_base` accepts."""


def make_base(name: str, event_shape: int | tuple[int, ...], **kwargs: Any) -> Distribution:
    """Builds the base distribution called ``name`` over events of shape ``event_shape``.

    Args:
        name: one of :data:`BASES` (``"normal"``, ``"diag-normal"``, ``"uniform"``,
            ``"student-t"``).
        event_shape: shape of one event; an int ``D`` means ``(D,)``.
        **kwargs: passed to the distribution's constructor (e.g. ``df=`` for
            ``"student-t"``, ``low=``/``high=`` for ``"uniform"``).

    Returns:
        A :class:`Distribution` module.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if name not in _BASE_CLASSES:
        near = difflib.get_close_matches(name, BASES, n=1, cutoff=0.5)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(
            f"unknown base distribution {name!r}{hint}; valid bases: {', '.join(BASES)}"
        )
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    return _BASE_CLASSES[name](shape, **kwargs)


__all__ = [
    "BASES",
    "BoxUniform",
    "DiagonalNormal",
    "Distribution",
    "Empirical",
    "ManifoldUniform",
    "ModelDistribution",
    "StandardNormal",
    "StudentT",
    "make_base",
]
