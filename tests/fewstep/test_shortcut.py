"""The shortcut model: its loss against flow matching and exact flow maps, its step-size
samplers, its sampler's network evaluations, training, likelihood and the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import pushforward
from pushforward.cli.main import main
from pushforward.data import load_dataset
from pushforward.distributions import make_base
from pushforward.fewstep import ShortcutModel
from pushforward.fewstep.self_consistency import (
    continuous_steps,
    dyadic_steps,
    self_consistency_target,
)
from pushforward.matching import FlowMatching
from pushforward.matching.schedulers import CondOTScheduler
from pushforward.metrics import energy_distance
from pushforward.paired import PairedBatch
from pushforward.registry import build
from pushforward.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")


class AtZeroStep(nn.Module):
    """A shortcut network seen as a velocity network at step size 0."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        return self.network(x, t, torch.zeros_like(t), context)


class GaussianFlowMap(nn.Module):
    r"""The exact shortcut of the linear path from N(0, I) to N(0, sigma^2 I).

    With independent pairs, :math:`x_t` has variance :math:`v_t = t^2 \sigma^2 + (1-t)^2`
    and the flow scales points by :math:`\sqrt{v_{t+d} / v_t}`, so
    :math:`s(x, t, d) = (\sqrt{v_{t+d}/v_t} - 1)/d\; x` and
    :math:`s(x, t, 0) = \dot v_t / (2 v_t)\, x`. ``bend`` multiplies the shortcut by
    :math:`1 + \mathrm{bend}\cdot d`, which breaks self-consistency but not ``d = 0``.
    """

    def __init__(self, sigma: float, bend: float = 0.0) -> None:
        super().__init__()
        self.sigma = sigma
        self.bend = bend

    def variance(self, t: Tensor) -> Tensor:
        return t.square() * self.sigma**2 + (1 - t).square()

    def forward(self, x: Tensor, t: Tensor, d: Tensor, context: Tensor | None = None) -> Tensor:
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        d = d.expand(x.shape[0]) if d.ndim == 0 else d
        safe = torch.where(d > 0, d, torch.ones_like(d))
        jump = (torch.sqrt(self.variance(t + d) / self.variance(t)) - 1) / safe
        slope = 2 * t * self.sigma**2 - 2 * (1 - t)
        scale = torch.where(d > 0, jump, slope / (2 * self.variance(t)))
        return (scale * (1 + self.bend * d))[:, None] * x


def gaussian_model(bend: float = 0.0, **options) -> ShortcutModel:
    base = make_base("normal", (2,)).to(torch.float64)
    return ShortcutModel(GaussianFlowMap(1.5, bend), base, **options)


def gaussian_pairs(n: int, seed: int) -> PairedBatch:
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    x1 = 1.5 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return PairedBatch(x0=x0, x1=x1, context=None)


def tiny(**options) -> ShortcutModel:
    options = {"hidden": [32, 32], "time_embedding": 8, **options}
    model = build("shortcut", features=2, **options)
    assert isinstance(model, ShortcutModel)
    return model


# -- the loss ---------------------------------------------------------------------


def test_flow_matching_rows_are_fm_regression_on_the_same_draws() -> None:
    torch.manual_seed(0)
    model = tiny(consistency_fraction=0.25).double()
    pairs = gaussian_pairs(64, seed=1)
    torch.manual_seed(3)
    parts = model.loss_terms(pairs)
    fm = FlowMatching(AtZeroStep(model.network), model.base, CondOTScheduler())
    head = PairedBatch(x0=pairs.x0[:48], x1=pairs.x1[:48], context=None)
    torch.manual_seed(3)
    expected = fm.regression_loss(head)
    torch.testing.assert_close(parts.flow_matching, expected, rtol=1e-12, atol=0)
    # The total weighs all 64 rows alike.
    total = (48 * parts.flow_matching + 16 * parts.self_consistency) / 64
    torch.testing.assert_close(parts.total, total)


def test_without_consistency_rows_the_loss_is_flow_matching() -> None:
    torch.manual_seed(0)
    model = tiny(consistency_fraction=0.0).double()
    pairs = gaussian_pairs(32, seed=2)
    times = torch.linspace(0, 1, 32, dtype=torch.float64)
    parts = model.loss_terms(pairs, flow_times=times)
    x_t = times[:, None] * pairs.x1 + (1 - times[:, None]) * pairs.x0
    velocity = model.network(x_t, times, torch.zeros_like(times))
    expected = (velocity - (pairs.x1 - pairs.x0)).square().mean()
    torch.testing.assert_close(parts.total, expected)
    assert float(parts.self_consistency) == 0.0


