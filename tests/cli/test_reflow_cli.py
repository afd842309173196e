"""``pushforward reflow`` and ``distill``: train -> reflow -> distill -> sample, eval, load,
and ``--resume`` of an interrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy.spatial.distance import cdist

import pushforward
from pushforward.cli.main import main
from pushforward.cli.report import summarize_run, write_evaluation
from pushforward.data import load_dataset
from pushforward.fewstep.distilled import DistilledFlow
from pushforward.matching.model import FlowMatching
from pushforward.recipes import run as reflow_run_module
from pushforward.recipes.pairs import fit_pairs
from pushforward.train.callbacks import Callback
from pushforward.train.checkpoint import latest_checkpoint
from pushforward.train.run_directory import read_metrics

TINY = ["--set", "hidden=[32,32]", "--set", "time_embedding=8", "--quiet"]
PAIRS = ["--pairs", "600", "--steps", "30", "--batch-size", "128", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reflow")
    paths = {name: root / name for name in ("fm", "fm-2", "fm-3", "one-step")}
    argv = ["train", "--data", "builtin:moons", "--model", "fm", "--out", str(paths["fm"]),
            "--steps", "60", "--n", "2000", "--batch-size", "128", "--seed", "4",
            "--set", 'coupling="independent"', *TINY]  # fmt: skip
    assert main(argv) == 0
    assert main(["reflow", str(paths["fm"]), "--out", str(paths["fm-2"]), *PAIRS,
                 "--set", 'time_sampling="u-shaped"', "--set", 'loss="pseudo-huber"'
                 ]) == 0  # fmt: skip
    assert main(["reflow", str(paths["fm-2"]), "--out", str(paths["fm-3"]), *PAIRS,
                 "--solver", "rk4", "--solver-steps", "16"]) == 0  # fmt: skip
    assert main(["distill", str(paths["fm-2"]), "--out", str(paths["one-step"]), *PAIRS]) == 0
    return paths


def config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def test_reflowed_run_is_a_plain_fm_run_with_lineage(runs: dict[str, Path]) -> None:
    parent, child, grandchild = config(runs["fm"]), config(runs["fm-2"]), config(runs["fm-3"])
    assert child["model"]["name"] == "fm"
    assert child["model"]["options"]["time_sampling"] == "u-shaped"
    assert child["model"]["options"]["loss"] == "pseudo-huber"
    assert child["model"]["options"]["hidden"] == [32, 32]
    assert child["data"] == parent["data"]
    assert child["standardization"] == parent["standardization"]
    assert child["train"]["seed"] == 4  # the parent's, so eval's default draw stays unseen
    lineage = child["lineage"]
    assert lineage["method"] == "reflow" and lineage["k"] == 2
    assert lineage["pairs"] == 600 and lineage["validation_pairs"] == 60
    assert lineage["solver"] == {"method": "dopri5", "atol": 1e-6, "rtol": 1e-6}
    assert lineage["init"] == "parent" and lineage["parent_lineage"] is None
    assert grandchild["lineage"]["k"] == 3
    assert grandchild["lineage"]["solver"] == {"method": "rk4", "steps": 16}
    assert grandchild["lineage"]["parent_lineage"] == lineage
    records = [
        json.loads(line) for line in (runs["fm-2"] / "metrics.jsonl").read_text().splitlines()
    ]
    assert records[-1]["step"] == 30 and "val_loss" in records[-1]


def test_reflowed_run_loads_in_original_units(runs: dict[str, Path]) -> None:
    parent, child = pushforward.load(runs["fm"]), pushforward.load(runs["fm-2"])
    assert isinstance(child, FlowMatching) and isinstance(parent, FlowMatching)
    for name in ("mean", "std"):
        torch.testing.assert_close(
            getattr(child.preprocessing.data, name),
            getattr(parent.preprocessing.data, name),
            rtol=0,
            atol=0,
        )
    # The reflowed model starts from the parent's weights and trains them.
    assert any(
        not torch.equal(value, parent.state_dict()[key])
        for key, value in child.state_dict().items()
    )


def test_reflowed_run_samples_and_evaluates(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.npy"
    argv = ["sample", str(runs["fm-3"]), "-n", "400", "--out", str(out), "--seed", "2"]
    assert main([*argv, "--solver", "euler", "--steps", "1"]) == 0
    model = pushforward.load(runs["fm-3"])
    torch.manual_seed(2)
    expected = model.sample(400, solver="euler", steps=1).double().numpy()
    np.testing.assert_array_equal(np.load(out), expected)
    capsys.readouterr()
    evaluate = ["eval", str(runs["fm-2"]), "--data", "builtin:moons", "--n", "300"]
    assert main([*evaluate, "--solver", "rk4", "--steps", "8"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert set(plain) >= {"nll", "nll_se", "n", "kl"} and "energy_distance" not in plain
    assert main([*evaluate, "--solver", "rk4", "--steps", "8", "--sample-metrics"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["nll"] == plain["nll"] and both["energy_distance"] >= -0.01


def test_distilled_run_samples_in_one_step(runs: dict[str, Path], tmp_path: Path) -> None:
    run = config(runs["one-step"])
    assert run["model"]["name"] == "distilled"
    assert run["lineage"]["method"] == "distill" and run["lineage"]["teacher_k"] == 2
    model = pushforward.load(runs["one-step"])
    assert isinstance(model, DistilledFlow)
    assert not model.has_log_prob
    out = tmp_path / "s.npy"
    assert main(["sample", str(runs["one-step"]), "-n", "300", "--out", str(out)]) == 0
    torch.manual_seed(0)
    x0 = model.base.sample(300)
    with torch.no_grad():
        # A Gaussian base has no source map: transport(x0) is mean + std * T(x0).
        mapped = model.transport(x0)
    np.testing.assert_allclose(np.load(out), mapped.double().numpy(), rtol=1e-6, atol=1e-6)


def test_eval_of_a_model_without_log_prob_prints_sample_metrics(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = ["eval", str(runs["one-step"]), "--data", "builtin:moons", "--n", "500"]
    assert main([*argv, "--seed", "7"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "nll" not in result and result["n"] == 500 and result["metric_rows"] == 500
    # The energy distance by scipy's distances, on the same samples and data.
    model = pushforward.load(runs["one-step"])
    torch.manual_seed(7)
    samples = model.sample(500).double().numpy()
    data = load_dataset("builtin:moons", n=500, seed=7).values.numpy()
    expected = (
        2 * cdist(samples, data).mean()
        - cdist(samples, samples).sum() / (500 * 499)
        - cdist(data, data).sum() / (500 * 499)
    )
    assert result["energy_distance"] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert result["sliced_wasserstein"] > 0
    assert main([*argv, "--solver", "rk4"]) == 2
    assert "takes no --solver" in capsys.readouterr().err


def test_report_copes_without_nll(runs: dict[str, Path], tmp_path: Path) -> None:
    write_evaluation(runs["one-step"], {"energy_distance": 0.01, "n": 500})
    summary = summarize_run(runs["one-step"], "one-step")
    assert summary.model == "distilled" and "test NLL (nats)" not in summary.metrics
    assert summary.metrics["test examples"] == "500"
    assert summary.metrics["energy distance to test data"] == "0.0100"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pairs", "100"], "fewer than the batch size"),
        (["--set", "hidden=[8]"], 'init="fresh"'),
        (["--set", "n=10"], "does not apply"),
        (["--set", "train.bogus=1"], "unknown training option"),
        (["--solver", "rk4", "--atol", "1e-3"], "adaptive"),
        (["--solver", "euler2"], "solver"),
        (["--context", "c.npy"], "unconditional"),
    ],
)
def test_bad_input_is_refused(
    runs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    capsys.readouterr()
    out = tmp_path / "new"
    assert main(["reflow", str(runs["fm"]), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists()


def test_parent_must_be_an_fm_run_and_out_new(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    for command in ("reflow", "distill"):
        assert main([command, str(runs["one-step"]), "--out", str(tmp_path / "x")]) == 2
        assert "need a flow-matching run" in capsys.readouterr().err
    assert main(["reflow", str(runs["fm"]), "--out", str(runs["fm-2"])]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "holds a reflow run; pass --resume" in err
    (tmp_path / "plain").mkdir()
    assert main(["reflow", str(runs["fm"]), "--out", str(tmp_path / "plain")]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "pass --resume" not in err
    assert main(["distill", str(tmp_path / "none"), "--out", str(tmp_path / "y")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_conditional_runs_keep_the_context_per_pair(tmp_path: Path) -> None:
    generator = np.random.default_rng(0)
    context = generator.normal(size=(1000, 1))
    data = np.concatenate([context + 0.1 * generator.normal(size=(1000, 1)),
                           generator.normal(size=(1000, 1))], axis=1)  # fmt: skip
    np.save(tmp_path / "x.npy", data)
    np.save(tmp_path / "c.npy", 10.0 + 2.0 * context)
    parent, child, student = tmp_path / "fm", tmp_path / "fm-2", tmp_path / "one"
    argv = ["train", "--data", str(tmp_path / "x.npy"), "--context", str(tmp_path / "c.npy"),
            "--model", "fm", "--out", str(parent), "--steps", "60", "--batch-size", "128",
            *TINY]  # fmt: skip
    assert main(argv) == 0
    assert main(["reflow", str(parent), "--out", str(child), *PAIRS]) == 0
    assert main(["distill", str(child), "--out", str(student), *PAIRS]) == 0
    assert config(student)["standardization"] == config(parent)["standardization"]
    # The saved pairs keep each pair's context row, standardised: back in original
    # units every one is a row of the context file.
    saved = load_file(str(student / "pairs.safetensors"))
    assert set(saved) == {"x0", "x1", "context"} and saved["context"].shape == (600, 1)
    scale = config(parent)["standardization"]
    rows = saved["context"].double() * scale["context_std"][0] + scale["context_mean"][0]
    assert np.abs(rows.numpy() - np.load(tmp_path / "c.npy").T).min(axis=1).max() < 1e-4
    one_row = tmp_path / "one.npy"
    np.save(one_row, np.array([[10.0 + 2.0 * 1.5]]))
    out = tmp_path / "s.npy"
    assert main(["sample", str(student), "-n", "300", "--context", str(one_row),
                 "--out", str(out)]) == 0  # fmt: skip
    # The first coordinate follows the context (about 1.5 here, against 0 on average).
    assert abs(np.load(out)[:, 0].mean() - 1.5) < 0.5


def test_a_flow_between_data_sets_keeps_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent, child, student = tmp_path / "fm", tmp_path / "fm-2", tmp_path / "one"
    argv = ["train", "--data", "builtin:moons", "--source", "builtin:8gaussians", "--model",
            "fm", "--out", str(parent), "--steps", "40", "--n", "1000", "--batch-size", "128",
            *TINY]  # fmt: skip
    assert main(argv) == 0
    assert main(["reflow", str(parent), "--out", str(child), *PAIRS]) == 0
    assert main(["distill", str(child), "--out", str(student), *PAIRS]) == 0
    for run in (child, student):
        assert config(run)["source"] == config(parent)["source"]
        assert config(run)["standardization"] == config(parent)["standardization"]
    teacher, one_step = pushforward.load(parent), pushforward.load(student)
    assert isinstance(teacher, FlowMatching) and isinstance(one_step, DistilledFlow)
    rows = teacher.base.rows
    torch.testing.assert_close(one_step.base.rows, rows, rtol=0, atol=0)
    # Given source rows (original units) map through the source standardisation.
    points = load_dataset("builtin:8gaussians", n=50, seed=3).values.float()
    np.save(tmp_path / "a.npy", points.double().numpy())
    out = tmp_path / "mapped.npy"
    assert main(["sample", str(student), "--source", str(tmp_path / "a.npy"),
                 "--out", str(out)]) == 0  # fmt: skip
    with torch.no_grad():
        expected = one_step.transport(points)
    np.testing.assert_allclose(np.load(out), expected.double().numpy(), rtol=1e-6, atol=1e-6)
    capsys.readouterr()
    assert main(["eval", str(child), "--data", "builtin:moons", "--n", "200"]) == 0
    assert set(json.loads(capsys.readouterr().out)) >= {"energy_distance", "n"}


# -- --resume ------------------------------------------------------------------

RESUMABLE = ["--pairs", "300", "--steps", "20", "--batch-size", "64", "--set", "checkpoint_every=5",
             "--set", "log_every=1", "--set", "eval_every=5", "--quiet"]  # fmt: skip
FM_2 = [*PAIRS, "--set", 'time_sampling="u-shaped"', "--set", 'loss="pseudo-huber"']


class Killed(BaseException):
    """Stands for kill -9: nothing handles it and nothing is written at the step it hits."""


class Watch(Callback):
    """Records the steps a run trains and, at ``stop_at``, interrupts it (``how``:
    ``"signal"`` sends this process SIGINT, ``"kill"`` raises :class:`Killed`)."""

    def __init__(self, stop_at: int | None = None, how: str = "signal") -> None:
        self.steps: list[int] = []
        self.stop_at = stop_at
        self.how = how

    def on_step(self, step: int, logs: dict[str, Any]) -> bool | None:
        self.steps.append(step)
        if step == self.stop_at:
            if self.how == "signal":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise Killed
        return None


def watch(monkeypatch: pytest.MonkeyPatch, watcher: Watch) -> None:
    def watched(*args: Any, **options: Any) -> Any:
        options["callbacks"] = [*options["callbacks"], watcher]
        return fit_pairs(*args, **options)

    monkeypatch.setattr(reflow_run_module, "fit_pairs", watched)


def refuse_to_draw(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the pairs were drawn again on --resume")


def checkpoint_step(run: Path) -> int:
    checkpoint = latest_checkpoint(run / "checkpoints")
    assert checkpoint is not None
    return int(json.loads((checkpoint / "manifest.json").read_text())["step"])


@pytest.mark.parametrize(("command", "how"), [("reflow", "signal"), ("distill", "kill")])
def test_interrupted_run_resumes_to_the_uninterrupted_weights(
    runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    how: str,
) -> None:
    reference, out = tmp_path / "reference", tmp_path / "run"
    argv = [command, str(runs["fm"]), *RESUMABLE]
    assert main([*argv, "--out", str(reference)]) == 0
    capsys.readouterr()

    watch(monkeypatch, Watch(stop_at=13, how=how))
    if how == "signal":
        # The engine checkpoints the step it stopped at and the CLI exits 130.
        assert main([*argv, "--out", str(out)]) == 130
        assert "reflow or distill run with --resume" in capsys.readouterr().err
        assert checkpoint_step(out) == 13
    else:
        with pytest.raises(Killed):
            main([*argv, "--out", str(out)])
        # Killed: the last checkpoint is older than the metrics logged after it.
        assert checkpoint_step(out) == 10 and read_metrics(out)[-1]["step"] == 13
    assert not (out / "model.safetensors").exists()
    assert (out / "pairs.safetensors").read_bytes() == (
        reference / "pairs.safetensors"
    ).read_bytes()
    assert main([*argv, "--out", str(out)]) == 2
    assert "pass --resume" in capsys.readouterr().err

    resumed = Watch()
    watch(monkeypatch, resumed)
    monkeypatch.setattr(reflow_run_module, "reflow_pairs", refuse_to_draw)
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    # It went on from the checkpoint, not from the start, to the uninterrupted run's
    # weights bit for bit and its metrics record for record.
    restart = 13 if how == "signal" else 10
    assert resumed.steps == list(range(restart + 1, 21))
    assert (out / "model.safetensors").read_bytes() == (
        reference / "model.safetensors"
    ).read_bytes()
    assert read_metrics(out) == read_metrics(reference)
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 21))
    first, again = config(reference)["lineage"], config(out)["lineage"]
    assert {**again, "pair_seconds": 0} == {**first, "pair_seconds": 0}

    # Training options may change on resume: five more steps.
    more = Watch()
    watch(monkeypatch, more)
    assert main([*argv, "--out", str(out), "--resume", "--steps", "25"]) == 0
    assert more.steps == [21, 22, 23, 24, 25] and config(out)["train"]["steps"] == 25
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 26))
    loaded = pushforward.load(out)
    with torch.no_grad():
        assert loaded.sample(5).isfinite().all()


def test_saved_pairs_are_the_parents_ode_ends(runs: dict[str, Path]) -> None:
    saved = load_file(str(runs["fm-2"] / "pairs.safetensors"))
    lineage = config(runs["fm-2"])["lineage"]
    data = (runs["fm-2"] / "pairs.safetensors").read_bytes()
    assert lineage["pairs_sha256"] == hashlib.sha256(data).hexdigest()
    assert set(saved) == {"x0", "x1"} and saved["x0"].shape == saved["x1"].shape == (600, 2)
    # Standardised units: x0 from the standard normal base, x1 the parent's ODE end,
    # here by a fixed-step solver instead of the run's dopri5.
    assert abs(float(saved["x0"].mean())) < 0.15 and abs(float(saved["x0"].std()) - 1) < 0.1
    parent = pushforward.load(runs["fm"])
    assert isinstance(parent, FlowMatching)
    with torch.no_grad():
        ends = parent.solve(saved["x0"][:100], solver="rk4", steps=200)
    torch.testing.assert_close(ends.state, saved["x1"][:100], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reflow", "fm", *PAIRS, "--set", 'time_sampling="u-shaped"'], "options"),
        (["reflow", "fm-3", *FM_2], "was made from the run"),
        (["reflow", "fm", *FM_2, "--pairs", "700"], "pairs 600, not 700"),
        (["reflow", "fm", *FM_2, "--solver", "rk4", "--solver-steps", "16"], "--solver"),
        (["reflow", "fm", *FM_2, "--set", 'init="fresh"'], "init 'parent', not 'fresh'"),
        (["reflow", "fm", *FM_2, "--seed", "5"], "--seed 4, not 5"),
        (["distill", "fm", *FM_2], "made by pushforward reflow, not by pushforward distill"),
        (["reflow", "fm", *FM_2, "--context", "c.npy"], "unconditional"),
    ],
    ids=["options", "parent", "pairs", "solver", "init", "seed", "command", "context"],
)
def test_resume_refuses_another_command(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    before = (runs["fm-2"] / "config.json").read_bytes()
    capsys.readouterr()
    command, parent, *rest = argv
    assert main([command, str(runs[parent]), "--out", str(runs["fm-2"]), *rest, "--resume"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert (runs["fm-2"] / "config.json").read_bytes() == before


def test_resume_needs_a_run(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    resume = ["reflow", str(runs["fm"]), *PAIRS, "--resume", "--out"]
    assert main([*resume, str(tmp_path / "none")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    (tmp_path / "empty").mkdir()
    assert main([*resume, str(tmp_path / "empty")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main([*resume, str(runs["fm"])]) == 2
    assert "made by pushforward train" in capsys.readouterr().err


def damage(run: Path, how: str) -> None:
    path = run / "pairs.safetensors"
    if how == "missing":
        path.unlink()
        return
    if how == "flipped":
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
        return
    if how == "shape":
        save_file({"x0": torch.zeros(600, 3), "x1": torch.zeros(600, 3)}, str(path))
    else:
        path.write_bytes(b"not safetensors")
    # With the checksum made to match: the file itself is checked too.
    record = config(run)
    record["lineage"]["pairs_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (run / "config.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing", "pairs.safetensors is missing"),
        ("flipped", "is damaged"),
        ("shape", "of shape (600, 3), expected torch.float32 of shape (600, 2)"),
        ("garbage", "not a valid safetensors file"),
    ],
)
def test_resume_checks_the_saved_pairs(
    runs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    how: str,
    message: str,
) -> None:
    out = tmp_path / "fm-2"
    shutil.copytree(runs["fm-2"], out)
    damage(out, how)
    capsys.readouterr()
    assert main(["reflow", str(runs["fm"]), "--out", str(out), *FM_2, "--resume"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
