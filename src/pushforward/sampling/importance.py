"""Importance weights of a flow against a target: log Z, its bounds, and effective sample sizes.

With samples :math:`x_i \\sim q` and :math:`\\log w_i = \\log \\tilde p(x_i) - \\log q(x_i)`,
:math:`\\hat Z = \\frac1n \\sum_i w_i` is unbiased for :math:`Z`, and

.. math:: \\mathrm{ELBO} = \\mathbb{E}_q[\\log w] \\le \\log Z \\le
          \\mathbb{E}_p[\\log w] = \\mathrm{EUBO}

(Jensen both ways; the upper bound needs exact target samples). Everything is computed in
log space with log-sum-exp. A log-weight of ``-inf`` (a sample outside the target's
support) is a zero weight and is kept; NaN and ``+inf`` (a sample the flow gives zero
density) are masked and counted, never averaged in.

References:
    Owen (2013), Monte Carlo Theory, Methods and Examples, ch. 9 (importance sampling, the
    delta-method standard error); Kish (1965), Survey Sampling (effective sample size);
    Midgley et al. (2023), Flow Annealed Importance Sampling Bootstrap (forward ESS).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import Tensor

from pushforward.model import Model
from pushforward.sampling.target import Target, checked_log_prob


@dataclass(frozen=True)
class LogWeights:
    """Log importance weights with the masked ones counted.

    Attributes:
        values: ``(m,)`` float64, the kept log-weights (finite or ``-inf``).
        masked: how many were NaN or ``+inf`` and left out.
        zero: how many of ``values`` are ``-inf`` (zero weights).
    """

    values: Tensor
    masked: int
    zero: int

    @classmethod
    def of(cls, log_weights: Tensor) -> LogWeights:
        flat = log_weights.detach().reshape(-1).to(torch.float64)
        bad = torch.isnan(flat) | (flat == math.inf)
        kept = flat[~bad]
        return cls(kept, int(bad.sum()), int((kept == -math.inf).sum()))

    @property
    def n(self) -> int:
        return int(self.values.numel())


def log_mean_exp(values: Tensor) -> float:
    """:math:`\\log \\frac1n \\sum_i e^{v_i}` by log-sum-exp (``-inf`` when every value is)."""
    return float(torch.logsumexp(values, dim=0)) - math.log(values.numel())


def log_z_estimate(log_weights: Tensor) -> tuple[float, float]:
    r"""The importance-sampling estimate of :math:`\log Z` and its standard error.

    .. math:: \log \hat Z = \log \frac1n \sum_i w_i, \qquad
              \mathrm{se} = \sqrt{\frac{n / \mathrm{ESS} - 1}{n - 1}}

    the delta-method error of the log of a mean (:math:`\mathrm{se}(\hat Z)/\hat Z` with the
    unbiased variance of the weights; ESS is Kish's). NaN/``+inf`` weights are masked.

    Args:
        log_weights: ``(n,)`` natural-log weights :math:`\log \tilde p - \log q` of samples of q.

    Returns:
        ``(log_z, standard_error)``; the error is ``inf`` for fewer than two weights and
        ``nan`` when every weight is zero.
    """
    weights = LogWeights.of(log_weights)
    if weights.n == 0:
        raise ValueError("every log-weight is NaN or +inf: no estimate of log Z")
    return _log_z(weights.values)


def _log_z(values: Tensor) -> tuple[float, float]:
    n = values.numel()
    log_z = log_mean_exp(values)
    if log_z == -math.inf:
        return log_z, math.nan
    if n < 2:
        return log_z, math.inf
    relative = n * math.exp(float(torch.logsumexp(2 * values, 0) - 2 * torch.logsumexp(values, 0)))
    return log_z, math.sqrt(max(relative - 1.0, 0.0) / (n - 1))


def reverse_ess(log_weights: Tensor) -> float:
    r"""Kish's effective sample size of weights of samples of q, as a fraction of n.

    .. math:: \mathrm{ESS}/n = \frac{(\sum_i w_i)^2}{n \sum_i w_i^2} \in [1/n, 1]
    """
    weights = LogWeights.of(log_weights)
    if weights.n == 0 or weights.zero == weights.n:
        return 0.0
    values = weights.values
    log_ess = 2 * torch.logsumexp(values, 0) - torch.logsumexp(2 * values, 0)
    return float(torch.exp(log_ess)) / (weights.n + weights.masked)


def forward_ess(log_weights: Tensor) -> float:
    r"""The effective sample size of q as a proposal, from exact samples of p, as a fraction.

    With :math:`x_i \sim p` and :math:`w = \tilde p / q`,
    :math:`\mathrm{ESS}/n = 1 / \big(\mathbb{E}_p[w]\,\mathbb{E}_p[1/w]\big)` (Midgley et al.
    2023), which needs no :math:`Z` and lies in :math:`(0, 1]`; it sees modes that q misses,
    which the reverse ESS cannot.
    """
    weights = LogWeights.of(log_weights)
    if weights.n == 0:
        return 0.0
    values = weights.values
    if weights.zero:
        return 0.0
    return math.exp(-(log_mean_exp(values) + log_mean_exp(-values)))


@dataclass(frozen=True)
class SamplerEvaluation:
    """How well a flow ``q`` samples a target, from importance weights.

    Attributes:
        log_z: :math:`\\log \\hat Z` from ``n`` samples of q.
        log_z_se: its standard error.
        elbo: :math:`\\mathbb{E}_q[\\log w]`, a lower bound of :math:`\\log Z`.
        ess: the reverse effective sample size, a fraction in :math:`[0, 1]`.
        n: samples of q drawn.
        masked: log-weights that were NaN or ``+inf`` (left out).
        zero_weights: samples outside the target's support (weight zero).
        log_z_true: the target's exact :math:`\\log Z`, where known.
        eubo: :math:`\\mathbb{E}_p[\\log w]` over exact target samples (an upper bound).
        forward_ess: the forward effective sample size (exact target samples).
        nll: :math:`-\\mathbb{E}_p[\\log q]` over those samples.
        forward_log_z: :math:`-\\log \\frac1m \\sum_j 1/w_j` over them (a second estimate).
        samples: exact target samples used (0 without).
        modes, modes_covered, mode_entropy: for a mixture target, its number of modes and
            :func:`mode_coverage` of the same ``n`` samples of q.
    """

    log_z: float
    log_z_se: float
    elbo: float
    ess: float
    n: int
    masked: int
    zero_weights: int
    log_z_true: float | None = None
    eubo: float | None = None
    forward_ess: float | None = None
    nll: float | None = None
    forward_log_z: float | None = None
    samples: int = 0
    modes: int | None = None
    modes_covered: int | None = None
    mode_entropy: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (non-finite floats as strings)."""
        return {k: json_float(v) for k, v in asdict(self).items()}


def json_float(value: Any) -> Any:
    """``value``, or its text when it is a non-finite float (JSON has no inf or NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@torch.no_grad()
def importance_log_weights(
    model: Model, target: Target, n: int, chunk: int = 4096
) -> tuple[Tensor, Tensor]:
    """Samples of ``model`` and their log-weights against ``target``, in chunks, no gradients.

    Returns:
        ``x: (n, features)`` in the model's dtype and ``log_w: (n,)`` in float64.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of samples must be a positive int, got {n!r}")
    points, weights = [], []
    for begin in range(0, n, chunk):
        if getattr(model, "has_path_weights", False):
            # A stochastic flow's exact path weights (it has no density of a point).
            x, log_w = cast(Any, model).sample_and_log_weight(min(chunk, n - begin), target)
            points.append(x)
            weights.append(log_w.to(torch.float64))
            continue
        x, log_q = model.sample_and_log_prob(min(chunk, n - begin))
        log_p = checked_log_prob(target, x)
        points.append(x)
        weights.append(log_p.to(torch.float64) - log_q.to(torch.float64))
    return torch.cat(points), torch.cat(weights)


@torch.no_grad()
def forward_log_weights(model: Model, target: Target, samples: Tensor, chunk: int = 4096) -> Tensor:
    """Log-weights ``log p~(x) - log q(x)`` of exact target samples ``(m, features)``, float64."""
    log_p, log_q = forward_log_densities(model, target, samples, chunk)
    return log_p - log_q


@torch.no_grad()
def forward_log_densities(
    model: Model, target: Target, samples: Tensor, chunk: int = 4096
) -> tuple[Tensor, Tensor]:
    """``(log p~(x), log q(x))`` of exact target samples ``(m, features)``, both float64."""
    reference = model._reference()
    dtype = samples.dtype if reference is None else reference.dtype
    targets, flows = [], []
    for begin in range(0, samples.shape[0], chunk):
        x = samples[begin : begin + chunk].to(dtype)
        flows.append(model.log_prob(x).to(torch.float64))
        targets.append(checked_log_prob(target, x).to(torch.float64))
    return torch.cat(targets), torch.cat(flows)


def evaluate_sampler(
    model: Model,
    target: Target,
    n: int = 20_000,
    samples: Tensor | None = None,
    chunk: int = 4096,
) -> SamplerEvaluation:
    """Importance-sampling diagnostics of ``model`` as a sampler of ``target``.

    Draws ``n`` samples of the flow for :math:`\\log \\hat Z`, its standard error, the ELBO,
    the reverse ESS and, for a mixture target, the modes they cover; given ``samples``
    (exact target samples) it adds the EUBO, the forward ESS, the NLL and a forward
    estimate of :math:`\\log Z`.

    Example:
        >>> import torch, pushforward
        >>> from pushforward.sampling import CallableTarget, evaluate_sampler
        >>> flow = pushforward.build("nsf", features=2, transforms=1, hidden=[8]).double()
        >>> target = CallableTarget(lambda x: -0.5 * (x**2).sum(-1), features=2)
        >>> result = evaluate_sampler(flow, target, n=1000)  # q = N(0, I): all weights equal
        >>> round(result.log_z, 6), round(result.ess, 9)
        (1.837877, 1.0)
    """
    x, log_w = importance_log_weights(model, target, n, chunk)
    weights = LogWeights.of(log_w)
    if weights.n == 0:
        raise ValueError(
            "every log-weight is NaN or +inf: the flow gives its own samples no density"
        )
    log_z, se = _log_z(weights.values)
    elbo = float(weights.values.mean())
    result: dict[str, Any] = {
        "log_z": log_z,
        "log_z_se": se,
        "elbo": elbo,
        "ess": reverse_ess(log_w),
        "n": n,
        "masked": weights.masked,
        "zero_weights": weights.zero,
        "log_z_true": target.log_z,
    }
    if target.modes is not None:
        covered, entropy = mode_coverage(target, x)
        result.update(modes=int(target.modes.shape[0]), modes_covered=covered, mode_entropy=entropy)
    if samples is not None:
        if samples.ndim != 2 or samples.shape[1] != target.features:
            raise ValueError(
                f"target samples have shape {tuple(samples.shape)}; expected (m, {target.features})"
            )
        log_p, log_q = forward_log_densities(model, target, samples, chunk)
        forward = LogWeights.of(log_p - log_q)
        if forward.n == 0:
            raise ValueError("the flow gives every target sample zero density")
        result.update(
            eubo=float(forward.values.mean()),
            forward_ess=forward_ess(forward.values),
            nll=-float(log_q.mean()),
            forward_log_z=-log_mean_exp(-forward.values),
            samples=int(samples.shape[0]),
        )
    return SamplerEvaluation(**result)


def mode_coverage(target: Target, x: Tensor, share: float = 0.2) -> tuple[int, float]:
    r"""How many of a mixture target's modes samples ``x`` cover, and the coverage entropy.

    Each sample is assigned to a mode (``target.mode_of``); a mode is covered when it
    holds at least ``share`` of its equal share :math:`n/K` of the samples. The entropy
    of the assignment frequencies :math:`f_k` is normalised,
    :math:`-\sum_k f_k \log f_k / \log K \in [0, 1]` (1: every mode equally visited).

    Returns:
        ``(modes_covered, normalised_entropy)``.
    """
    modes = target.modes
    if modes is None:
        raise ValueError(f"target {target.name!r} is not a mixture: it has no modes")
    k = modes.shape[0]
    counts = torch.bincount(target.mode_of(x).reshape(-1).cpu(), minlength=k).to(torch.float64)
    n = float(counts.sum())
    covered = int((counts >= share * n / k).sum())
    frequencies = counts[counts > 0] / n
    entropy = float(-(frequencies * frequencies.log()).sum()) / math.log(k) if k > 1 else 1.0
    return covered, entropy