def test_target_of_an_exact_flow_map_is_the_double_step() -> None:
    network = GaussianFlowMap(1.5)
    x = gaussian_pairs(16, seed=3).x1
    t = torch.linspace(0.0, 0.6, 16, dtype=torch.float64)
    half = torch.linspace(0.01, 0.2, 16, dtype=torch.float64)
    target = self_consistency_target(network, x, t, half, half)
    torch.testing.assert_close(target, network(x, t, 2 * half), rtol=1e-12, atol=1e-12)
    # At the finest level the half steps are Euler steps of the velocity: two Euler
    # steps, whose average velocity is off the exact double step by O(d).
    errors = []
    for d in (1 / 128, 1 / 256):
        half = torch.full_like(t, d)
        euler = self_consistency_target(network, x, t, half, torch.zeros_like(half))
        errors.append(float((euler - network(x, t, 2 * half)).abs().max()))
    assert errors[1] > 0 and 1.8 < errors[0] / errors[1] < 2.2


@pytest.mark.parametrize("step_sizes", ["dyadic", "continuous"])
def test_self_consistency_loss_vanishes_for_an_exact_flow_map(step_sizes: str) -> None:
    pairs = gaussian_pairs(400, seed=4)
    exact = gaussian_model(step_sizes=step_sizes, consistency_fraction=0.5, max_steps=4096)
    bent = gaussian_model(bend=0.5, step_sizes=step_sizes, consistency_fraction=0.5)
    torch.manual_seed(5)
    exact_parts = exact.loss_terms(pairs)
    torch.manual_seed(5)
    bent_parts = bent.loss_terms(pairs)
    # Exact up to rounding, but for the rows of the finest dyadic level (1 in 12), whose
    # half steps are Euler steps of 1/4096.
    assert float(exact_parts.self_consistency) < (1e-7 if step_sizes == "dyadic" else 1e-20)
    assert float(bent_parts.self_consistency) > 1e-3
    # d = 0 is untouched by the bend: the flow-matching rows agree exactly.
    torch.testing.assert_close(exact_parts.flow_matching, bent_parts.flow_matching)


def test_gradients_reach_only_the_predicted_shortcut() -> None:
    torch.manual_seed(0)
    model = tiny(consistency_fraction=1 / 2)
    pairs = gaussian_pairs(8, seed=6)
    pairs = PairedBatch(pairs.x0.float(), pairs.x1.float(), None)
    steps = dyadic_steps(4, 128, dtype=torch.float32, device="cpu")
    parts = model.loss_terms(pairs, flow_times=torch.rand(4), steps=steps)
    parts.self_consistency.backward()
    x_t = steps.t[:, None] * pairs.x1[4:] + (1 - steps.t[:, None]) * pairs.x0[4:]
    with torch.no_grad():
        target = self_consistency_target(model.network, x_t, steps.t, steps.half, steps.query)
    model.zero_grad()
    prediction = model.network(x_t, steps.t, steps.step)
    expected = torch.autograd.grad((prediction - target).square().mean(), model.parameters())
    model.zero_grad()
    model.loss_terms(pairs, flow_times=torch.rand(4), steps=steps).self_consistency.backward()
    for parameter, grad in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(parameter.grad, grad)


# -- step sizes -------------------------------------------------------------------


def test_dyadic_steps_are_powers_of_two_with_times_on_their_grid() -> None:
    generator = torch.Generator().manual_seed(0)
    steps = dyadic_steps(14000, 128, dtype=torch.float64, device="cpu", generator=generator)
    levels = -torch.log2(steps.step)
    assert torch.equal(levels, levels.round())
    counts = torch.bincount(levels.long(), minlength=7)
    assert counts.numel() == 7  # 2d in {1, 1/2, ..., 1/64}
    assert float((counts - 2000).abs().max()) < 200
    index = steps.t / steps.step
    assert torch.equal(index, index.round())
    assert bool((steps.t >= 0).all()) and bool((steps.t + steps.step <= 1).all())
    # Every start on the grid of the 1/4 steps is drawn.
    quarter = steps.t[steps.step == 0.25]
    assert sorted(set(quarter.tolist())) == [0.0, 0.25, 0.5, 0.75]
    torch.testing.assert_close(steps.half, steps.step / 2)
    finest = steps.half == 1 / 128
    assert torch.equal(steps.query == 0, finest)
    assert torch.equal(steps.query[~finest], steps.half[~finest])


def test_continuous_steps_cover_any_step_with_room_to_take_it() -> None:
    generator = torch.Generator().manual_seed(1)
    steps = continuous_steps(20000, dtype=torch.float64, device="cpu", generator=generator)
    assert bool((steps.step > 0).all()) and bool((steps.step <= 1).all())
    assert bool((steps.t >= 0).all()) and bool((steps.t + steps.step <= 1 + 1e-12).all())
    assert abs(float(steps.step.mean()) - 0.5) < 0.01
    # t is uniform on [0, 1 - 2d]: its rescaling is uniform on [0, 1].
    assert abs(float((steps.t / (1 - steps.step)).mean()) - 0.5) < 0.01
    torch.testing.assert_close(steps.query, steps.step / 2)


