"""Posterior estimation from the command line: ``train --prior``, embedding networks,
``diagnose``; every bad input exits 2 with one line naming the problem, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pushforward
from pushforward.cli.main import main

TINY = ["--set", "transforms=2", "--set", "hidden=[16]", "--steps", "60",
        "--batch-size", "128", "--quiet"]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")


def bad(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    return error


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulations of i.i.d. observations: theta ~ U[-1, 1]^2, five draws x_j ~ N(theta, 0.3^2)."""
    folder = tmp_path_factory.mktemp("sbi")
    generator = np.random.default_rng(0)
    theta = generator.uniform(-1, 1, size=(600, 2))
    x = theta[:, None, :] + 0.3 * generator.normal(size=(600, 5, 2))
    np.save(folder / "theta.npy", theta)
    np.save(folder / "x.npy", x.reshape(600, 10))
    np.save(folder / "x_sets.npy", x)
    np.save(folder / "x_short.npy", x.reshape(600, 10)[:500])
    np.save(folder / "x_odd.npy", x.reshape(600, 10)[:, :9])
    np.save(folder / "theta3.npy", np.concatenate([theta, theta[:, :1]], axis=1))
    outside = theta.copy()
    outside[[7, 30], 0] = 1.5
    np.save(folder / "theta_outside.npy", outside)
    (folder / "prior.json").write_text(
        json.dumps({"type": "box_uniform", "low": [-1, -1], "high": [1, 1]})
    )
    (folder / "broken.json").write_text('{"type": "box_uniform", "low": [-1, -1]')
    return folder


def test_a_context_of_sets_says_its_layout(files: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", str(files / "theta.npy"), "--context", str(files / "x_sets.npy"),
            "--model", "nsf", "--out", str(out), "--set", "embedding=set", *TINY]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["options"]["observation_shape"] == [5, 2]
    assert config["model"]["options"]["context"] == 10
    sample = tmp_path / "samples.npy"
    x_o = tmp_path / "x_o.npy"
    np.save(x_o, np.load(files / "x_sets.npy")[:2])
    argv = ["sample", str(out), "-n", "7", "--context", str(x_o), "--out", str(sample)]
    assert main(argv) == 0
    assert np.load(sample).shape == (14, 2)


