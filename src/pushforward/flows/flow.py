"""A normalizing flow: a base distribution pushed forward through a bijection."""

from __future__ import annotations

import torch
from torch import Tensor

from pushforward.distributions.base import Distribution
from pushforward.model import Model
from pushforward.transforms.base import Compose, Transform


class Flow(Model):
    r"""The density of :math:`x = f^{-1}(z)`, :math:`z \sim p_Z`, by the change of variables.

    .. math:: \log p(x) = \log p_Z(f(x)) + \log |\det \partial f(x) / \partial x|

    ``transform.forward`` maps data to the base (the normalizing direction);
    sampling runs ``transform.inverse`` on base samples and is reparameterised,
    so ``rsample`` carries gradients for variational inference.

    References:
        Rezende & Mohamed (2015), Variational Inference with Normalizing Flows;
        Papamakarios et al. (2021), Normalizing Flows for Probabilistic Modeling and Inference.

    Args:
        transform: the bijection, data to base.
        base: the base distribution over ``event_shape``.
        context_features: size of the context vector (0 for unconditional).
    """

    has_rsample = True

    def __init__(self, transform: Transform, base: Distribution, context_features: int = 0) -> None:
        super().__init__()
        self.transform = transform
        self.base = base
        self.event_shape = tuple(base.event_shape)
        self.context_features = int(context_features)

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        z, logabsdet = self.transform(x, context)
        return self.base.log_prob(z) + logabsdet

    def _rsample_and_log_prob(
        self, n: int, context: Tensor | None, with_log_prob: bool
    ) -> tuple[Tensor, Tensor | None]:
        z = self.base.rsample(n)
        x, logabsdet = self.transform.inverse(z, context)
        if not with_log_prob:
            return x, None
        return x, self.base.log_prob(z) - logabsdet


class StandardizedContext(Transform):
    r"""Runs ``transform`` on a context standardised by :math:`c' = (c - \mu_c) / \sigma_c`.

    The context is an input of the conditioners, not a variable whose density
    is modelled, so standardising it needs no Jacobian term; it lets a flow
    trained on standardised contexts take contexts in their original units.
    ``mean`` and ``std`` are buffers (saved in the ``state_dict``, not trained).

    Args:
        transform: the conditional transform to run.
        mean: :math:`\mu_c`, shape ``(context,)``.
        std: :math:`\sigma_c`, shape ``(context,)``, positive.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, transform: Transform, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.transform = transform
        self.cheap_forward = transform.cheap_forward
        self.cheap_inverse = transform.cheap_inverse
        self.conditional = True
        self.register_buffer("mean", torch.as_tensor(mean).clone())
        self.register_buffer("std", torch.as_tensor(std).clone())

    def _standardize(self, context: Tensor | None) -> Tensor | None:
        if context is None:
            return None
        return (context - self.mean.to(context)) / self.std.to(context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(x, self._standardize(context))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(y, self._standardize(context))


def fold_standardization(
    flow: Flow,
    mean: Tensor,
    std: Tensor,
    context_mean: Tensor | None = None,
    context_std: Tensor | None = None,
) -> Flow:
    r"""A flow of the original units from ``flow`` fitted to standardised data (and context).

    The new flow's transform is ``Compose([Standardize(mean, std), T])`` where
    ``T`` is ``flow.transform``, wrapped in :class:`StandardizedContext` when
    a context standardisation is given, so

    .. math:: \log p_X(x \mid c) = \log p_Y\big((x-\mu)/\sigma \mid (c-\mu_c)/\sigma_c\big)
              - \sum_i \log \sigma_i

    The base distribution and the weights are shared with ``flow`` (not
    copied); ``config`` gains a ``standardization`` entry so ``pushforward.load``
    rebuilds the same structure from JSON and safetensors.

    References:
        Papamakarios et al. (2021), Normalizing Flows for Probabilistic Modeling
        and Inference (change of variables under composition).

    Args:
        flow: the flow trained on standardised values.
        mean, std: the data standardisation, shape ``event_shape``.
        context_mean, context_std: the context standardisation ``(context,)``, or ``None``.

    Returns:
        A :class:`Flow` in the original units.
    """
    from pushforward.data.standardize import Standardize

    inner: Transform = flow.transform
    if context_mean is not None and context_std is not None:
        if flow.context_features == 0:
            raise ValueError("a context standardisation was given for an unconditional flow")
        inner = StandardizedContext(inner, context_mean, context_std)
    folded = Flow(Compose([Standardize(mean, std), inner]), flow.base, flow.context_features)
    config = dict(getattr(flow, "config", {}) or {})
    if config:
        config["standardization"] = {
            "event_shape": list(flow.event_shape),
            "context": 0 if context_mean is None else int(torch.as_tensor(context_mean).numel()),
        }
        folded.config = config
    return folded
