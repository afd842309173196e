"""Transport between two data files: ``train --source``, ``sample --source`` and ``sample -n``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

import pushforward
from pushforward.cli.main import main
from pushforward.distributions import Empirical
from pushforward.transforms import Standardize

SMALL = ["--set", "hidden=[64,64]", "--set", "time_embedding=8", "--quiet"]
SOURCE_SCALE = np.array([2.0, 0.5])
SOURCE_SHIFT = np.array([5.0, -3.0])
CORRELATION = np.array([[1.0, 0.8], [0.8, 1.0]])
TARGET_SCALE = np.array([1.0, 3.0])
TARGET_SHIFT = np.array([-1.0, 2.0])


pytestmark = pytest.mark.usefixtures("one_thread")


def source_points(n: int, rng: np.random.Generator) -> np.ndarray:
    """An axis-aligned Gaussian blob."""
    return rng.normal(size=(n, 2)) * SOURCE_SCALE + SOURCE_SHIFT


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A.npy (source), B.npy (data: a correlated Gaussian), A_new.npy (unseen source rows)."""
    folder = tmp_path_factory.mktemp("clouds")
    rng = np.random.default_rng(0)
    np.save(folder / "A.npy", source_points(1000, rng))
    factor = np.linalg.cholesky(CORRELATION)
    target = (rng.normal(size=(1200, 2)) @ factor.T) * TARGET_SCALE + TARGET_SHIFT
    np.save(folder / "B.npy", target)
    np.save(folder / "A_new.npy", source_points(400, rng))
    return folder


def train(clouds: Path, out: Path, *extra: str) -> int:
    return main(
        ["train", "--data", str(clouds / "B.npy"), "--source", str(clouds / "A.npy"),
         "--model", "fm", "--out", str(out), "--steps", "200", "--batch-size", "128",
         *SMALL, *extra]
    )  # fmt: skip


@pytest.fixture(scope="module")
def ot_run(clouds: Path) -> Path:
    out = clouds / "ot"
    assert train(clouds, out) == 0
    return out


def ot_map(x0: np.ndarray, standardization: dict, square_root: np.ndarray) -> np.ndarray:
    r"""The Monge map between the two Gaussians in the standardised units the flow works in:
    :math:`T(x) = \mu + \sigma\, R^{1/2} (x - \mu_0)/\sigma_0`, with :math:`R` the data's
    correlation (the standardised source is :math:`\mathcal N(0, I)`)."""
    z0 = (x0 - np.array(standardization["source_mean"])) / standardization["source_std"]
    return np.array(standardization["mean"]) + (z0 @ square_root.T) * standardization["std"]


def test_mapped_points_follow_the_closed_form_ot_map(ot_run: Path, clouds: Path) -> None:
    out = ot_run / "mapped.npy"
    argv = ["sample", str(ot_run), "--source", str(clouds / "A_new.npy"), "--out", str(out)]
    assert main(argv) == 0
    x0, mapped = np.load(clouds / "A_new.npy"), np.load(out)
    assert mapped.shape == x0.shape
    standardization = json.loads((ot_run / "config.json").read_text())["standardization"]
    correlation = np.corrcoef(np.load(clouds / "B.npy").T)
    monge = ot_map(x0, standardization, np.real(sqrtm(correlation)))
    # Another affine map onto the same Gaussian (Cholesky factor): not optimal.
    cholesky = ot_map(x0, standardization, np.linalg.cholesky(correlation))
    std = np.array(standardization["std"])

    def rms(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt((((a - b) / std) ** 2).sum(1).mean()))

    assert rms(monge, cholesky) > 0.5
    assert rms(mapped, monge) < 0.15  # 0.05 measured after 200 steps
    data = np.load(clouds / "B.npy")
    assert np.all(np.abs(mapped.mean(0) - data.mean(0)) < 0.2 * std)
    np.testing.assert_allclose(np.cov(mapped.T), np.cov(data.T), rtol=0.2, atol=0.1)


def test_sample_n_maps_rows_of_the_stored_source(ot_run: Path, clouds: Path) -> None:
    out = ot_run / "drawn.npy"
    assert main(["sample", str(ot_run), "-n", "60", "--out", str(out), "--seed", "4"]) == 0
    drawn = np.load(out)
    model = pushforward.load(ot_run)
    assert isinstance(model.preprocessing.source, Standardize)
    with torch.no_grad():
        images = model.transport(torch.from_numpy(np.load(clouds / "A.npy")).float()).double()
    distances = np.linalg.norm(drawn[:, None, :] - images.numpy()[None, :, :], axis=2)
    # Every output row is the image of a training source row (float32 rounding only).
    assert distances.min(axis=1).max() < 1e-3
    assert len(np.unique(distances.argmin(axis=1))) > 50


