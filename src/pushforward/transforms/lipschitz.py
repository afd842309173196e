r"""Lipschitz-constrained networks: spectrally normalised linear layers and LipSwish.

A residual block :math:`y = x + g(x)` is invertible when :math:`\mathrm{Lip}(g) < 1`.
:class:`LipschitzNetwork` bounds it by a product of per-layer bounds: each linear
layer's weight is divided by its spectral norm (estimated by power iteration) times
a coefficient below one, and the activations between them are 1-Lipschitz.

References:
    Miyato et al. (2018), Spectral Normalization for Generative Adversarial Networks;
    Chen et al. (2019), Residual Flows for Invertible Generative Modeling (LipSwish).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pushforward.options import choice, positive_int

ACTIVATIONS = ("lipswish", "elu")
"""1-Lipschitz activations of the residual networks."""


def lipschitz_coefficient(value: object) -> float:
    """The ``coefficient`` option: a number in ``(0, 1)``, or a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(
            f"option 'coefficient' (the Lipschitz bound of each residual layer) must be in "
            f"(0, 1), got {value!r}"
        )
    return float(value)


# -- spectral normalisation -------------------------------------------------------------


@torch.no_grad()
def power_iteration(
    weight: Tensor, u: Tensor, v: Tensor, iterations: int, tolerance: float | None = None
) -> tuple[Tensor, Tensor]:
    r"""Steps :math:`v \leftarrow W^\top u / \lVert W^\top u \rVert`,
    :math:`u \leftarrow W v / \lVert W v \rVert` towards the top singular vectors of ``W``.

    Returns new unit vectors ``(u, v)`` (the inputs are not changed); then
    :math:`u^\top W v \le \sigma_{\max}(W)` estimates the spectral norm. Without
    ``tolerance`` it takes ``iterations`` steps; with one, it stops sooner once a step
    changes the estimate by at most ``tolerance`` times itself.

    Args:
        weight: ``(out, in)``.
        u: ``(out,)`` and ``v``: ``(in,)``, unit vectors.
    """
    sigma = u @ weight @ v
    for _ in range(iterations):
        v = F.normalize(weight.t() @ u, dim=0)
        u = F.normalize(weight @ v, dim=0)
        if tolerance is not None:
            previous, sigma = sigma, u @ weight @ v
            if float((sigma - previous).abs()) <= tolerance * float(sigma.abs()):
                break
    return u, v


class SpectralNormLinear(nn.Module):
    r"""A linear layer whose weight is rescaled to spectral norm at most ``coefficient``.

    .. math:: \tilde W = W / \max(1, \hat\sigma / c), \qquad \hat\sigma = u^\top W v

    with :math:`u, v` persistent power-iteration vectors (buffers, saved with the
    weights), refined at construction until the estimate settles. Every pass in
    training mode takes ``iterations`` steps from the stored vectors and writes them
    back when it tracks gradients (a training step, as Miyato et al. 2018 do); in
    evaluation mode a pass steps from the stored vectors until the estimate settles
    (at most ``eval_iterations`` steps) and writes nothing. Either way a pass without
    gradients leaves the state as it was, so the map is a fixed function of the state
    (forward and inverse agree, and a reloaded model answers the same).

    Args:
        in_features, out_features: sizes.
        coefficient: the bound :math:`c` on the spectral norm, in ``(0, 1)``.
        iterations: power steps per training pass.
        eval_iterations: the most power steps of an evaluation pass.
        init_iterations: the most power steps at construction.
    """

    u: Tensor
    v: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        coefficient: float = 0.9,
        iterations: int = 2,
        eval_iterations: int = 200,
        init_iterations: int = 500,
    ) -> None:
        super().__init__()
        self.coefficient = lipschitz_coefficient(coefficient)
        self.iterations = positive_int("power_iterations", iterations, minimum=0)
        self.eval_iterations = positive_int("power_iterations", eval_iterations, minimum=0)
        linear = nn.Linear(in_features, out_features)
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())
        u = F.normalize(torch.randn(out_features), dim=0)
        v = F.normalize(torch.randn(in_features), dim=0)
        u, v = power_iteration(self.weight, u, v, init_iterations, _settled(self.weight))
        self.register_buffer("u", u)
        self.register_buffer("v", v)

    def spectral_norm_estimate(self) -> Tensor:
        r""":math:`u^\top W v` of the raw weight, stepped until it settles (no gradient)."""
        with torch.no_grad():
            steps, tolerance = self.eval_iterations, _settled(self.weight)
            u, v = power_iteration(self.weight, self.u, self.v, steps, tolerance)
            return u @ self.weight @ v

    def normalized_weight(self) -> Tensor:
        r"""The rescaled weight :math:`\tilde W` (gradients flow through :math:`\hat\sigma`)."""
        if self.training:
            u, v = power_iteration(self.weight, self.u, self.v, self.iterations)
        else:
            steps, tolerance = self.eval_iterations, _settled(self.weight)
            u, v = power_iteration(self.weight, self.u, self.v, steps, tolerance)
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                self.u.copy_(u)
                self.v.copy_(v)
        sigma = u @ self.weight @ v
        return self.weight / torch.clamp(sigma / self.coefficient, min=1.0)


