r"""Score-matching objectives of an unnormalised log-density, and the objectives as objects.

Each objective needs only the gradient in :math:`x` of an unnormalised
log-density :math:`\log \tilde p(x) = -E(x)` (and its derivatives), never its
normaliser. The pure functions take ``log_density(points, context) -> (rows,)``;
they call it on rows that tile the batch (the batch stacked several times, the
context tiled the same way) and return the mean over rows, a scalar that carries
gradients to the parameters. Random directions and noise come from torch's
global generator, as every training loss's do.

The objectives as small frozen dataclasses (:class:`SlicedScoreMatching`,
:class:`DenoisingScoreMatching`, :class:`FiniteDifferenceSlicedScoreMatching`,
:class:`MaximumLikelihood`) hold their options and say whether they need the
normalised density (``normalized``); :func:`make_objective` builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from pushforward.options import choice, positive_float, positive_int

LogDensity = Callable[[Tensor, Tensor | None], Tensor]
"""``(points: (rows, D), context: (rows, C) or None) -> (rows,)``."""


def _tile(values: Tensor, times: int) -> Tensor:
    """``values`` stacked ``times`` times along the batch (block ``k``'s row ``i`` is row ``i``)."""
    return values if times == 1 else values.repeat(times, *([1] * (values.dim() - 1)))


def _tile_context(context: Tensor | None, times: int) -> Tensor | None:
    return None if context is None else _tile(context, times)


def _row_sum(values: Tensor) -> Tensor:
    return values.reshape(values.shape[0], -1).sum(dim=1)


def sliced_score_matching(
    log_density: LogDensity, x: Tensor, context: Tensor | None = None, projections: int = 1
) -> Tensor:
    r"""Sliced score matching with variance reduction (SSM-VR).

    With the model's score :math:`s(x) = \nabla_x \log \tilde p(x)` and random
    directions :math:`v \sim \mathcal N(0, I)`,

    .. math:: J(\theta) = \mathbb E_{x}\, \mathbb E_{v}
              \big[ v^\top \nabla_x s(x)\, v + \tfrac12 \lVert s(x) \rVert^2 \big]

    an unbiased estimate of Hyvärinen's objective
    :math:`\mathbb E_x[\operatorname{tr} \nabla_x s(x) + \tfrac12 \lVert s(x)\rVert^2]`
    (since :math:`\mathbb E[v v^\top] = I`) at the cost of two backward passes
    instead of ``D``. Each row is scored with ``projections`` directions.

    References:
        Song et al. (2019), Sliced Score Matching: A Scalable Approach to Density
        and Score Estimation; Hyvärinen (2005), Estimation of Non-Normalized
        Statistical Models by Score Matching.

    Args:
        log_density: the unnormalised log-density, ``(points, context) -> (rows,)``.
        x: ``(batch, D)`` data.
        context: ``(batch, C)`` or ``None``.
        projections: directions per row.

    Returns:
        The scalar estimate.
    """
    with torch.enable_grad():
        points = _tile(x.detach(), projections).requires_grad_(True)
        directions = torch.randn_like(points)
        log_p = log_density(points, _tile_context(context, projections))
        (score,) = torch.autograd.grad(log_p.sum(), points, create_graph=True)
        (hessian_direction,) = torch.autograd.grad(
            (score * directions).sum(), points, create_graph=True
        )
        trace = _row_sum(hessian_direction * directions)
        return (trace + 0.5 * _row_sum(score.square())).mean()


def denoising_score_matching(
    log_density: LogDensity, x: Tensor, context: Tensor | None = None, sigma: float = 0.1
) -> Tensor:
    r"""Denoising score matching with Gaussian noise of scale :math:`\sigma`.

    With :math:`\tilde x = x + \sigma \epsilon`, :math:`\epsilon \sim \mathcal N(0, I)`,
    the model's score is regressed on the score of the noise kernel,
    :math:`\nabla_{\tilde x} \log q_\sigma(\tilde x \mid x) = -\epsilon / \sigma`:

    .. math:: J(\theta) = \mathbb E_{x, \epsilon}
              \tfrac12 \big\lVert s(\tilde x) + \epsilon / \sigma \big\rVert^2

    Its minimiser is the score of the noisy data :math:`p * \mathcal N(0, \sigma^2 I)`,
    not of the data (for Gaussian data of covariance :math:`\Sigma`, a Gaussian of
    covariance :math:`\Sigma + \sigma^2 I`); one backward pass.

    References:
        Vincent (2011), A Connection Between Score Matching and Denoising Autoencoders.

    Args:
        log_density: the unnormalised log-density, ``(points, context) -> (rows,)``.
        x: ``(batch, D)`` data.
        context: ``(batch, C)`` or ``None``.
        sigma: the noise scale, in the units ``x`` is given in.
    """
    noise = torch.randn_like(x)
    with torch.enable_grad():
        noisy = (x.detach() + sigma * noise).requires_grad_(True)
        (score,) = torch.autograd.grad(log_density(noisy, context).sum(), noisy, create_graph=True)
        return 0.5 * _row_sum((score + noise / sigma).square()).mean()


def finite_difference_sliced_score_matching(
    log_density: LogDensity,
    x: Tensor,
    context: Tensor | None = None,
    projections: int = 1,
    step: float = 0.1,
) -> Tensor:
    r"""Sliced score matching with its directional derivatives taken by finite differences.

    With :math:`\ell(x) = \log \tilde p(x)`, :math:`v \sim \mathcal N(0, I)` and a step
    :math:`h`, the central differences

    .. math:: v^\top \nabla_x s(x)\, v \approx \frac{\ell(x + hv) + \ell(x - hv) - 2\ell(x)}{h^2},
              \qquad v^\top s(x) \approx \frac{\ell(x + hv) - \ell(x - hv)}{2h}

    enter the sliced objective
    :math:`\mathbb E\,[v^\top \nabla_x s\, v + \tfrac12 (v^\top s)^2]`, whose
    expectation is Hyvärinen's objective up to :math:`O(h^2)`. Three evaluations of
    the log-density a direction and one backward pass to the parameters; no
    gradient in :math:`x` at all. Pang et al. draw the directions on a sphere; the
    Gaussian directions here give the same expectation.

    References:
        Pang et al. (2020), Efficient Learning of Generative Models via
        Finite-Difference Score Matching.

    Args:
        log_density: the unnormalised log-density, ``(points, context) -> (rows,)``.
        x: ``(batch, D)`` data.
        context: ``(batch, C)`` or ``None``.
        projections: directions per row.
        step: :math:`h`, in the units ``x`` is given in.
    """
    points = _tile(x.detach(), projections)
    offsets = step * torch.randn_like(points)
    stacked = torch.cat([points + offsets, points - offsets, points])
    rows = points.shape[0]
    log_p = log_density(stacked, _tile_context(context, 3 * projections))
    forward, backward, centre = log_p[:rows], log_p[rows : 2 * rows], log_p[2 * rows :]
    second = (forward + backward - 2 * centre) / step**2
    first = (forward - backward) / (2 * step)
    return (second + 0.5 * first.square()).mean()


# -- the objectives as objects -------------------------------------------------------


@dataclass(frozen=True)
class SlicedScoreMatching:
    """:func:`sliced_score_matching` with its number of directions."""

    projections: int = 1
    normalized: ClassVar[bool] = False

    def __call__(self, log_density: LogDensity, x: Tensor, context: Tensor | None) -> Tensor:
        return sliced_score_matching(log_density, x, context, self.projections)


@dataclass(frozen=True)
class DenoisingScoreMatching:
    """:func:`denoising_score_matching` with its noise scale."""

    sigma: float = 0.1
    normalized: ClassVar[bool] = False

    def __call__(self, log_density: LogDensity, x: Tensor, context: Tensor | None) -> Tensor:
        return denoising_score_matching(log_density, x, context, self.sigma)


@dataclass(frozen=True)
class FiniteDifferenceSlicedScoreMatching:
    """:func:`finite_difference_sliced_score_matching` with its directions and step."""

    projections: int = 1
    step: float = 0.1
    normalized: ClassVar[bool] = False

    def __call__(self, log_density: LogDensity, x: Tensor, context: Tensor | None) -> Tensor:
        return finite_difference_sliced_score_matching(
            log_density, x, context, self.projections, self.step
        )


@dataclass(frozen=True)
class MaximumLikelihood:
    r"""The mean negative log-likelihood :math:`-\mathbb E_x \log p(x)`; needs the normaliser."""

    normalized: ClassVar[bool] = True

    def __call__(self, log_density: LogDensity, x: Tensor, context: Tensor | None) -> Tensor:
        return -log_density(x, context).mean()


Objective = (
    SlicedScoreMatching
    | DenoisingScoreMatching
    | FiniteDifferenceSlicedScoreMatching
    | MaximumLikelihood
)

OBJECTIVES: tuple[str, ...] = ("ssm", "dsm", "fdssm", "ml")
"""The names :func:`make_objective` accepts."""


def make_objective(
    name: str, sigma: float = 0.1, projections: int = 1, difference_step: float = 0.1
) -> Objective:
    """The objective called ``name`` with its options checked; unknown names list the valid ones.

    Args:
        name: ``"ssm"`` (sliced), ``"dsm"`` (denoising), ``"fdssm"`` (finite-difference
            sliced) or ``"ml"`` (maximum likelihood).
        sigma: the noise scale of ``"dsm"``.
        projections: directions per row of ``"ssm"`` and ``"fdssm"``.
        difference_step: the finite-difference step of ``"fdssm"``.
    """
    name = choice("objective", name, OBJECTIVES)
    sigma = positive_float("sigma", sigma)
    projections = positive_int("projections", projections)
    step = positive_float("difference_step", difference_step)
    if name == "ssm":
        return SlicedScoreMatching(projections)
    if name == "dsm":
        return DenoisingScoreMatching(sigma)
    if name == "fdssm":
        return FiniteDifferenceSlicedScoreMatching(projections, step)
    return MaximumLikelihood()
