"""``pushforward`` on points of a manifold: train -> sample -> eval with ``rfm``, points
kept as they are (never standardised), and bad input exiting 2 with one line."""

from __future__ import annotations

import base64
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
    path = tmp_path_factory.mktemp("points")
    generator = np.random.default_rng(0)
    x = generator.normal(size=(400, 3)) + np.array([0.0, 0.0, 2.0])
    np.save(path / "sphere.npy", x / np.linalg.norm(x, axis=1, keepdims=True))
    np.save(path / "raw.npy", x)
    # Angles given as any reals: they are wrapped.
    np.save(path / "angles.npy", 3.0 + 0.3 * generator.normal(size=(400, 2)) + 4 * np.pi)
    return path


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("data", "manifold"), [("sphere.npy", "sphere"), ("angles.npy", "torus")])
def test_train_sample_eval_on_points_of_a_manifold(folder, tmp_path, capsys, data, manifold):
    out = tmp_path / "run"
    argv = ["train", "--data", str(folder / data), "--model", "rfm", "--out", str(out),
            "--set", f'manifold="{manifold}"', *TINY]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["standardization"]["mean"] is None
    samples = tmp_path / "s.npy"
    assert main(["sample", str(out), "-n", "200", "--out", str(samples), "--steps", "4"]) == 0
    array = np.load(samples)
    assert array.shape == (200, 3 if manifold == "sphere" else 2)
    if manifold == "sphere":
        np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)
    else:
        assert array.min() >= -math.pi and array.max() < math.pi
    result = run_json(capsys, ["eval", str(out), "--data", str(folder / data), "--n", "100"])
    assert math.isfinite(result["nll"]) and result["nll_se"] > 0
    uniform = math.log(4 * math.pi) if manifold == "sphere" else 2 * math.log(2 * math.pi)
    assert result["nll"] < uniform  # it learned the concentration a little


def test_rows_off_the_sphere_are_normalised_only_when_asked(folder, tmp_path, capsys):
    capsys.readouterr()
    argv = ["train", "--data", str(folder / "raw.npy"), "--model", "rfm", *TINY]
    assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
    error = capsys.readouterr().err.strip()
    assert "data row 0 has norm" in error and "normalize=true" in error
    assert len(error.splitlines()) == 1
    assert main([*argv, "--out", str(tmp_path / "normalised"), "--set", "normalize=true"]) == 0


def test_bad_manifold_input_exits_2_with_one_line(folder, tmp_path, capsys):
    nan = tmp_path / "nan.npy"
    rows = np.load(folder / "sphere.npy")
    rows[3, 1] = np.nan
    np.save(nan, rows)
    cases = [
        (str(folder / "sphere.npy"), ("--set", 'manifold="spere"'), "did you mean 'sphere'"),
        (str(folder / "sphere.npy"), ("--set", 'manifold="so3"'), "4 coordinates"),
        (str(nan), (), "NaN"),
        (str(folder / "sphere.npy"), ("--source", str(folder / "sphere.npy")), "--source"),
    ]
    for index, (data, extra, message) in enumerate(cases):
        capsys.readouterr()
        argv = ["train", "--data", data, "--model", "rfm", "--out", str(tmp_path / f"bad{index}"),
                *TINY, *extra]  # fmt: skip
        assert main(argv) == 2, message
        error = capsys.readouterr().err.strip()
        assert message in error, (message, error)
        assert len(error.splitlines()) == 1, error


@pytest.mark.parametrize(
    ("data", "manifold"),
    [("builtin:vmf-mixture", None), ("angles.npy", "torus"), ("builtin:rotation-mixture", None)],
)
def test_plot_draws_points_on_their_manifold(folder, tmp_path, data, manifold):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    source = data if data.startswith("builtin:") else str(folder / data)
    extra = ["--n", "1000"] if manifold is None else ["--set", f'manifold="{manifold}"']
    argv = ["train", "--data", source, "--model", "rfm", "--out", str(out), *TINY, *extra]
    assert main(argv) == 0
    assert main(["plot", str(out)]) == 0
    figure = (out / "samples.png").read_bytes()
    assert figure.startswith(b"\x89PNG") and len(figure) > 10_000
    assert base64.b64encode(figure).decode() in (out / "report.html").read_text()
