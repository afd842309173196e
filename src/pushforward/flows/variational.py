"""The classic flows of variational inference: planar, radial and Sylvester.

Built for sampling: ``rsample_and_log_prob`` runs each layer's closed-form
generative map once (base sample, then ``transform.inverse``), the one pass
reverse-KL training needs. Each also has an exact density (``log_prob``), so it can
be fitted to data by maximum likelihood too: the radial inverse is closed form, the
planar and Sylvester inverses solve increasing scalar equations by bracketed
bisection (see :mod:`pushforward.transforms.functional.tanh_residual`), which costs
some 60 cheap passes per planar layer and ``M`` times that per Sylvester layer.

With ``context > 0`` every layer's parameters are a hypernetwork (an MLP with
``hidden`` widths) of the context: the amortised flows of van den Berg et al. (2018).
"""

from __future__ import annotations

from collections.abc import Sequence

from pushforward.distributions import make_base
from pushforward.flows.flow import Flow
from pushforward.options import hidden_widths, positive_int, sizes
from pushforward.registry import register
from pushforward.transforms.base import Compose
from pushforward.transforms.variational import Planar, Radial, Sylvester


@register("planar")
def planar(
    features: int,
    context: int = 0,
    transforms: int = 8,
    hidden: Sequence[int] = (64,),
    base: str = "normal",
) -> Flow:
    r"""Planar flow: ``transforms`` layers :math:`z' = z + \hat u \tanh(w^\top z + b)`.

    References:
        Rezende & Mohamed (2015), Variational Inference with Normalizing Flows.

    Args:
        features: event size ``D``.
        context: context size (0 for unconditional); with one, each layer's
            parameters are an MLP of it (amortised).
        transforms: number of layers.
        hidden: the hypernetworks' hidden widths (read when ``context > 0``).
        base: base distribution name.

    Example:
        >>> import torch, pushforward
        >>> flow = pushforward.build("planar", features=2, transforms=4)
        >>> x, log_q = flow.rsample_and_log_prob(8)  # one pass, reparameterised
        >>> x.shape, log_q.shape
        (torch.Size([8, 2]), torch.Size([8]))
    """
    features, context = sizes(features, context)
    layers = positive_int("transforms", transforms)
    widths = hidden_widths(hidden)
    transform = Compose(Planar(features, context, widths) for _ in range(layers))
    return Flow(transform, make_base(base, (features,)), context)


@register("radial")
def radial(
    features: int,
    context: int = 0,
    transforms: int = 8,
    hidden: Sequence[int] = (64,),
    base: str = "normal",
) -> Flow:
    r"""Radial flow: ``transforms`` layers :math:`z' = z + \hat\beta (z - z_0) / (\alpha + r)`.

    With :math:`r = \|z - z_0\|`; see :class:`~pushforward.transforms.variational.Radial`.

    References:
        Rezende & Mohamed (2015), Variational Inference with Normalizing Flows.

    Args: as :func:`planar`.

    Example:
        >>> import torch, pushforward
        >>> flow = pushforward.build("radial", features=2, transforms=4)
        >>> flow.log_prob(torch.zeros(3, 2)).shape  # closed form both ways
        torch.Size([3])
    """
    features, context = sizes(features, context)
    layers = positive_int("transforms", transforms)
    widths = hidden_widths(hidden)
    transform = Compose(Radial(features, context, widths) for _ in range(layers))
    return Flow(transform, make_base(base, (features,)), context)


@register("sylvester")
def sylvester(
    features: int,
    context: int = 0,
    transforms: int = 4,
    hidden: Sequence[int] = (64,),
    base: str = "normal",
    columns: int | None = None,
) -> Flow:
    r"""Orthogonal Sylvester flow: layers :math:`z' = z + Q R \tanh(\tilde R Q^\top z + b)`.

    :math:`Q` has ``columns`` orthonormal columns from a product of Householder
    reflections; :math:`R, \tilde R` are upper triangular with
    :math:`R_{ii} \tilde R_{ii} > -1` (see :class:`~pushforward.transforms.variational.Sylvester`).

    References:
        van den Berg et al. (2018), Sylvester Normalizing Flows for Variational Inference.

    Args: as :func:`planar`, and
        columns: ``M``, the number of orthonormal columns of :math:`Q` (``None``: ``D``).

    Example:
        >>> import torch, pushforward
        >>> flow = pushforward.build("sylvester", features=3, transforms=2)
        >>> x, log_q = flow.rsample_and_log_prob(5)
        >>> torch.allclose(flow.log_prob(x), log_q, atol=1e-5)  # exact inverse
        True
    """
    features, context = sizes(features, context)
    layers = positive_int("transforms", transforms)
    widths = hidden_widths(hidden)
    m = features if columns is None else positive_int("columns", columns)
    if m > features:
        raise ValueError(f"option 'columns' must be at most features={features}, got {m}")
    transform = Compose(Sylvester(features, m, context, widths) for _ in range(layers))
    return Flow(transform, make_base(base, (features,)), context)
