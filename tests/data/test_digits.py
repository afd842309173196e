"""scikit-learn's 8x8 digits with dequantisation, and bits per dimension."""

from __future__ import annotations

import math

import pytest
import torch

from pushforward.data import DIGIT_LEVELS, bits_per_dim, digit_labels, load_digits

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def raw_digits() -> torch.Tensor:
    return torch.as_tensor(sklearn_datasets.load_digits().images).reshape(-1, 1, 8, 8)


def test_shape_range_and_dequantisation_keeps_the_integer():
    images = load_digits(seed=0)
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float64
    assert images.min() >= 0 and images.max() < 1
    # (v + u)/17 with u in [0, 1): the integer part of 17 x recovers v exactly.
    assert torch.equal(torch.floor(images * DIGIT_LEVELS), raw_digits())
    noise = images * DIGIT_LEVELS - raw_digits()
    assert 0.45 < noise.mean().item() < 0.55  # uniform on [0, 1)


def test_seeded_and_subset_matches_labels():
    a, b = load_digits(seed=4, n=100), load_digits(seed=4, n=100)
    assert torch.equal(a, b) and a.shape == (100, 1, 8, 8)
    assert not torch.equal(a, load_digits(seed=5, n=100))
    labels = digit_labels(seed=4, n=100)
    everything, all_labels = raw_digits(), torch.as_tensor(sklearn_datasets.load_digits().target)
    # Each chosen image is one of the originals with the label we report for it.
    for image, label in zip(torch.floor(a[:5] * DIGIT_LEVELS), labels[:5], strict=True):
        matches = (everything == image).flatten(1).all(dim=1)
        assert matches.any() and label in all_labels[matches]


def test_without_dequantisation_uses_cell_centres():
    images = load_digits(dequantize=False, dtype=torch.float32)
    assert images.dtype == torch.float32
    torch.testing.assert_close(images.double(), (raw_digits() + 0.5) / 17)


def test_bad_subset_size():
    with pytest.raises(ValueError, match="1797 images"):
        load_digits(n=5000)


def test_bits_per_dim():
    # The uniform density on [0, 1)^D has NLL 0 and matches the discrete uniform: log2(17) bits.
    assert bits_per_dim(0.0, 64) == pytest.approx(math.log2(17))
    nll = torch.tensor([10.0, -50.0], dtype=torch.float64)
    expected = (nll + 64 * math.log(256)) / (64 * math.log(2))
    torch.testing.assert_close(bits_per_dim(nll, 64, n_levels=256), expected)
    with pytest.raises(ValueError, match="dims > 0"):
        bits_per_dim(1.0, 0)
