"""Embedding networks: shapes, gradients, their symmetries, tied standardisation, errors, reload."""

from __future__ import annotations

import re

import pytest
import torch

from pushforward.nn.embedding import (
    EMBEDDINGS,
    ConvEmbedding,
    MLPEmbedding,
    SetEmbedding,
    make_embedding,
    tied_standardization,
)
from pushforward.transforms.standardize import fit_standardization

FEATURES = 5

# One small case per layout: (name, context, observation_shape).
CASES = [
    pytest.param("mlp", 12, None, id="mlp"),
    pytest.param("cnn", 40, None, id="cnn-default-layout"),
    pytest.param("cnn", 40, (40,), id="cnn-length"),
    pytest.param("cnn", 60, (3, 20), id="cnn-channels-length"),
    pytest.param("set", 18, (6, 3), id="set"),
]
DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]
# Permutation invariance holds up to the rounding of a mean taken in another order.
PERMUTATION_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def build(name, context, shape, dtype=torch.float64, seed=0, hidden=(8, 8)):
    torch.manual_seed(seed)
    return make_embedding(name, context, FEATURES, shape, hidden).to(dtype)


def permute_elements(rows, elements, generator):
    """Every row's elements in an independent random order (no row left in its own order)."""
    sets = rows.reshape(rows.shape[0], elements, -1)
    orders = []
    for _ in range(rows.shape[0]):
        order = torch.randperm(elements, generator=generator)
        while torch.equal(order, torch.arange(elements)):
            order = torch.randperm(elements, generator=generator)
        orders.append(order)
    index = torch.stack(orders)[:, :, None].expand_as(sets)
    return torch.gather(sets, 1, index).reshape(rows.shape)


def test_registry_lists_every_kind():
    built = {name: make_embedding(name, 18, 3, (6, 3), (4,)) for name in EMBEDDINGS}
    assert isinstance(built["mlp"], MLPEmbedding)
    assert isinstance(built["cnn"], ConvEmbedding)
    assert isinstance(built["set"], SetEmbedding)
    for embedding in built.values():
        assert (embedding.in_features, embedding.out_features) == (18, 3)
    assert built["mlp"].observation_shape == (18,)
    assert built["cnn"].observation_shape == (6, 3)
    assert built["set"].observation_shape == (6, 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "context", "shape"), CASES)
def test_shapes_and_dtypes(name, context, shape, dtype):
    embedding = build(name, context, shape, dtype)
    x = torch.randn(7, context, dtype=dtype)
    y = embedding(x)
    assert y.shape == (7, FEATURES)
    assert y.dtype == dtype
    assert bool(torch.isfinite(y).all())
    # Leading batch dimensions and a single row go through the same network.
    many = embedding(x.reshape(7, 1, context).expand(7, 2, context))
    assert many.shape == (7, 2, FEATURES)
    torch.testing.assert_close(many[:, 1], y)
    torch.testing.assert_close(embedding(x[3]), y[3])
    # Rows are embedded independently: a batch is its rows stacked.
    torch.testing.assert_close(embedding(x[:2]), y[:2])


@pytest.mark.parametrize(("name", "context", "shape"), CASES)
def test_gradients_reach_every_parameter(name, context, shape):
    embedding = build(name, context, shape)
    x = torch.randn(16, context, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(16, FEATURES, dtype=torch.float64)
    (embedding(x) * weights).sum().backward()
    for parameter_name, parameter in embedding.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert bool(torch.isfinite(parameter.grad).all()), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "context", "shape"), CASES)
def test_outputs_depend_on_the_input(name, context, shape):
    embedding = build(name, context, shape)
    x = torch.randn(2, context, dtype=torch.float64)
    y = embedding(x)
    assert (y[0] - y[1]).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
