r"""Marginal tail-adaptive flows (mTAF): a base whose marginals carry the data's tails.

A spline flow whose splines are the identity outside :math:`[-B, B]` maps every
coordinate's far tail onto itself: beyond :math:`B`, :math:`z_j = x_j` exactly,
whatever the other coordinates are (a coupling or autoregressive conditioner only
moves the knots inside the bounds), and per-feature affine layers (ActNorm,
batch normalisation) only rescale it. So the tail of data marginal :math:`j` is the
tail of base marginal :math:`j`, and a Gaussian base cannot give heavy marginal
tails (Jaini et al. 2020). mTAF gives each heavy-tailed marginal a Student-t base
marginal whose degrees of freedom are the data's estimated tail index, and each
light one a Gaussian; layers that mix features (an LU linear layer) would mix
heavy with light tails and are refused.

References:
    Laszkiewicz, Lederer & Fischer (2022), Marginal Tail-Adaptive Normalizing Flows;
    Jaini et al. (2020), Tails of Lipschitz Triangular Flows;
    Durkan et al. (2019), Neural Spline Flows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pushforward.distributions.base import Distribution
from pushforward.metrics.tails import estimate_tails
from pushforward.options import choice

TAILS = ("gaussian", "adaptive")
"""Values of the ``tails`` option of ``nsf`` and ``nsf-ar``."""


class MarginalTailBase(Distribution):
    r"""Independent marginals :math:`z_i = \sigma_i t_i`: Student-t (fixed :math:`\nu_i`) or normal.

    .. math::
        \log p(z) = \sum_{i:\,\nu_i < \infty} \Big[\log\Gamma\big(\tfrac{\nu_i+1}{2}\big)
            - \log\Gamma\big(\tfrac{\nu_i}{2}\big) - \tfrac12 \log(\nu_i \pi)
            - \tfrac{\nu_i+1}{2} \log\big(1 + u_i^2/\nu_i\big)\Big]
            + \sum_{i:\,\nu_i = \infty} \Big[-\tfrac12 u_i^2 - \tfrac12 \log 2\pi\Big]
            - \sum_i \log \sigma_i, \qquad u_i = z_i / \sigma_i

    :math:`\nu_i = \infty` (the Student-t's limit) is a Gaussian marginal. The
    degrees of freedom are a buffer, not a parameter (mTAF keeps them fixed), so
    they are saved with the weights; the buffer holds :math:`1/\nu_i`, which is 0
    for a Gaussian marginal and so stays finite, as saved weights must. Given at
    construction they are fixed there; otherwise the base awaits data:
    :meth:`~pushforward.model.Model.initialize` turns on
    :meth:`initialize_on_next_forward`, and the next :meth:`log_prob` sets them
    from what it sees, the batch mapped to the base, by
    :func:`~pushforward.metrics.tails.estimate_tails` (Hill's estimator and a test
    against a Gaussian marginal). Its tails beyond the spline bounds are the
    data's, in the model's units. Until then every marginal is Gaussian.

    The scales :math:`\sigma_i` are learnable (mTAF's base is standard): the splines
    map :math:`[-B, B]` onto itself and are the identity outside, so the mass the
    model puts beyond :math:`B` is the base's, and only a scale lets it match the
    data's (a standard :math:`t_2` puts 4% of its mass beyond 5, a standardised
    sample of it a tenth of that). They do not change the tail indices. The
    initialisation starts each heavy :math:`\sigma_i` where the tail matches the
    data's at the estimate's threshold (:func:`student_t_tail_scale`), light ones at 1.

    A Run initialises such a model from its whole training split
    (``initializes_from_training_set``), since a batch of 512 rows gives the Hill
    estimator only 23 order statistics.

    References:
        Laszkiewicz, Lederer & Fischer (2022), Marginal Tail-Adaptive Normalizing Flows.

    Args:
        event_shape: ``(features,)``.
        df: the degrees of freedom of every marginal, ``None`` (or ``inf``) for a
            Gaussian one; ``None`` to estimate them from data.
        confidence: the heavy-tail test's threshold in standard deviations (see
            :func:`~pushforward.metrics.tails.estimate_tails`).
        min_df: the smallest estimated degrees of freedom.
    """

    initializes_from_training_set = True
    inverse_df: Tensor
    initialized: Tensor

    def __init__(
        self,
        event_shape: tuple[int, ...],
        df: Sequence[float | None] | None = None,
        confidence: float = 3.0,
        min_df: float = 0.5,
    ) -> None:
        super().__init__(event_shape)
        if len(self.event_shape) != 1:
            raise ValueError(f"a tail-adaptive base models vectors, got shape {self.event_shape}")
        self.confidence = float(confidence)
        self.min_df = float(min_df)
        values = (
            [math.inf] * self.event_shape[0] if df is None else tail_degrees(df, event_shape[0])
        )
        self.register_buffer("inverse_df", 1.0 / torch.tensor(values))
        self.register_buffer("initialized", torch.tensor(df is not None))
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))
        self._initialize_on_next_forward = False

    @property
    def dtype(self) -> torch.dtype:
        return self.log_scale.dtype

    @property
    def device(self) -> torch.device:
        return self.log_scale.device

    @property
    def df(self) -> Tensor:
        """``(features,)``: the degrees of freedom, ``inf`` for a Gaussian marginal."""
        return 1.0 / self.inverse_df

    @property
    def heavy(self) -> Tensor:
        """``(features,)`` bool: the Student-t marginals."""
        return self.inverse_df > 0

    # -- data-dependent initialisation, as ActNorm's -----------------------------

    @property
    def awaits_data(self) -> bool:
        """Whether the degrees of freedom are still to be estimated."""
        return not bool(self.initialized)

    def initialize_on_next_forward(self, on: bool = True) -> None:
        """With ``on``, the next :meth:`log_prob` first calls :meth:`initialize` on its input."""
        self._initialize_on_next_forward = bool(on)

    @torch.no_grad()
    def initialize(self, z: Tensor) -> None:
        """Sets degrees of freedom and scales from the marginal tails of ``z: (n, features)``."""
        estimate = estimate_tails(
            z.detach().reshape(z.shape[0], -1), confidence=self.confidence, min_df=self.min_df
        )
        df = estimate.df.to(self.inverse_df)
        self.inverse_df.copy_(1.0 / df)
        fraction = estimate.order_statistics / estimate.samples
        safe = torch.where(estimate.heavy, df, torch.ones_like(df))
        scale = student_t_tail_scale(safe, estimate.tail_start.to(df), fraction)
        self.log_scale.copy_(torch.where(estimate.heavy, scale.log(), torch.zeros_like(df)))
        self.initialized.fill_(True)
        self._initialize_on_next_forward = False

    # -- the density -------------------------------------------------------------

    def log_prob(self, z: Tensor) -> Tensor:
        """Log-density of each event: ``z: (batch, features) -> (batch,)``."""
        if self._initialize_on_next_forward:
            self.initialize(z)
        heavy = self.heavy
        # Gaussian marginals evaluate the discarded Student-t branch at df = 1, finite.
        df = torch.where(heavy, self.df, torch.ones_like(self.inverse_df))
        u = z * torch.exp(-self.log_scale)
        half = 0.5 * (df + 1)
        normaliser = torch.lgamma(half) - torch.lgamma(0.5 * df) - 0.5 * torch.log(df * math.pi)
        student = normaliser - half * torch.log1p(u.square() / df)
        normal = -0.5 * u.square() - 0.5 * math.log(2 * math.pi)
        per_element = torch.where(heavy, student, normal) - self.log_scale
        return per_element.reshape(z.shape[0], -1).sum(dim=1)

    def rsample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""``(n, features)`` samples: :math:`z_i = \sigma_i \varepsilon_i / \sqrt{c_i/\nu_i}`.

        On heavy marginals, with :math:`\varepsilon \sim \mathcal N(0, I)` and
        :math:`c_i \sim \chi^2_{\nu_i}`; Gaussian marginals are :math:`\sigma_i
        \varepsilon_i`. torch's gamma sampler takes no generator, so ``generator``
        must be ``None`` once a marginal is heavy.
        """
        shape = (n, *self.event_shape)
        normal = torch.randn(shape, dtype=self.dtype, device=self.device, generator=generator)
        heavy = self.heavy
        scale = torch.exp(self.log_scale)
        if not bool(heavy.any()):
            return normal * scale
        self._no_generator(generator)
        df = torch.where(heavy, self.df, torch.ones_like(self.inverse_df)).expand(shape)
        concentration = 0.5 * df
        gamma = torch.distributions.Gamma(
            concentration, torch.ones_like(concentration), validate_args=False
        ).sample()
        # The sampler clamps its draws to the smallest normal number: rsqrt stays finite.
        return scale * torch.where(heavy, normal * torch.rsqrt(2.0 * gamma / df), normal)

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, df={self.df.tolist()}"


