"""MADE: the autoregressive property by autograd Jacobians, context reach, masks as buffers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pushforward.nn.made import MADE, MaskedLinear, dense_rank, hidden_degrees
from pushforward.nn.mlp import MLP, initialize_linear
from tests.contract import randomize_

ARCHITECTURES = [
    pytest.param((), False, id="no-hidden"),
    pytest.param((16,), False, id="one-hidden"),
    pytest.param((16, 16), False, id="two-hidden"),
    pytest.param((12, 20, 12), False, id="three-hidden"),
    pytest.param((16,), True, id="residual-1"),
    pytest.param((16, 16), True, id="residual-2"),
]


def params_jacobian(made: MADE, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """``d params[b, i, p] / d x[b, j]`` for every row: ``(B, D, P, D)``."""

    def single(row: torch.Tensor, row_context: torch.Tensor | None) -> torch.Tensor:
        ctx = None if row_context is None else row_context.unsqueeze(0)
        return made(row.unsqueeze(0), ctx)[0]

    if context is None:
        return torch.func.vmap(torch.func.jacrev(lambda r: single(r, None)))(x)
    return torch.func.vmap(torch.func.jacrev(single))(x, context)


def context_jacobian(made: MADE, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """``d params[b, i, p] / d context[b, k]``: ``(B, D, P, C)``."""

    def single(row_context: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        return made(row.unsqueeze(0), row_context.unsqueeze(0))[0]

    return torch.func.vmap(torch.func.jacrev(single))(context, x)


@pytest.mark.parametrize(("hidden", "residual"), ARCHITECTURES)
@pytest.mark.parametrize("context", [0, 3])
@pytest.mark.parametrize("features", [1, 2, 5, 8])
def test_jacobian_is_strictly_triangular_in_the_order(hidden, residual, context, features):
    generator = torch.Generator().manual_seed(100 * features + context)
    order = torch.randperm(features, generator=generator)
    made = MADE(
        features,
        3,
        hidden=hidden,
        context=context,
        order=order,
        residual=residual,
        activation="tanh",
        zero_last=False,
    ).double()
    randomize_(made, generator=generator)
    x = torch.randn(6, features, generator=generator, dtype=torch.float64)
    c = torch.randn(6, context, generator=generator, dtype=torch.float64) if context else None
    jacobian = params_jacobian(made, x, c)
    assert jacobian.shape == (6, features, 3, features)
    depends = jacobian.abs().amax(dim=(0, 2)) > 0  # (i, j): output i reads input j
    allowed = order[None, :] < order[:, None]
    # No forbidden connection at all (exact zeros), and every allowed one is used.
    assert not (depends & ~allowed).any()
    assert (depends == allowed).all()


@pytest.mark.parametrize(("hidden", "residual"), ARCHITECTURES)
@pytest.mark.parametrize("features", [1, 3, 6])
def test_context_reaches_every_output(hidden, residual, features):
    generator = torch.Generator().manual_seed(features)
    made = MADE(
        features,
        2,
        hidden=hidden,
        context=2,
        order=torch.randperm(features, generator=generator),
        residual=residual,
        activation="tanh",
        zero_last=False,
    ).double()
    randomize_(made, generator=generator)
    x = torch.randn(4, features, generator=generator, dtype=torch.float64)
    c = torch.randn(4, 2, generator=generator, dtype=torch.float64)
    reach = context_jacobian(made, x, c).abs().amax(dim=(0, 3))  # (D, P)
    assert (reach > 0).all()


def test_order_with_ties_blocks_connections_within_a_group():
    order = torch.tensor([2, 0, 2, 5, 0])
    made = MADE(5, 2, hidden=(16, 16), order=order, activation="tanh", zero_last=False).double()
    randomize_(made, generator=torch.Generator().manual_seed(1))
    x = torch.randn(5, 5, dtype=torch.float64)
    depends = params_jacobian(made, x, None).abs().amax(dim=(0, 2)) > 0
    assert (depends == (order[None, :] < order[:, None])).all()
    assert made.rank.tolist() == [1, 0, 1, 2, 0]


def test_masked_linear_matches_a_linear_with_masked_weight():
    mask = torch.rand(7, 5) > 0.5
    layer = MaskedLinear(5, 7, mask)
    x = torch.randn(11, 5)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight * mask, layer.bias))
    layer(x).square().sum().backward()
    assert (layer.weight.grad[~mask] == 0).all()
    assert "mask" in dict(layer.named_buffers())
    with pytest.raises(ValueError, match="mask has shape"):
        MaskedLinear(5, 7, mask.T)


def test_zero_last_gives_zero_params_and_output_layout():
    made = MADE(4, 3, hidden=(8,), context=2)
    out = made(torch.randn(5, 4), torch.randn(5, 2))
    assert out.shape == (5, 4, 3)
    assert (out == 0).all()
    # Output unit i * P + p belongs to feature i: its mask row repeats feature i's pattern.
    rows = made.last.mask.view(4, 3, -1)
    assert (rows == rows[:, :1]).all()


@pytest.mark.parametrize("context", [0, 2])
def test_initialize_last_layer_random_is_pytorchs_default_and_zero_restores(context):
    made = MADE(4, 3, hidden=(8, 8), context=context)
    torch.manual_seed(11)
    made.initialize_last_layer("random")
    # The same draws as a fresh nn.Linear of that shape (Kaiming-uniform weight, then bias).
    torch.manual_seed(11)
    reference = nn.Linear(8, 12)
    assert torch.equal(made.last.weight, reference.weight)
    assert torch.equal(made.last.bias, reference.bias)
    bound = 1 / math.sqrt(8)
    assert made.last.weight.abs().max() <= bound and made.last.weight.abs().max() > bound / 2
    # Still autoregressive: the masks are untouched, so feature 0 (rank 0) sees no input.
    c = torch.randn(5, context) if context else None
    x = torch.randn(5, 4)
    bumped = x.clone()
    bumped[:, 0] += 1.0
    out = made(x, c)
    assert torch.equal(made(bumped, c)[:, 0], out[:, 0])
    assert out.abs().min() > 0
    made.initialize_last_layer("zero")
    assert (made(x, c) == 0).all()
    with pytest.raises(ValueError, match=r"unknown last-layer initialisation 'ones'.*'random'"):
        made.initialize_last_layer("ones")


def test_mlp_initialize_last_layer():
    mlp = MLP(3, 5, hidden=(7,))
    assert (mlp(torch.randn(2, 3)) == 0).all()
    torch.manual_seed(12)
    mlp.initialize_last_layer("random")
    torch.manual_seed(12)
    reference = nn.Linear(7, 5)
    assert torch.equal(mlp[-1].weight, reference.weight)
    assert torch.equal(mlp[-1].bias, reference.bias)
    no_bias = nn.Linear(4, 2, bias=False)
    initialize_linear(no_bias, "zero")
    assert (no_bias.weight == 0).all()


@pytest.mark.parametrize(("hidden", "residual"), ARCHITECTURES)
def test_forward_subset_matches_forward(hidden, residual):
    made = MADE(6, 4, hidden=hidden, context=2, order=[5, 1, 0, 3, 2, 4], residual=residual)
    randomize_(made, generator=torch.Generator().manual_seed(0))
    x, c = torch.randn(7, 6), torch.randn(7, 2)
    index = torch.tensor([4, 0, 3])
    torch.testing.assert_close(made.forward_subset(x, index, c), made(x, c)[:, index])


def test_hidden_degrees_and_rank_helpers():
    assert hidden_degrees(7, 1, 3).tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert dense_rank(torch.tensor([3, 0, 3, 7])).tolist() == [1, 0, 1, 2]


@pytest.mark.parametrize("residual", [False, True])
def test_state_dict_round_trip_carries_order_and_masks(residual):
    order = torch.tensor([3, 1, 0, 4, 2])
    made = MADE(5, 2, hidden=(16, 16), context=1, order=order, residual=residual)
    randomize_(made, generator=torch.Generator().manual_seed(3))
    # Built with a different order: loading must overwrite it with the saved one.
    reloaded = MADE(5, 2, hidden=(16, 16), context=1, residual=residual)
    reloaded.load_state_dict(made.state_dict())
    x, c = torch.randn(8, 5), torch.randn(8, 1)
    torch.testing.assert_close(reloaded(x, c), made(x, c), atol=0, rtol=0)
    assert reloaded.order.tolist() == order.tolist()


def test_float64_and_context_broadcast():
    made = MADE(3, 2, hidden=(8,), context=2, zero_last=False).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    row = torch.randn(2, dtype=torch.float64)
    out = made(x, row)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, made(x, row.expand(4, 2)))


def test_errors_speak_the_users_language():
    with pytest.raises(ValueError, match="residual"):
        MADE(3, 2, hidden=(8, 16), residual=True)
    with pytest.raises(ValueError, match="order has shape"):
        MADE(3, 2, order=[0, 1])
    with pytest.raises(ValueError, match="integers"):
        MADE(3, 2, order=[0.0, 1.0, 2.0])
    made = MADE(3, 2, context=2)
    with pytest.raises(ValueError, match="pass context"):
        made(torch.randn(4, 3))
    with pytest.raises(ValueError, match="context has shape"):
        made(torch.randn(4, 3), torch.randn(4, 5))
