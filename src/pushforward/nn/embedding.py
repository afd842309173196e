"""Embedding networks: learned summaries of a high-dimensional observation, the context of a flow.

In simulation-based inference a conditional flow :math:`q(\\theta \\mid x)` is conditioned on
an observation :math:`x` that may be long (a time series, a set of i.i.d. draws). An embedding
network :math:`e_\\psi(x)` maps the standardised flat context row to a few summary values,
trained jointly with the flow, so the conditioners see :math:`e_\\psi(x)` instead of :math:`x`.

Contexts arrive flat, ``(batch, context)``; ``observation_shape`` says how one row is laid
out (row-major): ``(channels, length)`` for a time series, ``(elements, element_features)``
for a set. Each network states the standardisation its symmetry needs
(:meth:`~MLPEmbedding.context_standardization`): statistics shared along the axis the
network treats alike (time for the convolution, elements for the set), so a shifted series
or a permuted set is standardised to the shifted or permuted standardised one.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

from torch import Tensor, nn

from pushforward.nn.mlp import MLP
from pushforward.options import closest, hidden_widths, positive_int
from pushforward.transforms.standardize import fit_standardization

EMBEDDINGS = ("mlp", "cnn", "set")


def tied_standardization(
    rows: Tensor, observation_shape: Sequence[int], shared_axis: int
) -> tuple[Tensor, Tensor]:
    r"""Mean and std of flat rows, pooled along one axis of their layout and tiled back.

    With rows laid out as ``observation_shape`` and :math:`a` the shared axis of length
    :math:`S`, the statistics of every index :math:`k` of the other axes are those of the
    :math:`nS` values :math:`x_{j, \ldots, s, \ldots}` along it:

    .. math:: \mu_k = \frac{1}{nS} \sum_{j=1}^{n} \sum_{s=1}^{S} x_{j,(s,k)}, \qquad
              \sigma_k^2 = \frac{1}{nS} \sum_{j, s} (x_{j,(s,k)} - \mu_k)^2

    (see :func:`~pushforward.transforms.standardize.fit_standardization`, which also sets a
    zero spread to 1), repeated :math:`S` times along :math:`a`. Since every position along
    :math:`a` gets the same statistics, standardising commutes with permuting or shifting
    along :math:`a`.

    Args:
        rows: ``(n, prod(observation_shape))`` flat rows.
        observation_shape: the layout of one row, row-major.
        shared_axis: the axis of ``observation_shape`` whose positions share statistics.

    Returns:
        ``mean`` and ``std``, each ``(prod(observation_shape),)``, in the flat layout and
        ``rows``' floating dtype.
    """
    shape = tuple(int(size) for size in observation_shape)
    values = rows.reshape(rows.shape[0], *shape).movedim(1 + shared_axis, 1)
    pooled = values.reshape(values.shape[0] * shape[shared_axis], *values.shape[2:])
    mean, std = fit_standardization(pooled)

    def tile(statistic: Tensor) -> Tensor:
        return statistic.unsqueeze(shared_axis).expand(shape).reshape(-1)

    return tile(mean), tile(std)


class _Embedding(nn.Module):
    """What every embedding shares: the flat interface, its width checks, the layout."""

    kind: str

    def __init__(self, context: int, features: int, observation_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.in_features = context
        self.out_features = features
        self.observation_shape = observation_shape

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"observation_shape={list(self.observation_shape)}"
        )

    def _check_rows(self, rows: Tensor, what: str) -> None:
        if rows.ndim < 1 or rows.shape[-1] != self.in_features:
            raise ValueError(
                f"embedding {self.kind!r} expects {what} of width {self.in_features} "
                f"(observation_shape {list(self.observation_shape)}), "
                f"got shape {tuple(rows.shape)}"
            )

    def embed(self, rows: Tensor) -> Tensor:
        """The summaries of ``rows: (batch, in_features)``, ``(batch, out_features)``."""
        raise NotImplementedError

    def forward(self, context: Tensor) -> Tensor:
        """Embeds ``context: (*batch, in_features)`` into ``(*batch, out_features)``."""
        self._check_rows(context, "contexts")
        lead = context.shape[:-1]
        flat = context.reshape(math.prod(lead), self.in_features)
        return self.embed(flat).reshape(*lead, self.out_features)

    def context_standardization(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """The mean and std, each ``(in_features,)``, to standardise contexts with."""
        raise NotImplementedError

    def _checked_rows(self, rows: Tensor) -> Tensor:
        if rows.ndim != 2:
            raise ValueError(
                f"embedding {self.kind!r} fits its standardisation to rows "
                f"(n, {self.in_features}), got shape {tuple(rows.shape)}"
            )
        self._check_rows(rows, "rows")
        return rows


def _observation_shape(
    kind: str,
    context: int,
    observation_shape: Sequence[int],
    layout: str,
    entries: tuple[int, ...] | None,
) -> tuple[int, ...]:
    """``observation_shape`` as a tuple, checked against the layout and the context size.

    ``entries`` lists the allowed numbers of entries (``None``: any, at least one).
    """
    if isinstance(observation_shape, str) or not isinstance(observation_shape, Sequence):
        raise ValueError(
            f"embedding {kind!r}: observation_shape must be {layout}, got {observation_shape!r}"
        )
    shown = list(observation_shape)
    if (entries is None and not shown) or (entries is not None and len(shown) not in entries):
        count = f"{len(shown)} entr{'y' if len(shown) == 1 else 'ies'}"
        raise ValueError(
            f"embedding {kind!r}: observation_shape must be {layout}, got {shown} ({count})"
        )
    shape = []
    for entry in shown:
        try:
            size = 0 if isinstance(entry, bool) else operator.index(entry)
        except TypeError:
            size = 0
        if size < 1:
            raise ValueError(
                f"embedding {kind!r}: observation_shape entries must be positive integers, "
                f"got {shown}"
            )
        shape.append(size)
    values = math.prod(shape)
    if values != context:
        raise ValueError(
            f"embedding {kind!r}: observation_shape {shape} holds {values} values "
            f"but the context has {context}"
        )
    return tuple(shape)


class MLPEmbedding(_Embedding):
    r"""A fully connected embedding, for contexts with no structure to exploit.

    .. math:: e(x) = W_{L} \, \mathrm{relu}(\cdots \mathrm{relu}(W_1 x + b_1) \cdots) + b_{L}

    The last layer starts at PyTorch's random initialisation, not at zero, so the gradient
    reaches every layer from the first step.

    References:
        Lueckmann et al. (2017), Flexible statistical inference for mechanistic models of
        neural dynamics (summary features learned jointly with the density estimator);
        Tejero-Cantero et al. (2020), sbi: A toolkit for simulation-based inference.

    Args:
        context: the flat context size.
        features: the number of summary values.
        hidden: widths of the hidden layers.

    Example:
        >>> import torch
        >>> embedding = MLPEmbedding(context=20, features=4, hidden=(32,))
        >>> embedding(torch.randn(7, 20)).shape
        torch.Size([7, 4])
    """

    kind = "mlp"

    def __init__(self, context: int, features: int, hidden: Sequence[int] = (64, 64)) -> None:
        context = positive_int("context", context)
        features = positive_int("features", features)
        widths = hidden_widths(hidden)
        super().__init__(context, features, (context,))
        self.network = MLP(context, features, hidden=widths, zero_last=False)

    def embed(self, rows: Tensor) -> Tensor:
        return self.network(rows)

    def context_standardization(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Per-feature statistics, those of :func:`fit_standardization`.

        Args:
            rows: ``(n, in_features)`` contexts in their own units.

        Returns:
            ``mean`` and ``std``, each ``(in_features,)``.
        """
        return fit_standardization(self._checked_rows(rows))