class Recorder(nn.Module):
    """A field that records each call's (t, d) and returns a fixed linear map."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[0.5, -1.0], [2.0, 0.25]]))
        self.calls: list[tuple[float, float]] = []

    def forward(self, x: Tensor, t: Tensor, d: Tensor, context: Tensor | None = None) -> Tensor:
        self.calls.append((float(t), float(d)))
        return x @ self.weight.T + t


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 128])
def test_sampling_with_k_steps_evaluates_the_network_k_times(steps: int) -> None:
    recorder = Recorder()
    model = ShortcutModel(recorder, make_base("normal", (2,)), max_steps=128)
    torch.manual_seed(0)
    samples = model.sample(7, steps=steps)
    assert samples.shape == (7, 2)
    assert len(recorder.calls) == steps
    d = 1 / steps
    query = 0.0 if steps >= 128 else d
    expected = [(i * d, query) for i in range(steps)]
    np.testing.assert_allclose(recorder.calls, expected, rtol=1e-6, atol=1e-7)


def test_one_step_is_one_jump_of_the_whole_interval() -> None:
    recorder = Recorder()
    model = ShortcutModel(recorder, make_base("normal", (2,)))
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = x0 + x0 @ recorder.weight.T
        torch.testing.assert_close(model.generate(x0, steps=1), expected)


# -- training, likelihood, command line -------------------------------------------


def standardized_moons(n: int, seed: int) -> Tensor:
    x = load_dataset("builtin:moons", n=n, seed=seed).values.float()
    return (x - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5])


def test_short_training_makes_one_and_two_steps_match_the_data() -> None:
    data = standardized_moons(4000, seed=0)
    held_out = standardized_moons(2000, seed=9)
    torch.manual_seed(0)
    model = tiny(hidden=[64, 64], time_embedding=16)

    def distance(steps: int) -> float:
        torch.manual_seed(11)
        return energy_distance(model.sample(2000, steps=steps), held_out)

    before = [distance(1), distance(2)]
    fit(model, data, steps=250, batch_size=256, lr=2e-3, ema=0.99, quiet=True)
    after = [distance(1), distance(2)]
    assert after[0] < 0.1 * before[0] and after[1] < 0.1 * before[1], (before, after)
    # The density of the d -> 0 flow integrates to 1 over a grid holding its mass.
    side = torch.linspace(-4.5, 4.5, 61)
    grid = torch.cartesian_prod(side, side)
    with torch.no_grad():
        density = model.log_prob(grid, solver="rk4", steps=6).exp()
    cell = float(side[1] - side[0]) ** 2
    assert abs(float(density.sum()) * cell - 1) < 0.02


def test_log_prob_needs_steps_for_a_fixed_step_solver() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="needs steps"):
        model.log_prob(torch.zeros(3, 2), solver="rk4")


def test_sample_and_log_prob_draw_from_the_flow_they_score() -> None:
    exact = gaussian_model(atol=1e-8, rtol=1e-8)
    torch.manual_seed(0)
    samples, log_prob = exact.sample_and_log_prob(200)
    # The exact flow ends at N(0, 1.5^2 I): score the samples in closed form.
    expected = -0.5 * (samples / 1.5).square().sum(1) - 2 * math.log(1.5) - math.log(2 * math.pi)
    torch.testing.assert_close(log_prob, expected, rtol=1e-6, atol=1e-6)
    assert abs(float(samples.std()) - 1.5) < 0.15
    # One jump of the exact map scales the source by 1.5 as well.
    x0 = gaussian_pairs(5, seed=8).x0
    torch.testing.assert_close(exact.generate(x0, steps=1), 1.5 * x0)


def test_command_line_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = ["train", "--data", "builtin:moons", "--model", "shortcut", "--out", str(run),
            "--steps", "30", "--n", "600", "--batch-size", "128", "--set", "hidden=[16,16]",
            "--set", "time_embedding=4", "--set", "target_ema=0.9", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    out = tmp_path / "s.npy"
    sample = ["sample", str(run), "-n", "300", "--out", str(out), "--seed", "3", "--steps", "2"]
    assert main(sample) == 0
    model = pushforward.load(run)
    torch.manual_seed(3)
    np.testing.assert_array_equal(np.load(out), model.sample(300, steps=2).double().numpy())
    capsys.readouterr()
    argv = ["eval", str(run), "--data", "builtin:moons", "--n", "200", "--solver", "rk4"]
    assert main([*argv, "--steps", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    x = load_dataset("builtin:moons", n=200, seed=1).values.float()
    with torch.no_grad():
        nll = -model.log_prob(x, solver="rk4", steps=4).double().mean().item()
    assert result["nll"] == pytest.approx(nll, rel=1e-6)
    # The few-step sampler takes no ODE solver.
    assert main([*sample, "--solver", "rk4"]) == 2
    assert "takes no --solver" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"step_sizes": "geometric"}, "step_sizes"),
        ({"max_steps": 100}, "power of two"),
        ({"consistency_fraction": 1.0}, "consistency_fraction"),
        ({"target_ema": 1.0}, "target_ema"),
        ({"steps": 0}, "steps"),
        ({"coupling": "random"}, "coupling"),
        ({"time_embedding": 1}, "time_embedding"),
    ],
)
def test_bad_options_are_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build("shortcut", features=2, **options)


def test_bad_sampling_steps_are_an_error() -> None:
    with pytest.raises(ValueError, match="steps"):
        tiny().sample(3, steps=0)