def _settled(weight: Tensor) -> float:
    """The relative change at which the power iteration stops: near the dtype's precision."""
    return 100 * torch.finfo(weight.dtype).eps


# -- the residual network g ------------------------------------------------------------


def lipswish(x: Tensor, beta: Tensor) -> Tensor:
    r"""LipSwish :math:`x\,\sigma(\beta x) / 1.1`, 1-Lipschitz for every :math:`\beta > 0`.

    The derivative of :math:`x\sigma(\beta x)` is :math:`\sigma(t) + t\sigma(t)(1-\sigma(t))`
    with :math:`t = \beta x`, whose maximum (about 1.0998) does not depend on :math:`\beta`.

    References:
        Chen et al. (2019), Residual Flows for Invertible Generative Modeling.
    """
    return x * torch.sigmoid(beta * x) / 1.1


class LipSwish(nn.Module):
    r"""LipSwish with a learnable :math:`\beta = \mathrm{softplus}(\rho) > 0` per unit."""

    def __init__(self, features: int) -> None:
        super().__init__()
        # softplus(log(e - 1)) = 1: the swish x * sigmoid(x) at the start.
        self.raw_beta = nn.Parameter(torch.full((features,), math.log(math.e - 1.0)))

    def beta(self) -> Tensor:
        return F.softplus(self.raw_beta)

    def forward(self, x: Tensor) -> Tensor:
        return lipswish(x, self.beta())


Layers = list[tuple[Tensor, Tensor, Tensor | None]]
"""One pass's ``(weight, bias, LipSwish beta or None)`` per linear layer."""


class LipschitzNetwork(nn.Module):
    r"""The residual branch :math:`g(x, c)`: spectrally normalised linear layers and
    1-Lipschitz activations, so :math:`\mathrm{Lip}_x(g) \le c^{L}` for :math:`L` layers.

    The context is concatenated to the input of the first layer; that layer's whole
    weight :math:`[W_x\ W_c]` is normalised, which bounds :math:`\lVert W_x \rVert`.
    :meth:`layers` fixes one pass's weights (the power steps run once) and
    :meth:`evaluate` is then a pure function of them, which ``torch.func`` can transform.
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int],
        context: int = 0,
        coefficient: float = 0.9,
        activation: str = "lipswish",
        power_iterations: int = 2,
    ) -> None:
        super().__init__()
        self.activation = choice("activation", activation, ACTIVATIONS)
        widths = [features + context, *hidden, features]
        self.linears = nn.ModuleList(
            SpectralNormLinear(a, b, coefficient, iterations=power_iterations)
            for a, b in itertools.pairwise(widths)
        )
        self.activations = nn.ModuleList(
            LipSwish(width) if self.activation == "lipswish" else nn.Identity() for width in hidden
        )

    def layers(self) -> Layers:
        """This pass's weights, biases and LipSwish slopes (the power steps run here)."""
        layers: Layers = []
        for index, module in enumerate(self.linears):
            linear = cast(SpectralNormLinear, module)
            beta = None
            if index < len(self.activations):
                activation = self.activations[index]
                beta = activation.beta() if isinstance(activation, LipSwish) else None
            layers.append((linear.normalized_weight(), linear.bias, beta))
        return layers

    def evaluate(self, x: Tensor, context: Tensor | None, layers: Layers) -> Tensor:
        """``g(x, c)`` with fixed weights; ``x: (..., features)``, ``context: (..., context)``."""
        h = x if context is None else torch.cat([x, context], dim=-1)
        for index, (weight, bias, beta) in enumerate(layers):
            h = F.linear(h, weight, bias)
            if index < len(layers) - 1:
                h = lipswish(h, beta) if beta is not None else F.elu(h)
        return h

    def lipschitz_bound(self) -> float:
        r"""The product of the normalised layers' spectral norms: a bound on Lip_x(g)."""
        with torch.no_grad():
            norms = [torch.linalg.matrix_norm(w, 2) for w, _, _ in self.layers()]
        return float(torch.stack(norms).prod())