def student_t_tail_scale(df: Tensor, tail_start: Tensor, fraction: float) -> Tensor:
    r"""The :math:`\sigma` with which :math:`\sigma T_\nu` has ``fraction`` beyond ``tail_start``.

    By the Pareto approximation of the Student-t's tail: its density is
    :math:`c_\nu |t|^{-(\nu+1)} (1 + O(t^{-2}))` with
    :math:`c_\nu = \Gamma(\frac{\nu+1}2)\, \nu^{(\nu+1)/2} / (\sqrt{\nu\pi}\, \Gamma(\frac\nu2))`,
    so :math:`P(|\sigma T_\nu| > u) \approx 2 c_\nu (u/\sigma)^{-\nu} / \nu = p` gives

    .. math:: \sigma = u \,\big(2 c_\nu / (\nu p)\big)^{-1/\nu}.

    Args:
        df: ``(features,)`` degrees of freedom :math:`\nu`.
        tail_start: ``(features,)`` the deviation :math:`u`.
        fraction: the mass :math:`p` beyond it.
    """
    log_c = (
        torch.lgamma(0.5 * (df + 1))
        - torch.lgamma(0.5 * df)
        - 0.5 * torch.log(df * math.pi)
        + 0.5 * (df + 1) * torch.log(df)
    )
    log_ratio = math.log(2.0 / fraction) + log_c - torch.log(df)
    return tail_start * torch.exp(-log_ratio / df)


