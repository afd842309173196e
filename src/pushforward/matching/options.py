"""The option groups the flow-matching family's builders share, and their checks.

``fm``, ``meanflow``, ``shortcut``, ``consistency-fm`` and ``distilled`` take the
same network options (:class:`NetworkOptions`, or :class:`TwoTimeNetworkOptions` for
a network of two times) and the ODE family's likelihood options
(:class:`LikelihoodOptions`), declared here once and flattened into each builder's
keywords by :func:`~pushforward.option_groups.grouped_options`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from pushforward.distributions import Distribution, Empirical, make_base
from pushforward.nn.two_time import TwoTimeVelocityMLP
from pushforward.nn.velocity import VelocityMLP
from pushforward.ode.likelihood import DIVERGENCES
from pushforward.ode.options import SOLVERS
from pushforward.option_groups import OptionGroup, option
from pushforward.options import choice, hidden_widths, positive_float, positive_int


def event_shape_option(features: int, shape: Sequence[int] | None) -> tuple[int, ...]:
    """The ``shape`` option checked against ``features`` (default ``(features,)``)."""
    event_shape = (features,) if shape is None else tuple(positive_int("shape", d) for d in shape)
    if math.prod(event_shape) != features:
        raise ValueError(
            f"option 'shape' {list(event_shape)} holds {math.prod(event_shape)} values, "
            f"but features is {features}"
        )
    return event_shape


def divergence_option(divergence: str | None, features: int) -> str:
    """The ``divergence`` option: as given, or by default exact up to 64 features.

    Beyond that the exact divergence costs one pass a feature, and Hutchinson's
    estimator one pass a probe.
    """
    if divergence is None:
        return "exact" if features <= 64 else "hutchinson"
    return divergence


def source_option(base: str, event_shape: tuple[int, ...], source_rows: int) -> Distribution:
    """The ``base`` and ``source_rows`` options: a named base distribution, or an
    empirical source of ``source_rows`` stored rows (zeros until loaded or assigned)."""
    rows = positive_int("source_rows", source_rows, minimum=0)
    if base == "empirical":
        if rows == 0:
            raise ValueError(
                "base 'empirical' needs source_rows, the number of stored source rows "
                "(pushforward train sets it from --source FILE)"
            )
        return Empirical.zeros(rows, event_shape)
    if rows:
        raise ValueError(
            f"option 'source_rows' applies to base 'empirical', not {base!r}; "
            'set base = "empirical" (pushforward train: pass --source FILE)'
        )
    return make_base(base, event_shape)


@dataclass(frozen=True)
class VelocityNetworkOptions(OptionGroup):
    r"""The velocity network :math:`v_\theta(x, t, c)` and the event it acts on.

    The defaults are a residual 4x256 MLP with a 32-wide sinusoidal time embedding of
    scale 10. The scale sets the highest frequency in time, and so how fast the field
    may vary along a solve: the diffusion convention (1000) made a 2-D field need about
    10x more adaptive steps (518 against 50 function evaluations on moons) for no
    better fit (``bench/fm_quality.py``). A model whose source is fixed by its domain
    (the uniform distribution on the box of ``reflected-fm``) takes these options;
    :class:`NetworkOptions` adds the choice of a source.

    Example:
        >>> import torch
        >>> options = VelocityNetworkOptions(hidden=(16, 16))
        >>> options.event_shape(4)
        (4,)
        >>> options.build_network(4, 0)(torch.zeros(3, 4), torch.zeros(3)).shape
        torch.Size([3, 4])
    """

    hidden: Sequence[int] = option(
        (256, 256, 256, 256), "widths of the network's hidden layers (equal with ``residual``)."
    )
    shape: Sequence[int] | None = option(
        None, "event shape, e.g. ``[1, 8, 8]`` for images (default ``[features]``)."
    )
    residual: bool = option(True, "residual blocks in the network.")
    time_embedding: int = option(
        32, "width of the sinusoidal time embedding (0: time is one raw input)."
    )
    time_scale: float = option(10.0, "times are multiplied by this before the sinusoids.")
    activation: str = option("silu", "nonlinearity of the network.")

    leading: ClassVar[tuple[str, ...]] = ("hidden", "shape")

    def event_shape(self, features: int) -> tuple[int, ...]:
        """The ``shape`` option checked against ``features`` (default ``(features,)``)."""
        return event_shape_option(features, self.shape)

    def build_network(self, features: int, context_width: int) -> nn.Module:
        """The velocity network ``(x, t, context) -> like x`` these options describe.

        Args:
            features: values per event.
            context_width: context columns the network takes (with any presence flag).
        """
        return VelocityMLP(
            features,
            context=context_width,
            hidden=hidden_widths(self.hidden),
            time_embedding=positive_int("time_embedding", self.time_embedding, minimum=0),
            time_scale=positive_float("time_scale", self.time_scale),
            activation=self.activation,
            residual=bool(self.residual),
        )


@dataclass(frozen=True)
class NetworkOptions(VelocityNetworkOptions):
    r"""The velocity network :math:`v_\theta(x, t, c)`, the event it acts on and the source.

    :class:`VelocityNetworkOptions` and the source distribution's name.

    Example:
        >>> NetworkOptions(hidden=(16, 16)).source((4,)).event_shape
        (4,)
    """

    base: str = option(
        "normal",
        "source distribution name; ``empirical`` (with ``source_rows``) holds the rows of "
        "a source data set, which has no density.",
    )

    leading: ClassVar[tuple[str, ...]] = ("hidden", "shape", "base")

    def source(self, event_shape: tuple[int, ...], source_rows: int | None = None) -> Distribution:
        """The source distribution of events of ``event_shape``.

        Args:
            event_shape: the event shape (see :meth:`event_shape`).
            source_rows: the ``source_rows`` option of builders that take one (stored
                rows of an ``empirical`` base); ``None`` for the others.
        """
        if source_rows is None:
            return make_base(self.base, event_shape)
        return source_option(self.base, event_shape, source_rows)


@dataclass(frozen=True)
class TwoTimeNetworkOptions(NetworkOptions):
    """:class:`NetworkOptions` for a network of two times (an interval's start and its
    length, or a time and a step): a :class:`~pushforward.nn.two_time.TwoTimeVelocityMLP`.

    Example:
        >>> import torch
        >>> network = TwoTimeNetworkOptions(hidden=(16, 16)).build_network(2, 0)
        >>> network(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3)).shape
        torch.Size([3, 2])
    """

    time_embedding: int = option(
        32, "width of each of the two sinusoidal time embeddings (at least 2)."
    )

    def build_network(self, features: int, context_width: int) -> nn.Module:
        """The network ``(x, t, second time, context) -> like x`` these options describe.

        Args:
            features: values per event.
            context_width: context columns the network takes.
        """
        return TwoTimeVelocityMLP(
            features,
            context=context_width,
            hidden=hidden_widths(self.hidden),
            time_embedding=positive_int("time_embedding", self.time_embedding, minimum=2),
            activation=self.activation,
            residual=bool(self.residual),
            time_scale=positive_float("time_scale", self.time_scale),
        )


@dataclass(frozen=True)
class LikelihoodOptions(OptionGroup):
    r"""How ``log_prob`` integrates the instantaneous change of variables by default.

    .. math:: \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \nabla\cdot v_\theta(x_t, t)\,dt

    References: Chen et al. (2018), Neural Ordinary Differential Equations;
    Grathwohl et al. (2019), FFJORD.

    Example:
        >>> LikelihoodOptions().model_options(features=2)["divergence"]
        'exact'
    """

    likelihood_solver: str = option("dopri5", "default ODE solver of ``log_prob``.")
    atol: float = option(1e-5, "absolute tolerance of an adaptive ``log_prob`` solve.")
    rtol: float = option(1e-5, "relative tolerance of an adaptive ``log_prob`` solve.")
    divergence: str | None = option(
        None, "``exact`` or ``hutchinson`` (default: exact up to 64 features)."
    )
    probes: int = option(1, "Hutchinson probes per point.")

    def model_options(self, features: int) -> dict[str, Any]:
        """The options checked, as keyword arguments of the model (``features`` values
        per event choose the default divergence, see :func:`divergence_option`)."""
        return {
            "likelihood_solver": choice("likelihood_solver", self.likelihood_solver, SOLVERS),
            "atol": self.atol,
            "rtol": self.rtol,
            "divergence": choice(
                "divergence", divergence_option(self.divergence, features), DIVERGENCES
            ),
            "probes": positive_int("probes", self.probes),
        }


DEFAULT_NETWORK = NetworkOptions()
"""The network options of a builder called with none given."""

DEFAULT_VELOCITY_NETWORK = VelocityNetworkOptions()
"""The network options, without a source, of a builder called with none given."""

DEFAULT_TWO_TIME_NETWORK = TwoTimeNetworkOptions()
"""The two-time network options of a builder called with none given."""

DEFAULT_LIKELIHOOD = LikelihoodOptions()
"""The likelihood options of a builder called with none given."""
