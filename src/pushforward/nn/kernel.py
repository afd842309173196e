r"""Kernel conditioners: a coupling layer's parameters as a kernel expansion over learned points.

A neural conditioner maps the untransformed half :math:`x_A` of a coupling layer to
the parameters of its element-wise map. A kernel conditioner writes the same function
as a finite expansion over :math:`M` learned inducing points :math:`z_m` (in the space
of :math:`x_A`):

.. math:: f(x_A) = \sum_{m=1}^{M} \alpha_m \, k(x_A, z_m), \qquad
          k(x, z) = \kappa\bigl(r^2\bigr), \quad
          r^2 = \sum_j \frac{(x_j - z_j)^2}{\ell_j^2}

with one coefficient vector :math:`\alpha_m` per inducing point (one entry per output)
and learnable length-scales :math:`\ell_j`, one per input dimension. The profiles
:math:`\kappa` are pure functions of the scaled squared distance (:data:`KERNELS`).
Far from every inducing point the expansion vanishes, so the layer it drives tends to
the identity there. With few inducing points (tens) the conditioner has far fewer
parameters than an MLP, which is what makes kernelised flows strong on little data.

References:
    English, Kirchler & Lippert (2024), Kernelised Normalising Flows (ICLR; the
    "Ferumal flow"); Rasmussen & Williams (2006), Gaussian Processes for Machine
    Learning (the RBF and Matérn kernels).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from pushforward.nn.mlp import LAST_LAYER_INITS

INDUCING_INITS = ("normal", "data")
"""How the inducing points start: standard normal draws, or rows of the first batch."""

_SQRT3 = math.sqrt(3.0)
_SQRT5 = math.sqrt(5.0)


def scaled_squared_distance(x: Tensor, points: Tensor, length_scale: Tensor) -> Tensor:
    r"""The squared distances :math:`r^2_{bm} = \sum_j (x_{bj} - z_{mj})^2 / \ell_j^2`.

    Differences are formed explicitly (not by expanding the square), so a point on an
    inducing point has exactly :math:`r^2 = 0` and no cancellation error.

    Args:
        x: ``(batch, d)``.
        points: ``(M, d)``, the inducing points :math:`z_m`.
        length_scale: ``(d,)``, positive.

    Returns:
        ``(batch, M)``.
    """
    difference = (x.unsqueeze(1) - points.unsqueeze(0)) / length_scale
    return difference.square().sum(dim=-1)


def _distance(squared: Tensor) -> Tensor:
    # sqrt has an infinite derivative at 0: clamped first, so a point on an inducing
    # point back-propagates 0 (the kernel's true gradient there) instead of NaN.
    return squared.clamp_min(torch.finfo(squared.dtype).tiny).sqrt()


def rbf_profile(squared: Tensor) -> Tensor:
    r"""The squared-exponential (RBF) kernel :math:`\kappa(r^2) = \exp(-r^2 / 2)`."""
    return torch.exp(-0.5 * squared)


def matern32_profile(squared: Tensor) -> Tensor:
    r"""The Matérn 3/2 kernel :math:`\kappa(r) = (1 + \sqrt3 r) \exp(-\sqrt3 r)`."""
    r = _SQRT3 * _distance(squared)
    return (1.0 + r) * torch.exp(-r)


def matern52_profile(squared: Tensor) -> Tensor:
    r"""The Matérn 5/2 kernel :math:`\kappa(r) = (1 + \sqrt5 r + \tfrac53 r^2) \exp(-\sqrt5 r)`."""
    r = _SQRT5 * _distance(squared)
    return (1.0 + r + r.square() / 3.0) * torch.exp(-r)


KERNELS: dict[str, Callable[[Tensor], Tensor]] = {
    "rbf": rbf_profile,
    "matern32": matern32_profile,
    "matern52": matern52_profile,
}
"""Stationary kernels by name, each a profile :math:`\\kappa` of the scaled squared distance."""


def check_kernel(name: object) -> str:
    """``name`` if it is a kernel of :data:`KERNELS`, else a ValueError listing them."""
    if name not in KERNELS:
        valid = ", ".join(map(repr, KERNELS))
        raise ValueError(f"unknown kernel {name!r}; valid kernels: {valid}")
    return str(name)


def kernel_matrix(x: Tensor, points: Tensor, length_scale: Tensor, kernel: str) -> Tensor:
    r"""The Gram matrix :math:`K_{bm} = k(x_b, z_m)` of a kernel of :data:`KERNELS`.

    Args:
        x: ``(batch, d)``.
        points: ``(M, d)``.
        length_scale: ``(d,)``.
        kernel: a name of :data:`KERNELS`.

    Returns:
        ``(batch, M)``, entries in ``(0, 1]``.
    """
    return KERNELS[check_kernel(kernel)](scaled_squared_distance(x, points, length_scale))


class KernelConditioner(nn.Module):
    r"""A conditioner that is a kernel expansion over learned inducing points.

    .. math:: f(h) = \sum_{m=1}^{M} \alpha_m \, k(h, z_m), \qquad
              k(h, z) = \kappa\Bigl(\sum_j (h_j - z_j)^2 / \ell_j^2\Bigr)

    with inducing points :math:`z_m`, coefficients :math:`\alpha_m \in \mathbb{R}^{out}`
    and per-dimension length-scales :math:`\ell_j = e^{\lambda_j}`, all learned. It has
    the interface of :class:`~pushforward.nn.mlp.MLP` as a coupling layer's conditioner
    (``(in_features, out_features)`` to build, ``(batch, in) -> (batch, out)``,
    :meth:`initialize_last_layer`), so
    ``Coupling(..., conditioner=partial(KernelConditioner, inducing=32))`` is the
    kernelised coupling layer of a Ferumal flow.

    **Context.** A coupling layer hands its conditioner :math:`h = [x_A, c]`, the
    untransformed features and the context concatenated, so the inducing points live in
    the joint space and each context dimension has its own length-scale. For the RBF
    kernel this *is* the product kernel :math:`k_x(x_A, z) \, k_c(c, w)` (the exponent
    splits into the two sums); for the Matérn kernels it is the Matérn kernel of the
    joint space.

    **Start.** The coefficients start at zero, so the layer it drives starts at the
    identity (:meth:`initialize_last_layer` redraws them). The inducing points start as
    standard normal draws, where standardised data live, or, with
    ``inducing_init="data"``, as rows of the first batch the conditioner sees through
    the data-dependent initialisation (:meth:`pushforward.Model.initialize`, which the
    training engine calls on a run's first batch; standard normal draws until then).
    The ``initialized`` buffer is saved, so a reloaded conditioner does not start over.

    References:
        English, Kirchler & Lippert (2024), Kernelised Normalising Flows;
        Rasmussen & Williams (2006), Gaussian Processes for Machine Learning.

    Args:
        in_features: input width ``d`` (untransformed features plus context).
        out_features: output width (parameters of the element-wise maps).
        inducing: number of inducing points :math:`M`.
        kernel: a name of :data:`KERNELS`: ``"rbf"``, ``"matern32"`` or ``"matern52"``.
        length_scale: the length-scales' starting value :math:`\ell_j`.
        inducing_init: ``"normal"`` or ``"data"`` (see above).
    """

    initialized: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        inducing: int = 32,
        kernel: str = "rbf",
        length_scale: float = 1.0,
        inducing_init: str = "normal",
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"a kernel conditioner needs in_features and out_features >= 1, got "
                f"{in_features} and {out_features}"
            )
        if inducing < 1:
            raise ValueError(
                f"a kernel conditioner needs at least one inducing point, got {inducing}"
            )
        if not length_scale > 0:
            raise ValueError(f"length_scale must be positive, got {length_scale}")
        if inducing_init not in INDUCING_INITS:
            valid = ", ".join(map(repr, INDUCING_INITS))
            raise ValueError(f"unknown inducing_init {inducing_init!r}; valid: {valid}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.inducing = int(inducing)
        self.kernel = check_kernel(kernel)
        self.inducing_init = inducing_init
        self.inducing_points = nn.Parameter(torch.randn(self.inducing, self.in_features))
        self.log_length_scale = nn.Parameter(
            torch.full((self.in_features,), math.log(float(length_scale)))
        )
        self.coefficients = nn.Parameter(torch.zeros(self.inducing, self.out_features))
        self.register_buffer("initialized", torch.tensor(inducing_init == "normal"))
        self._initialize_on_next_forward = False

    @property
    def length_scale(self) -> Tensor:
        r"""``(in_features,)``: :math:`\ell_j = e^{\lambda_j}`."""
        return torch.exp(self.log_length_scale)

    def gram(self, h: Tensor) -> Tensor:
        """``(batch, in_features) -> (batch, M)``: the kernel between the inputs and the points."""
        return kernel_matrix(h, self.inducing_points, self.length_scale, self.kernel)

    def forward(self, h: Tensor) -> Tensor:
        """``h: (batch, in_features) -> (batch, out_features)``, the expansion ``K(h, Z) alpha``."""
        if h.ndim != 2 or h.shape[1] != self.in_features:
            raise ValueError(
                f"expected input of shape (batch, {self.in_features}), got {tuple(h.shape)}"
            )
        if self._initialize_on_next_forward:
            self.initialize(h)
        return self.gram(h) @ self.coefficients

    def initialize_last_layer(self, init: str) -> None:
        r"""Re-initialises the coefficients: ``"zero"`` (the identity start) or ``"random"``.

        ``"random"`` draws :math:`\alpha_{mo} \sim U(-1/\sqrt M, 1/\sqrt M)`, the scale of
        PyTorch's default for a linear layer reading the :math:`M` kernel values.
        """
        if init not in LAST_LAYER_INITS:
            valid = ", ".join(map(repr, LAST_LAYER_INITS))
            raise ValueError(f"unknown last-layer initialisation {init!r}; valid: {valid}")
        with torch.no_grad():
            if init == "zero":
                self.coefficients.zero_()
            else:
                bound = 1.0 / math.sqrt(self.inducing)
                self.coefficients.uniform_(-bound, bound)

    # -- data-dependent initialisation (see pushforward.Model.initialize) ----------

    @torch.no_grad()
    def initialize(self, h: Tensor) -> None:
        """Sets the inducing points to distinct rows of ``h`` (standard normal draws beyond them).

        Rows are picked by torch's global generator, which
        :meth:`pushforward.Model.initialize` forks and the engine seeds.
        """
        rows = torch.randperm(h.shape[0], device=h.device)[: self.inducing]
        points = torch.randn_like(self.inducing_points)
        points[: rows.numel()] = h[rows].to(points.dtype)
        self.inducing_points.copy_(points)
        self.initialized.fill_(True)
        self._initialize_on_next_forward = False

    @property
    def awaits_data(self) -> bool:
        """Whether the data-dependent initialisation is still to be done."""
        return not bool(self.initialized)

    def initialize_on_next_forward(self, on: bool = True) -> None:
        """With ``on``, the next ``forward`` first calls :meth:`initialize` on its input."""
        self._initialize_on_next_forward = bool(on)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"inducing={self.inducing}, kernel={self.kernel!r}"
        )
