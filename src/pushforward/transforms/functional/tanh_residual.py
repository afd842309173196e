"""The scalar equation behind the inverses of planar and Sylvester flows, solved exactly."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def bisection_steps(dtype: torch.dtype) -> int:
    """Halvings that shrink a bracket of width ``2|a|`` below ``|a|`` times the dtype's epsilon.

    ``-log2(eps) + 4``: 56 for float64, 27 for float32.
    """
    return round(-math.log2(torch.finfo(dtype).eps)) + 4


def tanh_residual_inverse(
    target: Tensor, weight: Tensor, slope: Tensor, shift: Tensor, one_plus_product: Tensor
) -> Tensor:
    r"""The root :math:`x` of :math:`g(x) = x + a \tanh(s x + c) = t`, element by element.

    Planar flows reduce their inverse to this equation along :math:`w`
    (:math:`a = w^\top \hat u`, :math:`s = 1`), and Sylvester flows to one such
    equation per coordinate of their triangular system. With :math:`a s > -1`,
    :math:`g'(x) = 1 + a s\,\mathrm{sech}^2(s x + c) > 0`: :math:`g` is strictly
    increasing. As :math:`|g(x) - x| \le |a|`, the root lies in the bracket
    :math:`[t - |a|, t + |a|]`, and bisection keeps it there while halving the
    bracket; after :func:`bisection_steps` halvings the midpoint is within
    :math:`|a|\,\epsilon / 16` of the root, whatever the parameters (a fixed count,
    no data-dependent branch). One Newton step on the live tensors follows: it
    polishes the last bits, and its gradient is the implicit function theorem's,
    :math:`\partial x / \partial \theta = -(\partial g / \partial \theta) / g'(x)`,
    so the bisection itself needs no graph.

    References:
        Rezende & Mohamed (2015), Variational Inference with Normalizing Flows;
        van den Berg et al. (2018), Sylvester Normalizing Flows for Variational Inference.

    Args:
        target: :math:`t`, any shape.
        weight: :math:`a`, broadcastable to ``target``.
        slope: :math:`s`, broadcastable to ``target``.
        shift: :math:`c`, broadcastable to ``target``.
        one_plus_product: :math:`1 + a s > 0`, computed by the caller in a form that
            keeps its digits near the edge :math:`a s \to -1`.

    Returns:
        :math:`x`, shaped like ``target`` broadcast with the parameters.
    """
    shape = torch.broadcast_shapes(target.shape, weight.shape, slope.shape, shift.shape)
    t, a, s, c = (v.detach().expand(shape) for v in (target, weight, slope, shift))
    low, high = t - a.abs(), t + a.abs()
    for _ in range(bisection_steps(target.dtype)):
        middle = 0.5 * (low + high)
        above = middle + a * torch.tanh(s * middle + c) > t
        high = torch.where(above, middle, high)
        low = torch.where(above, low, middle)
    x = 0.5 * (low + high)
    tanh = torch.tanh(slope * x + shift)
    # g' = tanh^2 + (1 + a s) sech^2: a sum of non-negative terms, exact near a s = -1.
    derivative = tanh.square() + one_plus_product * (1 - tanh.square())
    return x - (x + weight * tanh - target) / derivative
