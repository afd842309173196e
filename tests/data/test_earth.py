"""The earth-science sets: coordinates, packaged files, splits, and ``load_dataset``."""

from __future__ import annotations

import doctest
import fnmatch
import math
from importlib import resources
from pathlib import Path

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given

from pushforward.data import (
    EARTH_SETS,
    builtin_names,
    earth,
    latlon_to_unit,
    load_dataset,
    load_earth,
)
from pushforward.data.earth import EARTH_FILES, read_earth_latlon, split_rows, unit_to_latlon

ROWS = {"volcano": 827, "earthquake": 6120, "flood": 4875, "fire": 12809}
REPO = Path(__file__).resolve().parents[2]


def test_closed_form_points():
    lat = torch.tensor([0.0, 0.0, 90.0, -90.0, 45.0], dtype=torch.float64)
    lon = torch.tensor([0.0, 90.0, 0.0, 0.0, 180.0], dtype=torch.float64)
    half = math.sqrt(0.5)
    expected = torch.tensor(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1], [-half, 0, half]], dtype=torch.float64
    )
    torch.testing.assert_close(latlon_to_unit(lat, lon), expected, atol=1e-15, rtol=0)
    assert latlon_to_unit(torch.tensor([10]), torch.tensor([20])).dtype == torch.float64
    assert latlon_to_unit(lat.float(), lon.float()).dtype == torch.float32


@given(
    lat=st.floats(-89.9, 89.9, allow_nan=False),
    lon=st.floats(-179.999, 180.0, allow_nan=False),
)
def test_latlon_round_trip(lat, lon):
    x = latlon_to_unit(
        torch.tensor([lat], dtype=torch.float64), torch.tensor([lon], dtype=torch.float64)
    )
    assert abs(float(x.norm()) - 1) < 1e-15
    back_lat, back_lon = unit_to_latlon(x)
    assert abs(float(back_lat[0]) - lat) < 1e-9
    # Longitude is circular: compare on the circle (lon = -180 and 180 are one meridian).
    gap = (float(back_lon[0]) - lon + 180) % 360 - 180
    assert abs(gap) < 1e-9
    assert -180 < float(back_lon[0]) <= 180


@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=3, max_size=3))
def test_unit_round_trip(coordinates):
    x = torch.tensor([coordinates], dtype=torch.float64)
    if float(x.norm()) < 1e-3:
        return
    x = x / x.norm()
    lat, lon = unit_to_latlon(x)
    assert -90 <= float(lat[0]) <= 90
    torch.testing.assert_close(latlon_to_unit(lat, lon), x, atol=1e-12, rtol=0)


def test_unit_to_latlon_checks_the_shape():
    with pytest.raises(ValueError, match="3 coordinates"):
        unit_to_latlon(torch.zeros(4, 2))


def test_the_files_are_package_data():
    folder = resources.files("pushforward.data").joinpath("earth_data")
    for name, (file, _) in EARTH_FILES.items():
        assert folder.joinpath(file).is_file(), name
    assert folder.joinpath("README.md").is_file()
    # An installed (non-editable) copy holds what pyproject lists: every shipped file
    # must match one of its package-data patterns.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["pushforward.data"]
    shipped = [f"earth_data/{entry.name}" for entry in folder.iterdir()]
    assert all(any(fnmatch.fnmatch(path, p) for p in patterns) for path in shipped), shipped


@pytest.mark.parametrize("name", EARTH_SETS)
def test_rows_and_ranges(name):
    latlon = read_earth_latlon(name)
    assert latlon.shape == (ROWS[name], 2) and latlon.dtype == torch.float64
    assert latlon[:, 0].abs().max() <= 90 and latlon[:, 1].abs().max() <= 180
    x = load_earth(name, "all")
    assert x.shape == (ROWS[name], 3) and x.dtype == torch.float64
    torch.testing.assert_close(x.norm(dim=1), torch.ones(ROWS[name], dtype=torch.float64))


@pytest.mark.parametrize("name", EARTH_SETS)
def test_splits_partition_the_rows(name):
    n = ROWS[name]
    parts = {split: split_rows(n, split, seed=0) for split in ("train", "val", "test")}
    assert len(parts["val"]) == len(parts["test"]) == n // 10
    assert len(parts["train"]) == n - 2 * (n // 10)
    together = torch.cat(list(parts.values()))
    assert torch.equal(together.sort().values, torch.arange(n))
    assert torch.equal(split_rows(n, "all", seed=0).sort().values, torch.arange(n))
    x = load_earth(name, "test")
    assert x.shape == (n // 10, 3)


def test_the_split_is_pinned():
    # Reported test likelihoods compare across installs only if the test rows stay put.
    assert split_rows(827, "test", 0)[:6].tolist() == [96, 708, 59, 808, 49, 380]
    assert split_rows(12809, "val", 0)[:6].tolist() == [11055, 5032, 7213, 10833, 10897, 10832]


def test_split_seed():
    assert torch.equal(load_earth("volcano", "test", seed=3), load_earth("volcano", "test", seed=3))
    assert not torch.equal(split_rows(827, "test", 0), split_rows(827, "test", 1))
    # The rows are the file's rows, in the split's order.
    latlon = read_earth_latlon("volcano")
    rows = split_rows(827, "val", 5)
    torch.testing.assert_close(
        load_earth("volcano", "val", seed=5), latlon_to_unit(latlon[rows, 0], latlon[rows, 1])
    )


def test_bad_names():
    with pytest.raises(ValueError, match=r"unknown split 'tset'.*did you mean 'test'"):
        load_earth("volcano", "tset")
    with pytest.raises(ValueError, match=r"unknown earth data set 'volcanoes'.*'volcano'"):
        load_earth("volcanoes")


def test_load_dataset_gives_the_train_split():
    data = load_dataset("builtin:volcano")
    assert data.domain == "sphere" and data.toy is None and data.source == "builtin:volcano"
    torch.testing.assert_close(data.values, load_earth("volcano", "train"))
    first = load_dataset("builtin:volcano", n=10, seed=7)
    torch.testing.assert_close(first.values, data.values[:10])
    test = load_dataset("builtin:earthquake", split="test")
    assert test.source == "builtin:earthquake:test" and len(test) == 612
    same = load_dataset("builtin:earthquake:test", split="test")
    torch.testing.assert_close(same.values, test.values)
    assert all(name in builtin_names() for name in EARTH_SETS)


def test_load_dataset_split_errors():
    with pytest.raises(ValueError, match=r"unknown split 'training'.*did you mean 'train'"):
        load_dataset("builtin:flood", split="training")
    with pytest.raises(ValueError, match="names split 'test' but split='val'"):
        load_dataset("builtin:flood:test", split="val")
    with pytest.raises(ValueError, match="only the earth sets"):
        load_dataset("builtin:moons", split="test")
    with pytest.raises(ValueError, match="applies to the earth sets"):
        load_dataset("data.npy", split="test")
    with pytest.raises(ValueError, match=r"asked for 100 rows but the test split .* has 82"):
        load_dataset("builtin:volcano:test", n=100)
    with pytest.raises(ValueError, match=r"'volcanos'.*did you mean 'volcano'"):
        load_dataset("builtin:volcanos")
    with pytest.raises(ValueError, match=r"unknown built-in data set 'volcanos'"):
        load_dataset("builtin:volcanos:test")


def test_docstring_examples():
    assert doctest.testmod(earth).failed == 0
