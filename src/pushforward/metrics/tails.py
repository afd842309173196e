r"""Marginal tail indices: the Hill estimator and the heavy/light split of a tail-adaptive flow.

A marginal has a (Pareto-type) heavy tail of index :math:`\alpha > 0` when
:math:`P(|X| > t) = t^{-\alpha} L(t)` with :math:`L` slowly varying; a Student-t
with :math:`\nu` degrees of freedom has :math:`\alpha = \nu`, a Gaussian has no
finite index (all its moments exist). Everything here is a pure function of a
sample, used by the marginal tail-adaptive flows (:mod:`pushforward.flows.tails`)
and usable on any model's samples.

References:
    Hill (1975), A Simple General Approach to Inference About the Tail of a Distribution;
    Laszkiewicz, Lederer & Fischer (2022), Marginal Tail-Adaptive Normalizing Flows;
    Jaini et al. (2020), Tails of Lipschitz Triangular Flows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def default_order_statistics(n: int) -> int:
    r"""The :math:`k = \lceil \sqrt n \rceil` upper order statistics the Hill estimator uses.

    Hill's estimate has variance :math:`\gamma^2 / k` and a bias that grows with
    :math:`k / n` (the second-order behaviour of the tail); :math:`k \propto n^{1/2}`
    is the usual compromise, and for Student-t marginals (second-order parameter
    :math:`\rho = -2/\nu`) it keeps the estimate of :math:`\nu \le 5` within about
    10% at :math:`n \ge 20\,000` (a larger :math:`k` biases :math:`\nu = 5` down by
    20% or more, a smaller one doubles the spread).

    Args:
        n: sample size (at least 2).
    """
    if n < 2:
        raise ValueError(f"a tail index needs at least 2 samples, got {n}")
    return min(max(1, math.ceil(math.sqrt(n))), n - 1)


def _order_statistics(x: Tensor, k: int | None) -> tuple[Tensor, int]:
    """The ``k + 1`` largest ``|x - median|`` of every column, descending, and ``k``."""
    if x.ndim == 1:
        x = x.unsqueeze(1)
    if x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"expected floating samples (n, features), got shape {tuple(x.shape)}")
    n = x.shape[0]
    k = default_order_statistics(n) if k is None else int(k)
    if not 1 <= k < n:
        raise ValueError(f"the Hill estimator needs 1 <= k < n, got k={k} for n={n}")
    # Centred at the median, so the estimate is unchanged under x -> a x + b (a != 0).
    # torch's median of an even sample is the lower middle value; the mean of both
    # middle values makes the centre, and so the estimate, symmetric under x -> -x.
    centre = 0.5 * (x.median(dim=0).values - (-x).median(dim=0).values)
    deviations = (x - centre).abs()
    largest = deviations.topk(k + 1, dim=0).values
    # A zero threshold (more than n - k ties at the median) would give log 0.
    return largest.clamp_min(torch.finfo(x.dtype).tiny), k


def hill_estimator(x: Tensor, k: int | None = None) -> Tensor:
    r"""Hill's estimate of the extreme-value index :math:`\gamma = 1/\alpha` of every marginal.

    With :math:`X_{(1)} \ge \dots \ge X_{(n)}` the order statistics of
    :math:`|x - \operatorname{median}(x)|` (both tails pooled),

    .. math:: \hat\gamma_k = \frac1k \sum_{i=1}^k \log X_{(i)} - \log X_{(k+1)}.

    References:
        Hill (1975), A Simple General Approach to Inference About the Tail of a Distribution.

    Args:
        x: ``(n, features)`` samples (or ``(n,)``, one marginal).
        k: upper order statistics used (default :func:`default_order_statistics`).

    Returns:
        ``(features,)``, :math:`\hat\gamma \ge 0`.
    """
    largest, k = _order_statistics(x, k)
    logs = largest.log()
    # The mean of differences is exactly 0 when all k + 1 values are equal.
    return (logs[:k] - logs[k]).mean(dim=0)


def hill_tail_index(x: Tensor, k: int | None = None) -> Tensor:
    r"""Hill's estimate :math:`\hat\alpha = 1/\hat\gamma` of every marginal's tail index.

    For a Student-t marginal :math:`\hat\alpha` estimates the degrees of freedom
    :math:`\nu`; a light tail gives a large (finite) value, see
    :func:`gaussian_hill_index`. Args and shapes as :func:`hill_estimator`;
    returns ``(features,)`` (``inf`` for a constant marginal).
    """
    return 1.0 / hill_estimator(x, k)


def gaussian_hill_index(n: int, k: int | None = None) -> float:
    r"""What Hill's :math:`\hat\alpha` is for a Gaussian marginal of ``n`` samples.

    The Hill estimate of exact Gaussian quantiles: with :math:`q(p) = \sqrt2\,
    \operatorname{erf}^{-1}(p)` the quantile function of :math:`|Z|`,
    :math:`Z \sim \mathcal N(0, 1)`,

    .. math:: \hat\gamma_G = \frac1k \sum_{i=1}^k \log q\big(1 - \tfrac{i}{n+1}\big)
        - \log q\big(1 - \tfrac{k+1}{n+1}\big), \qquad \hat\alpha_G = 1/\hat\gamma_G.

    A Gaussian has no finite tail index, but its Hill estimate is finite and grows
    slowly with :math:`n` (about :math:`2 \log(n/k)`: 6 at :math:`n = 512`, 10 at
    :math:`n = 20\,000`), so a fixed threshold on :math:`\hat\alpha` cannot tell
    light from heavy marginals at every sample size; this reference can.

    Args:
        n: sample size.
        k: order statistics (default :func:`default_order_statistics`).
    """
    k = default_order_statistics(n) if k is None else int(k)
    if not 1 <= k < n:
        raise ValueError(f"the Hill estimator needs 1 <= k < n, got k={k} for n={n}")
    ranks = torch.arange(1, k + 2, dtype=torch.float64)
    quantiles = math.sqrt(2.0) * torch.special.erfinv(1.0 - ranks / (n + 1))
    logs = quantiles.log()
    return float(1.0 / (logs[:k].mean() - logs[k]))


@dataclass(frozen=True)
class TailEstimate:
    r"""Tail indices of every marginal and the heavy/light split a tail-adaptive base follows.

    Attributes:
        tail_index: ``(features,)`` Hill's :math:`\hat\alpha` of every marginal.
        heavy: ``(features,)`` bool, marginals judged heavy-tailed.
        df: ``(features,)`` degrees of freedom of a Student-t base marginal:
            :math:`\hat\alpha` (at least ``min_df``) for heavy marginals, ``inf``
            (a Gaussian) for light ones.
        order_statistics: the ``k`` of the estimate.
        gaussian_index: :func:`gaussian_hill_index` of the sample size.
        threshold: marginals with :math:`\hat\alpha` below it are heavy.
        tail_start: ``(features,)`` :math:`X_{(k+1)}`, the deviation from the centre
            beyond which the estimate looks: a fraction :math:`k/n` of the sample lies
            farther out.
        samples: the sample size ``n``.
    """

    tail_index: Tensor
    heavy: Tensor
    df: Tensor
    order_statistics: int
    gaussian_index: float
    threshold: float
    tail_start: Tensor
    samples: int


def estimate_tails(
    x: Tensor, k: int | None = None, confidence: float = 3.0, min_df: float = 0.5
) -> TailEstimate:
    r"""Tail indices of every marginal, split into heavy (Student-t) and light (Gaussian).

    mTAF (Laszkiewicz et al. 2022) gives each heavy-tailed marginal a Student-t
    base with its estimated tail index as degrees of freedom and each light one a
    Gaussian. The split here is a one-sided test against a Gaussian marginal of the
    same size: Hill's :math:`\hat\gamma` is asymptotically normal with standard
    deviation :math:`\gamma/\sqrt k`, so a marginal is heavy when

    .. math:: \hat\gamma > \hat\gamma_G \,(1 + c / \sqrt k),

    with :math:`\hat\gamma_G = 1/\hat\alpha_G` from :func:`gaussian_hill_index` and
    :math:`c` = ``confidence`` (3: a Gaussian marginal is called heavy about once
    in a thousand). Tails that are lighter than a Gaussian's, or heavy with a large
    index (:math:`\nu \gtrsim 15` at :math:`n = 20\,000`), count as light: a Gaussian
    base marginal serves them about as well. A fixed threshold on
    :math:`\hat\alpha` would not do (see :func:`gaussian_hill_index`).

    References:
        Laszkiewicz, Lederer & Fischer (2022), Marginal Tail-Adaptive Normalizing Flows;
        Hill (1975), A Simple General Approach to Inference About the Tail of a Distribution.

    Args:
        x: ``(n, features)`` samples (or ``(n,)``).
        k: upper order statistics (default :func:`default_order_statistics`).
        confidence: the test's :math:`c`, in standard deviations.
        min_df: smallest degrees of freedom given to a heavy marginal (keeps samples finite).

    Returns:
        A :class:`TailEstimate`.
    """
    if not confidence >= 0:
        raise ValueError(f"confidence must be >= 0, got {confidence}")
    if not min_df > 0:
        raise ValueError(f"min_df must be positive, got {min_df}")
    n = x.shape[0]
    k = default_order_statistics(n) if k is None else int(k)
    largest, k = _order_statistics(x, k)
    logs = largest.log()
    gamma = (logs[:k] - logs[k]).mean(dim=0)
    gaussian_index = gaussian_hill_index(n, k)
    threshold = gaussian_index / (1.0 + confidence / math.sqrt(k))
    tail_index = 1.0 / gamma
    heavy = tail_index < threshold
    df = torch.where(heavy, tail_index.clamp_min(min_df), torch.full_like(tail_index, math.inf))
    return TailEstimate(tail_index, heavy, df, k, gaussian_index, threshold, largest[k], n)
