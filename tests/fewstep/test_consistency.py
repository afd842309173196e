"""Consistency flow matching: segments, the loss by hand, the target network, save/load,
training, the command line and option errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import pushforward
from pushforward.cli.main import main
from pushforward.data import load_dataset
from pushforward.distributions import make_base
from pushforward.fewstep import ConsistencyFlowMatching
from pushforward.fewstep.consistency import TIME_FLOOR, consistency_function, segment_ends
from pushforward.fewstep.target import TargetNetwork
from pushforward.metrics import energy_distance
from pushforward.paired import PairedBatch
from pushforward.registry import build
from pushforward.serialization import save
from pushforward.train import fit
from pushforward.train.callbacks import Callback

pytestmark = pytest.mark.usefixtures("one_thread")


class LinearField(nn.Module):
    """v(x, t) = a x + b t, element-wise, with learnable a and b."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(b, dtype=torch.float64))

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        return self.a * x + self.b * t[:, None]


def linear_model(**options: Any) -> ConsistencyFlowMatching:
    base = make_base("normal", (1,)).to(torch.float64)
    return ConsistencyFlowMatching(LinearField(0.7, -0.4), base, **options)


def tiny(**options: Any) -> ConsistencyFlowMatching:
    options = {"hidden": [32, 32], "time_embedding": 8, **options}
    model = build("consistency-fm", features=2, **options)
    assert isinstance(model, ConsistencyFlowMatching)
    return model


def test_segment_ends() -> None:
    t = torch.tensor([0.0, 0.1, 0.5, 0.5001, 0.75, 1.0], dtype=torch.float64)
    assert segment_ends(t, 1).tolist() == [1.0] * 6
    assert segment_ends(t, 2).tolist() == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
    assert segment_ends(t, 4).tolist() == [0.25, 0.25, 0.5, 0.75, 0.75, 1.0]


