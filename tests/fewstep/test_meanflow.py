"""MeanFlow: the JVP target against finite differences and closed-form flows, the
interval sampler, the adaptive weight, training, the likelihood, save/load and the CLI."""

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
from pushforward.data import fit_standardization, sample_toy
from pushforward.distributions import make_base
from pushforward.fewstep.average_velocity import (
    adaptive_weighted_loss,
    meanflow_target,
    sample_interval_times,
)
from pushforward.fewstep.meanflow import MeanFlow
from pushforward.metrics import energy_distance
from pushforward.paired import PairedBatch
from tests.contract import randomize_

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def small_meanflow(**options: object) -> MeanFlow:
    defaults: dict[str, object] = {"features": 2, "hidden": [32, 32], "time_embedding": 8}
    defaults.update(options)
    model = pushforward.build("meanflow", **defaults)
    assert isinstance(model, MeanFlow)
    return model


def _rotate(z: Tensor, angle: Tensor) -> Tensor:
    cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    return torch.stack([cos[:, 0] * z[:, 0] - sin[:, 0] * z[:, 1],
                        sin[:, 0] * z[:, 0] + cos[:, 0] * z[:, 1]], dim=1)  # fmt: skip


class SpiralAverageVelocity(nn.Module):
    r"""The exact average velocity of :math:`dz/d\tau = (\alpha + 2\beta\tau) z + \omega J z`.

    Its flow is :math:`z_t = e^{\alpha h + \beta (t^2 - s^2)} R(\omega h) z_s`,
    :math:`h = t - s`, so :math:`u = (z_t - z_s) / h`, and at :math:`h = 0` the
    velocity itself. Called like the model's network: ``(z, s, length, context)``.
    """

    def __init__(self, alpha: float = 0.3, beta: float = -0.4, omega: float = 1.3) -> None:
        super().__init__()
        self.alpha, self.beta, self.omega = alpha, beta, omega

    def field(self, z: Tensor, s: Tensor) -> Tensor:
        spin = torch.stack([-z[:, 1], z[:, 0]], dim=1)
        return (self.alpha + 2 * self.beta * s)[:, None] * z + self.omega * spin

    def forward(self, z: Tensor, s: Tensor, length: Tensor, context: Tensor | None) -> Tensor:
        t = s + length
        jump = length > 0
        safe = torch.where(jump, length, torch.ones_like(length))
        growth = torch.exp(self.alpha * length + self.beta * (t * t - s * s))
        moved = growth[:, None] * _rotate(z, self.omega * length)
        average = (moved - z) / safe[:, None]
        return torch.where(jump[:, None], average, self.field(z, s))


class StraightAverageVelocity(nn.Module):
    r"""The exact average velocity of the linear path when :math:`x_1 = a x_0 + b`.

    :math:`z_s = (1 + s (a - 1)) x_0 + s b`, so every path is straight and
    :math:`u(z, s, t) = (a - 1)(z - s b) / (1 + s (a - 1)) + b` for every :math:`t`.
    """

    def __init__(self, a: float, b: Tensor) -> None:
        super().__init__()
        self.a = a
        self.register_buffer("b", b)

    def forward(self, z: Tensor, s: Tensor, length: Tensor, context: Tensor | None) -> Tensor:
        scale = 1 + s[:, None] * (self.a - 1)
        return (self.a - 1) * (z - s[:, None] * self.b) / scale + self.b


def closed_form_model(network: nn.Module, **options: object) -> MeanFlow:
    return MeanFlow(network, make_base("normal", (2,)), **options).double()  # type: ignore[arg-type]


# -- the target ------------------------------------------------------------------


def test_jvp_target_matches_central_finite_difference() -> None:
    torch.manual_seed(0)
    model = small_meanflow().double()
    randomize_(model.network, 0.3)
    z = torch.randn(16, 2, dtype=F64)
    s = torch.rand(16, dtype=F64) * 0.6
    t = s + torch.rand(16, dtype=F64) * 0.4
    v = torch.randn(16, 2, dtype=F64)

    def u(z: Tensor, s: Tensor, t: Tensor) -> Tensor:
        return model.average_velocity(z, s, t)

    result = meanflow_target(u, z, s, t, v)
    h = 1e-5
    with torch.no_grad():
        difference = (u(z + h * v, s + h, t) - u(z - h * v, s - h, t)) / (2 * h)
        torch.testing.assert_close(result.average_velocity, u(z, s, t), rtol=0, atol=1e-12)
    torch.testing.assert_close(result.derivative, difference, rtol=1e-6, atol=1e-6)
    expected = v + (t - s)[:, None] * difference
    torch.testing.assert_close(result.target, expected, rtol=1e-6, atol=1e-6)
    assert result.target.requires_grad is False and result.average_velocity.requires_grad
    # A wrong sign of the time tangent would be far off: the check can fail.
    assert (result.derivative - difference).abs().max() < 1e-6 < difference.abs().max()


