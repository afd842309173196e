"""``load_dataset``: one entry point for built-in names and files."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from pushforward.data import TOYS, Dataset, builtin_names, load_dataset


def test_builtin_toys():
    data = load_dataset("builtin:checkerboard", n=100, seed=3)
    assert isinstance(data, Dataset) and len(data) == 100 and data.event_shape == (2,)
    assert data.toy is TOYS["checkerboard"] and data.levels is None
    assert torch.equal(data.values, TOYS["checkerboard"].sample(100, seed=3))
    assert len(load_dataset("builtin:moons")) == 20_000


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn")
def test_builtin_digits():
    data = load_dataset("builtin:digits", n=10, seed=1)
    assert data.values.shape == (10, 1, 8, 8) and data.levels == 17 and data.toy is None


def test_unknown_builtin_names_the_closest():
    with pytest.raises(ValueError, match=r"'digit'.*did you mean 'digits'.*builtin:moons"):
        load_dataset("builtin:digit")
    assert "digits" in builtin_names() and "2spirals" in builtin_names()


def test_files_give_their_first_rows(tmp_path):
    values = np.arange(12.0).reshape(6, 2)
    np.savez(tmp_path / "d.npz", train=values, test=values)
    data = load_dataset(f"{tmp_path / 'd.npz'}:train", n=4)
    assert data.values.dtype == torch.float64 and data.toy is None
    np.testing.assert_array_equal(data.values.numpy(), values[:4])
    with pytest.raises(ValueError, match=r"asked for 7 rows but data file .* has 6"):
        load_dataset(f"{tmp_path / 'd.npz'}:train", n=7)
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="positive integer"):
        load_dataset("builtin:moons", n=0)
