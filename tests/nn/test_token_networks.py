"""Token denoisers: shapes, dtypes, soft inputs, equivariance, gradients, errors, a fit."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pushforward.nn.one_hot_mlp import OneHotMLP
from pushforward.nn.token_transformer import MultiHeadSelfAttention, TokenTransformer
from tests.contract import randomize_

STATES, VOCAB, LENGTH, CONTEXT = 5, 4, 3, 2


def build(kind: str, context_features: int = 0) -> nn.Module:
    if kind == "mlp":
        return OneHotMLP(STATES, VOCAB, LENGTH, context_features=context_features, hidden=(16, 12))
    return TokenTransformer(
        STATES, VOCAB, LENGTH, context_features=context_features, width=16, depth=2, heads=4
    )


KINDS = ["mlp", "transformer"]


def inputs(
    batch: int, context_features: int, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.randint(0, STATES, (batch, LENGTH), generator=generator)
    t = torch.rand(batch, generator=generator, dtype=dtype)
    context = (
        torch.randn(batch, context_features, generator=generator, dtype=dtype)
        if context_features
        else None
    )
    return x_t, t, context


def randomized(kind: str, context_features: int = 0, seed: int = 0) -> nn.Module:
    """A network with every parameter perturbed, so zero-initialised layers hide nothing."""
    torch.manual_seed(seed)
    network = build(kind, context_features)
    randomize_(network, generator=torch.Generator().manual_seed(seed + 1))
    return network


# --- shapes, dtypes, soft inputs ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("context_features", [0, CONTEXT])
def test_logits_have_the_vocab_shape_and_parameter_dtype(kind, context_features):
    network = randomized(kind, context_features)
    x_t, t, context = inputs(6, context_features)
    logits = network(x_t, t, context)
    assert logits.shape == (6, LENGTH, VOCAB)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    # Each row's logits depend on its own inputs only (no batch statistics).
    torch.testing.assert_close(
        network(x_t[2:3], t[2:3], None if context is None else context[2:3]), logits[2:3]
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("context_features", [0, CONTEXT])
def test_soft_one_hot_gives_the_logits_of_the_tokens(kind, context_features):
    network = randomized(kind, context_features)
    x_t, t, context = inputs(7, context_features, seed=3)
    soft = F.one_hot(x_t, STATES).float()
    torch.testing.assert_close(
        network(soft, t, context), network(x_t, t, context), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("kind", KINDS)
def test_soft_mixture_differs_from_its_tokens_and_is_differentiable(kind):
    network = randomized(kind)
    x_t, t, _ = inputs(4, 0, seed=4)
    weights = (0.6 * F.one_hot(x_t, STATES) + 0.4 / STATES).double().requires_grad_()
    logits = network.double()(weights, t.double())
    assert not torch.allclose(logits, network(x_t, t.double()))
    logits.sum().backward()
    assert weights.grad is not None and weights.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("context_features", [0, CONTEXT])
def test_float64_end_to_end(kind, context_features):
    network = randomized(kind, context_features).double()
    x_t, t, context = inputs(5, context_features, dtype=torch.float64)
    logits = network(x_t, t, context)
    assert logits.dtype == torch.float64
    soft = F.one_hot(x_t, STATES).double()
    torch.testing.assert_close(network(soft, t, context), logits, atol=1e-12, rtol=0)
    logits.square().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float64 for p in network.parameters())
    # float32 times and context are cast to the parameters' dtype, not the reverse.
    lower = None if context is None else context.float()
    widened = None if lower is None else lower.double()
    low = network(x_t, t.float(), lower)
    assert low.dtype == torch.float64
    assert torch.equal(low, network(x_t, t.float().double(), widened))


@pytest.mark.parametrize("kind", KINDS)
def test_scalar_time_and_one_context_row_broadcast(kind):
    network = randomized(kind, CONTEXT)
    x_t, _, context = inputs(4, CONTEXT)
    assert context is not None
    one_row = context[:1]
    full = network(x_t, torch.full((4,), 0.3), one_row.expand(4, CONTEXT))
    torch.testing.assert_close(network(x_t, torch.tensor(0.3), one_row), full)


@pytest.mark.parametrize("kind", KINDS)
def test_logits_depend_on_time_and_context(kind):
    network = randomized(kind, CONTEXT)
    x_t, t, context = inputs(4, CONTEXT)
    assert context is not None
    base = network(x_t, t, context)
    assert not torch.allclose(network(x_t, 1 - t, context), base)
    assert not torch.allclose(network(x_t, t, context + 1), base)


def test_one_hot_mlp_matches_its_formula_by_hand():
    network = randomized("mlp", CONTEXT)
    x_t, t, context = inputs(3, CONTEXT)
    assert context is not None
    features = torch.cat(
        [F.one_hot(x_t, STATES).float().flatten(1), network.time_embedding(t), context], dim=1
    )
    layers = list(network.network)
    first, second, last = layers[0], layers[2], layers[4]
    expected = last(F.silu(second(F.silu(first(features)))))
    torch.testing.assert_close(network(x_t, t, context), expected.reshape(3, LENGTH, VOCAB))


def test_attention_matches_softmax_formula():
    torch.manual_seed(0)
    attention = MultiHeadSelfAttention(8, 2).double()
    h = torch.randn(3, 5, 8, dtype=torch.float64)
    q, k, v = attention.query_key_value(h).split(8, dim=-1)
    heads = []
    for j in range(2):
        cols = slice(4 * j, 4 * (j + 1))
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / 2.0  # sqrt(4)
        heads.append(torch.softmax(scores, dim=-1) @ v[..., cols])
    expected = attention.output(torch.cat(heads, dim=-1))
    torch.testing.assert_close(attention(h), expected)


# --- the transformer's symmetry and initialisation -------------------------------------------


@settings(max_examples=20, deadline=None)
@given(permutation=st.permutations(list(range(LENGTH))), seed=st.integers(0, 2**16))
def test_transformer_is_permutation_equivariant_without_positions(permutation, seed):
    network = randomized("transformer", CONTEXT, seed=seed % 7)
    with torch.no_grad():
        network.position_embedding.zero_()
    x_t, t, context = inputs(4, CONTEXT, seed=seed)
    order = torch.tensor(permutation)
    torch.testing.assert_close(
        network(x_t[:, order], t, context), network(x_t, t, context)[:, order]
    )


def test_transformer_positions_break_the_symmetry():
    network = randomized("transformer")
    x_t = torch.tensor([[0, 1, 2]])
    order = torch.tensor([2, 0, 1])
    t = torch.tensor([0.4])
    assert not torch.allclose(network(x_t[:, order], t), network(x_t, t)[:, order])


def test_transformer_starts_at_the_uniform_denoiser():
    torch.manual_seed(0)
    network = build("transformer", CONTEXT)
    x_t, t, context = inputs(3, CONTEXT)
    assert torch.equal(network(x_t, t, context), torch.zeros(3, LENGTH, VOCAB))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("context_features", [0, CONTEXT])
def test_gradients_reach_every_parameter_after_a_few_steps(kind, context_features):
    torch.manual_seed(0)
    network = build(kind, context_features)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    x_t, t, context = inputs(8, context_features, seed=5)
    target = torch.randint(0, VOCAB, (8, LENGTH), generator=torch.Generator().manual_seed(6))

    def backward() -> None:
        optimizer.zero_grad()
        logits = network(x_t, t, context)
        F.cross_entropy(logits.reshape(-1, VOCAB), target.reshape(-1)).backward()

    # adaLN-zero: the head moves first, then the gates, then the blocks behind them.
    for _ in range(3):
        backward()
        optimizer.step()
    backward()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip_gives_identical_logits(kind):
    network = randomized(kind, CONTEXT)
    torch.manual_seed(99)
    copy = build(kind, CONTEXT)
    copy.load_state_dict(network.state_dict())
    x_t, t, context = inputs(3, CONTEXT)
    assert torch.equal(copy(x_t, t, context), network(x_t, t, context))


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_call_errors_name_the_problem(kind):
    network = build(kind, CONTEXT)
    x_t, t, context = inputs(4, CONTEXT)
    with pytest.raises(ValueError, match="shape \\(batch, 3\\)"):
        network(x_t[:, :2], t, context)
    with pytest.raises(ValueError, match="shape \\(batch, 3, 5\\)"):
        network(F.one_hot(x_t, STATES + 1).float(), t, context)
    with pytest.raises(ValueError, match="t has 3 times, x_t has 4"):
        network(x_t, t[:3], context)
    with pytest.raises(ValueError, match="t must have shape"):
        network(x_t, t[:, None, None], context)
    assert context is not None
    with pytest.raises(ValueError, match="context has 3 rows"):
        network(x_t, t, context[:3])
    with pytest.raises(ValueError, match="context of 2 features, none was given"):
        network(x_t, t)
    with pytest.raises(ValueError, match="context must have shape"):
        network(x_t, t, torch.randn(4, 3))
    with pytest.raises(TypeError, match="integer tokens or float weights"):
        network(x_t > 0, t, context)
    plain = build(kind)
    with pytest.raises(ValueError, match="context_features=0"):
        plain(x_t, t, context)


@pytest.mark.parametrize("cls", [OneHotMLP, TokenTransformer])
@pytest.mark.parametrize(
    ("args", "keywords", "message"),
    [
        ((0, 1, 3), {}, "option 'states' must be an integer >= 1"),
        ((5, 0, 3), {}, "option 'vocab' must be an integer >= 1"),
        ((5, 4, 0), {}, "option 'length' must be an integer >= 1"),
        ((5, 4, 2.0), {}, "option 'length' must be an integer >= 1"),
        ((4, 5, 3), {}, "vocab \\(5\\) cannot exceed the number of states \\(4\\)"),
        ((5, 4, 3), {"context_features": -1}, "option 'context_features' must be an integer >= 0"),
    ],
)
def test_constructor_errors(cls, args, keywords, message):
    with pytest.raises(ValueError, match=message):
        cls(*args, **keywords)


def test_constructor_errors_of_each_network():
    with pytest.raises(ValueError, match="option 'hidden' must be an integer >= 1"):
        OneHotMLP(5, 4, 3, hidden=(8, 0))
    with pytest.raises(ValueError, match="width \\(10\\) must be divisible by heads \\(4\\)"):
        TokenTransformer(5, 4, 3, width=10, heads=4)
    for name in ("width", "depth", "heads"):
        with pytest.raises(ValueError, match=f"option '{name}' must be an integer >= 1"):
            TokenTransformer(5, 4, 3, **{name: 0})


# --- a fit ----------------------------------------------------------------------------------


def test_one_hot_mlp_learns_a_time_dependent_token_map():
    """Target: each token shifted by 1 (t < 1/2) or by 2 (t >= 1/2), modulo the vocabulary,
    on a uniform path (states == vocab); the map is deterministic, so the cross-entropy
    of a perfect denoiser is 0."""
    torch.manual_seed(0)
    vocab = 3
    network = OneHotMLP(vocab, vocab, LENGTH, hidden=(64, 64))
    sequences = torch.tensor(list(itertools.product(range(vocab), repeat=LENGTH)))
    x_t = sequences.repeat(2, 1)
    t = torch.cat([torch.full((len(sequences),), 0.2), torch.full((len(sequences),), 0.8)])
    shift = torch.where(t < 0.5, 1, 2)[:, None]
    target = (x_t + shift) % vocab
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    for _ in range(300):
        optimizer.zero_grad()
        loss = F.cross_entropy(network(x_t, t).reshape(-1, vocab), target.reshape(-1))
        loss.backward()
        optimizer.step()
    assert loss.item() < 1e-3
    assert torch.equal(network(x_t, t).argmax(-1), target)