def test_source_statistics_and_rows_round_trip(ot_run: Path, clouds: Path) -> None:
    source = np.load(clouds / "A.npy")
    config = json.loads((ot_run / "config.json").read_text())
    assert config["source"] == {"data": str(clouds / "A.npy"), "rows": 1000, "event_shape": [2]}
    assert config["model"]["options"]["base"] == "empirical"
    np.testing.assert_allclose(config["standardization"]["source_mean"], source.mean(0))
    np.testing.assert_allclose(config["standardization"]["source_std"], source.std(0))
    model = pushforward.load(ot_run)
    standardize = model.preprocessing.source
    assert isinstance(standardize, Standardize)
    np.testing.assert_allclose(standardize.mean.numpy(), source.mean(0), rtol=1e-6)
    np.testing.assert_allclose(standardize.std.numpy(), source.std(0), rtol=1e-6)
    base = model.base
    assert isinstance(base, Empirical) and base.count == 1000
    rows = base.rows.double() * standardize.std.double() + standardize.mean.double()
    np.testing.assert_allclose(rows.numpy(), source, atol=1e-5)
    assert model.has_log_prob is False
    with pytest.raises(NotImplementedError, match="empirical source"):
        model.log_prob(torch.zeros(3, 2))


def test_independent_coupling_moves_the_cloud_onto_the_data(clouds: Path) -> None:
    run = clouds / "independent"
    assert train(clouds, run, "--set", 'coupling="independent"', "--steps", "150") == 0
    assert json.loads((run / "config.json").read_text())["model"]["options"]["coupling"] == (
        "independent"
    )
    out = run / "mapped.npy"
    assert main(["sample", str(run), "--source", str(clouds / "A_new.npy"), "--out", str(out)]) == 0
    mapped, data = np.load(out), np.load(clouds / "B.npy")
    std = data.std(0)
    assert np.all(np.abs(mapped.mean(0) - data.mean(0)) < 0.2 * std)
    # Within 7% measured after 150 steps; 100 steps leave the covariance 30% too large.
    np.testing.assert_allclose(np.cov(mapped.T), np.cov(data.T), rtol=0.25, atol=0.1)


def test_help_texts_name_source(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("train", "sample"):
        assert main([command, "--help"]) == 0
        assert "--source" in capsys.readouterr().out


def _bad_files(folder: Path) -> dict[str, Path]:
    np.save(folder / "nan.npy", np.array([[0.0, 1.0], [np.nan, 2.0]]))
    np.save(folder / "three.npy", np.zeros((10, 3)))
    (folder / "empty.csv").write_text("")
    return {name: folder / f"{name}.npy" for name in ("nan", "three")} | {
        "empty": folder / "empty.csv"
    }


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("nan", "source file '{nan}' holds 1 NaN/Inf value"),
        ("three", "source '{three}' has 3 values per row but the data has 2"),
        ("empty", "source file '{empty}' is empty"),
        ("missing", "source file '{missing}' does not exist"),
    ],
)
def test_bad_source_files_are_named(
    case: str, message: str, clouds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _bad_files(tmp_path) | {"missing": tmp_path / "missing.npy"}
    argv = ["train", "--data", str(clouds / "B.npy"), "--source", str(files[case]),
            "--model", "fm", "--out", str(tmp_path / "run"), "--steps", "2", "--quiet"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(**{k: str(v) for k, v in files.items()}) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "config.json").exists()


def test_bad_requests_are_one_line(
    ot_run: Path, clouds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _bad_files(tmp_path)
    data = ["--data", str(clouds / "B.npy"), "--out", str(tmp_path / "r"), "--quiet"]
    source = ["--source", str(clouds / "A.npy")]
    to = ["--out", str(tmp_path / "s.npy")]
    plain = tmp_path / "plain"
    argv = ["train", *data[:2], "--model", "fm", "--out", str(plain), "--steps", "2", *SMALL]
    assert main(argv) == 0
    cases = {
        "not a transport model": (["train", *data, *source, "--model", "nsf"], "needs a flow"),
        "base given": (
            ["train", *data, *source, "--model", "fm", "--set", 'base="uniform"'],
            "remove option base='uniform'",
        ),
        "empirical without source": (
            ["train", *data, "--model", "fm", "--set", 'base="empirical"'],
            "needs --source FILE",
        ),
        "source_rows given": (
            ["train", *data, *source, "--model", "fm", "--set", "source_rows=3"],
            "set from --source",
        ),
        "both -n and --source": (
            ["sample", str(ot_run), "-n", "3", *source, *to],
            "not allowed with argument",
        ),
        "neither -n nor --source": (
            ["sample", str(ot_run), *to],
            "give -n N samples (or --source FILE",
        ),
        "run without a source": (
            ["sample", str(plain), *source, *to],
            "not trained from a source data set",
        ),
        "wrong width at sample": (
            ["sample", str(ot_run), "--source", str(files["three"]), *to],
            f"source '{files['three']}' has 3 values per row, the run maps rows of 2",
        ),
        "nan at sample": (
            ["sample", str(ot_run), "--source", str(files["nan"]), *to],
            f"source file '{files['nan']}' holds 1 NaN/Inf value",
        ),
    }  # fmt: skip
    for name, (argv, message) in cases.items():
        capsys.readouterr()
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert message in err, (name, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, name


def test_plot_shows_samples_without_a_density(ot_run: Path) -> None:
    # A flow from an empirical source has no density: plot draws data and samples
    # and leaves the density panel out instead of failing.
    pytest.importorskip("matplotlib")
    assert main(["plot", str(ot_run)]) == 0
    assert (ot_run / "samples.png").is_file() and (ot_run / "report.html").is_file()
