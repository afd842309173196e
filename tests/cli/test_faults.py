"""Faults at the command line: SIGINT/SIGTERM, kill -9 then --resume, and torchrun.

Each test runs ``python -m pushforward train`` in a subprocess on a tiny flow and
compares what it leaves behind with an uninterrupted run trained in this process
(``--seed`` fixes the initial weights too): the resumed run must give the same
weights, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import pushforward
from pushforward.cli.main import main
from pushforward.data import load_dataset
from pushforward.train.checkpoint import latest_checkpoint, verify_checkpoint
from pushforward.train.run_directory import read_metrics

ROOT = Path(__file__).resolve().parents[2]
STEPS = 120
INTERVAL = 20
CONFIG = f"""
[model]
transforms = 2
hidden = [16, 16]

[train]
n = 1000
batch_size = 64
log_every = 1
eval_every = 40
checkpoint_every = {INTERVAL}
"""
RUN_FILES = {"checkpoints", "config.json", "metrics.jsonl", "model.json", "model.safetensors"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(CONFIG)
    return path


def train_arguments(config: Path, out: Path) -> list[str]:
    # --n and --batch-size live in the config: torchrun's own parser would take
    # an abbreviation such as --n for one of its options.
    return ["train", "--data", "builtin:moons", "--model", "nsf", "--config", str(config),
            "--steps", str(STEPS), "--out", str(out), "--quiet"]  # fmt: skip


def environment() -> dict[str, str]:
    launched = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    variables = {k: v for k, v in os.environ.items() if k not in launched}
    variables.update(PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return variables


def start(config: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pushforward", *train_arguments(config, out)],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_step(process: subprocess.Popen[str], out: Path, step: int) -> None:
    """Polls metrics.jsonl until training has logged ``step``."""
    deadline = time.monotonic() + 60
    while True:
        records = read_metrics(out)
        if records and records[-1]["step"] >= step:
            return
        if process.poll() is not None:
            pytest.fail(f"training ended before step {step}: {process.communicate()[1]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"training did not reach step {step} within 60 s")
        time.sleep(0.005)


def finish(process: subprocess.Popen[str]) -> str:
    try:
        return process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_step(out: Path) -> int:
    checkpoint = latest_checkpoint(out / "checkpoints")
    assert checkpoint is not None, "no checkpoint was written"
    verify_checkpoint(checkpoint)  # every file the manifest lists matches its SHA-256
    return int(json.loads((checkpoint / "manifest.json").read_text())["step"])


def check_complete(out: Path, reference: dict[str, Any]) -> None:
    """A finished run: complete files, one metrics line per step, the reference weights."""
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"checkpoint-{STEPS:09d}"]
    assert manifest_step(out) == STEPS
    assert [r["step"] for r in read_metrics(out)] == list(range(1, STEPS + 1))
    description = json.loads((out / "model.json").read_text())
    assert description["weights_sha256"] == sha256(out / "model.safetensors")
    model = pushforward.load(out)  # verifies the checksum again before loading
    with torch.no_grad():
        assert torch.isfinite(model.log_prob(reference["x"])).all()
    # Interrupted and resumed, the run ends with the uninterrupted run's weights.
    assert description["weights_sha256"] == reference["sha256"]


@pytest.fixture(scope="module")
def reference(config: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(train_arguments(config, out)) == 0
    x = load_dataset("builtin:moons", n=500, seed=3).values.float()
    with torch.no_grad():
        nll = -float(pushforward.load(out).log_prob(x).double().mean())
    return {"sha256": sha256(out / "model.safetensors"), "x": x, "nll": nll}


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"]
)
def test_signal_checkpoints_exits_conventionally_and_resumes(
    signum: int,
    status: int,
    config: Path,
    reference: dict[str, Any],
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    target = random.Random(int(signum)).randint(10, 50)
    process = start(config, out)
    try:
        wait_for_step(process, out, target)
        process.send_signal(signum)
    finally:
        stderr = finish(process)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) <= 1, stderr
    if signum == signal.SIGINT:
        assert "--resume" in stderr
    # The stop wrote a checkpoint at the step it ended on, and no final model.
    step = manifest_step(out)
    assert target <= step < STEPS
    assert read_metrics(out)[-1]["step"] == step
    assert not (out / "model.json").exists()

    assert main([*train_arguments(config, out), "--resume"]) == 0
    check_complete(out, reference)


def test_kill_9_then_resume_redoes_at_most_one_interval(
    config: Path, reference: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # A seeded moment past the first checkpoint: the kill hits a run with one behind it.
    target = random.Random(9).randint(INTERVAL + 1, 60)
    process = start(config, out)
    try:
        wait_for_step(process, out, target)
        process.kill()
    finally:
        finish(process)
    assert process.returncode == -signal.SIGKILL
    before = read_metrics(out)
    checkpoint = manifest_step(out)
    logged = before[-1]["step"]
    assert checkpoint % INTERVAL == 0
    # Resuming redoes the steps after the checkpoint: at most one interval.
    assert 0 <= logged - checkpoint <= INTERVAL, (checkpoint, logged)

    assert main([*train_arguments(config, out), "--resume"]) == 0
    check_complete(out, reference)
    # It continued from the checkpoint: the log up to it is kept as written.
    kept = [r for r in before if r["step"] <= checkpoint]
    assert read_metrics(out)[: len(kept)] == kept


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_torchrun_two_processes_only_rank_0_writes(
    config: Path, reference: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--standalone", "-m", "pushforward", *train_arguments(config, out)]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    # One metrics line per step: a second writer would have doubled them.
    assert [r["step"] for r in read_metrics(out)] == list(range(1, STEPS + 1))
    checkpoint = latest_checkpoint(out / "checkpoints")
    assert checkpoint is not None and checkpoint.name == f"checkpoint-{STEPS:09d}"
    verify_checkpoint(checkpoint)
    state = json.loads((checkpoint / "training_state.json").read_text())
    assert state["options"]["world_size"] == 2  # the ranks trained as one DDP job
    model = pushforward.load(out)
    with torch.no_grad():
        nll = -float(model.log_prob(reference["x"]).double().mean())
    # Two halves of each batch with averaged gradients: the single-process run,
    # up to the order of floating-point sums.
    assert nll == pytest.approx(reference["nll"], abs=1e-4)
