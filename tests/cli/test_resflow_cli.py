"""``pushforward train --model resflow`` and ``eval``: exact or estimated likelihoods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pushforward.flows.residual  # noqa: F401  (registers resflow)
from pushforward.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--set", "transforms=1", "--set", "hidden=[8]", "--quiet"]


@pytest.fixture(scope="module")
def resflow_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "resflow"
    code = main(
        ["train", "--data", "builtin:moons", "--model", "resflow", "--out", str(out),
         "--steps", "10", "--n", "400", "--batch-size", "64", *TINY]
    )  # fmt: skip
    assert code == 0
    return out


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_says_exact_or_reports_the_estimators_error(
    resflow_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["eval", str(resflow_run), "--data", "builtin:moons", "--n", "200"]
    exact = run_json(capsys, base)
    assert exact["logdet"] == "exact" and "nll_estimator_se" not in exact
    estimated = run_json(capsys, [*base, "--logdet", "estimate", "--draws", "6"])
    assert estimated["logdet"] == "estimate" and estimated["estimator_draws"] == 6
    assert estimated["nll_estimator_se"] > 0
    assert abs(estimated["nll"] - exact["nll"]) < 4 * estimated["nll_estimator_se"] + 0.05
    # Seeded: the same command prints the same estimate.
    assert run_json(capsys, [*base, "--logdet", "estimate", "--draws", "6"]) == estimated


def test_a_coefficient_of_one_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[model]\ncoefficient = 1.0\n")
    capsys.readouterr()
    code = main(
        ["train", "--data", "builtin:moons", "--model", "resflow", "--config", str(config),
         "--out", str(tmp_path / "run"), "--steps", "2", "--n", "100", "--quiet"]
    )  # fmt: skip
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "option 'coefficient'" in lines[0]
