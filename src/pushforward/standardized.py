"""Any model fitted to standardised data, seen in the data's original units."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pushforward.model import Model


class StandardizedModel(Model):
    r"""Wraps a model of :math:`z = (x - \mu)/\sigma` (and context :math:`(c - \mu_c)/\sigma_c`).

    .. math:: \log p_X(x \mid c) = \log p_Z\big((x - \mu)/\sigma \mid (c-\mu_c)/\sigma_c\big)
              - \sum_i \log \sigma_i

    and samples are :math:`x = \mu + \sigma z`. It serves every model that is not
    a :class:`~pushforward.flows.Flow` (a flow takes the standardisation into
    its transform instead, see :func:`~pushforward.flows.flow.fold_standardization`);
    keyword options of ``sample`` and ``log_prob`` (an ODE solver, say) pass through.
    ``loss`` is the inner model's loss on standardised values. ``mean`` and
    ``std`` are buffers, saved with the weights.

    A flow that transports a source data set onto the data (flow matching with
    an empirical source) works in standardised units at both ends: the source
    has its own :math:`\mu_0, \sigma_0` and :meth:`transport` maps given source
    points :math:`x_0` to :math:`\mu + \sigma\,T\big((x_0 - \mu_0)/\sigma_0\big)`.
    An optimal-transport coupling then minimises squared distances in those
    standardised units, which is the Euclidean cost in the original units only
    when both scalings are the same multiple of the identity.

    References:
        Papamakarios et al. (2021), Normalizing Flows for Probabilistic Modeling
        and Inference (change of variables under an affine map).

    Args:
        model: the model trained on standardised values.
        mean, std: the data standardisation, shape ``event_shape``.
        context_mean, context_std: the context standardisation ``(context,)``, or ``None``.
        source_mean, source_std: the standardisation of the source data set,
            shape ``event_shape``, or ``None`` (the source is the model's base).
    """

    mean: Tensor
    std: Tensor
    context_mean: Tensor | None
    context_std: Tensor | None
    source_mean: Tensor | None
    source_std: Tensor | None

    def __init__(
        self,
        model: Model,
        mean: Tensor,
        std: Tensor,
        context_mean: Tensor | None = None,
        context_std: Tensor | None = None,
        *,
        source_mean: Tensor | None = None,
        source_std: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.event_shape = tuple(model.event_shape)
        self.context_features = model.context_features
        # The wrapper answers exactly the questions its model answers.
        self.has_log_prob = model.has_log_prob  # type: ignore[misc]
        self.has_sample = model.has_sample  # type: ignore[misc]
        self.has_rsample = model.has_rsample  # type: ignore[misc]
        mean = torch.as_tensor(mean)
        std = torch.as_tensor(std)
        if tuple(mean.shape) != self.event_shape or tuple(std.shape) != self.event_shape:
            raise ValueError(
                f"the standardisation has shapes {tuple(mean.shape)} and {tuple(std.shape)}, "
                f"the model's events are {self.event_shape}"
            )
        if not bool((torch.isfinite(std) & (std > 0)).all()):
            raise ValueError("the standardisation std must be positive and finite")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        if (context_mean is None) != (context_std is None):
            raise ValueError("give both context_mean and context_std, or neither")
        if context_mean is not None and context_std is not None:
            if self.context_features == 0:
                raise ValueError("a context standardisation was given for an unconditional model")
            self.register_buffer("context_mean", torch.as_tensor(context_mean).clone())
            self.register_buffer("context_std", torch.as_tensor(context_std).clone())
        else:
            self.context_mean = None
            self.context_std = None
        if (source_mean is None) != (source_std is None):
            raise ValueError("give both source_mean and source_std, or neither")
        if source_mean is not None and source_std is not None:
            source_mean = torch.as_tensor(source_mean)
            source_std = torch.as_tensor(source_std)
            shapes = (tuple(source_mean.shape), tuple(source_std.shape))
            if shapes != (self.event_shape, self.event_shape):
                raise ValueError(
                    f"the source standardisation has shapes {shapes[0]} and {shapes[1]}, "
                    f"the model's events are {self.event_shape}"
                )
            if not bool((torch.isfinite(source_std) & (source_std > 0)).all()):
                raise ValueError("the source standardisation std must be positive and finite")
            self.register_buffer("source_mean", source_mean.clone())
            self.register_buffer("source_std", source_std.clone())
        else:
            self.source_mean = None
            self.source_std = None
        self.config = dict(getattr(model, "config", {}) or {})
        if self.config:
            self.config["standardization"] = {
                "event_shape": list(self.event_shape),
                "context": 0 if context_mean is None else int(self.context_features),
            }
            if source_mean is not None:
                self.config["standardization"]["source"] = True

    def _data_in(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def _data_out(self, z: Tensor) -> Tensor:
        return z * self.std.to(z) + self.mean.to(z)

    def _context_in(self, context: Tensor | None) -> Tensor | None:
        if context is None or self.context_mean is None or self.context_std is None:
            return context
        return (context - self.context_mean.to(context)) / self.context_std.to(context)

    def _source_in(self, x0: Tensor) -> Tensor:
        if self.source_mean is None or self.source_std is None:
            return x0
        return (x0 - self.source_mean.to(x0)) / self.source_std.to(x0)

    def _require(self, what: str, available: bool) -> None:
        # The inner model knows why it lacks a capability (an empirical source, say).
        self.model._require(what, available)

    def _log_std_sum(self, like: Tensor) -> Tensor:
        return torch.log(self.std.to(like)).sum()

    def loss(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The inner model's loss on the standardised batch."""
        x = self.check_input(x)
        context = self.check_context(context, x.shape[0])
        return self.model.loss(self._data_in(x), self._context_in(context))

    def log_prob(  # type: ignore[override]
        self, x: Tensor, context: Tensor | None = None, **options: Any
    ) -> Tensor:
        """Log-density in the original units; ``options`` go to the inner ``log_prob``."""
        self._require("log_prob", self.has_log_prob)
        x = self.check_input(x)
        context = self.check_context(context, x.shape[0])
        inner = self.model.log_prob(self._data_in(x), self._context_in(context), **options)
        return inner - self._log_std_sum(inner)

    def sample(  # type: ignore[override]
        self, n: int, context: Tensor | None = None, **options: Any
    ) -> Tensor:
        """Samples in the original units; ``options`` go to the inner ``sample``."""
        self._require("sample", self.has_sample)
        n, context = self._sampling_args(n, context)
        with torch.no_grad():
            return self._data_out(self.model.sample(n, self._context_in(context), **options))

    def transport(self, x0: Tensor, context: Tensor | None = None, **options: Any) -> Tensor:
        r"""Pushes given source points through the inner model's flow, in original units.

        .. math:: x_1 = \mu + \sigma\, T\big((x_0 - \mu_0)/\sigma_0,\;
                  (c - \mu_c)/\sigma_c\big)

        where :math:`T` is the inner model's ``transport`` and
        :math:`\mu_0, \sigma_0` the source standardisation (identity when the
        model was built without one: ``x0`` are then points of the inner model's base).

        Args:
            x0: ``(n, *event)`` source points in the source data set's units.
            context: ``(n, context)``, one row, or ``None``.
            **options: keyword options of the inner ``transport`` (``solver``, ``steps``, ...).

        Returns:
            ``(n, *event)`` the transported points in the data's units.
        """
        transport = getattr(self.model, "transport", None)
        if not callable(transport):
            raise TypeError(
                f"{type(self.model).__name__} cannot push given source points (no transport)"
            )
        x0 = self.check_input(x0)
        context = self.check_context(context, x0.shape[0])
        return self._data_out(transport(self._source_in(x0), self._context_in(context), **options))

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        inner = self.model._log_prob(self._data_in(x), self._context_in(context))
        return inner - self._log_std_sum(inner)

    def _rsample_and_log_prob(
        self, n: int, context: Tensor | None, with_log_prob: bool
    ) -> tuple[Tensor, Tensor | None]:
        z, log_prob = self.model._rsample_and_log_prob(n, self._context_in(context), with_log_prob)
        x = self._data_out(z)
        if log_prob is None:
            return x, None
        return x, log_prob - self._log_std_sum(log_prob)


def standardize_model(
    model: Model,
    mean: Tensor,
    std: Tensor,
    context_mean: Tensor | None = None,
    context_std: Tensor | None = None,
    *,
    source_mean: Tensor | None = None,
    source_std: Tensor | None = None,
) -> Model:
    """``model`` (fitted to standardised values) in the data's original units.

    A :class:`~pushforward.flows.Flow` takes the standardisation into its
    transform (it stays a flow, with its transform and base exposed); any other
    model is wrapped in :class:`StandardizedModel`. Either way ``config`` gains
    a ``standardization`` entry so :func:`pushforward.load` rebuilds the same
    structure. ``source_mean``/``source_std`` standardise the source data set
    of a model that transports one onto the data (not a flow's base).
    """
    from pushforward.flows.flow import Flow, fold_standardization

    if isinstance(model, Flow):
        if source_mean is not None or source_std is not None:
            raise ValueError(
                "a source standardisation applies to a flow between two data sets, "
                "not to a normalizing flow with a density base"
            )
        return fold_standardization(model, mean, std, context_mean, context_std)
    return StandardizedModel(
        model, mean, std, context_mean, context_std, source_mean=source_mean, source_std=source_std
    )


def placeholder_standardization(model: Model, description: dict[str, Any]) -> Model:
    """An identity standardisation of the shapes ``description`` names, to load weights into.

    Args:
        model: the freshly built inner model.
        description: the ``standardization`` entry of a saved model's config.
    """
    shape = tuple(int(d) for d in description["event_shape"])
    reference = next(iter(model.parameters()), None)
    dtype = reference.dtype if reference is not None else torch.float64
    width = int(description.get("context", 0))
    source = bool(description.get("source", False))
    return standardize_model(
        model,
        torch.zeros(shape, dtype=dtype),
        torch.ones(shape, dtype=dtype),
        torch.zeros(width, dtype=dtype) if width else None,
        torch.ones(width, dtype=dtype) if width else None,
        source_mean=torch.zeros(shape, dtype=dtype) if source else None,
        source_std=torch.ones(shape, dtype=dtype) if source else None,
    )
