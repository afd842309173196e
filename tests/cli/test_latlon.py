"""Latitude/longitude files: ``train --latlon`` models them as unit vectors of S^2, ``eval``
and ``plot`` read the run's files the same way, ``sample`` writes latitude and longitude,
and rows in another layout are refused naming the first bad one."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pushforward.cli.main import main
from pushforward.data import latlon_rows, load_dataset, unit_to_latlon_rows
from pushforward.train.run_directory import open_run

TINY = ["--set", "hidden=[32]", "--steps", "30", "--batch-size", "128", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")


@given(
    st.floats(-89.9, 89.9, allow_nan=False),
    st.floats(-179.9, 179.9, allow_nan=False),
)
@settings(max_examples=60, deadline=None)
def test_latitude_and_longitude_round_trip_through_unit_vectors(lat: float, lon: float) -> None:
    rows = torch.tensor([[lat, lon]], dtype=torch.float64)
    unit = latlon_rows(rows)
    assert torch.allclose(unit.norm(dim=-1), torch.ones(1, dtype=torch.float64), atol=1e-12)
    torch.testing.assert_close(unit_to_latlon_rows(unit), rows, atol=1e-9, rtol=0)


def test_longitudes_are_taken_modulo_360_and_the_poles_are_exact() -> None:
    rows = torch.tensor([[10.0, 20.0], [10.0, 380.0], [90.0, 45.0], [-90.0, 0.0]])
    unit = latlon_rows(rows.double())
    torch.testing.assert_close(unit[0], unit[1])
    torch.testing.assert_close(unit[2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(unit[3], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[1.0, 2.0, 3.0]], "must have 2 columns"),
        ([[10.0, 20.0], [95.0, 0.0]], "row 1 has latitude 95.0"),
        ([[10.0, 20.0], [float("nan"), 0.0]], "NaN or Inf value in row 1"),
    ],
)
def test_rows_in_another_layout_are_refused_naming_the_row(rows, message) -> None:
    with pytest.raises(ValueError, match=message):
        latlon_rows(torch.tensor(rows, dtype=torch.float64))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("latlon")
    unit = load_dataset("builtin:volcano:all").values
    latlon = unit_to_latlon_rows(unit).numpy()
    np.savetxt(path / "volcano.csv", latlon, delimiter=",", header="lat,lon", comments="")
    np.savetxt(path / "test.csv", latlon[:100], delimiter=",", header="lat,lon", comments="")
    np.save(path / "unit.npy", unit.numpy())
    np.save(path / "swapped.npy", latlon[:, ::-1] * 2.0)  # longitudes first: |value| > 90
    np.save(path / "angles.npy", np.radians(latlon))
    return path


@pytest.fixture(scope="module")
def run(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "volcano"
    argv = ["train", "--data", str(folder / "volcano.csv"), "--latlon", "--model", "rfm",
            "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    return out


def test_a_latlon_run_models_the_sphere_and_records_its_coordinates(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["coordinates"] == "latlon"
    assert config["data"]["event_shape"] == [3]
    assert config["model"]["options"]["manifold"] == "sphere"
    assert config["standardization"]["mean"] is None


def test_eval_reads_the_runs_files_as_latitude_and_longitude(run, folder, capsys) -> None:
    capsys.readouterr()
    assert main(["eval", str(run), "--data", str(folder / "test.csv")]) == 0
    result = json.loads(capsys.readouterr().out)
    _, model = open_run(str(run))
    x = latlon_rows(torch.from_numpy(np.loadtxt(folder / "test.csv", delimiter=",", skiprows=1)))
    with torch.no_grad():
        expected = -model.log_prob(x.float()).double().mean()
    assert result["n"] == 100
    # The density is with respect to the surface area of the unit sphere, as for unit vectors.
    assert result["nll"] == pytest.approx(float(expected), abs=2e-3)
    # A built-in set is read in its native coordinates (unit vectors) by the same run.
    capsys.readouterr()
    assert main(["eval", str(run), "--data", "builtin:volcano:test"]) == 0
    assert math.isfinite(json.loads(capsys.readouterr().out)["nll"])


def test_sample_writes_latitude_and_longitude(run, tmp_path) -> None:
    out = tmp_path / "s.npy"
    assert main(["sample", str(run), "-n", "300", "--out", str(out), "--steps", "4"]) == 0
    rows = np.load(out)
    assert rows.shape == (300, 2)
    assert np.abs(rows[:, 0]).max() <= 90 and np.abs(rows[:, 1]).max() <= 180
    back = unit_to_latlon_rows(latlon_rows(torch.from_numpy(rows))).numpy()
    np.testing.assert_allclose(back, rows, atol=1e-6)


def test_sample_latlon_from_a_unit_vector_run(folder, tmp_path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", str(folder / "unit.npy"), "--model", "rfm", "--out", str(out),
            "--set", 'manifold="sphere"', *TINY]  # fmt: skip
    assert main(argv) == 0
    samples = tmp_path / "s.npy"
    assert main(["sample", str(out), "-n", "50", "--out", str(samples), "--latlon"]) == 0
    assert np.load(samples).shape == (50, 2)


@pytest.mark.parametrize(
    ("data", "model", "extra", "message"),
    [
        ("unit.npy", "rfm", [], "must have 2 columns"),
        ("swapped.npy", "rfm", [], "outside \\[-90, 90\\]"),
        ("volcano.csv", "nsf", [], "use rfm"),
        ("builtin:volcano", "rfm", [], "native coordinates"),
    ],
)
def test_bad_latlon_training_exits_2_with_one_line(
    folder, tmp_path, capsys, data, model, extra, message
) -> None:
    path = data if data.startswith("builtin:") else str(folder / data)
    capsys.readouterr()
    argv = ["train", "--data", path, "--latlon", "--model", model, "--out", str(tmp_path / "r"),
            *extra, *TINY]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith("pushforward: error:")
    assert re.search(message, error), error
    assert not (tmp_path / "r" / "config.json").exists()


def test_sample_latlon_of_a_torus_run_exits_2(folder, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", str(folder / "angles.npy"), "--model", "rfm", "--out", str(out),
            "--set", 'manifold="torus"', *TINY]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    code = main(["sample", str(out), "-n", "5", "--out", str(tmp_path / "s.npy"), "--latlon"])
    assert code == 2
    assert "latitude and longitude" in capsys.readouterr().err
    assert not (tmp_path / "s.npy").exists()


def test_plot_draws_the_runs_latlon_data_on_the_sphere(run) -> None:
    pytest.importorskip("matplotlib")
    from pushforward.cli.plot import plot_run

    written = plot_run(run)
    assert any(path.name == "report.html" for path in written)
    assert len(written) >= 3  # loss, the map of data and samples, the report


def test_the_plots_data_is_the_runs_file_read_as_unit_vectors(run) -> None:
    # A file with fewer rows than the plot shows is drawn whole (it was once dropped).
    from pushforward.cli.plot import _plot_data

    config = json.loads((run / "config.json").read_text())
    data = _plot_data(config)
    assert data.shape == (827, 3)
    torch.testing.assert_close(data.norm(dim=-1), torch.ones(827, dtype=data.dtype))
