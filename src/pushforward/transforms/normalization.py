"""Normalization layers as bijections: activation normalization and batch normalization.

Both act per feature on dimension 1, so ``(batch, features)`` vectors and
``(batch, channels, height, width)`` images (per-channel statistics) work alike;
on images the log-determinant counts every pixel of a channel.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pushforward.transforms.base import Transform


def _check_features(name: str, x: Tensor, features: int) -> None:
    if x.dim() < 2 or x.shape[1] != features:
        raise ValueError(
            f"{name} was built for {features} features (dimension 1), got input of shape "
            f"{tuple(x.shape)}"
        )


def _per_feature(parameter: Tensor, x: Tensor) -> Tensor:
    """Reshapes ``(features,)`` to broadcast along dimension 1 of ``x``."""
    return parameter.reshape((-1,) + (1,) * (x.dim() - 2))


def _reduction_dims(x: Tensor) -> list[int]:
    """Every dimension of ``x`` but the feature one (1)."""
    return [0, *range(2, x.dim())]


def _elements_per_feature(x: Tensor) -> int:
    """How many entries of one row share a feature's parameters (``H * W`` for images)."""
    return x[0, 0].numel()


class ActNorm(Transform):
    r"""Per-feature affine map :math:`y = e^{s} \odot x + b` with data-dependent initialisation.

    .. math:: \log|\det J| = N \sum_i s_i

    where :math:`N` is the number of entries per feature (1 for vectors,
    :math:`H W` for images). :meth:`initialize` sets the parameters from a batch
    so the outputs have zero mean and unit variance per feature,
    :math:`s = -\tfrac12\log(\mathrm{Var}[x] + \epsilon)`,
    :math:`b = -e^{s}\,\mathrm{E}[x]`; afterwards they are ordinary learnable
    parameters. (With one entry per feature the variance is undefined, so only
    the mean is removed and :math:`s = 0`.) Inside a model, initialisation is
    one explicit step, :meth:`pushforward.Model.initialize` (the training engine
    takes it on the first batch): it turns on :meth:`initialize_on_next_forward`
    and carries the batch through the layers in order, so each ActNorm
    standardises what it sees. ``forward`` and ``inverse`` never initialise on
    their own: until initialised the layer is the identity.

    The ``initialized`` buffer is saved in the ``state_dict``, so a reloaded
    model does not initialise again.

    References:
        Kingma & Dhariwal (2018), Glow: Generative Flow with Invertible 1x1 Convolutions.

    Args:
        features: number of features (channels for images).
        eps: added to the variance at initialisation.
    """

    initialized: Tensor

    def __init__(self, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.features = int(features)
        self.eps = float(eps)
        self.log_scale = nn.Parameter(torch.zeros(self.features))
        self.shift = nn.Parameter(torch.zeros(self.features))
        self.register_buffer("initialized", torch.tensor(False))
        self._initialize_on_next_forward = False

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Sets ``shift`` and ``log_scale`` so that ``forward(x)`` is standardised per feature."""
        _check_features("ActNorm", x, self.features)
        dims = _reduction_dims(x)
        mean = x.mean(dim=dims)
        if x.numel() // self.features >= 2:
            log_scale = -0.5 * torch.log(x.var(dim=dims, unbiased=False) + self.eps)
        else:
            log_scale = torch.zeros_like(mean)
        self.log_scale.copy_(log_scale)
        self.shift.copy_(-mean * torch.exp(log_scale))
        self.initialized.fill_(True)
        self._initialize_on_next_forward = False

    @property
    def awaits_data(self) -> bool:
        """Whether the data-dependent initialisation is still to be done."""
        return not bool(self.initialized)

    def initialize_on_next_forward(self, on: bool = True) -> None:
        """With ``on``, the next ``forward`` first calls :meth:`initialize` on its input."""
        self._initialize_on_next_forward = bool(on)

    def _logabsdet(self, x: Tensor) -> Tensor:
        total = self.log_scale.sum() * _elements_per_feature(x)
        return total * x.new_ones(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x: (batch, features, ...) -> (e^s x + b, logabsdet (batch,))``."""
        _check_features("ActNorm", x, self.features)
        if self._initialize_on_next_forward:
            self.initialize(x)
        y = x * _per_feature(torch.exp(self.log_scale), x) + _per_feature(self.shift, x)
        return y, self._logabsdet(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``y: (batch, features, ...) -> ((y - b) e^{-s}, -logabsdet (batch,))``."""
        _check_features("ActNorm", y, self.features)
        x = (y - _per_feature(self.shift, y)) * _per_feature(torch.exp(-self.log_scale), y)
        return x, -self._logabsdet(y)

    def extra_repr(self) -> str:
        return f"features={self.features}"


class BatchNorm(Transform):
    r"""Batch normalization as a bijection.

    .. math::
        y = e^{\gamma} \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,
        \qquad \log|\det J| = N \sum_i \big(\gamma_i - \tfrac12 \log(\sigma_i^2 + \epsilon)\big)

    (:math:`N` entries per feature: 1 for vectors, :math:`H W` for images).
    In training mode :math:`\mu, \sigma^2` are the batch mean and (biased)
    variance, treated as constants in the log-determinant, and the running
    averages are updated, ``running = (1 - momentum) * running + momentum *
    batch`` (with the unbiased variance, as ``torch.nn.BatchNorm1d`` does). In
    eval mode the running averages are used, so the map is a fixed bijection.

    ``inverse`` always uses the running averages: it is the inverse of the
    eval-mode map (a training-mode batch has no inverse for a single new point).
    A training-mode ``forward`` on a batch with one entry per feature raises a
    ``ValueError`` (its variance is undefined); call ``.eval()`` first.

    References:
        Dinh et al. (2017), Density Estimation Using Real NVP.
        Papamakarios et al. (2017), Masked Autoregressive Flow for Density Estimation.

    Args:
        features: number of features (channels for images).
        momentum: weight of the newest batch in the running averages.
        eps: added to the variance.
    """

    running_mean: Tensor
    running_var: Tensor

    def __init__(self, features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.features = int(features)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.log_gamma = nn.Parameter(torch.zeros(self.features))
        self.beta = nn.Parameter(torch.zeros(self.features))
        self.register_buffer("running_mean", torch.zeros(self.features))
        self.register_buffer("running_var", torch.ones(self.features))

    def _batch_statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        count = x.numel() // self.features
        if count < 2:
            raise ValueError(
                "BatchNorm in training mode needs at least 2 values per feature to estimate a "
                f"variance, got input of shape {tuple(x.shape)}; call .eval() to use the running "
                "statistics"
            )
        dims = _reduction_dims(x)
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * (count / (count - 1)), self.momentum)
        return mean, var

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x: (batch, features, ...) -> (y, logabsdet (batch,))``; see the class docstring."""
        _check_features("BatchNorm", x, self.features)
        if self.training:
            mean, var = self._batch_statistics(x)
        else:
            mean, var = self.running_mean, self.running_var
        log_scale = self.log_gamma - 0.5 * torch.log(var + self.eps)
        y = (x - _per_feature(mean, x)) * _per_feature(torch.exp(log_scale), x)
        y = y + _per_feature(self.beta, x)
        logabsdet = log_scale.sum() * _elements_per_feature(x) * x.new_ones(x.shape[0])
        return y, logabsdet

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``y: (batch, features, ...) -> (x, logabsdet (batch,))``, the eval-mode map's inverse."""
        _check_features("BatchNorm", y, self.features)
        log_scale = self.log_gamma - 0.5 * torch.log(self.running_var + self.eps)
        x = (y - _per_feature(self.beta, y)) * _per_feature(torch.exp(-log_scale), y)
        x = x + _per_feature(self.running_mean, y)
        logabsdet = -log_scale.sum() * _elements_per_feature(y) * y.new_ones(y.shape[0])
        return x, logabsdet

    def extra_repr(self) -> str:
        return f"features={self.features}, momentum={self.momentum}, eps={self.eps}"
