from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pushforward.train import Callback, fit, latest_checkpoint, load_checkpoint, verify_checkpoint
from tests.train.models import Noisy, small_flow, state_equal, toy_data

ROOT = Path(__file__).resolve().parents[2]
OPTIONS: dict[str, Any] = dict(steps=60, batch_size=32, lr=3e-3, warmup=5, ema=0.95, seed=1)


class SendSignal(Callback):
    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step

    def on_step(self, step: int, logs: dict[str, Any]) -> None:
        if step == self.step:
            os.kill(os.getpid(), self.signum)


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, step: int, logs: dict[str, Any]) -> bool:
        return step == self.step


@pytest.mark.parametrize(
    ("signum", "exception"), [(signal.SIGTERM, SystemExit), (signal.SIGINT, KeyboardInterrupt)]
)
def test_signal_writes_checkpoint_then_exits(tmp_path: Path, signum: int, exception: type) -> None:
    before = signal.getsignal(signum)
    with pytest.raises(exception) as raised:
        fit(
            Noisy(small_flow()),
            toy_data(),
            checkpoint_dir=tmp_path,
            checkpoint_every=25,
            callbacks=[SendSignal(signum, 37)],
            **OPTIONS,
        )
    if exception is SystemExit:
        assert raised.value.code == 143
    assert signal.getsignal(signum) is before
    assert load_checkpoint(latest_checkpoint(tmp_path)).step == 37
    # The loss draws noise from torch's generator: exactness needs its state restored.
    resumed = Noisy(small_flow(seed=5))
    fit(resumed, toy_data(), checkpoint_dir=tmp_path, resume=True, **OPTIONS)
    straight = Noisy(small_flow())
    fit(straight, toy_data(), **OPTIONS)
    assert state_equal(resumed.state_dict(), straight.state_dict())


SCRIPT = """
import sys
from pushforward.train import Callback, fit
from tests.train.models import small_flow, toy_data

class Print(Callback):
    def on_step(self, step, logs):
        print(step, flush=True)

fit(small_flow(), toy_data(), steps=10**6, batch_size=32, lr=1e-3, warmup=10, ema=0.99,
    seed=2, quiet=True, checkpoint_dir=sys.argv[1], checkpoint_every=7, callbacks=[Print()])
"""


def test_kill_9_then_resume_loses_at_most_one_interval(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(directory)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while latest_checkpoint(directory) is None:
            assert process.poll() is None, "the training process died"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        time.sleep(random.Random(os.getpid()).uniform(0.05, 0.5))
        process.kill()  # SIGKILL: no handler runs
        output = process.communicate(timeout=30)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    printed = [int(line) for line in output.split()]
    last = printed[-1]

    path = latest_checkpoint(directory)
    verify_checkpoint(path)
    saved = load_checkpoint(path)
    assert saved.step % 7 == 0 and 0 <= last - saved.step <= 7, (saved.step, last)

    options: dict[str, Any] = dict(
        steps=10**6, batch_size=32, lr=1e-3, warmup=10, ema=0.99, seed=2, quiet=True
    )
    target = saved.step + 5
    resumed = small_flow(seed=9)
    history = fit(
        resumed,
        toy_data(),
        checkpoint_dir=directory,
        checkpoint_every=7,
        resume=True,
        callbacks=[StopAt(target)],
        **options,
    )
    assert history.steps_done == target
    straight = small_flow()
    fit(straight, toy_data(), callbacks=[StopAt(target)], **options)
    assert state_equal(resumed.state_dict(), straight.state_dict())
    assert [p.name for p in directory.iterdir()] == [f"checkpoint-{target:09d}"]