def test_true_average_velocity_is_its_own_target() -> None:
    torch.manual_seed(1)
    exact = SpiralAverageVelocity()
    z = torch.randn(32, 2, dtype=F64)
    s = torch.rand(32, dtype=F64) * 0.5
    t = s + 0.05 + torch.rand(32, dtype=F64) * 0.45

    def true_u(z: Tensor, s: Tensor, t: Tensor) -> Tensor:
        return exact(z, s, t - s, None)

    result = meanflow_target(true_u, z, s, t, exact.field(z, s))
    torch.testing.assert_close(result.target, result.average_velocity, rtol=1e-10, atol=1e-10)

    # The instantaneous velocity is not the average one over a curved path.
    def naive(z: Tensor, s: Tensor, t: Tensor) -> Tensor:
        return exact.field(z, s)

    wrong = meanflow_target(naive, z, s, t, exact.field(z, s))
    assert (wrong.target - wrong.average_velocity).abs().max() > 0.05


def test_equal_times_give_the_conditional_velocity() -> None:
    torch.manual_seed(2)
    model = small_meanflow().double()
    randomize_(model.network, 0.3)
    z = torch.randn(8, 2, dtype=F64)
    s = torch.rand(8, dtype=F64)
    v = torch.randn(8, 2, dtype=F64)
    result = meanflow_target(model.average_velocity, z, s, s.clone(), v)
    torch.testing.assert_close(result.target, v, rtol=0, atol=0)
    # u(z, t, t) is the network at interval length 0: the field log_prob integrates.
    torch.testing.assert_close(
        model.velocity(z, s), model.network(z, s, torch.zeros_like(s)), rtol=0, atol=0
    )


@pytest.mark.parametrize("adaptive_p", [0.0, 1.0])
def test_loss_vanishes_only_at_the_true_average_velocity(adaptive_p: float) -> None:
    torch.manual_seed(3)
    a, b = 0.4, torch.tensor([1.5, -0.5], dtype=F64)
    x0 = torch.randn(256, 2, dtype=F64)
    pairs = PairedBatch(x0=x0, x1=a * x0 + b, context=None)
    options = {"adaptive_p": adaptive_p, "equal_time_fraction": 0.25}
    exact = closed_form_model(StraightAverageVelocity(a, b), **options)
    assert exact.regression_loss(pairs).item() < 1e-20
    wrong = closed_form_model(StraightAverageVelocity(a * 1.1, b), **options)
    assert wrong.regression_loss(pairs).item() > 1e-3


def test_adaptive_weight_matches_its_closed_form() -> None:
    error = torch.tensor([[3.0, 4.0], [0.0, 0.1]], dtype=F64, requires_grad=True)
    squared = torch.tensor([25.0, 0.01], dtype=F64)
    loss = adaptive_weighted_loss(error, power=1.0, constant=0.5)
    torch.testing.assert_close(loss, squared / (squared + 0.5))
    loss.sum().backward()
    assert error.grad is not None
    # The weight is held fixed: d/dDelta = 2 Delta / (|Delta|^2 + c).
    torch.testing.assert_close(error.grad, 2 * error.detach() / (squared + 0.5)[:, None])
    half = adaptive_weighted_loss(error, power=0.5, constant=0.5)
    torch.testing.assert_close(half, squared / (squared + 0.5).sqrt())
    torch.testing.assert_close(adaptive_weighted_loss(error, power=0.0), squared)


# -- the interval sampler ------------------------------------------------------------