def test_set_embedding_is_invariant_to_permutations_of_the_elements(dtype):
    elements, element_features = 12, 3
    embedding = build("set", elements * element_features, (elements, element_features), dtype)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(9, elements * element_features, generator=generator, dtype=dtype)
    permuted = permute_elements(x, elements, generator)
    assert not torch.equal(permuted, x)
    y = embedding(x)
    assert (embedding(permuted) - y).abs().max() < PERMUTATION_TOLERANCE[dtype]
    # A permutation of the flat row that mixes elements is not a permutation of the set.
    mixed = x.roll(1, dims=1)
    assert (embedding(mixed) - y).abs().max() > 1e-3
    # Nor is another set.
    other = torch.randn(9, elements * element_features, generator=generator, dtype=dtype)
    assert ((embedding(other) - y).abs().amax(dim=1) > 1e-3).all()


def test_set_embedding_reads_a_row_element_by_element():
    # With observation_shape (elements, element_features) row [a0 a1 | b0 b1 | c0 c1] holds
    # elements (a0, a1), (b0, b1), (c0, c1); swapping whole elements leaves the output alone,
    # swapping a feature between two elements does not.
    embedding = build("set", 6, (3, 2))
    x = torch.randn(4, 6, dtype=torch.float64)
    swapped_elements = x[:, [2, 3, 0, 1, 4, 5]]
    swapped_features = x[:, [2, 1, 0, 3, 4, 5]]
    y = embedding(x)
    assert (embedding(swapped_elements) - y).abs().max() < 1e-12
    assert (embedding(swapped_features) - y).abs().max() > 1e-3


def test_conv_embedding_single_channel_layouts_agree():
    x = torch.randn(5, 50, dtype=torch.float64)
    outputs = [build("cnn", 50, shape)(x) for shape in (None, (50,), (1, 50))]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    torch.testing.assert_close(outputs[0], outputs[2], rtol=0, atol=0)


def test_conv_embedding_reads_a_row_channel_by_channel():
    # observation_shape (2, 30): values 0..29 are channel 0, 30..59 channel 1. With the first
    # convolution blind to channel 1, only the first half of a row can move the output.
    embedding = build("cnn", 60, (2, 30))
    first = embedding.convolutions[0]
    with torch.no_grad():
        first.weight[:, 1].zero_()
    x = torch.randn(4, 60, dtype=torch.float64)
    second_half_changed = x.clone()
    second_half_changed[:, 30:] = torch.randn(4, 30, dtype=torch.float64)
    first_half_changed = x.clone()
    first_half_changed[:, :30] = torch.randn(4, 30, dtype=torch.float64)
    y = embedding(x)
    torch.testing.assert_close(embedding(second_half_changed), y, rtol=0, atol=0)
    assert (embedding(first_half_changed) - y).abs().max() > 1e-3


def test_conv_embedding_sees_where_a_feature_occurs():
    # One bump, early or late in the series: pooling to positions keeps them apart.
    embedding = build("cnn", 200, (200,))
    times = torch.arange(200, dtype=torch.float64)
    early = torch.exp(-0.5 * ((times - 40) / 5) ** 2)[None]
    late = early.roll(100, dims=1)
    assert (embedding(early) - embedding(late)).abs().max() > 1e-3
    x = torch.randn(3, 200, dtype=torch.float64)
    assert (embedding(x.roll(7, dims=1)) - embedding(x)).abs().max() > 1e-3