class ConvEmbedding(_Embedding):
    r"""A small 1-D convolutional network for time series.

    Each of the ``len(hidden)`` blocks halves the length,

    .. math:: h^{(l)} = \mathrm{relu}\big(\mathrm{conv}_{k, \text{stride } 2}(h^{(l-1)})\big),
              \qquad h^{(0)} = x \in \mathbb{R}^{C \times T},

    with ``hidden[l]`` output channels, kernel :math:`k` and zero padding :math:`\lfloor k/2
    \rfloor` (zero is the mean of a standardised series). Average pooling then takes the last
    feature map to ``positions`` equal windows, coarse enough to be independent of the length,
    fine enough to keep *where* in the series a feature occurs (a global average would make the
    summary blind to shifts); a linear head maps the flattened ``hidden[-1] * positions``
    values to ``features``. The convolutions share weights along time, so the context's
    standardisation is shared along time too (per channel).

    References:
        Radev et al. (2020), BayesFlow: Learning complex stochastic models with invertible
        neural networks (summary networks for time series);
        Tejero-Cantero et al. (2020), sbi: A toolkit for simulation-based inference
        (``CNNEmbedding``).

    Args:
        context: the flat context size, ``channels * length``.
        features: the number of summary values.
        observation_shape: ``(channels, length)``, or ``(length,)`` for one channel; ``None``
            means one channel of length ``context``. A row is read channel by channel.
        hidden: the channels of each convolution block.
        kernel_size: the width of every convolution kernel.
        positions: the number of windows the last feature map is averaged over (fewer if the
            map is shorter).

    Example:
        >>> import torch
        >>> embedding = ConvEmbedding(context=200, features=8, observation_shape=(2, 100))
        >>> embedding(torch.randn(5, 200)).shape
        torch.Size([5, 8])
    """

    kind = "cnn"

    def __init__(
        self,
        context: int,
        features: int,
        observation_shape: Sequence[int] | None = None,
        hidden: Sequence[int] = (32, 64),
        *,
        kernel_size: int = 5,
        positions: int = 8,
    ) -> None:
        context = positive_int("context", context)
        features = positive_int("features", features)
        widths = hidden_widths(hidden)
        kernel_size = positive_int("kernel_size", kernel_size)
        positions = positive_int("positions", positions)
        shape = _observation_shape(
            self.kind,
            context,
            (context,) if observation_shape is None else observation_shape,
            "[length] or [channels, length]",
            (1, 2),
        )
        super().__init__(context, features, shape)
        self.channels, self.length = (1, *shape) if len(shape) == 1 else shape

        layers: list[nn.Module] = []
        channels, length = self.channels, self.length
        for width in widths:
            layers += [
                nn.Conv1d(channels, width, kernel_size, stride=2, padding=kernel_size // 2),
                nn.ReLU(),
            ]
            channels = width
            length = (length + 2 * (kernel_size // 2) - kernel_size) // 2 + 1
        self.positions = min(positions, length)
        layers.append(nn.AdaptiveAvgPool1d(self.positions))
        self.convolutions = nn.Sequential(*layers)
        self.head = nn.Linear(channels * self.positions, features)

    def embed(self, rows: Tensor) -> Tensor:
        maps = self.convolutions(rows.reshape(rows.shape[0], self.channels, self.length))
        return self.head(maps.flatten(1))

    def context_standardization(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Per-channel statistics, shared along time (see :func:`tied_standardization`).

        Args:
            rows: ``(n, in_features)`` contexts in their own units.

        Returns:
            ``mean`` and ``std``, each ``(in_features,)``: channel ``c``'s values at every
            time step.
        """
        return tied_standardization(self._checked_rows(rows), (self.channels, self.length), 1)


class SetEmbedding(_Embedding):
    r"""DeepSets: a summary of a set of i.i.d. elements, invariant to their order.

    .. math:: e(\{x_1, \dots, x_N\}) = \rho\Big(\frac1N \sum_{i=1}^{N} \phi(x_i)\Big)

    :math:`\phi` (``hidden`` layers, each linear then relu) encodes every element alike;
    :math:`\rho` (one hidden layer of width ``hidden[-1]``) maps the pooled code to
    ``features``. Any permutation of the elements leaves the mean, hence the output,
    unchanged. The mean rather than Zaheer et al.'s sum: it estimates :math:`E[\phi(x)]`
    whatever :math:`N`, so the pooled code keeps the scale of one element's code and
    :math:`\rho`'s initialisation suits any number of elements, where a sum grows like
    :math:`N`. The set's standardisation is shared across elements (per element feature),
    so a permuted set standardises to the permuted standardised set.

    References:
        Zaheer et al. (2017), Deep Sets;
        Radev et al. (2020), BayesFlow: Learning complex stochastic models with invertible
        neural networks (permutation-invariant summary networks);
        Chan et al. (2018), A likelihood-free inference framework for population genetic
        data using exchangeable neural networks.

    Args:
        context: the flat context size, ``elements * element_features``.
        features: the number of summary values.
        observation_shape: ``(elements, element_features)``; a row is read element by
            element.
        hidden: widths of :math:`\phi`'s layers; the last is the pooled code's width.

    Example:
        >>> import torch
        >>> embedding = SetEmbedding(context=30, features=4, observation_shape=(10, 3))
        >>> x = torch.randn(2, 10, 3)
        >>> same = embedding(x.flip(1).reshape(2, 30)) - embedding(x.reshape(2, 30))
        >>> bool(same.abs().max() < 1e-5)
        True
    """

    kind = "set"

    def __init__(
        self,
        context: int,
        features: int,
        observation_shape: Sequence[int] | None,
        hidden: Sequence[int] = (64, 64),
    ) -> None:
        context = positive_int("context", context)
        features = positive_int("features", features)
        widths = hidden_widths(hidden)
        if observation_shape is None:
            raise ValueError(
                f"embedding {self.kind!r} needs an observation_shape "
                f"[elements, element_features]; the context has {context} values"
            )
        shape = _observation_shape(
            self.kind, context, observation_shape, "[elements, element_features]", (2,)
        )
        super().__init__(context, features, shape)
        self.elements, self.element_features = shape
        # phi ends in a nonlinearity: a final linear layer before the mean would fold into rho's.
        self.phi = nn.Sequential(
            MLP(self.element_features, widths[-1], hidden=widths[:-1], zero_last=False),
            nn.ReLU(),
        )
        self.rho = MLP(widths[-1], features, hidden=(widths[-1],), zero_last=False)

    def embed(self, rows: Tensor) -> Tensor:
        elements = rows.reshape(rows.shape[0], self.elements, self.element_features)
        return self.rho(self.phi(elements).mean(dim=1))

    def context_standardization(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Per element feature, pooled over the elements (see :func:`tied_standardization`).

        Args:
            rows: ``(n, in_features)`` contexts in their own units.

        Returns:
            ``mean`` and ``std``, each ``(in_features,)``: feature ``f``'s statistics of the
            ``n * elements`` elements, repeated for every element.
        """
        return tied_standardization(
            self._checked_rows(rows), (self.elements, self.element_features), 0
        )


def make_embedding(
    name: str,
    context: int,
    features: int,
    observation_shape: Sequence[int] | None,
    hidden: Sequence[int],
) -> nn.Module:
    """The embedding network named ``name`` (one of :data:`EMBEDDINGS`).

    Args:
        name: ``"mlp"``, ``"cnn"`` or ``"set"``.
        context: the flat context size.
        features: the number of summary values.
        observation_shape: how a context row is laid out: ignored in shape by ``"mlp"`` but
            checked against ``context``; ``(length,)`` or ``(channels, length)`` for
            ``"cnn"`` (``None``: one channel); ``(elements, element_features)`` for ``"set"``
            (required).
        hidden: the hidden widths (the convolution channels for ``"cnn"``).

    Returns:
        An :class:`MLPEmbedding`, :class:`ConvEmbedding` or :class:`SetEmbedding`.

    Raises:
        ValueError: in the user's words, for an unknown name, a layout that does not hold
            ``context`` values, or non-positive sizes.

    Example:
        >>> make_embedding("set", 20, 4, [10, 2], [16]).observation_shape
        (10, 2)
    """
    if name not in EMBEDDINGS:
        raise ValueError(
            f"unknown embedding {name!r}{closest(str(name), list(EMBEDDINGS))}; "
            f"valid: {', '.join(map(repr, EMBEDDINGS))}"
        )
    if name == "mlp":
        if observation_shape is not None:
            # The MLP ignores the layout, but a layout that disagrees with the context is a
            # mistake worth naming.
            _observation_shape(
                name, positive_int("context", context), observation_shape, "a list of sizes", None
            )
        return MLPEmbedding(context, features, hidden)
    if name == "cnn":
        return ConvEmbedding(context, features, observation_shape, hidden)
    return SetEmbedding(context, features, observation_shape, hidden)
