r"""Invertible residual blocks :math:`y = x + g(x)` with :math:`\mathrm{Lip}(g) < 1`.

The block is a bijection because :math:`x \mapsto y - g(x)` is a contraction
(Banach's fixed-point theorem), so its inverse is the limit of
:math:`x_{n+1} = y - g(x_n)`. :math:`g` is an MLP of spectrally normalised linear
layers and 1-Lipschitz LipSwish activations. Its log-determinant is the power series

.. math:: \log\lvert\det(I + J_g)\rvert = \sum_{k \ge 1} \frac{(-1)^{k+1}}{k}\,
          \mathrm{tr}(J_g^k),

computed exactly from the full Jacobian for small ``D`` or estimated without bias
by a Russian roulette over its terms with Hutchinson's traces, with the Neumann
gradient estimator so that training memory does not grow with the number of terms.

References:
    Behrmann et al. (2019), Invertible Residual Networks;
    Chen et al. (2019), Residual Flows for Invertible Generative Modeling;
    Miyato et al. (2018), Spectral Normalization for Generative Adversarial Networks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pushforward.nn.made import broadcast_context
from pushforward.options import choice, positive_float, positive_int
from pushforward.transforms.base import Transform
from pushforward.transforms.lipschitz import (
    Layers,
    LipschitzNetwork,
)

LOGDET_MODES = ("exact", "estimate")
"""How a block computes its log-determinant: the full Jacobian, or the unbiased estimator."""
STOPPING = ("poisson", "geometric")
"""Distributions of the number of random extra terms of the Russian roulette."""

# -- log-determinants ------------------------------------------------------------------


@dataclass(frozen=True)
class LogDeterminantEstimator:
    r"""How a residual block computes :math:`\log\lvert\det(I + J_g)\rvert`.

    ``"exact"``: the full Jacobian by ``torch.func`` and ``slogdet`` (cost grows as
    ``D`` passes and ``D^3``; for small ``D``). ``"estimate"``: the Russian-roulette
    estimator of :func:`roulette_logdet` with ``exact_terms`` leading terms always
    kept, a random number :math:`N` of further ones drawn from ``stopping``
    (``"poisson"`` with mean ``roulette_mean``, or ``"geometric"`` with that mean)
    and ``probes`` Rademacher vectors averaged; ``generator`` drives both.
    """

    mode: str = "exact"
    exact_terms: int = 2
    stopping: str = "poisson"
    roulette_mean: float = 2.0
    probes: int = 1
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        choice("logdet", self.mode, LOGDET_MODES)
        positive_int("exact_terms", self.exact_terms, minimum=0)
        choice("stopping", self.stopping, STOPPING)
        positive_float("roulette_mean", self.roulette_mean)
        positive_int("probes", self.probes)

    def draw_extra_terms(self) -> int:
        """A draw of :math:`N`, the number of terms after the ``exact_terms`` leading ones."""
        device = self.generator.device if self.generator is not None else None
        if self.stopping == "poisson":
            rate = torch.tensor([self.roulette_mean], dtype=torch.float64, device=device)
            return int(torch.poisson(rate, generator=self.generator).item())
        # 1 - U lies in (0, 1], so its log is finite.
        uniform = 1.0 - torch.rand(1, dtype=torch.float64, device=device, generator=self.generator)
        ratio = self.roulette_mean / (1.0 + self.roulette_mean)
        return int(torch.floor(torch.log(uniform) / math.log(ratio)).item())

    def survival(self, k: int) -> float:
        r""":math:`P(N \ge k - n_{\text{exact}})`, the probability that term ``k`` is reached."""
        m = k - self.exact_terms
        if m <= 0:
            return 1.0
        if self.stopping == "geometric":
            return (self.roulette_mean / (1.0 + self.roulette_mean)) ** m
        # P(Poisson(lambda) >= m) is the regularised lower incomplete gamma P(m, lambda).
        order = torch.tensor(float(m), dtype=torch.float64)
        return float(torch.special.gammainc(order, torch.tensor(self.roulette_mean).double()))


def exact_residual_logdet(
    function: Callable[[Tensor, Tensor | None], Tensor], x: Tensor, context: Tensor | None
) -> tuple[Tensor, Tensor]:
    r""":math:`g(x)` and :math:`\log\lvert\det(I + \partial g / \partial x)\rvert` per row.

    The Jacobian of every row by ``torch.func.jacrev`` under ``vmap`` (differentiable,
    and composable with an outer ``torch.func`` transform).

    Args:
        function: ``g`` of one row, ``(features,), (context,) or None -> (features,)``.
        x: ``(batch, features)``; context: ``(batch, context)`` or ``None``.

    Returns:
        ``g(x): (batch, features)`` and the log-determinants ``(batch,)``.
    """

    def with_value(row: Tensor, condition: Tensor | None) -> tuple[Tensor, Tensor]:
        value = function(row, condition)
        return value, value

    jacobian = torch.func.jacrev(with_value, has_aux=True)
    in_dims = (0, None) if context is None else (0, 0)
    J, value = torch.func.vmap(jacobian, in_dims=in_dims)(x, context)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return value, torch.linalg.slogdet(eye + J)[1]


def _vjp(output: Tensor, point: Tensor, vector: Tensor, create_graph: bool = False) -> Tensor:
    """``vector^T J`` of ``output`` w.r.t. ``point``, row by row."""
    (gradient,) = torch.autograd.grad(
        output, point, vector, retain_graph=True, create_graph=create_graph
    )
    return gradient


def rademacher(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """A tensor of independent signs shaped like ``like``, in its dtype and device."""
    device = generator.device if generator is not None else like.device
    signs = torch.randint(0, 2, like.shape, generator=generator, device=device)
    return (2 * signs - 1).to(dtype=like.dtype, device=like.device)


def roulette_logdet(
    g_x: Tensor, x: Tensor, estimator: LogDeterminantEstimator, gradient: bool
) -> Tensor:
    r"""The unbiased Russian-roulette estimate of :math:`\log\det(I + J_g)`, row by row.

    With :math:`K = n_{\text{exact}} + N` terms and a Rademacher probe :math:`v`,

    .. math:: \widehat{\log\det} = \sum_{k=1}^{K} \frac{(-1)^{k+1}}{k}
              \frac{v^\top J^k v}{P(K \ge k)},

    unbiased since :math:`E[\mathbf 1\{K \ge k\}] = P(K \ge k)` and
    :math:`E[v^\top A v] = \mathrm{tr} A` (Chen et al. 2019, eq. 6). For a Poisson
    :math:`N`, :math:`P(N \ge m) = P(m, \lambda)`; for a geometric one with mean
    :math:`\mu`, :math:`(\mu / (1 + \mu))^m`. Its variance is finite when the terms
    :math:`\mathrm{Lip}(g)^{2k}` shrink faster than :math:`P(K \ge k)`.

    With ``gradient``, the value carries the Neumann gradient estimator (Chen et al.
    2019, eq. 8): since
    :math:`\partial_\theta \log\det(I + J) = \mathrm{tr}((I + J)^{-1}\partial_\theta J)`
    and :math:`(I + J)^{-1} = \sum_{k \ge 0} (-J)^k`,

    .. math:: \partial_\theta \log\det(I + J) = E\Big[\Big(\sum_{k=0}^{K-1}
              \frac{(-1)^k}{P(K \ge k + 1)} v^\top J^k\Big)\, \partial_\theta J\, v\Big],

    so the vectors :math:`v^\top J^k` are computed without a graph and one
    vector-Jacobian product with a graph carries the gradient (to the parameters and
    to ``x``): memory does not grow with :math:`K`.

    Args:
        g_x: ``(batch, features)``, :math:`g(x)` with a graph to ``x``.
        x: ``(batch, features)``, requiring gradients.
        estimator: the terms, stopping distribution, probes and generator.
        gradient: whether the result carries the gradient estimator.

    Returns:
        ``(batch,)``.
    """
    terms = estimator.exact_terms + estimator.draw_extra_terms()
    total = x.new_zeros(x.shape[0])
    for _ in range(estimator.probes):
        v = rademacher(x, estimator.generator)
        w, value, neumann = v, x.new_zeros(x.shape[0]), torch.zeros_like(x)
        for k in range(1, terms + 1):
            weight = (-1) ** (k + 1) / estimator.survival(k)
            if gradient:
                neumann = neumann + weight * w
            w = _vjp(g_x, x, w)
            value = value + weight / k * (w * v).sum(dim=1)
        if gradient and terms > 0:
            surrogate = (_vjp(g_x, x, neumann, create_graph=True) * v).sum(dim=1)
            # Exactly zero in value: the estimate is the same with or without gradients.
            value = value + (surrogate - surrogate.detach())
        total = total + value
    return total / estimator.probes


# -- the block -----------------------------------------------------------------------------


class ResidualBlock(Transform):
    r"""An invertible residual block :math:`y = x + g(x, c)`, :math:`\mathrm{Lip}_x(g) < 1`.

    ``forward`` (data to base) is one pass of :math:`g` plus its log-determinant (see
    :class:`LogDeterminantEstimator`). ``inverse`` iterates
    :math:`x_{n+1} = y - g(x_n)` from :math:`x_0 = y` without a graph until a step is
    below ``tolerance`` :math:`\cdot (1 + \lVert x \rVert_\infty)` in every row (the
    error is then at most :math:`\mathrm{Lip}/(1 - \mathrm{Lip})` times that), or
    fails after ``max_iterations``; its log-determinant is minus the forward one at
    the result. Gradients of the inverse follow the implicit function theorem,
    :math:`\partial x / \partial(y, \theta) = (I + J_g)^{-1}\,\partial(y - g)`: in exact
    mode by one Newton step with the exact Jacobian (composable with ``torch.func``),
    in estimate mode by a backward hook solving :math:`u = \bar x - J_g^\top u` by the
    same fixed-point iteration.

    References:
        Behrmann et al. (2019), Invertible Residual Networks;
        Chen et al. (2019), Residual Flows for Invertible Generative Modeling.

    Args:
        features: ``D``.
        hidden: widths of :math:`g`'s hidden layers.
        context: context width (0 for unconditional).
        coefficient: the spectral-norm bound of every linear layer of :math:`g`, in
            ``(0, 1)``; :math:`\mathrm{Lip}(g) \le` ``coefficient ** (len(hidden) + 1)``.
        activation: ``"lipswish"`` or ``"elu"``.
        estimator: the log-determinant's mode and settings (default: exact).
        tolerance: of the inverse's fixed point; ``None``: 1e-13 in float64, 1e-6 otherwise.
        max_iterations: of the inverse's fixed point.
        power_iterations: power steps per training pass of every linear layer.
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        coefficient: float = 0.9,
        activation: str = "lipswish",
        estimator: LogDeterminantEstimator | None = None,
        tolerance: float | None = None,
        max_iterations: int = 1000,
        power_iterations: int = 2,
    ) -> None:
        super().__init__()
        self.features = positive_int("features", features)
        self.context_features = positive_int("context", context, minimum=0)
        self.network = LipschitzNetwork(
            features, hidden, context, coefficient, activation, power_iterations
        )
        self.estimator = estimator or LogDeterminantEstimator()
        self.tolerance = None if tolerance is None else positive_float("tolerance", tolerance)
        self.max_iterations = positive_int("max_iterations", max_iterations)
        self.conditional = self.context_features > 0

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.forward_with(x, context, self.estimator)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.inverse_with(y, context, self.estimator)

    def forward_with(
        self, x: Tensor, context: Tensor | None, estimator: LogDeterminantEstimator
    ) -> tuple[Tensor, Tensor]:
        """``forward`` with the log-determinant computed as ``estimator`` says."""
        context = broadcast_context(context, self.context_features, x)
        layers = self.network.layers()
        g_x, logdet = self._g_and_logdet(x, context, layers, estimator)
        return x + g_x, logdet

    def inverse_with(
        self, y: Tensor, context: Tensor | None, estimator: LogDeterminantEstimator
    ) -> tuple[Tensor, Tensor]:
        """``inverse`` with the log-determinant computed as ``estimator`` says."""
        context = broadcast_context(context, self.context_features, y)
        layers = self.network.layers()
        x = self._solve(y, context, layers, estimator.mode)
        _, logdet = self._g_and_logdet(x, context, layers, estimator)
        return x, -logdet

    def invert(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        """The inverse's points alone, without its log-determinant (sampling)."""
        context = broadcast_context(context, self.context_features, y)
        return self._solve(y, context, self.network.layers(), self.estimator.mode)

    # -- pieces ------------------------------------------------------------------------

    def _row(self, layers: Layers) -> Callable[..., Tensor]:
        def g_row(row: Tensor, condition: Tensor | None = None) -> Tensor:
            return self.network.evaluate(row, condition, layers)

        return g_row

    def _g_and_logdet(
        self,
        x: Tensor,
        context: Tensor | None,
        layers: Layers,
        estimator: LogDeterminantEstimator,
    ) -> tuple[Tensor, Tensor]:
        if estimator.mode == "exact":
            return exact_residual_logdet(self._row(layers), x, context)
        tracked = torch.is_grad_enabled()
        with torch.enable_grad():
            point = x if x.requires_grad else x.detach().requires_grad_(True)
            g_x = self.network.evaluate(point, context, layers)
            logdet = roulette_logdet(g_x, point, estimator, gradient=tracked)
        if not tracked:
            return g_x.detach(), logdet.detach()
        return g_x, logdet

    def _solve(self, y: Tensor, context: Tensor | None, layers: Layers, mode: str) -> Tensor:
        fixed = self._fixed_point(y, context, layers)
        if not torch.is_grad_enabled():
            return fixed
        if mode == "estimate":
            return self._implicit(y, fixed, context, layers)
        # Newton step from the fixed point: the value stays, the derivative is
        # (I + J)^{-1} times that of the residual (the Jacobian's own multiplies ~0).
        with torch.no_grad():
            arguments = (fixed,) if context is None else (fixed, context)
            jacobian = torch.func.vmap(torch.func.jacrev(self._row(layers)))(*arguments)
            eye = torch.eye(self.features, dtype=y.dtype, device=y.device)
        residual = fixed + self.network.evaluate(fixed, context, layers) - y
        return fixed - torch.linalg.solve(eye + jacobian, residual.unsqueeze(-1)).squeeze(-1)

    def _fixed_point(self, y: Tensor, context: Tensor | None, layers: Layers) -> Tensor:
        tolerance = self.tolerance
        if tolerance is None:
            tolerance = 1e-13 if y.dtype == torch.float64 else 1e-6
        with torch.no_grad():
            target = y.detach()
            x = target
            layers = [
                (weight.detach(), bias.detach(), None if beta is None else beta.detach())
                for weight, bias, beta in layers
            ]
            condition = None if context is None else context.detach()
            step = math.inf
            for _ in range(self.max_iterations):
                update = target - self.network.evaluate(x, condition, layers)
                change = (update - x).abs().amax(dim=1) / (1.0 + update.abs().amax(dim=1))
                x = update
                step = float(change.max())
                if step <= tolerance:
                    return x
        raise ValueError(
            f"the fixed-point inverse of a residual block did not converge: relative step "
            f"{step:.3g} after max_iterations={self.max_iterations} is above "
            f"tolerance={tolerance:g}; raise max_iterations or tolerance"
        )

    def _implicit(self, y: Tensor, fixed: Tensor, context: Tensor | None, layers: Layers) -> Tensor:
        """``fixed`` with the implicit-function gradient, through a backward hook."""
        point = fixed.detach().requires_grad_(True)
        g_x = self.network.evaluate(point, context, layers)
        x = y - g_x
        if not x.requires_grad:
            return x.detach()
        tolerance = self.tolerance or (1e-13 if y.dtype == torch.float64 else 1e-6)

        def adjoint(grad: Tensor) -> Tensor:
            # u = grad - J^T u: the gradient times (I + J)^{-1}, by the same contraction.
            u = grad
            for _ in range(self.max_iterations):
                update = grad - _vjp(g_x, point, u)
                change = (update - u).abs().max() / (1.0 + update.abs().max())
                u = update
                if float(change) <= tolerance:
                    break
            return u

        x.register_hook(adjoint)
        return x
