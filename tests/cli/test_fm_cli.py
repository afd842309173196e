"""Flow matching through the same command line as the flows: train, eval, sample, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pushforward
from pushforward.cli.main import main
from pushforward.data import load_dataset
from pushforward.transforms import Preprocessing, Standardize

TINY_FM = ["--set", "hidden=[32,32]", "--set", "time_embedding=8", "--quiet"]
FAST = ["--solver", "rk4", "--steps", "8"]


pytestmark = pytest.mark.usefixtures("one_thread")


def train_fm(out: Path, *extra: str) -> int:
    return main(
        ["train", "--data", "builtin:moons", "--model", "fm", "--out", str(out),
         "--steps", "60", "--n", "2000", "--batch-size", "128", *TINY_FM, *extra]
    )  # fmt: skip


@pytest.fixture(scope="module")
def fm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fm") / "moons"
    assert train_fm(out, "--set", 'coupling="ot"') == 0
    return out


def test_fm_run_loads_in_original_units(fm_run: Path) -> None:
    model = pushforward.load(fm_run)
    assert isinstance(model.preprocessing.data, Standardize)
    config = json.loads((fm_run / "config.json").read_text())
    assert config["model"]["name"] == "fm"
    assert config["model"]["options"]["coupling"] == "ot"
    mean = torch.tensor(config["standardization"]["mean"])
    std = torch.tensor(config["standardization"]["std"])
    torch.testing.assert_close(model.preprocessing.data.mean, mean.float())
    x = load_dataset("builtin:moons", n=50, seed=1).values.float()
    inner_model = pushforward.load(fm_run).set_preprocessing(Preprocessing())
    inner = inner_model.log_prob((x - mean) / std, solver="rk4", steps=8)
    expected = inner - torch.log(std).sum()
    torch.testing.assert_close(model.log_prob(x, solver="rk4", steps=8), expected)


def test_eval_takes_solver_options(fm_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    argv = ["eval", str(fm_run), "--data", "builtin:moons", "--n", "300", *FAST]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    model = pushforward.load(fm_run)
    x = load_dataset("builtin:moons", n=300, seed=1).values.float()
    with torch.no_grad():
        nll = -model.log_prob(x, solver="rk4", steps=8).double().mean().item()
    assert result["nll"] == pytest.approx(nll, rel=1e-6)
    assert result["kl"] == pytest.approx(result["nll"] - result["entropy"])


def test_sample_takes_solver_options(fm_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.npy"
    argv = ["sample", str(fm_run), "-n", "500", "--out", str(out), "--seed", "2"]
    assert main([*argv, "--solver", "heun", "--steps", "4"]) == 0
    samples = np.load(out)
    assert samples.shape == (500, 2) and np.isfinite(samples).all()
    model = pushforward.load(fm_run)
    torch.manual_seed(2)
    again = model.sample(500, solver="heun", steps=4).double().numpy()
    np.testing.assert_array_equal(samples, again)
    data = load_dataset("builtin:moons", n=500).values.numpy()
    # Samples are in the data's units (the standardisation is undone).
    assert np.all(np.abs(samples.mean(0) - data.mean(0)) < data.std(0))


def test_solver_options_are_refused_by_flows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "nsf"
    argv = ["train", "--data", "builtin:moons", "--model", "nsf", "--out", str(run),
            "--steps", "5", "--n", "500", "--batch-size", "64", "--set", "hidden=[8]",
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    out = str(tmp_path / "x.npy")
    code = main(["sample", str(run), "-n", "5", "--out", out, "--solver", "rk4"])
    assert code == 2
    assert "takes no --solver" in capsys.readouterr().err


def test_unknown_solver_is_one_line(fm_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = main(["eval", str(fm_run), "--data", "builtin:moons", "--n", "10", "--solver", "rk5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "solver" in err and "Traceback" not in err


def test_seed_makes_runs_identical(tmp_path: Path) -> None:
    # --seed fixes the initial weights, the batches and the prepared OT couplings.
    for name in ("a", "b"):
        assert train_fm(tmp_path / name, "--set", 'coupling="ot"', "--steps", "20") == 0
    a = pushforward.load(tmp_path / "a").state_dict()
    b = pushforward.load(tmp_path / "b").state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert train_fm(tmp_path / "c", "--steps", "20", "--seed", "1") == 0
    c = pushforward.load(tmp_path / "c").state_dict()
    assert not all(torch.equal(a[key], c[key]) for key in a)