def test_set_embedding_gives_the_same_posterior_for_permuted_observations(
    files: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", str(files / "theta.npy"), "--context", str(files / "x.npy"),
            "--prior", str(files / "prior.json"), "--model", "nsf", "--out", str(out),
            "--set", "embedding=set", "--set", "observation_shape=[5, 2]", *TINY]  # fmt: skip
    assert main(argv) == 0
    model = pushforward.load(out).double()
    config = json.loads((out / "config.json").read_text())
    assert config["prior"]["type"] == "box_uniform"
    assert config["model"]["options"]["embedding"] == "set"
    x = torch.from_numpy(np.load(files / "x.npy")[:20])
    theta = torch.from_numpy(np.load(files / "theta.npy")[:20])
    generator = torch.Generator().manual_seed(0)
    permuted = torch.stack(
        [row.reshape(5, 2)[torch.randperm(5, generator=generator)].reshape(10) for row in x]
    )
    assert not torch.equal(permuted, x)
    with torch.no_grad():
        original = model.log_prob(theta, x)
        shuffled = model.log_prob(theta, permuted)
    torch.testing.assert_close(shuffled, original, atol=1e-5, rtol=0)
    # Not trivially invariant: another observation changes the density.
    with torch.no_grad():
        other = model.log_prob(theta, x.flip(0))
    assert float((other - original).abs().max()) > 1e-3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prior", "broken.json"], "prior file '{dir}/broken.json' is not valid JSON"),
        (["--prior", "missing.json"], "prior file '{dir}/missing.json' does not exist"),
        (
            ["--prior", "prior.json", "--data", "theta3.npy"],
            "the prior has 2 dimensions but the data has 3",
        ),
        (
            ["--prior", "prior.json", "--data", "theta_outside.npy"],
            "2 rows of the data lie outside the prior's support (the first is row 7: [1.5,",
        ),
        (["--context", "x_short.npy"], "has 500 rows but the data has 600"),
        (
            [
                "--context",
                "x_odd.npy",
                "--set",
                "embedding=set",
                "--set",
                "observation_shape=[5,2]",
            ],
            "embedding 'set': observation_shape [5, 2] holds 10 values but the context has 9",
        ),
        (["--set", "embedding=sett"], "unknown embedding 'sett'"),
        (["--set", "observation_shape=[5,2]"], "option 'observation_shape' needs an embedding"),
    ],
)
def test_bad_posterior_inputs_exit_2_with_one_line(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "run"
    chosen = {"--data": "theta.npy", "--context": "x.npy"}
    rest: list[str] = []
    pending = list(extra)
    while pending:
        flag = pending.pop(0)
        if flag in ("--data", "--context", "--prior"):
            chosen[flag] = pending.pop(0)
        else:
            rest.append(flag)
    argv = ["train", "--model", "nsf", "--out", str(out), *TINY, *rest]
    for flag, name in chosen.items():
        argv += [flag, str(files / name)]
    error = bad(argv, capsys)
    assert message.format(dir=files) in error, error
    assert not out.exists()


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A posterior run of a conjugate Gaussian (theta ~ N(0, 1), x ~ N(theta, 0.5^2)) and
    fresh test pairs beside it."""
    folder = tmp_path_factory.mktemp("gaussian")
    generator = np.random.default_rng(1)
    for name, rows in (("train", 3000), ("test", 200)):
        theta = generator.normal(size=(rows, 2))
        np.save(folder / f"theta_{name}.npy", theta)
        np.save(folder / f"x_{name}.npy", theta + 0.5 * generator.normal(size=(rows, 2)))
    argv = ["train", "--data", str(folder / "theta_train.npy"),
            "--context", str(folder / "x_train.npy"), "--model", "nsf",
            "--out", str(folder / "run"), "--set", "transforms=2", "--set", "hidden=[32]",
            "--steps", "400", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return folder


def test_diagnose_prints_calibration_and_writes_figures(
    gaussian_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    run = gaussian_run / "run"
    capsys.readouterr()
    argv = ["diagnose", str(run), "--data", str(gaussian_run / "theta_test.npy"),
            "--context", str(gaussian_run / "x_test.npy"), "-n", "200"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == 200 and summary["samples_per_pair"] == 200
    assert len(summary["sbc"]["ks_pvalues"]) == 2
    # A fitted conjugate posterior is calibrated: nothing is rejected at 0.001.
    assert summary["sbc"]["min_ks_pvalue"] > 1e-3
    assert abs(summary["tarp"]["atc"]) < 0.1
    assert abs(summary["expected_coverage"]["signed_area"]) < 0.1
    for name in ("sbc_ranks.png", "coverage.png", "tarp.png", "diagnostics.json"):
        assert (run / name).is_file()
    page = (run / "report.html").read_text()
    assert "sbc_ranks.png" in page and "TARP area to curve" in page


def test_plot_draws_a_posterior_pairplot(gaussian_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    observation = tmp_path / "x_o.npy"
    np.save(observation, np.array([[0.5, -1.0]]))
    assert main(["plot", str(gaussian_run / "run"), "--context", str(observation)]) == 0
    assert (gaussian_run / "run" / "posterior.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("rows", "flags", "message"),
    [
        (12, [], "calibration needs at least 20 test pairs, 12 were given"),
        (200, ["--context-rows", "150"], "has 150 rows but the data has 200"),
    ],
)
def test_bad_diagnose_inputs_exit_2(
    gaussian_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rows: int,
    flags: list[str],
    message: str,
) -> None:
    theta = np.load(gaussian_run / "theta_test.npy")[:rows]
    x = np.load(gaussian_run / "x_test.npy")[: int(flags[1]) if flags else rows]
    np.save(tmp_path / "theta.npy", theta)
    np.save(tmp_path / "x.npy", x)
    argv = ["diagnose", str(gaussian_run / "run"), "--data", str(tmp_path / "theta.npy"),
            "--context", str(tmp_path / "x.npy")]  # fmt: skip
    assert message in bad(argv, capsys)


def test_sample_a_likelihood_run_by_mcmc(
    gaussian_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NLE from the command line: a flow of x given theta, then MALA over theta."""
    run = tmp_path / "nle"
    argv = ["train", "--data", str(gaussian_run / "x_train.npy"),
            "--context", str(gaussian_run / "theta_train.npy"), "--model", "nsf",
            "--out", str(run), "--set", "transforms=2", "--set", "hidden=[32]",
            "--steps", "600", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps({"type": "gaussian", "mean": [0, 0], "std": [1, 1]}))
    observation = tmp_path / "x_o.npy"
    np.save(observation, np.array([[1.0, -0.5]]))
    out = tmp_path / "chains.npy"
    argv = ["sample", str(run), "--mcmc", "mala", "--observation", str(observation),
            "--prior", str(prior), "--chains", "16", "--steps", "300", "--warmup", "300",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    chains = np.load(out)
    assert chains.shape == (300, 16, 2)
    # Exact posterior: N(x_o / 1.25, 0.2 I).
    np.testing.assert_allclose(chains.reshape(-1, 2).mean(0), [0.8, -0.4], atol=0.1)
    np.testing.assert_allclose(chains.reshape(-1, 2).std(0), [0.2**0.5] * 2, atol=0.08)
    assert "wrote mala chains" in capsys.readouterr().out
    # Wrong kernel, missing prior: one line, exit 2.
    assert "not 'imh'" in bad([*argv[:3], "imh", *argv[4:]], capsys)
    without = [a for a in argv if a not in ("--prior", str(prior))]
    assert "--observation needs --prior" in bad(without, capsys)
