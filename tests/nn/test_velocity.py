"""Velocity networks and time embeddings: shapes, time/context handling, row independence, fit."""

from __future__ import annotations

import math

import pytest
import torch

from pushforward.nn.time_embedding import SinusoidalTimeEmbedding, sinusoidal_embedding
from pushforward.nn.velocity import VelocityMLP

VARIANTS = [
    pytest.param(False, (32, 24), id="plain"),
    pytest.param(True, (32, 32), id="residual"),
]


def randomize_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every parameter a random value, so zero-initialised layers do not hide paths."""
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.copy_(0.3 * noise)


# --- time embedding -------------------------------------------------------------------------


def test_time_embedding_matches_the_formula_by_hand():
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    embedding = SinusoidalTimeEmbedding(6, max_period=100.0, scale=10.0)(t)
    frequencies = [100.0 ** (-k / 3) for k in range(3)]
    expected = [
        [math.cos(10 * s * w) for w in frequencies] + [math.sin(10 * s * w) for w in frequencies]
        for s in t.tolist()
    ]
    torch.testing.assert_close(embedding, torch.tensor(expected, dtype=torch.float64))


def test_time_embedding_odd_dim_pads_a_zero_column_and_has_no_parameters():
    module = SinusoidalTimeEmbedding(7)
    t = torch.rand(5)
    embedding = module(t)
    assert embedding.shape == (5, 7)
    assert torch.equal(embedding[:, -1], torch.zeros(5))
    torch.testing.assert_close(embedding[:, :6], sinusoidal_embedding(t, 6))
    assert list(module.parameters()) == []


def test_time_embedding_scalar_broadcasts_and_follows_dtype():
    module = SinusoidalTimeEmbedding(8)
    t = torch.tensor(0.3, dtype=torch.float64)
    one = module(t)
    assert one.shape == (1, 8) and one.dtype == torch.float64
    torch.testing.assert_close(one.expand(4, 8), module(t.expand(4)))
    torch.testing.assert_close(module(t.expand(4)[:, None]), module(t.expand(4)))


def test_time_embedding_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dim >= 2"):
        SinusoidalTimeEmbedding(1)
    with pytest.raises(ValueError, match="time must be"):
        SinusoidalTimeEmbedding(4)(torch.zeros(3, 2))


# --- velocity network -----------------------------------------------------------------------


@pytest.mark.parametrize(("residual", "hidden"), VARIANTS)
@pytest.mark.parametrize("event", [(5,), (2, 3, 4)], ids=["vector", "image"])
def test_output_has_the_shape_of_x(residual, hidden, event):
    features = math.prod(event)
    net = VelocityMLP(features, hidden=hidden, time_embedding=8, residual=residual)
    x = torch.randn(4, *event)
    assert net(x, torch.rand(4)).shape == x.shape


def test_image_input_is_the_flattened_vector_input():
    net = VelocityMLP(24, hidden=(16,), time_embedding=8)
    x = torch.randn(3, 2, 3, 4)
    t = torch.rand(3)
    torch.testing.assert_close(net(x, t).reshape(3, 24), net(x.reshape(3, 24), t))


def test_plain_network_has_the_usual_mlp_shape():
    net = VelocityMLP(2, context=3, time_embedding=32)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (2 + 32 + 3, 256),
        (256, 256),
        (256, 256),
        (256, 2),
    ]


@pytest.mark.parametrize(("residual", "hidden"), VARIANTS)
def test_scalar_time_equals_a_batch_of_equal_times(residual, hidden):
    net = VelocityMLP(3, hidden=hidden, time_embedding=8, residual=residual)
    randomize_(net, torch.Generator().manual_seed(1))
    x = torch.randn(5, 3)
    expected = net(x, torch.full((5,), 0.7))
    torch.testing.assert_close(net(x, torch.tensor(0.7)), expected)
    torch.testing.assert_close(net(x, torch.tensor([0.7])), expected)
    torch.testing.assert_close(net(x, torch.full((5, 1), 0.7)), expected)
    torch.testing.assert_close(net(x, 0.7), expected)


def test_raw_time_input_when_time_embedding_is_zero():
    net = VelocityMLP(2, hidden=(8,), time_embedding=0)
    assert net.network[0].in_features == 3
    x, t = torch.randn(4, 2), torch.rand(4)
    by_hand = net.network(torch.cat([x, t[:, None]], dim=-1))
    torch.testing.assert_close(net(x, t), by_hand)


@pytest.mark.parametrize(("residual", "hidden"), VARIANTS)
def test_context_changes_the_output_and_one_row_broadcasts(residual, hidden):
    net = VelocityMLP(3, context=2, hidden=hidden, time_embedding=8, residual=residual)
    randomize_(net, torch.Generator().manual_seed(2))
    x, t = torch.randn(4, 3), torch.rand(4)
    context = torch.randn(1, 2)
    out = net(x, t, context)
    torch.testing.assert_close(out, net(x, t, context.expand(4, 2)))
    torch.testing.assert_close(out, net(x, t, context[0]))
    assert not torch.allclose(out, net(x, t, context + 1.0))


def test_context_errors_name_the_problem():
    conditional = VelocityMLP(3, context=2, hidden=(8,), time_embedding=4)
    unconditional = VelocityMLP(3, hidden=(8,), time_embedding=4)
    x, t = torch.randn(4, 3), torch.rand(4)
    with pytest.raises(ValueError, match="context of 2 features, none was given"):
        conditional(x, t)
    with pytest.raises(ValueError, match="built with context=0"):
        unconditional(x, t, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"context must have shape \(batch, 2\)"):
        conditional(x, t, torch.randn(4, 3))
    with pytest.raises(ValueError, match="context has 3 rows, x has 4"):
        conditional(x, t, torch.randn(3, 2))


def test_shape_and_option_errors():
    net = VelocityMLP(3, hidden=(8,), time_embedding=4)
    with pytest.raises(ValueError, match="3 values per event"):
        net(torch.randn(4, 5), torch.rand(4))
    with pytest.raises(ValueError, match="one value per sample"):
        net(torch.randn(4, 3), torch.rand(3))
    with pytest.raises(ValueError, match="equal, non-empty hidden widths"):
        VelocityMLP(3, hidden=(8, 16), residual=True)
    with pytest.raises(ValueError, match="unknown activation"):
        VelocityMLP(3, activation="swishy")


@pytest.mark.parametrize(("residual", "hidden"), VARIANTS)
def test_rows_are_independent(residual, hidden):
    """Cross-row Jacobian blocks (in x, t and context) are exactly zero."""
    generator = torch.Generator().manual_seed(3)
    net = VelocityMLP(2, context=2, hidden=hidden, time_embedding=6, residual=residual).double()
    randomize_(net, generator)
    batch = 4
    x = torch.randn(batch, 2, generator=generator, dtype=torch.float64)
    t = torch.rand(batch, generator=generator, dtype=torch.float64)
    context = torch.randn(batch, 2, generator=generator, dtype=torch.float64)
    jac_x, jac_t, jac_c = torch.func.jacrev(net, argnums=(0, 1, 2))(x, t, context)
    # jac_x: (B, D, B, D), jac_t: (B, D, B), jac_c: (B, D, B, C)
    off_diagonal = ~torch.eye(batch, dtype=torch.bool)
    assert torch.all(jac_x.permute(0, 2, 1, 3)[off_diagonal] == 0)
    assert torch.all(jac_t.permute(0, 2, 1)[off_diagonal] == 0)
    assert torch.all(jac_c.permute(0, 2, 1, 3)[off_diagonal] == 0)
    # and the diagonal blocks are not trivially zero
    rows = torch.arange(batch)
    assert jac_x[rows, :, rows, :].abs().sum() > 0
    assert jac_t[rows, :, rows].abs().sum() > 0
    assert jac_c[rows, :, rows, :].abs().sum() > 0


@pytest.mark.parametrize(("residual", "hidden"), VARIANTS)
def test_float64_end_to_end(residual, hidden):
    net = VelocityMLP(3, context=1, hidden=hidden, time_embedding=8, residual=residual).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    out = net(x, torch.rand(4, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64))
    assert out.dtype == torch.float64
    out.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float64


def test_residual_network_starts_as_the_skip_path():
    net = VelocityMLP(3, context=2, hidden=(16, 16, 16), time_embedding=8, residual=True)
    x = torch.randn(5, 3)
    skip = net.output_layer(torch.nn.functional.silu(net.input_layer(x)))
    torch.testing.assert_close(net(x, torch.rand(5), torch.randn(5, 2)), skip)
    torch.testing.assert_close(net(x, torch.rand(5), torch.randn(5, 2)), skip)
    for block in net.blocks:
        assert torch.all(block.second.weight == 0) and torch.all(block.second.bias == 0)


@pytest.mark.parametrize(("residual", "hidden"), VARIANTS)
def test_network_fits_a_time_dependent_regression_target(residual, hidden):
    torch.manual_seed(4)
    net = VelocityMLP(2, hidden=hidden, time_embedding=8, residual=residual, time_scale=1.0)
    x = torch.randn(256, 2)
    t = torch.rand(256)
    target = torch.stack([torch.sin(2 * x[:, 0]) * t, x[:, 0] * x[:, 1] - t], dim=-1)

    def mse() -> torch.Tensor:
        return (net(x, t) - target).pow(2).mean()

    with torch.no_grad():
        initial = mse().item()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        loss = mse()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = mse().item()
    assert final < initial / 10, (initial, final)
