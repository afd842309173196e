"""``pushforward train --target``, ``eval --target``, ``sample --mcmc``: fitting a flow to a
log-density from the command line, its importance-sampling metrics, flow MCMC, and every
bad input exiting 2 with one line and nothing written."""

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

TARGETS = """
import torch

def gaussian(x):
    return -0.5 * (x ** 2).sum(-1) + 1.0

class Banana:
    features = 2
    log_z = 2.0 + float(torch.log(torch.tensor(torch.pi)))

    def log_prob(self, x):
        return -0.5 * x[:, 0] ** 2 - 2.0 * (x[:, 1] - 0.5 * x[:, 0] ** 2) ** 2 + 2.0

banana = Banana()

def wrong_shape(x):
    return x

def nan(x):
    return x[:, 0] * float("nan")

def plus_inf(x):
    return x[:, 0] * 0 + float("inf")

def half_plane(x):
    return torch.where(x[:, 0] > 0, -0.5 * (x ** 2).sum(-1), -torch.inf)

def nondifferentiable(x):
    return torch.from_numpy(-(x.detach().numpy() ** 2).sum(-1))
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("targets")
    (path / "targets.py").write_text(TARGETS)
    (path / "broken.py").write_text("import torch\n\n\nraise RuntimeError('boom')\n")
    return path


@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "grid"
    argv = ["train", "--target", "builtin:grid-9", "--model", "nsf", "--out", str(out),
            "--objective", "path-gradient", *TINY]  # fmt: skip
    assert main(argv) == 0
    return out


def test_a_target_run_records_its_target_and_objective(builtin_run: Path) -> None:
    config = json.loads((builtin_run / "config.json").read_text())
    assert config["target"]["spec"] == "builtin:grid-9"
    assert config["target"]["log_z"] == 0.0 and config["target"]["has_sample"] is True
    assert config["objective"] == {"name": "path-gradient", "options": {"estimator": "fast"}}
    assert config["train"]["budget"]["steps"] == 60
    # The flow works in units of the mixture's spread: sqrt(var of {-5, 0, 5} + 0.3).
    spread = (50 / 3 + 0.3) ** 0.5
    assert config["standardization"]["std"] == pytest.approx([spread, spread])
    assert config["target"]["reference_scale"] == pytest.approx([spread, spread])
    lines = (builtin_run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[-1]["step"] == 60 and 0.0 <= records[-1]["ess"] <= 1.0


def test_eval_prints_the_importance_sampling_metrics(builtin_run: Path, capsys) -> None:
    assert main(["eval", str(builtin_run), "-n", "4000"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("log_z", "log_z_se", "elbo", "ess", "n", "eubo", "forward_ess", "nll"):
        assert key in result, key
    assert result["n"] == 4000 and 0.0 <= result["ess"] <= 1.0
    assert result["elbo"] <= 0.0 <= result["eubo"]  # a normalised target
    assert result["modes"] == 9 and 1 <= result["modes_covered"] <= 9
    assert result["log_z_error"] == pytest.approx(result["log_z"])


def test_a_file_target_trains_evaluates_and_samples(folder, tmp_path, capsys) -> None:
    out = tmp_path / "banana"
    spec = f"{folder / 'targets.py'}:banana"
    argv = ["train", "--target", spec, "--model", "realnvp", "--out", str(out), *TINY]
    assert main(argv) == 0
    samples = tmp_path / "exact.npy"
    generator = np.random.default_rng(0)
    first = generator.standard_normal(3000)
    np.save(samples, np.stack([first, 0.5 * first**2 + 0.5 * generator.standard_normal(3000)], 1))
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(samples), "-n", "3000"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 3000 and result["elbo"] <= result["log_z_true"] <= result["eubo"]
    assert main(["sample", str(out), "-n", "50", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (50, 2)
    chains = tmp_path / "chains.npy"
    argv = ["sample", str(out), "--mcmc", "imh", "--chains", "4", "--steps", "30",
            "--out", str(chains)]  # fmt: skip
    assert main(argv) == 0
    assert np.load(chains).shape == (30, 4, 2)
    assert "acceptance" in capsys.readouterr().out


def test_a_plain_function_needs_features_and_a_support_is_respected(folder, tmp_path) -> None:
    spec = f"{folder / 'targets.py'}:half_plane"
    out = tmp_path / "half"
    argv = ["train", "--target", spec, "--features", "2", "--model", "nsf", "--out", str(out),
            "--objective", "forward-kl", *TINY]  # fmt: skip
    assert main(argv) == 2  # no exact samples: forward KL cannot run
    assert not out.exists()


def bad(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    return error


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        ("missing.py:f", [], "does not exist"),
        ("targets.py:gaussain", ["--features", "2"], "did you mean 'gaussian'"),
        ("broken.py:f", [], "broken.py"),
        ("targets.py:wrong_shape", ["--features", "2"], "shape"),
        ("targets.py:nan", ["--features", "2"], "NaN"),
        ("targets.py:plus_inf", ["--features", "2"], "+inf"),
        ("targets.py:gaussian", [], "--features"),
        ("targets.py:gaussian", ["--features", "2", "--data", "x.npy"], "one of --data"),
        (
            "targets.py:gaussian",
            ["--features", "2", "--objective", "forwrd-kl"],
            "did you mean 'forward-kl'",
        ),
        ("targets.py:gaussian", ["--features", "2", "--objective", "forward-kl"], "exact samples"),
        (
            "targets.py:nondifferentiable",
            ["--features", "2", "--objective", "path-gradient"],
            "not differentiable",
        ),
        ("builtin:gmm-41", [], "did you mean 'gmm-40'"),
    ],
)
def test_bad_targets_exit_2_with_one_line_and_write_nothing(
    folder, tmp_path, capsys, spec, extra, message
) -> None:
    if not spec.startswith("builtin:"):
        spec = str(folder / spec)
    out = tmp_path / "run"
    argv = ["train", "--target", spec, "--model", "nsf", "--out", str(out), *extra, *TINY]
    assert message in bad(argv, capsys)
    assert not out.exists()


def test_a_model_without_the_fast_pass_is_refused(folder, tmp_path, capsys) -> None:
    spec = f"{folder / 'targets.py'}:gaussian"
    out = tmp_path / "fm"
    argv = ["train", "--target", spec, "--features", "2", "--model", "fm", "--set",
            "hidden=[8]", "--objective", "path-gradient", "--out", str(out), "--quiet"]  # fmt: skip
    assert "fast path gradient" in bad(argv, capsys)
    assert not out.exists()


def test_mcmc_and_eval_errors_name_the_problem(builtin_run, tmp_path, capsys) -> None:
    out = str(tmp_path / "c.npy")
    assert "did you mean 'neutra'" in bad(
        ["sample", str(builtin_run), "--mcmc", "nutra", "--out", out], capsys
    )
    assert "--chains must be at least 1" in bad(
        ["sample", str(builtin_run), "--mcmc", "imh", "--chains", "0", "--out", out], capsys
    )
    assert "do not pass -n" in bad(
        ["sample", str(builtin_run), "--mcmc", "imh", "-n", "3", "--out", out], capsys
    )
    assert "give -n" in bad(["sample", str(builtin_run), "--out", out], capsys)
    assert "target has 10 features, the run models 2" in bad(
        ["eval", str(builtin_run), "--target", "builtin:funnel-10"], capsys
    )


def test_float64_objective_options_and_annealing_from_a_config_file(folder, tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[train]\ndtype = "float64"\nbeta = 0.5\nanneal = 20\neval_samples = 0\n'
        'objective = "path-gradient"\n'
    )
    out = tmp_path / "f64"
    argv = ["train", "--target", f"{folder / 'targets.py'}:banana", "--model", "nsf",
            "--config", str(config), "--set", 'objective.estimator="drop-in"',
            "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["objective"] == {"name": "path-gradient", "options": {"estimator": "drop-in"}}
    assert recorded["train"]["dtype"] == "float64" and recorded["train"]["beta"] == 0.5
    model = pushforward.load(out)
    assert {p.dtype for p in model.parameters()} == {torch.float64}


def test_target_options_are_refused_for_data_runs(tmp_path, capsys) -> None:
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).standard_normal((100, 2)))
    argv = ["train", "--data", str(data), "--model", "nsf", "--objective", "fab",
            "--out", str(tmp_path / "r"), *TINY]  # fmt: skip
    assert "applies to a run fitted to a target" in bad(argv, capsys)


def test_plot_of_a_target_run_draws_the_target_the_weights_and_the_report(builtin_run) -> None:
    pytest.importorskip("matplotlib")
    assert main(["plot", str(builtin_run)]) == 0
    for name in ("loss.png", "samples.png", "weights.png", "report.html"):
        assert (builtin_run / name).is_file(), name
    report = (builtin_run / "report.html").read_text()
    assert "reverse ESS (last evaluation)" in report and "builtin:grid-9" in report
    assert (builtin_run / "weights.png").read_bytes().startswith(b"\x89PNG")
