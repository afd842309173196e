"""The Run API: ``pushforward train`` only parses into it; it trains to convergence by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pushforward
from pushforward.cli.main import main
from pushforward.matching.flow_matching import FM_TRAIN_DEFAULTS
from pushforward.train.config import TrainingConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"transforms": 2, "hidden": [16], "bins": 4}


def test_the_command_line_and_python_give_bitwise_the_same_weights(tmp_path: Path) -> None:
    flags = ["--set", "transforms=2", "--set", "hidden=[16]", "--set", "bins=4"]
    command = ["train", "--data", "builtin:moons", "--model", "nsf", "--n", "600"]
    assert main([*command, *flags, "--steps", "40", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    result = pushforward.train_run(
        tmp_path / "python", "builtin:moons", "nsf", options=SMALL, train={"steps": 40, "n": 600}
    )
    assert result.history.steps_done == 40
    cli = (tmp_path / "cli" / "model.safetensors").read_bytes()
    python = (tmp_path / "python" / "model.safetensors").read_bytes()
    assert cli == python
    # Changing the seed changes the weights, so the comparison above can fail.
    other = pushforward.train_run(
        tmp_path / "other",
        "builtin:moons",
        "nsf",
        options=SMALL,
        train={"steps": 40, "n": 600, "seed": 1},
    )
    assert other.directory.joinpath("model.safetensors").read_bytes() != cli


def test_without_steps_a_run_trains_until_the_validation_loss_stops_improving(
    tmp_path: Path,
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[train]\neval_every = 10\npatience = 3\nmax_steps = 3000\nlr = 2e-2\n")
    out = tmp_path / "run"
    command = ["train", "--data", "builtin:moons", "--model", "nsf", "--n", "400"]
    assert main([*command, "--config", str(config), "--out", str(out), "--quiet"]) == 0
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["train"]["steps"] is None
    assert resolved["train"]["budget"] == {
        "steps": 3000, "patience": 3, "eval_every": 10, "until": "convergence"
    }  # fmt: skip
    result = resolved["train"]["result"]
    assert result["stopped_early"] and result["steps_done"] < 3000
    assert result["weights"] == "best" and result["best_step"] < result["steps_done"]
    # The saved weights are the best validation step's, not the last ones.
    model = pushforward.load(out)
    assert torch.isfinite(model.log_prob(torch.zeros(1, 2))).all()


def test_a_conditional_run_validates_about_every_five_epochs(tmp_path: Path) -> None:
    """Posterior estimators on little data: validations every 5 epochs, 10 to 100 steps."""
    config = TrainingConfig()
    assert config.validation_every(900, conditional=True) == 10  # 1.8 steps an epoch
    assert config.validation_every(4000, conditional=True) == 39
    assert config.validation_every(90_000, conditional=True) == 100
    assert config.validation_every(900, conditional=False) == 100
    assert TrainingConfig(steps=500).validation_every(900, conditional=True) == 100
    assert TrainingConfig(eval_every=7).validation_every(900, conditional=True) == 7
    theta = torch.randn(1000, 2, dtype=torch.float64)
    run = pushforward.train_run(
        tmp_path / "npe", theta, "nsf", context=theta + 0.1, options=SMALL,
        train={"max_steps": 40},
    )  # fmt: skip
    assert run.config["train"]["budget"]["eval_every"] == 10
    assert run.history.eval_steps[:2] == [10, 20]


def test_convergence_patience_applies_to_runs_trained_to_convergence_only() -> None:
    """A model's registered convergence patience stops runs without --steps alone."""
    assert TrainingConfig().budget(True) == (20_000, 10)
    fm_patience = FM_TRAIN_DEFAULTS["convergence_patience"]
    assert fm_patience > 10
    assert TrainingConfig.resolve("fm").budget(True) == (20_000, fm_patience)
    assert TrainingConfig.resolve("fm", overrides={"patience": 4}).budget(True) == (20_000, 4)
    assert TrainingConfig.resolve("fm", overrides={"steps": 300}).budget(True) == (300, None)
    assert TrainingConfig(convergence_patience=3).budget(False) == (2000, None)
    with pytest.raises(ValueError, match="'convergence_patience' must be an integer >= 1"):
        TrainingConfig(convergence_patience=0).budget(True)


def test_a_fixed_budget_and_a_run_without_validation_train_their_steps(tmp_path: Path) -> None:
    fixed = pushforward.train_run(
        tmp_path / "fixed", "builtin:moons", "nsf", options=SMALL, train={"steps": 15, "n": 300}
    )
    assert fixed.config["train"]["budget"]["until"] == "steps"
    assert fixed.history.steps_done == 15
    small = torch.randn(8, 2, dtype=torch.float64)  # under 10 rows: no validation split
    run = pushforward.train_run(
        tmp_path / "small",
        small,
        "nsf",
        options=SMALL,
        train={"default_steps": 12, "batch_size": 8},
    )
    assert run.config["train"]["budget"] == {
        "steps": 12, "patience": None, "eval_every": 100, "until": "steps"
    }  # fmt: skip
    assert run.history.steps_done == 12
