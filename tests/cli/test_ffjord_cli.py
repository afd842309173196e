"""``ffjord`` from the command line: training, fine-tuning an ``fm`` run (``--init``), and
the bad inputs, each an exit 2 with one line naming the problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pushforward
from pushforward.cli.main import main

NETWORK = ["--set", "hidden=[16]", "--set", "time_embedding=8"]
FAST = ["--set", "training_solver=rk4", "--set", "training_steps=4", "--set", "solver=rk4",
        "--set", "likelihood_solver=rk4"]  # fmt: skip
TINY = [*NETWORK, "--steps", "30", "--batch-size", "128", "--n", "400", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")


def bad(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    return error


@pytest.fixture(scope="module")
def fm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fm") / "run"
    argv = ["train", "--data", "builtin:moons", "--model", "fm", "--out", str(out), *TINY,
            "--set", "likelihood_solver=rk4"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_train_and_eval_an_ffjord_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", "builtin:moons", "--model", "ffjord", "--out", str(out),
            *TINY, *FAST, "--set", "kinetic=0.01", "--set", "learn_end_time=true"]  # fmt: skip
    assert main(argv) == 0
    model = pushforward.load(out)
    assert model.config["options"]["kinetic"] == 0.01
    assert "log_end_time" in dict(model.named_parameters())
    capsys.readouterr()
    assert main(["eval", str(out), "--data", "builtin:moons", "--n", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert np.isfinite(result["nll"])


def test_init_from_an_fm_run_fine_tunes_its_field(fm_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    argv = ["train", "--data", "builtin:moons", "--model", "ffjord", "--init", str(fm_run),
            "--out", str(out), *TINY, *FAST, "--steps", "1"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["init"] == {"run": str(fm_run), "model": "fm"}
    teacher, tuned = pushforward.load(fm_run), pushforward.load(out)
    # The same units, and after one small step nearly the same field.
    x = torch.randn(64, 2)
    torch.testing.assert_close(tuned.preprocessing.encode(x)[0], teacher.preprocessing.encode(x)[0])
    t = torch.full((64,), 0.5)
    with torch.no_grad():
        gap = (tuned.velocity(x, t) - teacher.velocity(x, t)).abs().max()
        scale = teacher.velocity(x, t).abs().max()
    assert 0 < float(gap) < 0.2 * float(scale)


def test_init_from_an_incompatible_run_is_refused(
    fm_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nsf_run = tmp_path / "nsf"
    argv = ["train", "--data", "builtin:moons", "--model", "nsf", "--out", str(nsf_run),
            "--set", "transforms=1", "--set", "hidden=[8]", "--steps", "2", "--n", "200",
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    base = ["train", "--data", "builtin:moons", "--model", "ffjord", "--out",
            str(tmp_path / "x"), *TINY, *FAST]  # fmt: skip
    assert "(nsf) does not fit model 'ffjord'" in bad([*base, "--init", str(nsf_run)], capsys)
    wider = [*base, "--init", str(fm_run), "--set", "hidden=[32]"]
    assert "shape" in bad(wider, capsys)
    np.save(tmp_path / "three.npy", np.random.default_rng(0).normal(size=(500, 3)))
    other = ["train", "--data", str(tmp_path / "three.npy"), "--model", "ffjord",
             "--init", str(fm_run), "--out", str(tmp_path / "y"), *TINY, *FAST]  # fmt: skip
    assert "3 features" in bad(other, capsys)
    assert "not a trained run" in bad([*base, "--init", str(tmp_path)], capsys)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["training_solver=rk4"], "training_steps"),
        (["noise=gaussian"], "noise"),
        (["adjoint=1"], "adjoint"),
        (["training_divergence=trace"], "training_divergence"),
    ],
)
def test_options_the_model_cannot_use_exit_2(
    sets: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", "builtin:moons", "--model", "ffjord", "--out",
            str(tmp_path / "run"), *TINY]  # fmt: skip
    for item in sets:
        argv += ["--set", item]
    assert message in bad(argv, capsys)
    assert not (tmp_path / "run").exists()


def test_ffjord_options_on_fm_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", "builtin:moons", "--model", "fm", "--out", str(tmp_path / "r"),
            *TINY, "--set", "adjoint=true"]  # fmt: skip
    assert "unknown option 'adjoint'" in bad(argv, capsys)
