"""A normalizing flow: a base distribution pushed forward through a bijection."""

from __future__ import annotations

from torch import Tensor

from pushforward.distributions.base import Distribution
from pushforward.inference import NoOptions
from pushforward.model import Model
from pushforward.transforms.base import Transform


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

    def _log_prob(self, x: Tensor, context: Tensor | None, options: NoOptions) -> Tensor:
        z, logabsdet = self.transform(x, context)
        return self.base.log_prob(z) + logabsdet

    def _rsample_and_log_prob(
        self, n: int, context: Tensor | None, options: NoOptions, log_prob_options: NoOptions | None
    ) -> tuple[Tensor, Tensor | None]:
        z = self.base.rsample(n)
        x, logabsdet = self.transform.inverse(z, context)
        if log_prob_options is None:
            return x, None
        return x, self.base.log_prob(z) - logabsdet
