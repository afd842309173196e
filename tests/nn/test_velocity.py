"""Velocity networks and time embeddings: shapes, time/context handling, row independence, fit."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pushforward.nn.jacobian_trace import activation_and_slope
from pushforward.nn.mlp import ACTIVATIONS
from pushforward.nn.time_embedding import SinusoidalTimeEmbedding, sinusoidal_embedding
from pushforward.nn.velocity import VelocityMLP
from pushforward.ode.divergence import exact_divergence

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


# --- velocity_and_divergence: the hand-pushed Jacobian trace ---------------------------------

ACTIVATION_NAMES = ["silu", "relu", "gelu", "gelu-tanh", "elu", "tanh", "leaky_relu", "softplus"]
ARCHITECTURES = [
    pytest.param(False, (), id="linear"),
    pytest.param(False, (7,), id="plain1"),
    pytest.param(False, (7, 5), id="plain2"),
    pytest.param(False, (7, 5, 6), id="plain3"),
    pytest.param(False, (7, 5, 6, 4), id="plain4"),
    pytest.param(True, (6, 6, 6), id="residual"),
]


def set_activation_(net: VelocityMLP, name: str) -> None:
    """Swap in activations the registry does not build: GELU's tanh form, and Softplus
    (not special-cased, so its derivative comes from the generic jvp fallback)."""
    factory = {
        "gelu-tanh": lambda: torch.nn.GELU(approximate="tanh"),
        "softplus": torch.nn.Softplus,
    }
    if name not in factory:
        return
    if net.residual:
        for block in net.blocks:
            block.activation = factory[name]()
        net.output_activation = factory[name]()
    else:
        for index in range(1, len(net.network), 2):
            net.network[index] = factory[name]()


def trace_network(
    residual: bool, hidden: tuple[int, ...], activation: str, features: int, seed: int
) -> VelocityMLP:
    registered = activation if activation in ACTIVATIONS else "silu"
    net = VelocityMLP(
        features,
        context=2,
        hidden=hidden,
        time_embedding=4,
        activation=registered,
        residual=residual,
        time_scale=3.0,
    ).double()
    set_activation_(net, activation)
    randomize_(net, torch.Generator().manual_seed(seed))
    return net


def jacobian_trace(net: VelocityMLP, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor):
    """The trace of each row's x-Jacobian by reverse mode on the whole batch (independent of
    forward mode): (B, D, B, D) -> the diagonal blocks' traces."""
    batch, features = x.shape[0], math.prod(x.shape[1:])
    jac = torch.func.jacrev(lambda z: net(z, t, c).reshape(batch, features))(x)
    jac = jac.reshape(batch, features, batch, features)
    rows = torch.arange(batch)
    return jac[rows, :, rows, :].diagonal(dim1=1, dim2=2).sum(-1)


@pytest.mark.parametrize(("residual", "hidden"), ARCHITECTURES)
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("event", [(5,), (1, 2, 3)], ids=["vector", "image"])
def test_velocity_and_divergence_equals_the_jacobian_trace(residual, hidden, activation, event):
    if residual and not hidden:
        pytest.skip("the residual network needs hidden layers")
    features = math.prod(event)
    net = trace_network(residual, hidden, activation, features, seed=5)
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(9, *event, generator=generator, dtype=torch.float64)
    t = torch.rand(9, generator=generator, dtype=torch.float64)
    c = torch.randn(9, 2, generator=generator, dtype=torch.float64)
    velocity, divergence = net.velocity_and_divergence(x, t, c)
    assert velocity.shape == x.shape and divergence.shape == (9,)
    torch.testing.assert_close(velocity, net(x, t, c), rtol=0, atol=1e-12)
    generic = exact_divergence(lambda z: net(z, t, c), x)[1]
    torch.testing.assert_close(divergence, generic, rtol=0, atol=1e-10)
    torch.testing.assert_close(divergence, jacobian_trace(net, x, t, c), rtol=0, atol=1e-10)
    assert divergence.abs().max() > 1e-3  # the field is not trivially divergence-free