@pytest.mark.parametrize(("channels", "length"), [(1, 1000), (3, 100), (2, 7), (1, 1)])
def test_conv_embedding_takes_short_and_long_series(channels, length):
    embedding = ConvEmbedding(channels * length, 4, (channels, length), hidden=(8, 16, 16))
    assert embedding.positions == min(8, -(-length // 8))
    y = embedding(torch.randn(3, channels * length))
    assert y.shape == (3, 4)
    assert bool(torch.isfinite(y).all())


def scaled_rows(n, shape, generator):
    """Rows with a different mean and scale in every position, so tied and untied differ."""
    size = int(torch.tensor(shape).prod())
    offsets = torch.linspace(-3.0, 5.0, size, dtype=torch.float64)
    scales = torch.linspace(0.5, 4.0, size, dtype=torch.float64)
    return offsets + scales * torch.randn(n, size, generator=generator, dtype=torch.float64)


def test_set_standardization_commutes_with_permuting_the_elements():
    elements, element_features = 7, 3
    embedding = build("set", 21, (elements, element_features))
    generator = torch.Generator().manual_seed(2)
    rows = scaled_rows(200, (elements, element_features), generator)
    permuted = permute_elements(rows, elements, torch.Generator().manual_seed(3))
    # The same orders again, applied to the standardised rows.
    mean, std = embedding.context_standardization(rows)
    mean_p, std_p = embedding.context_standardization(permuted)
    assert mean.shape == std.shape == (21,)
    assert mean.dtype == std.dtype == torch.float64
    standardized_then_permuted = permute_elements(
        (rows - mean) / std, elements, torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(
        (permuted - mean_p) / std_p, standardized_then_permuted, rtol=0, atol=1e-12
    )
    # Per-feature statistics would not commute: the check above can fail.
    untied_mean, untied_std = fit_standardization(permuted)
    assert ((permuted - untied_mean) / untied_std - standardized_then_permuted).abs().max() > 1e-2


def test_set_standardization_is_that_of_the_pooled_element_features():
    embedding = build("set", 20, (5, 4))
    rows = scaled_rows(50, (5, 4), torch.Generator().manual_seed(4))
    elements = rows.reshape(50 * 5, 4)
    expected_mean = elements.mean(dim=0).repeat(5)
    expected_std = (elements - elements.mean(dim=0)).square().mean(dim=0).sqrt().repeat(5)
    mean, std = embedding.context_standardization(rows)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std, expected_std, rtol=1e-12, atol=1e-12)


def test_conv_standardization_is_per_channel_and_commutes_with_shifts():
    channels, length = 3, 16
    embedding = build("cnn", channels * length, (channels, length))
    rows = scaled_rows(40, (channels, length), torch.Generator().manual_seed(5))
    series = rows.reshape(40, channels, length)
    expected_mean = series.mean(dim=(0, 2)).repeat_interleave(length)
    expected_std = series.std(dim=(0, 2), correction=0).repeat_interleave(length)
    mean, std = embedding.context_standardization(rows)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std, expected_std, rtol=1e-12, atol=1e-12)
    shifted = series.roll(5, dims=2).reshape(40, -1)
    mean_s, std_s = embedding.context_standardization(shifted)
    standardized_then_shifted = ((rows - mean) / std).reshape(40, channels, length).roll(5, 2)
    torch.testing.assert_close(
        (shifted - mean_s) / std_s, standardized_then_shifted.reshape(40, -1), rtol=0, atol=1e-12
    )


def test_mlp_standardization_is_per_feature():
    embedding = build("mlp", 9, None)
    rows = scaled_rows(30, (9,), torch.Generator().manual_seed(6))
    mean, std = embedding.context_standardization(rows)
    expected_mean, expected_std = fit_standardization(rows)
    torch.testing.assert_close(mean, expected_mean, rtol=0, atol=0)
    torch.testing.assert_close(std, expected_std, rtol=0, atol=0)


def test_tied_standardization_sets_a_constant_feature_to_unit_scale():
    rows = torch.randn(10, 6, dtype=torch.float64)
    rows[:, 1::2] = 2.0  # feature 1 of every element is constant
    with pytest.warns(UserWarning, match="constant feature"):
        mean, std = tied_standardization(rows, (3, 2), 0)
    torch.testing.assert_close(std[1::2], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(mean[1::2], torch.full((3,), 2.0, dtype=torch.float64))


@pytest.mark.parametrize(("name", "context", "shape"), CASES)
def test_standardization_rejects_rows_of_another_width(name, context, shape):
    embedding = build(name, context, shape)
    with pytest.raises(ValueError, match=f"rows of width {context}"):
        embedding.context_standardization(torch.randn(4, context + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=re.escape(f"rows (n, {context})")):
        embedding.context_standardization(torch.randn(context, dtype=torch.float64))


@pytest.mark.parametrize(("name", "context", "shape"), CASES)
def test_forward_names_the_expected_width(name, context, shape):
    embedding = build(name, context, shape)
    message = f"embedding '{name}' expects contexts of width {context}"
    with pytest.raises(ValueError, match=re.escape(message)):
        embedding(torch.randn(3, context - 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=re.escape(message)):
        embedding(torch.tensor(1.0, dtype=torch.float64))


ERRORS = [
    pytest.param(
        ("sett", 18, (6, 3)),
        "unknown embedding 'sett' (did you mean 'set'?); valid: 'mlp', 'cnn', 'set'",
        id="unknown-name",
    ),
    pytest.param(
        ("transformer", 18, (6, 3)),
        "unknown embedding 'transformer'; valid: 'mlp', 'cnn', 'set'",
        id="unknown-name-no-hint",
    ),
    pytest.param(
        ("set", 18, (10, 2)),
        "embedding 'set': observation_shape [10, 2] holds 20 values but the context has 18",
        id="set-product",
    ),
    pytest.param(
        ("cnn", 100, (3, 30)),
        "embedding 'cnn': observation_shape [3, 30] holds 90 values but the context has 100",
        id="cnn-product",
    ),
    pytest.param(
        ("mlp", 12, (5, 2)),
        "embedding 'mlp': observation_shape [5, 2] holds 10 values but the context has 12",
        id="mlp-product",
    ),
    pytest.param(
        ("set", 18, None),
        "embedding 'set' needs an observation_shape [elements, element_features]; "
        "the context has 18 values",
        id="set-missing",
    ),
    pytest.param(
        ("set", 18, (18,)),
        "embedding 'set': observation_shape must be [elements, element_features], "
        "got [18] (1 entry)",
        id="set-entries",
    ),
    pytest.param(
        ("cnn", 24, (2, 3, 4)),
        "embedding 'cnn': observation_shape must be [length] or [channels, length], "
        "got [2, 3, 4] (3 entries)",
        id="cnn-entries",
    ),
    pytest.param(
        ("cnn", 24, ()),
        "embedding 'cnn': observation_shape must be [length] or [channels, length], "
        "got [] (0 entries)",
        id="cnn-empty",
    ),
    pytest.param(
        ("set", 18, (-6, -3)),
        "embedding 'set': observation_shape entries must be positive integers, got [-6, -3]",
        id="set-negative",
    ),
    pytest.param(
        ("cnn", 0, (0,)),
        "option 'context' must be an integer >= 1, got 0",
        id="zero-context",
    ),
    pytest.param(
        ("set", 18, (6.5, 3)),
        "embedding 'set': observation_shape entries must be positive integers, got [6.5, 3]",
        id="set-fraction",
    ),
    pytest.param(
        ("cnn", 10, "10"),
        "embedding 'cnn': observation_shape must be [length] or [channels, length], got '10'",
        id="cnn-string",
    ),
]


@pytest.mark.parametrize(("arguments", "message"), ERRORS)
def test_errors_speak_the_users_language(arguments, message):
    name, context, shape = arguments
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_embedding(name, context, FEATURES, shape, (8,))


@pytest.mark.parametrize("name", EMBEDDINGS)
@pytest.mark.parametrize(
    ("features", "hidden", "message"),
    [
        (0, (8,), "option 'features' must be an integer >= 1, got 0"),
        (3, (8, 0), "option 'hidden' must be an integer >= 1, got 0"),
        (3, (), "option 'hidden' must be a list of layer widths, got ()"),
    ],
)
def test_sizes_must_be_positive(name, features, hidden, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_embedding(name, 18, features, (6, 3), hidden)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"kernel_size": 0}, "option 'kernel_size' must be an integer >= 1, got 0"),
        ({"positions": 0}, "option 'positions' must be an integer >= 1, got 0"),
    ],
)
def test_conv_options_must_be_positive(option, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ConvEmbedding(20, 3, (20,), **option)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "context", "shape"), CASES)
def test_state_dict_round_trip_gives_identical_outputs(name, context, shape, dtype):
    trained = build(name, context, shape, dtype, seed=0)
    fresh = build(name, context, shape, dtype, seed=1)
    x = torch.randn(6, context, dtype=dtype)
    assert not torch.equal(fresh(x), trained(x))
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh(x), trained(x))
