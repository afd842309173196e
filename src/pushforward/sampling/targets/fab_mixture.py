"""FAB's mixture of 40 Gaussians in 2-D (``gmm-40``)."""

from __future__ import annotations

import math

import torch

from pushforward.options import positive_float, positive_int
from pushforward.sampling.targets.gaussian_mixture import GaussianMixtureTarget


def fab_mixture_means(
    components: int, features: int, loc_scaling: float, seed: int
) -> torch.Tensor:
    r"""FAB's component means, bit for bit, in float64: :math:`\mu = 2 s (u - \tfrac12)`.

    :math:`u` is ``torch.rand((components, features))`` (float32) drawn right after
    ``torch.manual_seed(seed)``, and the arithmetic is done in float32 in FAB's
    order, ``(u - 0.5) * 2 * loc_scaling``; the float32 result is then widened
    exactly to float64. A private generator seeded with ``seed`` draws the same
    numbers as the global one after ``manual_seed``, so the global RNG is left as
    it was.
    """
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand((components, features), generator=generator, dtype=torch.float32)
    return ((uniform - 0.5) * 2 * loc_scaling).to(torch.float64)


class FABGaussianMixture(GaussianMixtureTarget):
    r"""FAB's equal mixture of 40 isotropic Gaussians with random means on :math:`[-40, 40]^2`.

    .. math:: p(x) = \frac1{40} \sum_{k=1}^{40} \mathcal N(x; \mu_k, \sigma^2 I),\quad
              \mu_k = 80 (u_k - \tfrac12),\ u_k \sim U[0, 1]^2,\quad
              \sigma = \operatorname{softplus}(1) = \log(1 + e) \approx 1.3133

    The means are FAB's exactly (``torch.manual_seed(0)`` then
    ``(torch.rand((40, 2)) - 0.5) * 2 * 40``, see :func:`fab_mixture_means`).
    FAB names the scale's pre-activation ``log_var`` (its config sets
    ``log_var_scaling: 1.0``) but uses ``softplus(log_var)`` as the Cholesky factor,
    so :math:`\sigma = \operatorname{softplus}(1)` is a standard deviation (variance
    :math:`\approx 1.7247`); it is computed here in float64. Unlike FAB's
    ``log_prob``, which sets values below -1e4 to :math:`-\infty`, the log-density
    here is finite everywhere.

    References:
        Midgley et al. (2023), Flow Annealed Importance Sampling Bootstrap
        (``fab/target_distributions/gmm.py`` and ``experiments/config/gmm.yaml`` of
        lollcat/fab-torch).

    Args:
        components: the number of Gaussians (40).
        features: the dimension (2).
        loc_scaling: the half width of the square the means are drawn on (40).
        log_var_scaling: the pre-softplus scale (1.0).
        seed: the seed of the means (0).

    Example:
        >>> target = FABGaussianMixture()
        >>> target.modes.shape, round(target.scale, 4)
        (torch.Size([40, 2]), 1.3133)
    """

    def __init__(
        self,
        components: int = 40,
        features: int = 2,
        loc_scaling: float = 40.0,
        log_var_scaling: float = 1.0,
        seed: int = 0,
    ) -> None:
        components = positive_int("components", components)
        features = positive_int("features", features)
        loc_scaling = positive_float("loc_scaling", loc_scaling)
        if isinstance(log_var_scaling, bool) or not isinstance(log_var_scaling, int | float):
            raise ValueError(f"option 'log_var_scaling' must be a number, got {log_var_scaling!r}")
        seed = positive_int("seed", seed, minimum=0)
        # softplus(v) = log(1 + e^v), written so that a large v does not overflow.
        value = float(log_var_scaling)
        scale = max(value, 0.0) + math.log1p(math.exp(-abs(value)))
        name = "gmm-40" if (components, features) == (40, 2) else f"gmm-{components}"
        super().__init__(fab_mixture_means(components, features, loc_scaling, seed), scale, name)
        self.loc_scaling = loc_scaling
        self.log_var_scaling = float(log_var_scaling)
        self.seed = seed
