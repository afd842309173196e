"""``pushforward`` with the discrete flows of manifold points: train -> sample -> eval with
``circular-nsf`` on the torus and ``sphere-nsf`` on S^2, and bad input exiting 2 with one
line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pushforward.cli.main import main

TINY = ["--set", "hidden=[32]", "--set", "transforms=2", "--steps", "60", "--batch-size", "128",
        "--n", "2000", "--quiet"]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("data", "model"),
    [("builtin:von-mises-torus", "circular-nsf"), ("builtin:vmf-mixture", "sphere-nsf")],
)
def test_train_sample_eval_on_a_built_in_set(tmp_path: Path, capsys, data, model):
    out = tmp_path / "run"
    assert main(["train", "--data", data, "--model", model, "--out", str(out), *TINY]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["standardization"]["mean"] is None  # points are never standardised
    samples = tmp_path / "samples.npy"
    assert main(["sample", str(out), "-n", "300", "--out", str(samples)]) == 0
    array = np.load(samples)
    if model == "sphere-nsf":
        assert array.shape == (300, 3)
        np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)
        uniform = math.log(4 * math.pi)
    else:
        assert array.shape == (300, 2)
        assert array.min() >= -math.pi and array.max() < math.pi
        uniform = 2 * math.log(2 * math.pi)
    result = run_json(capsys, ["eval", str(out), "--data", data, "--n", "2000"])
    assert math.isfinite(result["nll"]) and result["nll_se"] > 0
    assert result["kl"] == pytest.approx(result["nll"] - result["entropy"])
    assert result["nll"] < uniform - 0.2  # it learned something of the set


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys):
    rows = np.random.default_rng(0).normal(size=(2000, 3))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows[4] *= 2
    off = tmp_path / "off.npy"
    np.save(off, rows)
    cases = [
        (str(off), "sphere-nsf", "data row 4 has norm"),
        ("builtin:vmf-mixture", "circular-nsf", "circular-nsf models points of a torus"),
        ("builtin:von-mises-torus", "sphere-nsf", "sphere-nsf models points of the sphere"),
    ]
    for index, (data, model, message) in enumerate(cases):
        capsys.readouterr()
        argv = ["train", "--data", data, "--model", model, "--out", str(tmp_path / f"bad{index}"),
                *TINY]  # fmt: skip
        assert main(argv) == 2, message
        error = capsys.readouterr().err.strip()
        assert message in error, (message, error)
        assert len(error.splitlines()) == 1, error
