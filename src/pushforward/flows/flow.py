"""A normalizing flow: a base distribution pushed forward through a bijection."""

from __future__ import annotations

import torch
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
    # ``rsample_and_score`` carries the score of the samples through the layers.
    has_score = True

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

    def rsample_and_score(
        self, n: int, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""Reparameterised samples, their log-density and its gradient, in one pass.

        ``(x, log q(x), \nabla_x \log q(x))`` in the data's units: the score of the
        base at its samples is pushed through every layer while sampling
        (:meth:`~pushforward.transforms.base.Transform.inverse_and_score`), so the
        path gradient of a reverse KL needs no inverse pass (Vaitl et al. 2024). The
        points carry gradients to the parameters; the score is detached (the path
        gradient treats it as a constant).

        References:
            Vaitl et al. (2024), Fast and Unified Path Gradient Estimators for
            Normalizing Flows; Roeder et al. (2017), Sticking the Landing.

        Returns:
            ``x: (n, *event_shape)``, ``log_prob: (n,)``, ``score: (n, *event_shape)``.
        """
        self._require("rsample_and_score", self.has_rsample and self.has_log_prob)
        n, context = self._sampling_args(n, context)
        context = self.encode_context(context)
        z = self.base.rsample(n)
        with torch.enable_grad():
            point = z.detach().requires_grad_(True)
            base_log_prob = self.base.log_prob(point)
            (score,) = torch.autograd.grad(base_log_prob.sum(), point)
        x, logabsdet, score = self.transform.inverse_and_score(z, score, context)
        log_prob = base_log_prob.detach() - logabsdet
        data = self.preprocessing.data
        if data is not None:
            x, decoded, score = data.inverse_and_score(x, score, None)
            log_prob = log_prob - decoded
        return x, log_prob, score

    def normalize_and_score(self, x: Tensor, score: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""Maps data to the base carrying a target's score: the forward path gradient's pass.

        With :math:`z = f_\theta(x)` (data to base) and ``score`` :math:`= \nabla_x \log p(x)`,
        returns ``z`` (with gradients to the parameters), :math:`\log q(x)` and the detached
        direction :math:`\nabla_z \log \hat p_\theta(z) - \nabla_z \log p_Z(z)`, where
        :math:`\hat p_\theta = (f_\theta)_\# p` is the target pushed to the base; so
        :math:`\langle \text{direction}, z \rangle` back-propagates the path gradient of
        :math:`\mathrm{KL}(p \,\|\, q_\theta)` (Vaitl et al. 2024).

        References:
            Vaitl et al. (2024), Fast and Unified Path Gradient Estimators for
            Normalizing Flows.

        Args:
            x: ``(batch, *event_shape)`` in the data's units.
            score: ``(batch, *event_shape)``, the target's score at ``x``.
        """
        self._require("normalize_and_score", self.has_log_prob)
        x = self.check_input(x)
        data = self.preprocessing.data
        total = x.new_zeros(x.shape[0])
        if data is not None:
            x, total, score = data.forward_and_score(x, score, None)
        z, logabsdet, score = self.transform.forward_and_score(x, score, None)
        total = total + logabsdet
        with torch.enable_grad():
            point = z.detach().requires_grad_(True)
            base_log_prob = self.base.log_prob(point)
            (base_score,) = torch.autograd.grad(base_log_prob.sum(), point)
        log_prob = self.base.log_prob(z) + total
        return z, log_prob, (score - base_score).detach()
