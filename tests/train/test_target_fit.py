"""``fit(model, target=...)``: every objective through the engine, exact resume, float64."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import pushforward
from pushforward.sampling import CallableTarget, evaluate_sampler
from pushforward.train.callbacks import Callback
from pushforward.train.target_fit import inverse_temperature

pytestmark = pytest.mark.usefixtures("one_thread")

LOG_Z = 2.0 + math.log(2 * math.pi * 0.5)


def banana(x: torch.Tensor) -> torch.Tensor:
    """x0 ~ N(0, 1), x1 | x0 ~ N(x0^2 / 2, 0.5^2), times exp(2): log Z known."""
    return -0.5 * x[:, 0] ** 2 - 0.5 * ((x[:, 1] - 0.5 * x[:, 0] ** 2) / 0.5) ** 2 + 2.0


class SampledBanana:
    features = 2
    log_z = LOG_Z
    has_sample = True

    def log_prob(self, x):
        return banana(x)

    def sample(self, n):
        first = torch.randn(n, dtype=torch.float64)
        return torch.stack([first, 0.5 * first**2 + 0.5 * torch.randn(n, dtype=torch.float64)], 1)


def small_flow(seed: int = 0, dtype: torch.dtype = torch.float32) -> pushforward.Model:
    torch.manual_seed(seed)
    return pushforward.build("nsf", features=2, transforms=3, hidden=[32, 32]).to(dtype)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("objective", "options"),
    [
        ("reverse-kl", {}),
        ("path-gradient", {}),
        ("path-gradient", {"estimator": "drop-in"}),
        ("forward-kl", {}),
        ("alpha", {"alpha": 0.5}),
    ],
)
def test_every_objective_fits_a_curved_target(objective, options):
    model = small_flow()
    pushforward.fit(
        model,
        target=CallableTarget(SampledBanana()),
        objective=objective,
        objective_options=options,
        steps=400,
        batch_size=256,
        lr=3e-3,
        quiet=True,
    )
    result = evaluate_sampler(model, CallableTarget(SampledBanana()), n=20_000)
    assert abs(result.log_z - LOG_Z) < 0.05
    assert result.ess > 0.9


class Recorder(Callback):
    def __init__(self) -> None:
        self.betas: list[float] = []
        self.evals: list[dict] = []

    def on_step(self, step, logs):
        self.betas.append(logs["beta"])

    def on_eval(self, step, logs):
        self.evals.append(logs)


def test_annealing_reaches_the_target_and_evaluations_report_ess_and_log_z():
    recorder = Recorder()
    pushforward.fit(
        small_flow(),
        target=banana,
        steps=30,
        batch_size=64,
        beta=0.2,
        anneal=20,
        eval_samples=500,
        eval_every=10,
        callbacks=[recorder],
        quiet=True,
    )
    assert recorder.betas[0] == pytest.approx(0.2) and recorder.betas[-1] == 1.0
    assert recorder.betas[10] == pytest.approx(inverse_temperature(10, 0.2, 20)) == 0.6
    assert len(recorder.evals) == 3
    for logs in recorder.evals:
        assert 0.0 <= logs["ess"] <= 1.0 and math.isfinite(logs["log_z"])
        # Jensen on the same draws: the mean log-weight is at most the log mean weight.
        assert logs["val_loss"] >= -logs["log_z"] - 1e-9


@pytest.mark.parametrize("objective", ["path-gradient", "forward-kl"])
def test_resume_is_bitwise_exact(tmp_path: Path, objective: str):
    # The model's own draws come from the checkpointed global generator, the target's
    # exact samples from a generator of the step.
    target = CallableTarget(SampledBanana())
    common = dict(target=target, objective=objective, steps=40, batch_size=32, quiet=True, ema=0.9)
    whole = small_flow()
    pushforward.fit(whole, **common)

    class StopAt(Callback):
        def on_step(self, step, logs):
            return step == 17

    parted = small_flow()
    pushforward.fit(parted, **common, checkpoint_dir=tmp_path, callbacks=[StopAt()])
    resumed = small_flow(seed=5)  # other initial weights: the checkpoint must replace them
    pushforward.fit(resumed, **common, checkpoint_dir=tmp_path, resume=True)
    for (key, a), (_, b) in zip(
        whole.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), key


def test_float64_end_to_end():
    model = small_flow(dtype=torch.float64)
    seen = []

    def target(x):
        seen.append(x.dtype)
        return banana(x)

    history = pushforward.fit(
        model, target=target, objective="path-gradient", steps=5, batch_size=16, quiet=True
    )
    assert set(seen) == {torch.float64}
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert history.steps_done == 5


def test_bad_arguments_name_the_problem():
    model = small_flow()
    with pytest.raises(ValueError, match="data or a target, not both"):
        pushforward.fit(model, torch.randn(10, 2), target=banana)
    with pytest.raises(ValueError, match="target has 3 features"):
        pushforward.fit(model, target=CallableTarget(banana, features=3), steps=1)
    with pytest.raises(ValueError, match="does not say its dimension"):
        CallableTarget(banana)
    with pytest.raises(ValueError, match="did you mean 'path-gradient'"):
        pushforward.fit(model, target=banana, objective="path_gradient", steps=1)
    with pytest.raises(ValueError, match="needs anneal"):
        pushforward.fit(model, target=banana, beta=0.5, steps=1)
    with pytest.raises(ValueError, match="needs exact samples"):
        pushforward.fit(model, target=CallableTarget(banana, 2), objective="forward-kl", steps=1)
    with pytest.raises(ValueError, match="an objective applies to a target"):
        pushforward.fit(model, torch.randn(10, 2), objective="reverse-kl", steps=1)