def test_interval_sampler_orders_times_and_sets_the_equal_fraction() -> None:
    generator = torch.Generator().manual_seed(4)
    times = sample_interval_times(
        20000, mean=0.4, std=1.0, equal_fraction=0.75, dtype=F64, device="cpu",
        generator=generator,
    )  # fmt: skip
    s, t = times.start, times.end
    assert s.dtype == F64 and s.shape == (20000,)
    assert bool((s <= t).all()) and bool((s > 0).all()) and bool((t < 1).all())
    equal = s == t
    assert int(equal.sum()) == 15000
    logit = torch.logit
    # s is the smaller of two N(m, 1) logits, E = m - 1/sqrt(pi); the unequal rows'
    # t the larger, E = m + 1/sqrt(pi). The sign of m is this library's time.
    assert logit(s).mean().item() == pytest.approx(0.4 - 1 / math.sqrt(math.pi), abs=0.03)
    assert logit(t[~equal]).mean().item() == pytest.approx(0.4 + 1 / math.sqrt(math.pi), abs=0.05)
    # Equal rows are spread over the batch, not packed at its start.
    assert 0.7 < equal[:2000].double().mean().item() < 0.8
    never = sample_interval_times(100, equal_fraction=0.0, dtype=F64, device="cpu")
    assert bool((never.start < never.end).all())
    always = sample_interval_times(100, equal_fraction=1.0, dtype=F64, device="cpu")
    assert torch.equal(always.start, always.end)


# -- sampling and likelihood ---------------------------------------------------------


def test_sampler_and_log_prob_follow_a_closed_form_flow() -> None:
    exact = SpiralAverageVelocity(alpha=0.3, beta=-0.4, omega=1.3)
    model = closed_form_model(exact, likelihood_solver="dopri5", atol=1e-9, rtol=1e-9)
    scale = math.exp(exact.alpha + exact.beta)
    torch.manual_seed(5)
    x0 = torch.randn(64, 2, dtype=F64)
    expected = scale * _rotate(x0, torch.full((64,), exact.omega, dtype=F64))
    for steps in (1, 2, 5):
        solution = model.solve(x0, steps=steps, return_path=True)
        torch.testing.assert_close(solution.state, expected, rtol=1e-12, atol=1e-12)
        assert solution.nfe == steps and solution.path is not None
        assert len(solution.path) == steps + 1
    uneven = model.solve(x0, time_grid=[0.0, 0.1, 0.7, 1.0])
    torch.testing.assert_close(uneven.state, expected, rtol=1e-12, atol=1e-12)
    torch.manual_seed(6)
    samples = model.sample(64, steps=1)
    torch.manual_seed(6)
    base = model.base.sample(64)
    torch.testing.assert_close(samples, scale * _rotate(base, torch.full((64,), 1.3, dtype=F64)))
    # The flow of u(., t, t) carries N(0, I) to N(0, scale^2 I).
    x = torch.randn(32, 2, dtype=F64) * 1.5
    closed = -0.5 * (x / scale).square().sum(1) - 2 * math.log(scale) - math.log(2 * math.pi)
    torch.testing.assert_close(model.log_prob(x), closed, rtol=1e-7, atol=1e-7)
    hutchinson = model.log_prob(x, solver="rk4", steps=20, divergence="hutchinson", probes=4)
    torch.testing.assert_close(hutchinson, closed, rtol=1e-5, atol=1e-5)  # div is a multiple of I


@pytest.fixture(scope="module")
def moons() -> tuple[Tensor, Tensor]:
    values = sample_toy("moons", 6000, seed=0).float()
    mean, std = fit_standardization(values[:4000])
    standard = (values - mean) / std
    return standard[:4000], standard[4000:]


def test_short_training_run_samples_in_one_step_and_normalises(
    moons: tuple[Tensor, Tensor],
) -> None:
    train, held = moons
    torch.manual_seed(7)
    model = small_meanflow(hidden=[64, 64])
    torch.manual_seed(8)
    with torch.no_grad():
        before = energy_distance(model.sample(2000), held)
    pushforward.fit(model, train, steps=200, batch_size=256, lr=1e-2, quiet=True, seed=0)
    model.eval()
    torch.manual_seed(8)
    with torch.no_grad():
        after = energy_distance(model.sample(2000), held)
        two_steps = energy_distance(model.sample(2000, steps=2), held)
    assert after < 0.1 * before and two_steps < 0.1 * before
    # The density integrates to 1 over a grid that holds the mass.
    edges = torch.linspace(-4.0, 4.0, 81)
    spacing = float(edges[1] - edges[0])
    grid = torch.cartesian_prod(edges, edges)
    with torch.no_grad():
        density = model.log_prob(grid, solver="rk4", steps=6).exp()
    assert density.sum().item() * spacing**2 == pytest.approx(1.0, abs=0.02)


