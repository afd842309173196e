r"""Energy-based normalizing flows trained by score matching (EBFlow).

A flow of full linear layers :math:`W_l` and non-linear layers :math:`g_i` has the
log-density

.. math:: \log p(x) = \log p_Z(f(x)) + \sum_i \log|\det J_{g_i}(x)|
          + \sum_l \log|\det W_l|

whose last sum does not depend on :math:`x`. The rest,
:math:`-E(x) = \log p_Z(f(x)) + \sum_i \log|\det J_{g_i}(x)|`, is an unnormalised
log-density with normaliser :math:`Z = \prod_l |\det W_l|^{-1}`. Score-matching
objectives need only :math:`\nabla_x E` and its derivatives, so training never
computes the :math:`O(D^3)` determinants of the weights; the exact likelihood
adds them back at evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

from pushforward.distributions import make_base
from pushforward.distributions.base import Distribution
from pushforward.flows.flow import Flow
from pushforward.flows.score_matching import Objective, make_objective
from pushforward.inference import NoOptions
from pushforward.options import choice, hidden_widths, positive_float, positive_int, sizes
from pushforward.registry import register
from pushforward.transforms.base import Compose, Transform
from pushforward.transforms.energy import FullLinear, SmoothLeakyReLU

# A uniform base has a box for support, where a score is not defined at the edges.
ENERGY_BASES = ("normal", "diag-normal", "student-t")


class EnergyFlow(Flow):
    r"""A normalizing flow seen as an energy-based model and trained by ``objective``.

    .. math:: \log p(x) = \underbrace{\log p_Z(f(x))
              + \textstyle\sum_i \log|\det J_{g_i}(x)|}_{-E(x)}
              \; - \; \log Z, \qquad \log Z = -\textstyle\sum_l \log|\det W_l|

    The linear layers are the :class:`~pushforward.transforms.energy.FullLinear`
    layers of ``transform`` (a :class:`~pushforward.transforms.base.Compose`); every
    other layer's log-determinant is part of the energy. ``loss`` is the
    score-matching objective of :math:`-E` on the preprocessed batch (no
    determinant of a weight is computed, nor differentiated); matching the score
    after the model's preprocessing is the paper's "match after preprocessing", and
    the moving average of the weights it recommends is the training engine's EMA.
    ``log_prob`` is the exact, normalised density (it adds :math:`-\log Z`);
    sampling runs the inverse. With ``objective="ml"`` the same flow trains by
    maximum likelihood (through every ``slogdet``), the comparison the paper draws.

    A context shifts the linear layers (see ``FullLinear``); their Jacobians, so
    :math:`Z`, do not depend on it, and score matching in :math:`x` given the
    context is the conditional objective.

    References:
        Chao et al. (2023), Training Energy-Based Normalizing Flow with
        Score-Matching Objectives (NeurIPS).

    Args:
        transform: the layers, data to base, as one ``Compose``.
        base: the base distribution.
        objective: the training objective
            (:func:`~pushforward.flows.score_matching.make_objective`).
        context_features: size of the context vector (0 for unconditional).
    """

    def __init__(
        self,
        transform: Compose,
        base: Distribution,
        objective: Objective,
        context_features: int = 0,
    ) -> None:
        if not isinstance(transform, Compose):
            raise TypeError(
                f"an energy-based flow's layers come as one Compose, got {type(transform).__name__}"
            )
        super().__init__(transform, base, context_features)
        self.objective = objective

    # -- the energy and the normaliser, in the model's units ------------------------------

    def layers(self) -> list[Transform]:
        """The layers of the flow, data to base."""
        return [cast(Transform, layer) for layer in cast(Compose, self.transform).transforms]

    def _unnormalized_log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        """:math:`-E(x)`: the base's log-density and the non-linear layers' log-determinants."""
        total = x.new_zeros(x.shape[0])
        for layer in self.layers():
            if isinstance(layer, FullLinear):
                x = layer.affine(x, context)
            else:
                x, logabsdet = layer(x, context)
                total = total + logabsdet
        return self.base.log_prob(x) + total

    def log_normalizer(self) -> Tensor:
        r""":math:`\log Z = -\sum_l \log|\det W_l|`, a scalar (``slogdet`` of each weight)."""
        terms = [layer.logabsdet() for layer in self.layers() if isinstance(layer, FullLinear)]
        if terms:
            return -torch.stack(terms).sum()
        reference = self._reference()
        if reference is None:
            return torch.zeros(())
        return reference.new_zeros(())

    def _loss(self, x: Tensor, context: Tensor | None, prepared: object = None) -> Tensor:
        if self.objective.normalized:
            return self.objective(self._normalized, x, context)
        return self.objective(self._unnormalized_log_prob, x, context)

    def _normalized(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self._log_prob(x, context, NoOptions())

    # -- the energy in the data's units ---------------------------------------------------

    def unnormalized_log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        r""":math:`-E(x) = \log p(x) + \log Z` of ``x: (batch, D)``, data's units: ``(batch,)``.

        Costs no determinant of a weight; the preprocessing's log-determinant (a
        constant of :math:`x`) is included, so ``log_prob(x) == unnormalized_log_prob(x)
        - log_normalizer()``.
        """
        x = self.check_input(x)
        context = self.check_context(context, x.shape[0])
        z, logabsdet = self.preprocessing.encode(x)
        log_p = self._unnormalized_log_prob(z, self.encode_context(context))
        return log_p if logabsdet is None else log_p + logabsdet

    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """:math:`E(x)`, the negative of :meth:`unnormalized_log_prob`: ``(batch,)``."""
        return -self.unnormalized_log_prob(x, context)


def energy_layers(
    features: int,
    context: int,
    transforms: int,
    hidden: Sequence[int],
    slope: float,
) -> Compose:
    """``transforms`` blocks of (full linear, smooth leaky ReLU) and a last full linear layer.

    The weights start at the identity and the slopes at ``slope``.
    """
    layers: list[Transform] = []
    for _ in range(transforms):
        layers.append(FullLinear(features, context, hidden))
        layers.append(SmoothLeakyReLU(features, slope))
    layers.append(FullLinear(features, context, hidden))
    return Compose(layers)


@register("ebflow")
def ebflow(
    features: int,
    context: int = 0,
    transforms: int = 4,
    hidden: Sequence[int] = (64,),
    base: str = "normal",
    objective: str = "ssm",
    sigma: float = 0.1,
    projections: int = 1,
    difference_step: float = 0.1,
    slope: float = 1.0,
) -> EnergyFlow:
    r"""Energy-based normalizing flow: full linear layers and smooth leaky ReLUs, by score matching.

    The layers, data to base, are ``transforms`` blocks of an unconstrained linear map
    :math:`x \mapsto W x + b` and an element-wise smooth leaky ReLU with learnable
    slopes, and a last linear map (``transforms=0``: a Gaussian model). Trained by
    sliced score matching (``"ssm"``), denoising score matching (``"dsm"``, which fits
    the data convolved with :math:`\mathcal N(0, \sigma^2 I)`), finite-difference
    sliced score matching (``"fdssm"``), or, for comparison, maximum likelihood
    (``"ml"``); all on standardised data when a run standardises it, so ``sigma`` and
    ``difference_step`` are in standard deviations. See :class:`EnergyFlow`.

    References:
        Chao et al. (2023), Training Energy-Based Normalizing Flow with
        Score-Matching Objectives; Song et al. (2019), Sliced Score Matching;
        Vincent (2011), A Connection Between Score Matching and Denoising
        Autoencoders; Pang et al. (2020), Efficient Learning of Generative Models
        via Finite-Difference Score Matching.

    Args:
        features: event size ``D``.
        context: context size (0 for unconditional); the context shifts every
            linear layer through an MLP.
        transforms: number of (linear, smooth leaky ReLU) blocks.
        hidden: hidden widths of the context's shift networks (unused without a context).
        base: ``"normal"``, ``"diag-normal"`` or ``"student-t"``.
        objective: ``"ssm"``, ``"dsm"``, ``"fdssm"`` or ``"ml"``.
        sigma: the noise scale of ``"dsm"``.
        projections: random directions per data row of ``"ssm"`` and ``"fdssm"``.
        difference_step: the finite-difference step of ``"fdssm"``.
        slope: the starting slope of every smooth leaky ReLU (1: the flow starts as
            its base).
    """
    features, context = sizes(features, context)
    transforms = positive_int("transforms", transforms, minimum=0)
    hidden = hidden_widths(hidden)
    base = choice("base", base, ENERGY_BASES)
    slope = positive_float("slope", slope)
    training = make_objective(objective, sigma, projections, difference_step)
    layers = energy_layers(features, context, transforms, hidden, slope)
    return EnergyFlow(layers, make_base(base, (features,)), training, context)
