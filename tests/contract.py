"""Checks every transform and model goes through: invertibility, log-determinants, normalisation."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pushforward.transforms.base import Transform


def randomize_(
    module: nn.Module, scale: float = 0.3, generator: torch.Generator | None = None
) -> None:
    """Adds noise to every parameter, so zero-initialised layers stop being the identity."""
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(scale * noise.to(parameter.device))


def assert_invertible(
    transform: Transform, x: Tensor, context: Tensor | None = None, atol: float = 1e-10
) -> None:
    """``inverse(forward(x)) == x`` and the two log-determinants cancel."""
    y, forward_logdet = transform(x, context)
    x_back, inverse_logdet = transform.inverse(y, context)
    assert y.shape == x.shape and x_back.shape == x.shape
    assert forward_logdet.shape == (x.shape[0],)
    assert inverse_logdet.shape == (x.shape[0],)
    torch.testing.assert_close(x_back, x, atol=atol, rtol=0)
    scale = 1.0 + forward_logdet.abs().max().item()
    torch.testing.assert_close(
        forward_logdet + inverse_logdet,
        torch.zeros_like(forward_logdet),
        atol=atol * 100 * scale,
        rtol=0,
    )
    # And the other way round: forward(inverse(y)) == y.
    x2, _ = transform.inverse(y, context)
    y2, _ = transform(x2, context)
    torch.testing.assert_close(y2, y, atol=atol * 10 * (1 + y.abs().max().item()), rtol=0)


def jacobian_logabsdet(function, x: Tensor, context: Tensor | None) -> Tensor:
    """``log|det J|`` of ``function`` at every row of ``x``, from torch.func's Jacobian."""
    values = []
    for i in range(x.shape[0]):
        row_context = None if context is None else context[i : i + 1]

        def single(row: Tensor, row_context: Tensor | None = row_context) -> Tensor:
            return function(row.unsqueeze(0), row_context)[0].reshape(-1)

        jacobian = torch.func.jacrev(single)(x[i])
        values.append(torch.linalg.slogdet(jacobian.reshape(jacobian.shape[0], -1))[1])
    return torch.stack(values)


def assert_logdet_matches_jacobian(
    transform: Transform, x: Tensor, context: Tensor | None = None, atol: float = 1e-6
) -> None:
    """Both directions' log-determinants equal ``log|det|`` of the autograd Jacobian."""
    _, logdet = transform(x, context)
    expected = jacobian_logabsdet(lambda v, c: transform(v, c)[0], x, context)
    torch.testing.assert_close(logdet, expected, atol=atol, rtol=1e-6)
    y, _ = transform(x, context)
    _, inverse_logdet = transform.inverse(y, context)
    expected_inverse = jacobian_logabsdet(lambda v, c: transform.inverse(v, c)[0], y, context)
    torch.testing.assert_close(inverse_logdet, expected_inverse, atol=atol, rtol=1e-6)


def grid_integral_2d(
    log_density, low: float, high: float, points: int, dtype=torch.float64
) -> float:
    """Integrates ``exp(log_density)`` over the square ``[low, high]^2`` with the midpoint rule."""
    width = (high - low) / points
    centres = low + width * (torch.arange(points, dtype=dtype) + 0.5)
    xx, yy = torch.meshgrid(centres, centres, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    total = 0.0
    for chunk in grid.split(65536):
        total += torch.exp(log_density(chunk)).sum().item()
    return total * width * width


def grid_integral_1d(
    log_density, low: float, high: float, points: int, dtype=torch.float64
) -> float:
    """Integrates ``exp(log_density)`` over ``[low, high]`` with the midpoint rule."""
    width = (high - low) / points
    centres = low + width * (torch.arange(points, dtype=dtype) + 0.5)
    return torch.exp(log_density(centres.unsqueeze(1))).sum().item() * width


LOG_2PI = math.log(2 * math.pi)