@pytest.mark.parametrize(
    ("residual", "hidden"),
    [
        pytest.param(False, (7, 5, 6), id="plain3"),
        pytest.param(False, (7, 5, 6, 4), id="plain4"),
        pytest.param(True, (6, 6), id="residual"),
    ],
)
@pytest.mark.parametrize("batch", [2, 40], ids=["batch<hidden", "batch>hidden"])
@pytest.mark.parametrize("chunk_size", [None, 1, 2])
def test_every_chunking_and_layout_gives_the_same_trace(residual, hidden, batch, chunk_size):
    # Small batches push the tangents, large ones fold the directions into the weights;
    # chunks split the 5 directions unevenly (2 + 2 + 1).
    net = trace_network(residual, hidden, "silu", 5, seed=7)
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(batch, 5, generator=generator, dtype=torch.float64)
    t = torch.rand(batch, generator=generator, dtype=torch.float64)
    c = torch.randn(1, 2, generator=generator, dtype=torch.float64)  # one row, broadcast
    _, divergence = net.velocity_and_divergence(x, t, c, chunk_size=chunk_size)
    generic = exact_divergence(lambda z: net(z, t, c), x)[1]
    torch.testing.assert_close(divergence, generic, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("residual", "hidden"),
    [
        pytest.param(False, (6, 5), id="plain2"),
        pytest.param(False, (6, 5, 4), id="plain3"),
        pytest.param(True, (6, 6), id="residual"),
    ],
)
@pytest.mark.parametrize("activation", ["silu", "gelu", "elu", "tanh", "leaky_relu"])
def test_gradients_equal_those_of_the_generic_path(residual, hidden, activation):
    net = trace_network(residual, hidden, activation, 3, seed=9)
    generator = torch.Generator().manual_seed(10)
    x = torch.randn(12, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    t = torch.rand(12, generator=generator, dtype=torch.float64)
    c = torch.randn(12, 2, generator=generator, dtype=torch.float64)
    weights = torch.randn(12, generator=generator, dtype=torch.float64)
    probe = torch.randn(12, 3, generator=generator, dtype=torch.float64)
    inputs = [x, *net.parameters()]

    def objective(velocity: torch.Tensor, divergence: torch.Tensor) -> torch.Tensor:
        return (divergence * weights).sum() + (velocity * probe).sum()

    fast = torch.autograd.grad(objective(*net.velocity_and_divergence(x, t, c)), inputs)
    generic = torch.autograd.grad(objective(*exact_divergence(lambda z: net(z, t, c), x)), inputs)
    for mine, theirs in zip(fast, generic, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-10)
    assert float(fast[0].abs().sum()) > 0  # second derivatives of the activation reach x


def test_velocity_and_divergence_follows_dtype_and_time_forms():
    net = VelocityMLP(3, context=1, hidden=(8, 8, 8), time_embedding=4)
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(5, 3, generator=generator)
    c = torch.randn(5, 1, generator=generator)
    velocity, divergence = net.velocity_and_divergence(x, torch.tensor(0.3), c)
    assert velocity.dtype == divergence.dtype == torch.float32
    batch_time = net.velocity_and_divergence(x, torch.full((5,), 0.3), c)[1]
    torch.testing.assert_close(divergence, batch_time)
    double = net.double()
    result = double.velocity_and_divergence(x.double(), 0.3, c.double())
    assert result[0].dtype == result[1].dtype == torch.float64
    torch.testing.assert_close(result[1].float(), divergence, rtol=1e-4, atol=1e-5)


def test_velocity_and_divergence_rejects_bad_arguments():
    net = VelocityMLP(3, hidden=(8, 8, 8), time_embedding=4)
    with pytest.raises(ValueError, match="3 values per event"):
        net.velocity_and_divergence(torch.randn(4, 5), torch.rand(4))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        net.velocity_and_divergence(torch.randn(4, 3), torch.rand(4), chunk_size=0)
    with pytest.raises(ValueError, match="built with context=0"):
        net.velocity_and_divergence(torch.randn(4, 3), torch.rand(4), torch.randn(4, 2))


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_activation_slopes_match_autograd_including_kinks_and_tails(activation):
    net = trace_network(False, (4,), activation, 2, seed=0)
    module = net.network[1]
    h = torch.tensor(
        [-800.0, -30.0, -2.5, -1e-3, 0.0, 1e-3, 0.7, 3.0, 30.0, 800.0],
        dtype=torch.float64,
        requires_grad=True,
    )
    value, slope = activation_and_slope(module, h)
    expected = module(h)
    (autograd_slope,) = torch.autograd.grad(expected.sum(), h, create_graph=True)
    torch.testing.assert_close(value, expected, rtol=0, atol=0)
    torch.testing.assert_close(slope, autograd_slope, rtol=1e-12, atol=1e-14)
    # The slope's own derivative (used when the likelihood is differentiated) is finite
    # in the tails and matches autograd's second derivative away from the kink at 0,
    # where ELU's second derivative jumps and either side is a valid convention.
    curvature, autograd_curvature = (
        torch.autograd.grad(s.sum(), h)[0] if s.requires_grad else torch.zeros_like(h)
        for s in (slope, autograd_slope)
    )
    assert torch.isfinite(curvature).all()
    smooth = h.detach() != 0
    torch.testing.assert_close(curvature[smooth], autograd_curvature[smooth], rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    residual=st.booleans(),
    depth=st.integers(1, 3),
    activation=st.sampled_from(["silu", "tanh", "elu", "gelu"]),
    context=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_velocity_and_jvp_matches_forward_mode_autodiff(residual, depth, activation, context, seed):
    torch.manual_seed(seed)
    net = VelocityMLP(
        3, context=context, hidden=[8] * depth, residual=residual, activation=activation
    ).double()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    x = torch.randn(6, 3, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64)
    c = torch.randn(6, context, dtype=torch.float64) if context else None
    direction = torch.randn(6, 3, dtype=torch.float64)
    value, tangent = net.velocity_and_jvp(x, t, c, direction)
    expected = torch.func.jvp(lambda y: net(y, t, c), (x,), (direction,))
    torch.testing.assert_close(value, expected[0])
    torch.testing.assert_close(tangent, expected[1])