def test_consistency_function_extrapolates_to_the_segment_end() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    v = torch.tensor([[0.5, -2.0], [4.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([0.2, 0.5], dtype=torch.float64)
    end = torch.tensor([0.5, 1.0], dtype=torch.float64)
    expected = torch.tensor([[1.15, 1.4], [5.0, -0.5]], dtype=torch.float64)
    torch.testing.assert_close(consistency_function(x, t, v, end), expected)


def by_hand(
    a: float, b: float, x0: list[float], x1: list[float], t: list[float], dt: float,
    segments: int, alpha: float, boundary: float = 1.0,
) -> tuple[float, float, float]:  # fmt: skip
    """The loss of a one-feature linear field, written out row by row in floats."""
    endpoints, velocities = [], []
    for z0, z1, s in zip(x0, x1, t, strict=True):
        r = min(s + dt, 1.0)
        end = math.ceil(s * segments) / segments
        xs, xr = s * z1 + (1 - s) * z0, r * z1 + (1 - r) * z0
        vs, vr = a * xs + b * s, a * xr + b * r
        fs = xs + (end - s) * vs
        fr = end * z1 + (1 - end) * z0 if r >= boundary else xr + (end - r) * vr
        endpoints.append((fs - fr) ** 2)
        keep = s < boundary and end - s > 1.01 * dt
        velocities.append((vs - vr) ** 2 if keep else 0.0)
    rows = [e + alpha * v for e, v in zip(endpoints, velocities, strict=True)]
    n = len(rows)
    return sum(rows) / n, sum(endpoints) / n, sum(velocities) / n


@pytest.mark.parametrize("boundary", [1.0, 0.5])
def test_loss_of_a_linear_field_by_hand(boundary: float) -> None:
    x0, x1 = [0.3, -1.2, 0.8], [2.0, 0.5, -0.6]
    t = [0.2, 0.45, 0.7]  # the second is within 1.01 dt of its segment's end
    model = linear_model(segments=2, delta_t=0.1, alpha=0.5, boundary=boundary)
    pairs = PairedBatch(
        x0=torch.tensor(x0, dtype=torch.float64)[:, None],
        x1=torch.tensor(x1, dtype=torch.float64)[:, None],
        context=None,
    )
    with torch.no_grad():
        parts = model.loss_terms(pairs, torch.tensor(t, dtype=torch.float64))
    total, endpoint, velocity = by_hand(0.7, -0.4, x0, x1, t, 0.1, 2, 0.5, boundary)
    assert float(parts.total) == pytest.approx(total, rel=1e-12)
    assert float(parts.endpoint) == pytest.approx(endpoint, rel=1e-12)
    assert float(parts.velocity) == pytest.approx(velocity, rel=1e-12)
    assert velocity > 0


def test_training_times_start_above_the_floor() -> None:
    model = linear_model()
    torch.manual_seed(0)
    t = model.sample_times(20000, torch.zeros((), dtype=torch.float64))
    assert float(t.min()) >= TIME_FLOOR and float(t.max()) <= 1.0
    assert abs(float(t.mean()) - (1 + TIME_FLOOR) / 2) < 0.01


class Weights(Callback):
    """Records the online (a, b) after every optimisation step."""

    def __init__(self, model: ConsistencyFlowMatching) -> None:
        self.model = model
        self.seen: list[tuple[float, float]] = []

    def on_step(self, step: int, logs: dict[str, Any]) -> bool | None:
        self.seen.append((self.model.network.a.item(), self.model.network.b.item()))
        return None


def test_target_follows_the_moving_average_and_not_the_optimizer() -> None:
    model = linear_model(target_ema=0.8, delta_t=0.05)
    assert isinstance(model.target, TargetNetwork)
    assert not any(p.requires_grad for p in model.target.parameters())
    start = (model.network.a.item(), model.network.b.item())
    data = torch.linspace(-1, 1, 64, dtype=torch.float64)[:, None]
    watcher = Weights(model)
    fit(model, data, steps=4, batch_size=64, lr=0.05, warmup=0, clip=None, quiet=True,
        callbacks=[watcher])  # fmt: skip
    # The target moves once after each step, towards the weights that step ended with.
    expected = start
    for online in watcher.seen:
        expected = tuple(0.8 * e + 0.2 * o for e, o in zip(expected, online, strict=True))
    target = (model.target.network.a.item(), model.target.network.b.item())
    assert target == pytest.approx(expected, rel=1e-12)
    assert watcher.seen[-2] != pytest.approx(target)
    assert model.target.network.a.grad is None and model.target.network.b.grad is None
    # The loss has no side effect, with gradients or without; after_step moves it.
    model.train()
    model.loss(data).backward()
    with torch.no_grad():
        model.loss(data)
    assert (model.target.network.a.item(), model.target.network.b.item()) == target
    model.after_step()
    online = (model.network.a.item(), model.network.b.item())
    moved = tuple(0.8 * e + 0.2 * o for e, o in zip(target, online, strict=True))
    assert (model.target.network.a.item(), model.target.network.b.item()) == pytest.approx(
        moved, rel=1e-12
    )


def test_save_and_load_keep_the_target_network(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny(target_ema=0.5)
    data = torch.randn(128, 2)
    fit(model, data, steps=3, batch_size=64, lr=1e-2, warmup=0, quiet=True)
    online = model.network.state_dict()
    target = model.target.network.state_dict()
    assert any(not torch.equal(online[k], target[k]) for k in online)
    save(model, tmp_path / "run")
    loaded = pushforward.load(tmp_path / "run")
    assert isinstance(loaded, ConsistencyFlowMatching) and loaded.target is not None
    for key, value in target.items():
        assert torch.equal(loaded.target.network.state_dict()[key], value)
    torch.manual_seed(4)
    expected = model.loss_terms(PairedBatch(torch.randn(8, 2), data[:8], None)).total
    torch.manual_seed(4)
    again = loaded.loss_terms(PairedBatch(torch.randn(8, 2), data[:8], None)).total
    torch.testing.assert_close(again, expected)


def test_sampling_is_one_euler_step_per_segment() -> None:
    model = linear_model(segments=2)
    x0 = torch.tensor([[0.4], [-1.5]], dtype=torch.float64)
    x = x0
    with torch.no_grad():
        for t in (TIME_FLOOR, TIME_FLOOR + (1 - TIME_FLOOR) / 2):
            x = x + (0.7 * x - 0.4 * t) / 2
        torch.testing.assert_close(model.generate(x0), x)
        assert model.generate(x0, steps=4).shape == (2, 1)
    with pytest.raises(ValueError, match="multiple of the model's 2 segments"):
        model.sample(3, steps=3)


def standardized_moons(n: int, seed: int) -> Tensor:
    x = load_dataset("builtin:moons", n=n, seed=seed).values.float()
    return (x - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5])


def test_short_training_makes_few_steps_match_the_data() -> None:
    data = standardized_moons(4000, seed=0)
    held_out = standardized_moons(2000, seed=9)
    torch.manual_seed(0)
    model = tiny(hidden=[64, 64], time_embedding=16, segments=1)

    def distance(steps: int) -> float:
        torch.manual_seed(11)
        return energy_distance(model.sample(2000, steps=steps), held_out)

    before = [distance(1), distance(2)]
    fit(model, data, steps=250, batch_size=256, lr=2e-3, ema=0.99, quiet=True)
    after = [distance(1), distance(2)]
    assert after[0] < 0.1 * before[0] and after[1] < 0.1 * before[1], (before, after)


def test_no_log_prob_and_a_command_line_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny()
    assert not model.has_log_prob
    with pytest.raises(NotImplementedError, match="log_prob"):
        model.log_prob(torch.zeros(2, 2))
    run = tmp_path / "run"
    argv = ["train", "--data", "builtin:moons", "--model", "consistency-fm", "--out", str(run),
            "--steps", "30", "--n", "600", "--batch-size", "128", "--set", "hidden=[16,16]",
            "--set", "time_embedding=4", "--set", "target_ema=0.9", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    out = tmp_path / "s.npy"
    sample = ["sample", str(run), "-n", "300", "--out", str(out), "--seed", "3", "--steps", "4"]
    assert main(sample) == 0
    loaded = pushforward.load(run)
    torch.manual_seed(3)
    np.testing.assert_array_equal(np.load(out), loaded.sample(300, steps=4).double().numpy())
    capsys.readouterr()
    # Without a density, eval compares samples (here of 2 steps) with the data.
    assert main(["eval", str(run), "--data", "builtin:moons", "--n", "300", "--steps", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "nll" not in result and 0 < result["energy_distance"] < 1
    assert main([*sample[:-2], "--steps", "3"]) == 2
    assert "multiple of the model's 2 segments" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"segments": 0}, "segments"),
        ({"delta_t": 0.6}, "delta_t"),
        ({"delta_t": 0.0}, "delta_t"),
        ({"alpha": -1.0}, "alpha"),
        ({"boundary": 1.5}, "boundary"),
        ({"target_ema": 1.0}, "target_ema"),
        ({"steps": 3}, "multiple"),
        ({"coupling": "random"}, "coupling"),
        ({"shape": [3]}, "shape"),
    ],
)
def test_bad_options_are_clear_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build("consistency-fm", features=2, **options)
