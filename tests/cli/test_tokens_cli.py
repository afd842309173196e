"""``pushforward`` on token data: train -> sample -> eval with ``dfm``, and bad input."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from pushforward.cli.main import main
from pushforward.cli.report import write_evaluation

TINY = ["--set", "hidden=[32]", "--steps", "60", "--batch-size", "128", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens")
    generator = np.random.default_rng(0)
    first = generator.integers(0, 5, size=400)
    tokens = np.stack([first, (first + generator.integers(0, 2, size=400)) % 5, first], axis=1)
    np.save(path / "tokens.npy", tokens.astype(np.int32))
    np.savetxt(path / "tokens.csv", tokens, fmt="%d", delimiter=",")
    np.save(path / "context.npy", generator.normal(size=(400, 2)))
    return path


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("path", ["masked", "uniform"])
def test_train_sample_eval_on_a_token_file(folder, tmp_path, capsys, path):
    out = tmp_path / "run"
    argv = ["train", "--data", str(folder / "tokens.npy"), "--model", "dfm", "--out", str(out),
            "--set", f'path="{path}"', *TINY]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["vocab"] == [5, 5, 5]
    assert config["standardization"]["mean"] is None
    samples = tmp_path / "s.npy"
    assert main(["sample", str(out), "-n", "300", "--out", str(samples), "--steps", "5"]) == 0
    array = np.load(samples)
    assert array.dtype == np.int64 and array.shape == (300, 3)
    assert array.min() >= 0 and array.max() < 5
    result = run_json(capsys, ["eval", str(out), "--data", str(folder / "tokens.csv"),
                               "--draws", "2", "--steps", "5"])  # fmt: skip
    assert "nll" not in result and result["nll_bound"] > 0 and result["nll_bound_se"] > 0
    assert result["bits_per_token"] == pytest.approx(result["nll_bound"] / (3 * np.log(2)))
    assert 0 <= result["unigram_tv"] <= 1 and 0 <= result["bigram_tv"] <= 1
    exact = run_json(capsys, ["eval", str(out), "--data", str(folder / "tokens.npy"), "--exact",
                              "--n", "50", "--steps", "3"])  # fmt: skip
    assert "nll_bound" not in exact and exact["nll"] > 0


def test_a_conditional_token_run_and_a_built_in_set(folder, tmp_path, capsys):
    out = tmp_path / "conditional"
    argv = ["train", "--data", str(folder / "tokens.npy"), "--context", str(folder / "context.npy"),
            "--model", "dfm", "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["standardization"]["context_mean"] is not None
    samples = tmp_path / "c.npy"
    np.save(tmp_path / "one.npy", np.zeros((1, 2)))
    argv = ["sample", str(out), "-n", "10", "--context", str(tmp_path / "one.npy"),
            "--out", str(samples)]  # fmt: skip
    assert main(argv) == 0
    grid = tmp_path / "grid"
    argv = ["train", "--data", "builtin:first-k-ones", "--model", "dfm", "--out", str(grid),
            "--n", "2000", *TINY]  # fmt: skip
    assert main(argv) == 0
    result = run_json(capsys, ["eval", str(grid), "--data", "builtin:first-k-ones", "--n", "500",
                               "--draws", "2", "--steps", "4"])  # fmt: skip
    assert result["entropy"] == pytest.approx(np.log(11))
    assert result["nll_bound"] > result["entropy"] - 0.5
    assert 0 <= result["joint_tv_noise_floor"] <= result["joint_tv"] + 0.2


def _train(data: str, *extra: str, out: Path) -> int:
    return main(["train", "--data", data, "--model", "dfm", "--out", str(out), *TINY, *extra])


def test_bad_token_input_exits_2_with_one_line(folder, tmp_path, capsys):
    floats = tmp_path / "floats.npy"
    np.save(floats, np.random.default_rng(1).normal(size=(20, 3)))
    negative = tmp_path / "negative.npy"
    np.save(negative, np.array([[0, 1], [-1, 2]]))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("0,1,2\n1,2\n")
    fractional = tmp_path / "fractional.csv"
    fractional.write_text("0,1\n1,1.5\n")
    cases = [
        (str(floats), (), "floats"),
        (str(negative), (), "negative token"),
        (str(folder / "tokens.npy"), ("--set", "vocab=3"), "outside the vocabulary"),
        (str(ragged), (), "line 2 has 2 values"),
        (str(fractional), (), "whole numbers"),
        (str(folder / "tokens.npy"), ("--set", 'path="unifrom"'), "uniform"),
        (str(folder / "tokens.npy"), ("--set", 'scheduler="cosin"'), "cosine"),
    ]
    for index, (data, extra, message) in enumerate(cases):
        capsys.readouterr()
        assert _train(data, *extra, out=tmp_path / f"bad{index}") == 2, message
        error = capsys.readouterr().err.strip()
        assert message in error, (message, error)
        assert len(error.splitlines()) == 1, error


def test_eval_and_sample_refuse_mismatched_tokens_and_contexts(folder, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(folder / "tokens.npy"), "--context", str(folder / "context.npy"),
            "--model", "dfm", "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((5, 2), dtype=np.int64))
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((1, 3)))
    for argv, message in [
        (["eval", str(out), "--data", str(short), "--context", str(folder / "context.npy")],
         "length"),
        (["sample", str(out), "-n", "4", "--context", str(wide), "--out", str(tmp_path / "x.npy")],
         "context"),
    ]:  # fmt: skip
        capsys.readouterr()
        assert main(argv) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1, error


@pytest.mark.parametrize("data", ["builtin:8gaussians-grid", "builtin:first-k-ones"])
def test_plot_shows_token_samples_in_the_report(tmp_path, data):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    assert main(["train", "--data", data, "--model", "dfm", "--out", str(out), "--n", "2000",
                 *TINY]) == 0  # fmt: skip
    write_evaluation(out, {"nll_bound": 2.5, "nll_bound_se": 0.01, "bits_per_token": 0.36,
                           "joint_tv": 0.04, "n": 100})  # fmt: skip
    assert main(["plot", str(out)]) == 0
    figure = (out / "samples.png").read_bytes()
    assert figure.startswith(b"\x89PNG")
    page = (out / "report.html").read_text()
    assert base64.b64encode(figure).decode() in page
    assert "NLL bound" in page and "bits/token" in page and "exact joint" in page