def test_one_step_is_within_one_and_a_half_of_100_step_flow_matching() -> None:
    # Issue-level claim at a small budget: fm and MeanFlow with the same network
    # size, steps, batch and learning rate on 8 Gaussians; MeanFlow's one-step
    # samples against fm's 100 Euler steps, by energy distance to held-out data.
    values = sample_toy("8gaussians", 8000, seed=0).float()
    mean, std = fit_standardization(values[:4000])
    train, held = (values[:4000] - mean) / std, (values[4000:] - mean) / std
    distances = {}
    for name in ("fm", "meanflow"):
        torch.manual_seed(0)
        model = pushforward.build(name, features=2, hidden=[64, 64], time_embedding=8)
        pushforward.fit(
            model, train, steps=600, batch_size=256, lr=5e-3, ema=0.99, quiet=True, seed=0
        )
        model.eval()
        torch.manual_seed(8)
        with torch.no_grad():
            if name == "fm":
                samples = model.sample(4000, solver="euler", steps=100)
            else:
                one_step = samples = model.sample(4000)
        distances[name] = float(energy_distance(samples, held))
    assert distances["meanflow"] <= 1.5 * distances["fm"]
    # The measurement resolves a 1.5x difference here: samples 10% too wide miss it.
    assert float(energy_distance(1.1 * one_step, held)) > 1.5 * distances["fm"]


# -- options, context, coupling -------------------------------------------------------


def test_conditional_model_with_ot_coupling_trains() -> None:
    # Saving and loading it is the model contract sweep's (tests/test_model_contract.py).
    torch.manual_seed(9)
    model = small_meanflow(context=1, coupling="ot")
    x = torch.randn(64, 2)
    c = torch.randn(64, 1)
    prepared = model.prepare_batch(x, c, seed=3)
    assert prepared is not None and torch.equal(prepared.x1, x)
    loss = model.loss(x, c, prepared)
    loss.backward()
    assert torch.isfinite(loss) and all(
        p.grad is not None for p in model.parameters() if p.requires_grad
    )
    randomize_(model.network, 0.2)
    model.eval()
    row = torch.tensor([0.5])
    torch.manual_seed(10)
    samples = model.sample(16, row, steps=2)
    torch.manual_seed(10)
    assert not torch.allclose(samples, model.sample(16, torch.tensor([-2.0]), steps=2))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"equal_time_fraction": 1.5}, "equal_time_fraction"),
        ({"adaptive_p": -1.0}, "adaptive_p"),
        ({"adaptive_c": 0.0}, "adaptive_c"),
        ({"time_std": 0.0}, "time_std"),
        ({"time_mean": float("nan")}, "time_mean"),
        ({"coupling": "optimal"}, "coupling"),
        ({"steps": 0}, "steps"),
        ({"ratio": 0.25}, "unknown option 'ratio'"),
        ({"time_embedding": 1}, "time_embedding"),
        ({"likelihood_solver": "rk5"}, "likelihood_solver"),
    ],
)
def test_bad_options_are_named(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pushforward.build("meanflow", features=2, **options)


def test_bad_call_arguments_are_named() -> None:
    model = small_meanflow()
    with pytest.raises(ValueError, match="steps"):
        model.sample(4, steps=0)
    with pytest.raises(ValueError, match="increasing"):
        model.solve(torch.randn(4, 2), time_grid=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.solve(torch.randn(4, 2), time_grid=[0.0, 1.5])
    with pytest.raises(ValueError, match="solver"):
        model.log_prob(torch.randn(4, 2), solver="rk5")
    with pytest.raises(ValueError, match="features"):
        model.loss(torch.randn(4, 3))


# -- the command line ---------------------------------------------------------------


def test_cli_train_sample_eval_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = ["train", "--data", "builtin:moons", "--model", "meanflow", "--out", str(run),
            "--steps", "20", "--n", "1000", "--batch-size", "128", "--quiet",
            "--set", "hidden=[16,16]", "--set", "time_embedding=4"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["name"] == "meanflow"
    assert config["train"]["lr"] == pytest.approx(5e-3)
    model = pushforward.load(run)
    for steps in (1, 2):
        out = tmp_path / f"s{steps}.npy"
        sample_argv = ["sample", str(run), "-n", "300", "--out", str(out), "--seed", "2"]
        assert main([*sample_argv, "--steps", str(steps)]) == 0
        torch.manual_seed(2)
        again = model.sample(300, steps=steps).double().numpy()
        np.testing.assert_array_equal(np.load(out), again)
    capsys.readouterr()
    eval_argv = ["eval", str(run), "--data", "builtin:moons", "--n", "200"]
    assert main([*eval_argv, "--solver", "rk4", "--steps", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert math.isfinite(result["nll"]) and "kl" in result
    code = main(["sample", str(run), "-n", "5", "--out", str(tmp_path / "x.npy"),
                 "--solver", "rk4"])  # fmt: skip
    assert code == 2 and "takes no --solver" in capsys.readouterr().err
