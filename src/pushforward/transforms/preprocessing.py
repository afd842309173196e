"""The one preprocessing mechanism: the map from the data's units to a model's, held by the model.

Every :class:`~pushforward.model.Model` owns a :class:`Preprocessing`; its public
protocol methods take and return values in the data's own units and the model
works in its own. The data part is a bijection whose log-determinant enters
``log_prob``; the context and the source of a transport flow get maps of their
own (conditioning inputs need no Jacobian). A part left out is the identity:
manifold points and tokens are never touched. New kinds of preprocessing
(dequantisation and a logit for images) join :data:`PREPROCESSING_KINDS`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from pushforward.transforms.base import Transform
from pushforward.transforms.box_logit import BoxLogitStandardize
from pushforward.transforms.standardize import Standardize

PARTS = ("data", "context", "source")


class PreprocessingKind(Protocol):
    """What a preprocessing transform class offers to be saved and rebuilt."""

    kind: str

    @classmethod
    def placeholder(cls, description: dict[str, Any], dtype: torch.dtype) -> Transform: ...


PREPROCESSING_KINDS: dict[str, Any] = {
    Standardize.kind: Standardize,
    BoxLogitStandardize.kind: BoxLogitStandardize,
}
"""Preprocessing transforms by the ``kind`` their ``description()`` names."""


class Preprocessing(nn.Module):
    r"""The maps from the data's units into a model's: data, context and transport source.

    .. math:: \log p_X(x \mid c) = \log p_Z\big(f(x) \mid g(c)\big)
              + \log\lvert\det \partial f(x)/\partial x\rvert

    where :math:`f` is ``data`` and :math:`g` is ``context``; ``source`` maps
    given source points of a flow between two data sets. Each part is a
    :class:`~pushforward.transforms.base.Transform` with ``description()`` and a
    ``placeholder`` constructor (so ``pushforward.load`` rebuilds it from JSON
    before loading its buffers), or ``None`` for the identity.

    References:
        Papamakarios et al. (2021), Normalizing Flows for Probabilistic Modeling
        and Inference (change of variables under composition).

    Example:
        >>> x = torch.randn(100, 2, dtype=torch.float64) * 3 + 1
        >>> pre = Preprocessing.standardizing(x)
        >>> z, logabsdet = pre.encode(x)
        >>> bool(abs(z.mean()) < 1e-12), tuple(logabsdet.shape)
        (True, (100,))
    """

    def __init__(
        self,
        data: Transform | None = None,
        context: Transform | None = None,
        source: Transform | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        self.context = context
        self.source = source

    @classmethod
    def standardizing(
        cls,
        data: Tensor | np.ndarray,
        context: Tensor | np.ndarray | None = None,
        source: Tensor | np.ndarray | None = None,
    ) -> Preprocessing:
        """Standardisations fitted to ``data`` (and ``context``, ``source``), rows first.

        Statistics keep the inputs' precision (float64 for numpy arrays), so a
        data set standardised once in float64 and then cast loses nothing.
        """
        return cls(
            Standardize.fitted(data),
            None if context is None else Standardize.fitted(context),
            None if source is None else Standardize.fitted(source),
        )

    @property
    def identity(self) -> bool:
        """True when every part is the identity."""
        return self.data is None and self.context is None and self.source is None

    @property
    def deterministic(self) -> bool:
        """True when the maps draw no noise, so a data set may be mapped once, up front."""
        return all(
            bool(getattr(part, "deterministic", False))
            for part in (self.data, self.context, self.source)
            if part is not None
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Data to the model's units, with the log-determinant ``(batch,)`` (``None``: zero)."""
        if self.data is None:
            return x, None
        return self.data(x)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """The model's units back to the data's, with that direction's log-determinant."""
        if self.data is None:
            return z, None
        return self.data.inverse(z)

    def encode_context(self, context: Tensor | None) -> Tensor | None:
        """A context in the model's units (no Jacobian: the context is not modelled)."""
        if context is None or self.context is None:
            return context
        return self.context(context)[0]

    def encode_source(self, x0: Tensor) -> Tensor:
        """Given source points of a transport flow in the model's units."""
        if self.source is None:
            return x0
        return self.source(x0)[0]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes of the parts' statistics (those that have a ``mean`` buffer)."""
        found = {}
        for name in PARTS:
            mean = getattr(getattr(self, name), "mean", None)
            if isinstance(mean, Tensor):
                found[name] = tuple(mean.shape)
        return found

    def description(self) -> dict[str, Any]:
        """The parts' descriptions for ``model.json`` (identity parts left out)."""
        described = {}
        for name in PARTS:
            part = getattr(self, name)
            if part is not None:
                describe = getattr(part, "description", None)
                if not callable(describe):
                    raise TypeError(
                        f"the {name} preprocessing ({type(part).__name__}) cannot be saved: "
                        "it has no description()"
                    )
                described[name] = describe()
        return described

    @classmethod
    def placeholder(cls, description: dict[str, Any], dtype: torch.dtype) -> Preprocessing:
        """The preprocessing ``description`` names, with placeholder values to load into."""
        if not isinstance(description, dict) or set(description) - set(PARTS):
            raise ValueError(f"a preprocessing description holds only {', '.join(PARTS)}")
        parts: dict[str, Transform | None] = {}
        for name in PARTS:
            entry = description.get(name)
            if entry is None:
                parts[name] = None
                continue
            kind = entry.get("kind") if isinstance(entry, dict) else None
            if kind not in PREPROCESSING_KINDS:
                known = ", ".join(PREPROCESSING_KINDS)
                raise ValueError(f"unknown {name} preprocessing {kind!r}; known: {known}")
            parts[name] = PREPROCESSING_KINDS[kind].placeholder(entry, dtype)
        return cls(**parts)
