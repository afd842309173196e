"""``pushforward`` with ``reflected-fm``: train on a box from a file (``--set low/high``) or a
built-in set (bounds from the set), samples that never leave the box, ``eval`` with the
density on the box, a plot with the box drawn, and bad bounds or data exiting 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pushforward.cli.main import main

TINY = ["--set", "hidden=[32]", "--steps", "40", "--batch-size", "128", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("box")
    generator = np.random.default_rng(0)
    # Mass piled up at the left edge of [0, 2] x [-1, 1].
    x = np.stack([2 * generator.beta(1, 4, 600), generator.uniform(-1, 1, 600)], axis=1)
    np.save(path / "box.npy", x)
    outside = x.copy()
    outside[5] = [2.5, 0.0]
    np.save(path / "outside.npy", outside)
    return path


BOUNDS = ["--set", "low=[0.0, -1.0]", "--set", "high=[2.0, 1.0]"]


@pytest.fixture(scope="module")
def run(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "box"
    argv = ["train", "--data", str(folder / "box.npy"), "--model", "reflected-fm",
            "--out", str(out), *BOUNDS, *TINY]  # fmt: skip
    assert main(argv) == 0
    return out


def test_a_box_run_keeps_its_points_as_they_are(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    assert config["standardization"]["mean"] is None
    assert config["model"]["options"]["low"] == [0.0, -1.0]
    assert config["model"]["options"]["high"] == [2.0, 1.0]


@pytest.mark.parametrize("steps", ["1", "2", "100"])
def test_samples_written_by_the_cli_never_leave_the_box(run, tmp_path, steps) -> None:
    out = tmp_path / "s.npy"
    argv = ["sample", str(run), "-n", "20000", "--out", str(out), "--steps", steps]
    assert main(argv) == 0
    x = np.load(out)
    assert x.shape == (20000, 2)
    assert x[:, 0].min() >= 0 and x[:, 0].max() <= 2
    assert x[:, 1].min() >= -1 and x[:, 1].max() <= 1


def test_eval_gives_a_density_on_the_box(run, folder, capsys) -> None:
    capsys.readouterr()
    assert main(["eval", str(run), "--data", str(folder / "box.npy"), "--n", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert math.isfinite(result["nll"]) and result["nll_se"] > 0
    # Better than the uniform density on the box (log of its area, 4) after a short run.
    assert result["nll"] < math.log(4.0)


def test_a_builtin_box_set_gives_its_bounds(tmp_path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", "builtin:box-edges", "--n", "2000", "--model", "reflected-fm",
            "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    options = json.loads((out / "config.json").read_text())["model"]["options"]
    assert options["low"] == [0.0, 0.0] and options["high"] == [1.0, 1.0]


def test_plot_draws_the_box(run) -> None:
    pytest.importorskip("matplotlib")
    from pushforward.cli.plot import _box_of, plot_run
    from pushforward.train.run_directory import open_run

    written = plot_run(run)
    assert (run / "samples.png").exists() and (run / "report.html") in written
    _, model = open_run(str(run))
    box = _box_of(model)
    assert box is not None
    assert box[0].tolist() == [0.0, -1.0] and box[1].tolist() == [2.0, 1.0]


@pytest.mark.parametrize(
    ("data", "extra", "message"),
    [
        ("box.npy", ["--set", "low=1.0", "--set", "high=1.0"], "must exceed 'low'"),
        ("box.npy", ["--set", "low=[0.0, -1.0, 0.0]", "--set", "high=2.0"], "low"),
        ("outside.npy", BOUNDS, "row 5"),
        # high defaults to 1: the data reach 2, outside the box, named by their first row.
        ("box.npy", ["--set", "low=[0.0, -1.0]"], "outside the box"),
        ("box.npy", ["--set", "low=nan"], "finite"),
    ],
)
def test_bad_box_input_exits_2_with_one_line(folder, tmp_path, capsys, data, extra, message):
    capsys.readouterr()
    argv = ["train", "--data", str(folder / data), "--model", "reflected-fm",
            "--out", str(tmp_path / "bad"), *TINY, *extra]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert message in error, error
    assert not (tmp_path / "bad" / "config.json").exists()