def tail_degrees(value: object, features: int) -> list[float]:
    """The ``tail_df`` option: one positive number or ``None`` (Gaussian) per feature."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != features:
        raise ValueError(
            f"option 'tail_df' must list one value per feature ({features}): the degrees of "
            f"freedom of a Student-t marginal, or None for a Gaussian one; got {value!r}"
        )
    degrees = []
    for entry in value:
        if entry is None:
            degrees.append(math.inf)
        elif isinstance(entry, bool) or not isinstance(entry, int | float) or not entry > 0:
            raise ValueError(
                f"option 'tail_df' takes positive numbers or None (Gaussian), got {entry!r}"
            )
        else:
            degrees.append(float(entry))
    return degrees


def tail_adaptive_base(
    tails: object,
    tail_df: object,
    features: int,
    base: str,
    linear: str = "none",
) -> MarginalTailBase | None:
    """The base the ``tails`` and ``tail_df`` options of a spline flow ask for, or ``None``.

    ``None`` for ``tails="gaussian"`` (the flow keeps its ``base``). With
    ``tails="adaptive"`` the base is a :class:`MarginalTailBase`, fixed from
    ``tail_df`` or estimated from data.

    Raises:
        ValueError: an unknown ``tails``; ``tail_df`` without adaptive tails; adaptive
            tails with another ``base`` or with ``linear="lu"`` (it mixes heavy with
            light marginals), each naming both options.
    """
    tails = choice("tails", tails, TAILS)
    if tails == "gaussian":
        if tail_df is not None:
            raise ValueError(
                "option 'tail_df' gives the degrees of freedom of tails='adaptive'; "
                "it does not apply to tails='gaussian'"
            )
        return None
    if base != "normal":
        raise ValueError(
            f"option tails='adaptive' makes the base itself (Student-t and normal marginals); "
            f"it cannot be combined with option base={base!r}"
        )
    if linear == "lu":
        raise ValueError(
            "option tails='adaptive' keeps each marginal's tail by never mixing features, "
            "but option linear='lu' mixes them all (heavy with light tails); "
            "use linear='none' with tails='adaptive'"
        )
    degrees = None if tail_df is None else tail_degrees(tail_df, features)
    return MarginalTailBase((features,), degrees)
