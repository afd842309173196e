"""The ``pushforward`` command: train -> eval -> sample round trips, resume, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pushforward
from pushforward.cli.main import main
from pushforward.data import load_dataset

TINY = ["--set", "transforms=2", "--set", "hidden=[16]", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


def train_moons(out: Path, *extra: str) -> int:
    return main(
        ["train", "--data", "builtin:moons", "--model", "nsf", "--out", str(out),
         "--steps", "50", "--n", "2000", "--batch-size", "128", *TINY, *extra]
    )  # fmt: skip


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "moons"
    assert train_moons(out) == 0
    return out


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("conditional")
    generator = np.random.default_rng(0)
    context = generator.choice([0.0, 10.0], size=(600, 1))
    data = np.hstack([context + generator.normal(size=(600, 1)), generator.normal(size=(600, 1))])
    np.savetxt(folder / "x.csv", data, delimiter=",", header="a,b", comments="")
    np.save(folder / "c.npy", context)
    out = folder / "run"
    code = main(
        ["train", "--data", str(folder / "x.csv"), "--context", str(folder / "c.npy"),
         "--model", "nsf", "--out", str(out), "--steps", "60", "--lr", "5e-3", *TINY]
    )  # fmt: skip
    assert code == 0
    return out, folder / "x.csv", folder / "c.npy"


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_run_directory_contents(moons_run: Path) -> None:
    names = {path.name for path in moons_run.iterdir()}
    assert {"config.json", "model.json", "model.safetensors", "metrics.jsonl"} <= names
    assert any((moons_run / "checkpoints").iterdir())
    config = json.loads((moons_run / "config.json").read_text())
    assert config["pushforward_version"] == pushforward.__version__
    assert config["model"]["name"] == "nsf"
    assert config["model"]["options"]["transforms"] == 2
    assert config["model"]["options"]["hidden"] == [16]
    assert config["data"]["source"] == "builtin:moons"
    assert len(config["standardization"]["mean"]) == 2
    records = [json.loads(line) for line in (moons_run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 50
    assert np.isfinite(records[-1]["val_loss"])


def test_eval_matches_python_log_prob(moons_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_json(capsys, ["eval", str(moons_run), "--data", "builtin:moons", "--n", "3000"])
    assert result["n"] == 3000
    assert result["nll_se"] > 0
    assert result["kl"] == pytest.approx(result["nll"] - result["entropy"])
    # Python and the CLI agree, on data in the original units.
    model = pushforward.load(moons_run)
    x = load_dataset("builtin:moons", n=3000, seed=1).values.float()
    with torch.no_grad():
        nll = -model.log_prob(x).double().mean().item()
    assert result["nll"] == pytest.approx(nll, rel=1e-6, abs=1e-6)
    # The standardisation's Jacobian is folded in: it differs from the inner flow's NLL.
    config = json.loads((moons_run / "config.json").read_text())
    std = torch.tensor(config["standardization"]["std"])
    mean = torch.tensor(config["standardization"]["mean"])
    inner = model.transform
    with torch.no_grad():
        z, logdet = inner((x - mean) / std)
        inner_nll = -(model.base.log_prob(z) + logdet).double().mean().item()
    assert result["nll"] == pytest.approx(inner_nll + torch.log(std).sum().item(), abs=1e-4)


def test_eval_default_seed_avoids_the_training_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Trained on the draw of seed 1: a fixed evaluation seed of 1 would score the
    # training points themselves. The default is the training seed plus one.
    out = tmp_path / "seed1"
    assert train_moons(out, "--seed", "1") == 0
    default = run_json(capsys, ["eval", str(out), "--data", "builtin:moons", "--n", "500"])
    two = run_json(
        capsys, ["eval", str(out), "--data", "builtin:moons", "--n", "500", "--seed", "2"]
    )
    one = run_json(
        capsys, ["eval", str(out), "--data", "builtin:moons", "--n", "500", "--seed", "1"]
    )
    assert default["nll"] == two["nll"]
    assert default["nll"] != one["nll"]


def test_models_declare_their_training_defaults(tmp_path: Path) -> None:
    from argparse import Namespace

    from pushforward.cli.train import resolve
    from pushforward.registry import train_defaults
    from pushforward.train.config import TrainingConfig

    def arguments(model: str, config: str | None = None, lr: float | None = None) -> Namespace:
        return Namespace(
            model=model,
            config=config,
            set=[],
            steps=None,
            batch_size=None,
            lr=lr,
            seed=None,
            n=None,
        )

    assert train_defaults("fm") == {"lr": 5e-3, "convergence_patience": 60}
    assert resolve(arguments("fm"))[2].lr == 5e-3
    assert resolve(arguments("fm"))[2].budget(True) == (20_000, 60)
    assert resolve(arguments("nsf"))[2].lr == TrainingConfig().lr
    config = tmp_path / "c.toml"
    config.write_text("[train]\nlr = 2e-4\n")
    assert resolve(arguments("fm", str(config)))[2].lr == 2e-4  # the config file wins
    assert resolve(arguments("fm", str(config), lr=3e-3))[2].lr == 3e-3  # the flag wins
    with pytest.raises(ValueError, match="unknown model"):
        train_defaults("no-such-model")


def test_sample_in_original_units(
    moons_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "samples.npy"
    assert main(["sample", str(moons_run), "-n", "2000", "--out", str(out), "--seed", "3"]) == 0
    samples = np.load(out)
    assert samples.shape == (2000, 2) and np.isfinite(samples).all()
    data = load_dataset("builtin:moons", n=2000).values.numpy()
    assert np.all(np.abs(samples.mean(0) - data.mean(0)) < 0.5 * data.std(0))
    assert np.all((samples.std(0) > 0.5 * data.std(0)) & (samples.std(0) < 2 * data.std(0)))
    # The same seed gives the same samples as pushforward.load in Python.
    model = pushforward.load(moons_run)
    torch.manual_seed(3)
    again = model.sample(2000).double().numpy()
    np.testing.assert_array_equal(samples, again)


def test_conditional_round_trip(
    conditional_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, x_file, c_file = conditional_run
    result = run_json(capsys, ["eval", str(run), "--data", str(x_file), "--context", str(c_file)])
    model = pushforward.load(run)
    x = torch.from_numpy(np.loadtxt(x_file, delimiter=",", skiprows=1)).float()
    c = torch.from_numpy(np.load(c_file)).float()
    with torch.no_grad():
        assert result["nll"] == pytest.approx(-model.log_prob(x, c).double().mean().item(), 1e-6)
    assert result["n"] == 600 and "kl" not in result
    # Two context rows: 2 x N samples, the first N conditioned on row 0.
    contexts = tmp_path / "two.csv"
    contexts.write_text("0\n10\n")
    out = tmp_path / "conditional.npy"
    assert (
        main(["sample", str(run), "-n", "300", "--context", str(contexts), "--out", str(out)]) == 0
    )
    samples = np.load(out)
    assert samples.shape == (600, 2)
    # Trained on contexts in original units (0 or 10): the first feature follows them.
    assert samples[:300, 0].mean() + 3 < samples[300:, 0].mean()


def test_resume_continues_and_trims_metrics(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[model]\ntransforms = 2\n\n[train]\ncheckpoint_every = 10\nlog_every = 10\n")
    out = tmp_path / "run"
    argv = ["train", "--data", "builtin:moons", "--model", "nsf", "--out", str(out),
            "--config", str(config), "--n", "1000", "--batch-size", "100", "--set", "hidden=[8]",
            "--quiet"]  # fmt: skip
    assert main([*argv, "--steps", "20"]) == 0
    first = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in first] == [10, 20]
    # A record past the checkpoint (as left by a kill) is dropped on resume.
    with open(out / "metrics.jsonl", "a") as file:
        file.write(json.dumps({"step": 25, "loss": 0.0}) + "\n")
    assert main([*argv, "--steps", "40"]) == 2  # the run exists: resume must be asked for
    assert main([*argv, "--steps", "40", "--resume"]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines[:2] == first
    assert [json.loads(line)["step"] for line in lines] == [10, 20, 30, 40]
    assert (out / "checkpoints" / "checkpoint-000000040").is_dir()
    assert pushforward.load(out).log_prob(torch.zeros(1, 2)).isfinite().all()


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def bad_cases(tmp: Path, run: Path) -> dict[str, tuple[list[str], str]]:
    other_version = tmp / "old"
    other_version.mkdir()
    config = json.loads((run / "config.json").read_text())
    config["pushforward_version"] = "0.0.1"
    (other_version / "config.json").write_text(json.dumps(config))
    unfinished = tmp / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((run / "config.json").read_text())
    np.save(tmp / "three.npy", np.zeros((5, 3)))
    np.save(tmp / "x.npy", np.random.default_rng(0).normal(size=(20, 2)))
    np.save(tmp / "c7.npy", np.zeros((7, 1)))
    train = ["train", "--model", "nsf", "--out", str(tmp / "new"), "--steps", "1", "--quiet"]
    return {
        "missing file": (
            [*train, "--data", str(tmp / "nope.csv")],
            "does not exist",
        ),
        "empty file": ([*train, "--data", write(tmp / "empty.csv", "")], "is empty"),
        "nan": ([*train, "--data", write(tmp / "nan.csv", "1,2\nnan,3\n")], "NaN/Inf"),
        "inf npy": (
            ["eval", str(run), "--data", write(tmp / "inf.csv", "1,2\n3,inf\n")],
            "NaN/Inf",
        ),
        "non-numeric": (
            [*train, "--data", write(tmp / "text.csv", "a,b\n1,2\n3,x\n")],
            "non-numeric value 'x'",
        ),
        "wrong dimensions": (
            ["eval", str(run), "--data", str(tmp / "three.npy")],
            "the run was trained on (2,)",
        ),
        "context rows": (
            [*train, "--data", str(tmp / "x.npy"), "--context", str(tmp / "c7.npy")],
            "has 7 rows but the data has 20",
        ),
        "unknown model": (
            ["train", "--model", "nsff", "--data", str(tmp / "x.npy"), "--out", str(tmp / "m")],
            "did you mean 'nsf'",
        ),
        "model not trained from data": (
            [
                "train",
                "--model",
                "distilled",
                "--data",
                str(tmp / "x.npy"),
                "--out",
                str(tmp / "d"),
            ],
            "pushforward distill RUN_DIR",
        ),
        "unknown option": (
            [*train, "--data", str(tmp / "x.npy"), "--set", "hiden=[4]"],
            "did you mean 'hidden'",
        ),
        "option set from data": (
            [*train, "--data", str(tmp / "x.npy"), "--set", "features=3"],
            "set from the data",
        ),
        "unknown [train] option": (
            [
                *train,
                "--data",
                str(tmp / "x.npy"),
                "--config",
                write(tmp / "c.toml", "[train]\nstep = 3\n"),
            ],
            "did you mean 'steps'",
        ),
        "bad --set": ([*train, "--data", str(tmp / "x.npy"), "--set", "hidden"], "key=value"),
        "missing run": (
            ["eval", str(tmp / "no-run"), "--data", "builtin:moons"],
            "does not exist",
        ),
        "not a run": (["sample", str(tmp), "-n", "3", "--out", str(tmp / "s.npy")], "not a run"),
        "unfinished run": (
            ["sample", str(unfinished), "-n", "3", "--out", str(tmp / "s.npy")],
            "no trained model yet",
        ),
        "other version": (
            ["eval", str(other_version), "--data", "builtin:moons"],
            "written by pushforward 0.0.1",
        ),
        "other model on resume": (
            [
                "train",
                "--model",
                "maf",
                "--data",
                "builtin:moons",
                "--n",
                "2000",
                "--out",
                str(run),
                "--resume",
                "--quiet",
            ],
            "holds model 'nsf'",
        ),
        "context for unconditional run": (
            ["eval", str(run), "--data", str(tmp / "x.npy"), "--context", str(tmp / "c7.npy")],
            "unconditional",
        ),
        "unknown builtin": ([*train, "--data", "builtin:moon"], "did you mean 'moons'"),
        "missing argument": (["sample", str(run), "--out", str(tmp / "s.npy")], "-n"),
    }


NAMES = [
    "missing file", "empty file", "nan", "inf npy", "non-numeric", "wrong dimensions",
    "context rows", "unknown model", "model not trained from data", "unknown option",
    "option set from data",
    "unknown [train] option", "bad --set",
    "missing run", "not a run", "unfinished run", "other version", "other model on resume",
    "context for unconditional run", "unknown builtin", "missing argument",
]  # fmt: skip


@pytest.mark.parametrize("case", NAMES)
def test_bad_input_is_one_line_and_status_2(
    case: str, moons_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, expected = bad_cases(tmp_path, moons_run)[case]
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert expected in lines[0]
    assert "Traceback" not in captured.err
    if case == "model not trained from data":
        assert not (tmp_path / "d").exists()  # refused before anything was written


@pytest.mark.parametrize("command", ["train", "eval", "sample", "plot", "demo"])
def test_help_has_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "example" in text and f"pushforward {command}" in text


def test_subprocess_bad_input(moons_run: Path, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    environment = {**os.environ, "PYTHONPATH": str(root / "src")}
    command = ["eval", str(moons_run), "--data", str(tmp_path / "x.csv")]
    result = subprocess.run(
        [sys.executable, "-m", "pushforward", *command],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_plot_writes_figures(moons_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    assert main(["plot", str(moons_run)]) == 0
    for name in ("loss.png", "samples.png"):
        assert (moons_run / name).stat().st_size > 1000


def test_plot_without_matplotlib_is_a_clear_error(
    moons_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", str(moons_run)]) == 2
    assert "matplotlib, which is not installed" in capsys.readouterr().err


def test_demo_writes_runs_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--steps", "20", "--eval-n", "500", "--out", str(out)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    results = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["model"] for r in results] == ["nsf", "fm", "meanflow"]
    for result in results:
        assert result["run"] == str(out / result["model"]) and np.isfinite(result["kl"])
        assert pushforward.load(out / result["model"]).sample(3).shape == (3, 2)
    assert (out / "report.html").is_file()
    assert main([*argv, "--model", "maf", "--threads", "1"]) == 0  # a second demo replaces it
    assert not (out / "fm").exists() and (out / "maf" / "model.json").is_file()


def test_demo_refuses_a_foreign_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    assert main(["demo", "--steps", "5", "--out", str(out)]) == 2
    assert "not a pushforward demo" in capsys.readouterr().err
    assert (out / "thesis.tex").read_text() == "keep me"
    assert main(["demo", "--steps", "5", "--model", "nsf,nsff", "--out", str(tmp_path)]) == 2
    assert "nsff" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_standardizing_preprocessing_round_trips(dtype: torch.dtype, tmp_path: Path) -> None:
    import copy

    from pushforward.transforms import Preprocessing, Standardize

    flow = pushforward.build("nsf", features=2, context=1, transforms=2, hidden=[8]).to(dtype)
    mean, std = torch.tensor([1.0, -2.0], dtype=dtype), torch.tensor([2.0, 0.5], dtype=dtype)
    c_mean, c_std = torch.tensor([5.0], dtype=dtype), torch.tensor([3.0], dtype=dtype)
    folded = copy.deepcopy(flow).set_preprocessing(
        Preprocessing(Standardize(mean, std), Standardize(c_mean, c_std))
    )
    x = torch.randn(7, 2, dtype=dtype)
    c = torch.randn(7, 1, dtype=dtype)
    with torch.no_grad():
        expected = flow.log_prob((x - mean) / std, (c - c_mean) / c_std) - torch.log(std).sum()
        assert torch.allclose(folded.log_prob(x, c), expected)
        pushforward.save(folded, tmp_path)
        loaded = pushforward.load(tmp_path)
        assert torch.equal(loaded.log_prob(x, c), folded.log_prob(x, c))
    torch.manual_seed(1)
    drawn = loaded.sample(5, c[:1])
    torch.manual_seed(1)
    assert torch.equal(drawn, folded.sample(5, c[:1]))


def test_demo_runs_side_by_side_give_what_runs_one_by_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        argv = ["demo", "--steps", "10", "--eval-n", "300", "--model", "fm,nsf"]
        assert main([*argv, "--jobs", str(jobs), "--out", str(out)]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        results[jobs] = [json.loads(line) for line in lines if line.startswith("{")]
    # in the order asked for, with the same numbers whichever process trained them
    assert [r["model"] for r in results[2]] == ["fm", "nsf"]
    assert [r["kl"] for r in results[1]] == [r["kl"] for r in results[2]]
    assert main(["demo", "--steps", "5", "--jobs", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
