"""A trained model as an independence proposal, optionally mixed with a wide Gaussian."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pushforward.model import Model
from pushforward.sampling.mcmc.latent import base_to_data, flow_parts, is_flow


def model_dtype(model: Model) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the model's first floating parameter or buffer."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return torch.get_default_dtype(), torch.device("cpu")


def draw_from_model(model: Model, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` samples ``(n, d)`` of an unconditional model and their log-densities ``(n,)``.

    A flow (``transform`` and ``base``) draws its base points from ``generator``.
    Any other model draws from torch's global generator under
    ``torch.random.fork_rng``, seeded from ``generator``: the global state is
    restored afterwards and the draw is still fixed by ``generator``.
    """
    with torch.no_grad():
        if is_flow(model):
            _, base = flow_parts(model)
            z = base.rsample(n, generator)
            x, logabsdet = base_to_data(model, z)
            return x, base.log_prob(z) - logabsdet
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        devices = [generator.device] if generator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return model.sample_and_log_prob(n)


class FlowProposal:
    r"""The proposal :math:`q` of independence samplers: a model, or a defensive mixture.

    .. math:: q_\epsilon(x) = (1 - \epsilon)\, q(x) + \epsilon\, \mathcal N(x; 0, s^2 I)

    With :math:`\epsilon > 0` (``defensive``) the weights
    :math:`\tilde p / q_\epsilon` are bounded wherever the target's tails are no
    heavier than the Gaussian's, so a chain cannot be trapped far out in a tail
    the flow misses; the mixture's own density enters the weights.

    References:
        Hesterberg (1995), Weighted Average Importance Sampling and Defensive
        Mixture Distributions; Owen & Zhou (2000), Safe and Effective Importance
        Sampling.

    Args:
        model: an unconditional model with ``sample_and_log_prob`` and ``log_prob``.
        defensive: the mixture weight :math:`\epsilon \in [0, 1)`.
        defensive_scale: the Gaussian's scale :math:`s`, in the data's units.
    """

    def __init__(self, model: Model, defensive: float = 0.0, defensive_scale: float = 3.0) -> None:
        if model.context_features > 0:
            raise ValueError(
                "flow MCMC samples unconditional models; this one takes a context of "
                f"{model.context_features} features"
            )
        if not (model.has_sample and model.has_log_prob) or model.log_prob_is_bound:
            raise TypeError(
                f"{type(model).__name__} cannot serve as an MCMC proposal: it needs both "
                "samples and an exact log-density"
            )
        self.model = model
        self.defensive = float(defensive)
        self.defensive_scale = float(defensive_scale)

    def _gaussian_log_prob(self, x: Tensor) -> Tensor:
        scale = self.defensive_scale
        d = x.shape[-1]
        return -0.5 * (x / scale).square().sum(-1) - d * (
            math.log(scale) + 0.5 * math.log(2 * math.pi)
        )

    def _mix(self, flow: Tensor, gaussian: Tensor) -> Tensor:
        return torch.logaddexp(
            flow + math.log1p(-self.defensive), gaussian + math.log(self.defensive)
        )

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` proposals ``(n, d)`` and their log proposal density ``(n,)``."""
        x, log_q = draw_from_model(self.model, n, generator)
        if self.defensive == 0.0:
            return x, log_q
        wide = torch.rand(n, dtype=x.dtype, device=x.device, generator=generator) < self.defensive
        noise = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        x = torch.where(wide.unsqueeze(-1), self.defensive_scale * noise, x)
        with torch.no_grad():
            # Only the Gaussian's draws need the model's density evaluated afresh.
            log_flow = log_q.clone()
            if bool(wide.any()):
                log_flow[wide] = self.model.log_prob(x[wide])
        return x, self._mix(log_flow, self._gaussian_log_prob(x))

    def log_prob(self, x: Tensor) -> Tensor:
        """``(batch,)`` the proposal's log-density at ``x: (batch, d)``."""
        with torch.no_grad():
            log_flow = self.model.log_prob(x)
        if self.defensive == 0.0:
            return log_flow
        return self._mix(log_flow, self._gaussian_log_prob(x))
