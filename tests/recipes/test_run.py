"""``reflow_run`` and ``distill_run``: the Python calls behind ``pushforward reflow`` and
``pushforward distill``, bitwise the same runs as the commands."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import pushforward
from pushforward.cli.main import main
from pushforward.recipes.run import pair_solver, pair_training

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "fm"
    pushforward.train_run(
        out,
        "builtin:moons",
        "fm",
        options={"hidden": [16, 16], "coupling": "independent", "time_embedding": 8},
        train={"steps": 30, "n": 600, "seed": 3},
    )
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("method", "flags", "keywords"),
    [
        ("reflow", [], {}),
        (
            "reflow",
            ["--solver", "rk4", "--solver-steps", "5", "--set", 'init="fresh"', "--set", "ema=0.9"],
            {"solver": "rk4", "solver_steps": 5, "init": "fresh", "train": {"ema": 0.9}},
        ),
        (
            "distill",
            ["--set", "validation=0.2", "--set", 'loss="pseudo-huber"'],
            {"train": {"validation": 0.2}, "options": {"loss": "pseudo-huber"}},
        ),
    ],
    ids=["reflow", "reflow-rk4-fresh", "distill"],
)
def test_the_command_and_the_call_make_the_same_run(
    parent: Path, tmp_path: Path, method: str, flags: list[str], keywords: dict
) -> None:
    command = tmp_path / "command"
    common = ["--pairs", "300", "--steps", "20", "--batch-size", "64", "--quiet"]
    assert main([method, str(parent), "--out", str(command), *common, *flags]) == 0
    train = {"steps": 20, "batch_size": 64, **keywords.pop("train", {})}
    call = getattr(pushforward, f"{method}_run")(
        tmp_path / "call", parent, pairs=300, train=train, **keywords
    )
    for name in ("model.safetensors", "pairs.safetensors", "model.json"):
        assert digest(command / name) == digest(call.directory / name), name
    written = json.loads((command / "config.json").read_text())
    assert call.config["lineage"]["method"] == method
    for key in ("model", "data", "standardization", "train"):
        assert json.loads(json.dumps(call.config[key])) == written[key], key
    assert call.history.steps_done == 20
    assert call.config["lineage"]["k" if method == "reflow" else "teacher_k"] == (
        2 if method == "reflow" else 1
    )


def test_the_run_resumes_with_the_saved_pairs(parent: Path, tmp_path: Path) -> None:
    out = tmp_path / "fm-2"
    first = pushforward.reflow_run(out, parent, pairs=200, train={"steps": 10, "batch_size": 64})
    with pytest.raises(ValueError, match="pass --resume"):
        pushforward.reflow_run(out, parent, pairs=200, train={"steps": 10, "batch_size": 64})
    more = pushforward.reflow_run(
        out, parent, pairs=200, train={"steps": 16, "batch_size": 64}, resume=True
    )
    assert more.history.steps_done == 16
    assert more.config["lineage"]["pairs_sha256"] == first.config["lineage"]["pairs_sha256"]
    with pytest.raises(ValueError, match="pairs 200, not 300"):
        pushforward.reflow_run(
            out, parent, pairs=300, train={"steps": 16, "batch_size": 64}, resume=True
        )


def test_training_defaults_and_their_errors() -> None:
    train = pair_training(7)
    assert train["seed"] == 7 and train["lr"] == 1e-3 and train["steps"] == 2000
    assert "n" not in train and "max_steps" not in train
    assert pair_training(7, {"lr": 3e-4})["lr"] == 3e-4
    with pytest.raises(ValueError, match=r"unknown training option 'emma'.*did you mean 'ema'"):
        pair_training(0, {"emma": 0.9})
    with pytest.raises(ValueError, match="does not apply"):
        pair_training(0, {"n": 10})


def test_solver_settings_are_checked() -> None:
    assert pair_solver() == {"method": "dopri5", "atol": 1e-6, "rtol": 1e-6}
    assert pair_solver("rk4") == {"method": "rk4", "steps": 100}
    assert pair_solver("euler", 8) == {"method": "euler", "steps": 8}
    with pytest.raises(ValueError, match="adaptive"):
        pair_solver("rk4", atol=1e-3)
    with pytest.raises(ValueError, match="fixed-step"):
        pair_solver("dopri5", steps=10)
    with pytest.raises(ValueError, match="must be positive"):
        pair_solver("dopri5", rtol=0.0)
    with pytest.raises(ValueError, match="solver"):
        pair_solver("euler2")


def test_only_fm_runs_are_parents(tmp_path: Path) -> None:
    nsf = pushforward.train_run(
        tmp_path / "nsf",
        "builtin:moons",
        "nsf",
        options={"transforms": 1, "hidden": [8]},
        train={"steps": 2, "n": 100},
    )
    with pytest.raises(ValueError, match="need a flow-matching run"):
        pushforward.distill_run(tmp_path / "x", nsf.directory)
    assert not (tmp_path / "x").exists()
