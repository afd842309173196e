"""Every transform carries a score both ways: ``forward_and_score`` and ``inverse_and_score``.

For a density :math:`p_x` pushed by the transform, the score the pass returns must equal
the autograd gradient of :math:`\\log p_x(m^{-1}(y)) + \\log|\\det J_{m^{-1}}(y)|`, computed
here through the opposite direction. Coupling layers get there by a triangular solve
without that pass, the other transforms by the generic vector-Jacobian product; both are
checked on every case of the catalogue (``tests.contract.TRANSFORMS``).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from tests.contract import TRANSFORMS, randomize_
from tests.transforms.test_transform_contract import contexts_of, inputs

CASES = [
    pytest.param(name, features, context, id=f"{name}-{features}-{context}")
    for name in TRANSFORMS
    for features in (1, 3, 4)
    for context in contexts_of(name)
]


def quadratic_log_density(x: Tensor) -> Tensor:
    """An unnormalised smooth log-density with a score that is not a multiple of x."""
    weights = torch.linspace(0.5, 1.5, x.shape[1], dtype=x.dtype)
    shift = torch.linspace(-0.3, 0.4, x.shape[1], dtype=x.dtype)
    return -0.5 * (weights * (x - shift) ** 2).sum(dim=1) + 0.1 * x[:, 0] ** 3


def score_of(x: Tensor) -> Tensor:
    point = x.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(quadratic_log_density(point).sum(), point)
    return gradient


def pushed_score(opposite, out: Tensor, context: Tensor | None) -> Tensor:
    """The gradient at ``out`` of the pushed log-density, by autograd through ``opposite``."""
    point = out.detach().requires_grad_(True)
    back, logabsdet = opposite(point, context)
    (gradient,) = torch.autograd.grad((quadratic_log_density(back) + logabsdet).sum(), point)
    return gradient


@pytest.mark.parametrize(("name", "features", "context"), CASES)
def test_scores_match_autograd_both_ways(name, features, context):
    transform = TRANSFORMS[name].build(features, context, torch.float64)
    randomize_(transform, 0.25, torch.Generator().manual_seed(features + 10))
    transform.eval()  # batch statistics would make the map depend on the batch
    x, c = inputs(name, 9, features, context)
    y, logabsdet, score_y = transform.forward_and_score(x, score_of(x), c)
    with torch.no_grad():
        y_plain, logabsdet_plain = transform(x, c)
    torch.testing.assert_close(y.detach(), y_plain, atol=1e-12, rtol=0)
    torch.testing.assert_close(logabsdet.detach(), logabsdet_plain, atol=1e-12, rtol=0)
    torch.testing.assert_close(score_y, pushed_score(transform.inverse, y, c), atol=1e-7, rtol=1e-7)
    assert not score_y.requires_grad

    y = y.detach()
    x_back, inverse_logabsdet, score_x = transform.inverse_and_score(y, score_of(y), c)
    with torch.no_grad():
        x_plain, inverse_plain = transform.inverse(y, c)
    torch.testing.assert_close(x_back.detach(), x_plain, atol=1e-12, rtol=0)
    torch.testing.assert_close(inverse_logabsdet.detach(), inverse_plain, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        score_x, pushed_score(transform.forward, x_back, c), atol=1e-7, rtol=1e-7
    )


@pytest.mark.parametrize("name", ["coupling-affine", "coupling-spline"])
def test_coupling_scores_need_no_pass_the_other_way(name, monkeypatch):
    if name not in TRANSFORMS:
        pytest.skip(f"no catalogue case {name}")
    transform = TRANSFORMS[name].build(4, 0, torch.float64)
    randomize_(transform, 0.25, torch.Generator().manual_seed(3))
    x, _ = inputs(name, 5, 4, 0)

    def refuse(*args, **kwargs):
        raise AssertionError("the other direction was evaluated")

    reference = transform.inverse_and_score(x, score_of(x))
    monkeypatch.setattr(transform, "forward", refuse)
    monkeypatch.setattr(transform.map, "forward", refuse)
    again = transform.inverse_and_score(x, score_of(x))
    torch.testing.assert_close(again[2], reference[2], atol=0, rtol=0)


def test_a_map_that_says_its_logabsdet_ignores_the_input_is_right():
    from pushforward.transforms.maps import AffineMap

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    params = torch.randn(7, 3, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    for direction in (AffineMap().forward, AffineMap().inverse):
        _, logabsdet = direction(x, params)
        gradient, _ = torch.autograd.grad(logabsdet.sum(), [x, params], allow_unused=True)
        assert gradient is None or float(gradient.abs().max()) == 0.0
    assert AffineMap.logabsdet_depends_on_input is False
