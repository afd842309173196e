"""Checks every transform and model goes through, and the small options of every model.

Invertibility, log-determinants against the autograd Jacobian, normalisation on a
grid; ``SMALL_OPTIONS`` holds one entry per registered model, which the model
contract sweep (``tests/test_model_contract.py``) requires.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from pushforward.matching.couplings import PairedBatch
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


def assert_log_derivative(function, x: Tensor, atol: float) -> None:
    """An increasing elementwise map's per-element ``log|det|`` is ``log f'(x)`` by autograd.

    ``function(x) -> (y, logabsdet)`` acts element by element (``y``, ``logabsdet``
    shaped like ``x``), as the pure functions of ``transforms.functional`` do; a
    derivative that is not positive fails (its log is NaN).
    """
    x = x.detach().requires_grad_(True)
    y, logabsdet = function(x)
    (derivative,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(logabsdet, derivative.log(), atol=atol, rtol=0)


def assert_elementwise_round_trip(
    forward,
    inverse,
    x: Tensor,
    atol: float,
    rtol: float = 0.0,
    logdet_atol: float | None = None,
) -> None:
    """``inverse(forward(x)) == x`` for an elementwise pair, and the log-determinants cancel.

    ``forward``/``inverse`` map a tensor to ``(values, logabsdet)`` of its shape.
    """
    y, logabsdet = forward(x)
    x_back, inverse_logabsdet = inverse(y)
    torch.testing.assert_close(x_back, x, atol=atol, rtol=rtol)
    torch.testing.assert_close(
        logabsdet + inverse_logabsdet,
        torch.zeros_like(x),
        atol=atol if logdet_atol is None else logdet_atol,
        rtol=0,
    )


def flow_log_density(transform: Transform, base: nn.Module):
    r"""The density ``log p_base(f(x)) + log|det df/dx|`` of ``f = transform`` (data to base)."""

    def log_density(points: Tensor) -> Tensor:
        with torch.no_grad():
            z, logabsdet = transform(points)
            return base.log_prob(z) + logabsdet

    return log_density


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


# -- the models' small options ---------------------------------------------------------

# Small, cheap options per registered name (features and context are the sweep's).
# The ODE family scores with a fixed-step solver here, so a density costs a few
# network passes per point; ``sample_and_log_prob`` and ``log_prob`` share it.
SMALL_OPTIONS: dict[str, dict[str, Any]] = {
    "nsf": {"transforms": 3, "hidden": [16, 16]},
    "nsf-ar": {"transforms": 3, "hidden": [16, 16]},
    "maf": {"transforms": 3, "hidden": [16, 16]},
    "iaf": {"transforms": 3, "hidden": [16, 16]},
    "realnvp": {"transforms": 3, "hidden": [16, 16]},
    "fm": {"hidden": [16], "time_embedding": 8, "likelihood_solver": "rk4", "steps": 8},
    "meanflow": {
        "hidden": [16],
        "time_embedding": 8,
        "likelihood_solver": "rk4",
        "likelihood_steps": 8,
    },
    # The shortcut's fixed-step likelihood needs steps from every call, which
    # sample_and_log_prob cannot pass: it keeps dopri5 (see LOG_PROB_OPTIONS).
    "shortcut": {"hidden": [16], "time_embedding": 8, "max_steps": 8},
    "consistency-fm": {"hidden": [16], "time_embedding": 8},
    "distilled": {"hidden": [16], "time_embedding": 8},
}
# The same names again with other options, as cases of their own.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    f"{name}:soft-clip,random": (
        name,
        {
            **SMALL_OPTIONS[name],
            "spline_parameterization": "soft-clip",
            "last_layer_init": "random",
        },
    )
    for name in ("nsf", "nsf-ar")
}
VARIANTS["fm:cosine"] = ("fm", {**SMALL_OPTIONS["fm"], "path": "cosine"})
# Keyword options of log_prob for the density grid, where the defaults are costly.
LOG_PROB_OPTIONS: dict[str, dict[str, Any]] = {"shortcut": {"solver": "rk4", "steps": 8}}


# What ``loss`` takes beyond the data, for models not trained from data alone.
def _pairs_loss(model: Any, x: Tensor, context: Tensor | None) -> Tensor:
    # A distilled model learns from (source, end point) pairs, not from data alone;
    # the pairs' checks are the protocol's, as for any loss.
    x = model.check_input(x)
    context = model.check_context(context, x.shape[0])
    return model.regression_loss(PairedBatch(torch.zeros_like(x), x, context))


LOSS_FUNCTIONS: dict[str, Callable[[Any, Tensor, Tensor | None], Tensor]] = {
    "distilled": _pairs_loss,
}
"""How the sweep computes a model's training loss where it is not ``model.loss(x, c)``."""


def registered_name(case: str) -> str:
    """The registered name of a sweep case (a name, or a variant's ``name:options``)."""
    return VARIANTS[case][0] if case in VARIANTS else case


def small_options(case: str) -> dict[str, Any]:
    """The case's build options; a registered name without an entry fails, naming it."""
    if case in VARIANTS:
        return dict(VARIANTS[case][1])
    if case not in SMALL_OPTIONS:
        pytest.fail(
            f"model {case!r} is registered but has no entry in SMALL_OPTIONS of "
            f"{__name__}: add its small options so the contract sweep covers it"
        )
    return dict(SMALL_OPTIONS[case])
