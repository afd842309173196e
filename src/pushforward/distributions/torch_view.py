"""A pushforward model seen as a ``torch.distributions.Distribution``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.distributions import constraints

if TYPE_CHECKING:
    from pushforward.model import Model


class ModelDistribution(torch.distributions.Distribution):
    r"""A model (with its context fixed) as a ``torch.distributions.Distribution``.

    The same density, in the shapes code written against ``torch.distributions``
    expects (Pyro, sbi, ``TransformedDistribution``, variational inference loops).
    A context ``(*batch, c)`` gives one distribution per context row,
    ``batch_shape = batch``; a single row ``(c,)`` or no context gives
    ``batch_shape = ()``. With ``N = prod(sample_shape)`` draws, the model is
    asked for ``N * prod(batch)`` rows, the contexts tiled draw after draw, so

    .. math:: x_{s, b} \sim p_\theta(x \mid c_b), \qquad
              \text{log\_prob}(x)_{s, b} = \log p_\theta(x_{s, b} \mid c_b),

    returned as ``sample_shape + batch_shape + event_shape`` and
    ``sample_shape + batch_shape``. ``log_prob`` broadcasts ``value`` against
    ``batch_shape`` as ``torch.distributions`` does.

    Build it with :meth:`pushforward.Model.distribution` rather than directly.

    Args:
        model: the pushforward model.
        context: ``(*batch, context_features)``, ``(context_features,)``, or
            ``None`` for an unconditional model.
        validate_args: as in ``torch.distributions``: also check that values lie
            in the support (real and finite). Shape checks are always made.
        **options: inference options given to every call of the model's
            ``sample``, ``rsample`` and ``log_prob`` (for the flow-matching family
            for instance ``solver="rk4", steps=8``), so they must be options all
            three accept.

    Example:
        >>> import torch, pushforward
        >>> model = pushforward.build("nsf", features=2, context=3, transforms=2, hidden=[16])
        >>> view = model.distribution(torch.zeros(5, 3))
        >>> view.batch_shape, view.event_shape
        (torch.Size([5]), torch.Size([2]))
        >>> x = view.sample((10,))
        >>> x.shape
        torch.Size([10, 5, 2])
        >>> view.log_prob(x).shape
        torch.Size([10, 5])
    """

    def __init__(
        self,
        model: Model,
        context: Tensor | None = None,
        *,
        validate_args: bool | None = None,
        **options: Any,
    ) -> None:
        event_shape = torch.Size(model.event_shape)
        if context is None:
            model.check_context(None, 1)  # raises for a conditional model
            batch_shape = torch.Size()
        else:
            if not isinstance(context, Tensor):
                raise TypeError(f"expected context as a torch.Tensor, got {type(context).__name__}")
            if context.ndim == 0:
                raise ValueError(
                    f"context is a scalar; pass ({model.context_features},) "
                    f"or (batch, {model.context_features})"
                )
            rows = context.reshape(-1, context.shape[-1])
            model.check_context(rows, rows.shape[0])  # features, dtype, finiteness
            batch_shape = context.shape[:-1]
        self.model = model
        self.context = context
        self.options = dict(options)
        self.has_rsample = bool(model.has_rsample)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @property
    def arg_constraints(self) -> dict[str, constraints.Constraint]:
        """None: the model's parameters are checked by the model, not here."""
        return {}

    @property
    def support(self) -> constraints.Constraint:
        """Real values in every event dimension (``real_vector`` for vector events)."""
        dims = len(self.event_shape)
        if dims == 1:
            return constraints.real_vector
        return constraints.independent(constraints.real, dims)

    def expand(
        self, batch_shape: Sequence[int], _instance: ModelDistribution | None = None
    ) -> ModelDistribution:
        """The same distribution broadcast to a larger ``batch_shape`` (no copy of contexts)."""
        batch_shape = torch.Size(batch_shape)
        try:
            broadcast = torch.broadcast_shapes(self.batch_shape, batch_shape)
        except RuntimeError:
            broadcast = None
        if broadcast != batch_shape:
            raise ValueError(
                f"cannot expand a distribution of batch_shape {tuple(self.batch_shape)} "
                f"to {tuple(batch_shape)}"
            )
        new = self._get_checked_instance(ModelDistribution, _instance)
        new.model = self.model
        new.options = dict(self.options)
        new.has_rsample = self.has_rsample
        new.context = None
        if self.context is not None:
            new.context = self.context.expand(batch_shape + self.context.shape[-1:])
        super(ModelDistribution, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        """Draws ``sample_shape + batch_shape + event_shape`` without tracking gradients."""
        shape = torch.Size(sample_shape)
        n, context = self._sampling_rows(shape)
        x = self.model.sample(n, context, **self.options)
        return x.reshape(shape + self.batch_shape + self.event_shape)

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        """Reparameterised draws: gradients reach the model's parameters."""
        if not self.has_rsample:
            raise NotImplementedError(
                f"{type(self.model).__name__} has no reparameterised sampling "
                "(has_rsample is False); use sample(), which tracks no gradients"
            )
        shape = torch.Size(sample_shape)
        n, context = self._sampling_rows(shape)
        x = self.model.rsample(n, context, **self.options)
        return x.reshape(shape + self.batch_shape + self.event_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density of ``value: (*sample_shape, *batch_shape, *event_shape)``.

        Returns ``(*sample_shape, *batch_shape)``, the model's ``log_prob`` of each
        event given its own context row.
        """
        shape = self._value_batch_shape(value)
        if self._validate_args:
            self._validate_sample(value)
        x = value.expand(shape + self.event_shape).reshape(-1, *self.event_shape)
        context = self.context
        if context is not None:
            features = context.shape[-1]
            if self.batch_shape.numel() == 1:
                context = context.reshape(1, features)  # one row serves every value
            else:
                context = context.expand((*shape, features)).reshape(-1, features)
        return self.model.log_prob(x, context, **self.options).reshape(shape)

    def __repr__(self) -> str:
        options = "".join(f", {name}={value!r}" for name, value in self.options.items())
        return (
            f"{type(self).__name__}({type(self.model).__name__}, "
            f"batch_shape={tuple(self.batch_shape)}, "
            f"event_shape={tuple(self.event_shape)}{options})"
        )

    # -- shapes ----------------------------------------------------------------

    def _sampling_rows(self, sample_shape: torch.Size) -> tuple[int, Tensor | None]:
        """How many rows to ask the model for, and their contexts (draw-major order)."""
        draws = math.prod(sample_shape)
        if self.context is None:
            return draws * self.batch_shape.numel(), None
        rows = self.context.reshape(-1, self.context.shape[-1])
        if rows.shape[0] == 1:
            return draws, rows  # the model broadcasts one row to all draws
        # Row s * B + b holds context b, so reshaping to (*sample_shape, *batch) is right.
        return draws * rows.shape[0], rows.repeat(draws, 1)

    def _value_batch_shape(self, value: Tensor) -> torch.Size:
        """Checks ``value`` and returns its leading shape broadcast against ``batch_shape``."""
        if not isinstance(value, Tensor):
            raise TypeError(f"expected value as a torch.Tensor, got {type(value).__name__}")
        dims = len(self.event_shape)
        event = tuple(self.event_shape)
        if value.ndim < dims or tuple(value.shape[value.ndim - dims :]) != event:
            expected = ", ".join(["...", *(str(d) for d in event)])
            raise ValueError(
                f"value has shape {tuple(value.shape)}, expected "
                f"(sample_shape, batch_shape, event_shape) = ({expected}): "
                f"events of shape {event}"
            )
        leading = value.shape[: value.ndim - dims]
        try:
            return torch.broadcast_shapes(leading, self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"value has shape {tuple(value.shape)}: its leading dimensions "
                f"{tuple(leading)} do not broadcast against the distribution's batch_shape "
                f"{tuple(self.batch_shape)} (one per context row)"
            ) from None
