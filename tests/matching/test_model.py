"""The registered ``fm`` model: protocol, likelihood, guidance, save/load."""

from __future__ import annotations

import math

import pytest
import torch

import pushforward
from pushforward.data import fit_standardization, sample_toy
from pushforward.matching.model import FlowMatching
from pushforward.matching.parameterization import convert
from tests.contract import randomize_


def small_fm(**options: object) -> FlowMatching:
    defaults: dict[str, object] = {"features": 2, "hidden": [32, 32], "time_embedding": 8}
    defaults.update(options)
    model = pushforward.build("fm", **defaults)
    assert isinstance(model, FlowMatching)
    return model


def train(model: FlowMatching, x: torch.Tensor, steps: int, lr: float = 3e-3) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        rows = torch.randint(0, x.shape[0], (256,), generator=generator)
        loss = model.loss(x[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.fixture(scope="module")
def trained_moons() -> FlowMatching:
    torch.manual_seed(0)
    values = torch.as_tensor(sample_toy("moons", 4000, seed=0), dtype=torch.float32)
    mean, std = fit_standardization(values)
    model = small_fm(hidden=[64, 64])
    train(model, (values - mean) / std, steps=600)
    return model.eval()


def test_registered_and_builds_with_defaults() -> None:
    model = pushforward.build("fm", features=3)
    assert isinstance(model, FlowMatching)
    assert model.config["options"]["path"] == "cond-ot"
    assert model.event_shape == (3,)


def test_loss_is_a_finite_scalar_with_gradients() -> None:
    torch.manual_seed(0)
    model = small_fm()
    loss = model.loss(torch.randn(64, 2))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_trained_density_integrates_to_one(trained_moons: FlowMatching) -> None:
    # A 2-D grid wide enough that the density of standardised moons vanishes at its edges.
    # Fixed steps: an adaptive solver shares one step size across the batch, and the
    # grid's far corners would set it for all 10,000 points.
    side = torch.linspace(-4.5, 4.5, 101)
    grid = torch.cartesian_prod(side, side)
    with torch.no_grad():
        density = trained_moons.log_prob(grid, solver="rk4", steps=20).exp()
    cell = float(side[1] - side[0]) ** 2
    total = float(density.sum()) * cell
    assert abs(total - 1.0) < 0.02, total
    # The trained density is not the base: it puts far less mass at the origin.
    base = torch.distributions.Normal(0.0, 1.0).log_prob(grid).sum(-1).exp()
    assert float((density - base).abs().sum()) * cell > 0.2


def test_trained_samples_look_like_the_data(trained_moons: FlowMatching) -> None:
    torch.manual_seed(1)
    samples = trained_moons.sample(2000)
    values = torch.as_tensor(sample_toy("moons", 2000, seed=5), dtype=torch.float32)
    mean, std = fit_standardization(values)
    reference = (values - mean) / std
    noise = torch.randn(2000, 2)
    from pushforward.metrics import energy_distance

    assert energy_distance(samples, reference) < 0.25 * energy_distance(noise, reference)


def test_log_prob_of_a_linear_field_is_gaussian() -> None:
    # Zero weights everywhere but a linear output: v(x, t) = A x pushes N(0, I) at t=0
    # to N(0, e^A e^A^T) at t=1, a closed form the likelihood must reproduce.
    model = small_fm(hidden=[8]).double()
    a = torch.tensor([[0.3, -0.2], [0.1, -0.4]], dtype=torch.float64)
    linear = torch.nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        linear.weight.copy_(a)

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = linear

        def forward(self, x: torch.Tensor, t: torch.Tensor, context: object = None) -> torch.Tensor:
            return self.linear(x)

    model.network = Linear()
    x = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expm = torch.linalg.matrix_exp(a)
    covariance = expm @ expm.T
    expected = torch.distributions.MultivariateNormal(
        torch.zeros(2, dtype=torch.float64), covariance
    ).log_prob(x)
    got = model.log_prob(x, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    hutchinson = torch.stack(
        [
            model.log_prob(
                x, divergence="hutchinson", probes=4, generator=torch.Generator().manual_seed(s)
            )
            for s in range(20)
        ]
    ).mean(0)
    torch.testing.assert_close(hutchinson, expected, atol=0.1, rtol=0)


def test_log_prob_gradients_match_finite_differences() -> None:
    torch.manual_seed(0)
    model = small_fm(hidden=[8]).double()
    randomize_(model, 0.3, torch.Generator().manual_seed(1))
    x = torch.randn(4, 2, dtype=torch.float64)
    parameter = model.network.parameters().__next__()

    def value() -> torch.Tensor:
        return model.log_prob(x, solver="rk4", steps=8).sum()

    (grad,) = torch.autograd.grad(value(), parameter)
    index = (0, 0)
    step = 1e-6
    with torch.no_grad():
        parameter[index] += step
        up = value()
        parameter[index] -= 2 * step
        down = value()
        parameter[index] += step
    numeric = (up - down) / (2 * step)
    assert math.isclose(float(grad[index]), float(numeric), rel_tol=1e-5, abs_tol=1e-8)
    # and with respect to the input
    xg = x.clone().requires_grad_(True)
    (grad_x,) = torch.autograd.grad(model.log_prob(xg, solver="rk4", steps=8).sum(), xg)
    assert torch.isfinite(grad_x).all() and float(grad_x.abs().sum()) > 0


def test_image_shaped_events() -> None:
    torch.manual_seed(0)
    model = small_fm(features=12, shape=[3, 2, 2])
    x = torch.randn(5, 3, 2, 2)
    assert model.log_prob(x, solver="rk4", steps=4).shape == (5,)
    assert model.sample(7, steps=3).shape == (7, 3, 2, 2)
    assert model.loss(x).ndim == 0
    with pytest.raises(ValueError, match="shape"):
        small_fm(features=12, shape=[3, 2, 3])


def test_dtype_follows_the_model() -> None:
    model = small_fm().double()
    x = torch.randn(4, 2, dtype=torch.float64)
    assert model.log_prob(x, solver="euler", steps=2).dtype == torch.float64
    assert model.sample(3, steps=2).dtype == torch.float64


@pytest.mark.parametrize("parameterization", ["data", "noise"])
def test_other_parameterizations_give_velocities(parameterization: str) -> None:
    torch.manual_seed(0)
    model = small_fm(parameterization=parameterization, path="cosine").double()
    randomize_(model, 0.3, torch.Generator().manual_seed(2))
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.full((6,), 0.4, dtype=torch.float64)
    raw = model.prediction(x, t)
    expected = convert(raw, parameterization, "velocity", x, model.scheduler(t))
    torch.testing.assert_close(model.velocity(x, t), expected)
    assert torch.isfinite(model.loss(x))
    assert torch.isfinite(model.sample(4, steps=4)).all()


def test_guidance_mixes_conditional_and_unconditional_fields() -> None:
    torch.manual_seed(0)
    model = small_fm(context=3, context_dropout=0.2).double()
    randomize_(model, 0.3, torch.Generator().manual_seed(3))
    x = torch.randn(5, 2, dtype=torch.float64)
    c = torch.randn(5, 3, dtype=torch.float64)
    t = torch.full((5,), 0.3, dtype=torch.float64)
    ones = torch.ones(5, 1, dtype=torch.float64)
    conditional = model.network(x, t, torch.cat([c, ones], 1))
    unconditional = model.network(x, t, torch.cat([c * 0, 0 * ones], 1))
    torch.testing.assert_close(model.velocity(x, t, c), conditional)
    torch.testing.assert_close(
        model.velocity(x, t, c, guidance=2.5), unconditional + 2.5 * (conditional - unconditional)
    )
    assert model.sample(4, c[:1], guidance=2.0, steps=3).shape == (4, 2)
    assert torch.isfinite(model.loss(x, c))
    with pytest.raises(ValueError, match="context"):
        small_fm(context_dropout=0.2)


@pytest.mark.parametrize(
    "options",
    [
        {"coupling": "ot"},
        {"coupling": "sinkhorn"},
        {"time_sampling": "logit-normal"},
        {"time_sampling": "u-shaped", "loss_weighting": "uniform-time"},
        {"loss": "pseudo-huber"},
        {"path": "vp"},
        {"path": "polynomial"},
        {"residual": True, "hidden": [16, 16]},
        {"sigma_min": 1e-3},
    ],
)
def test_options_train(options: dict[str, object]) -> None:
    torch.manual_seed(0)
    model = small_fm(**options)
    x = torch.randn(64, 2) * 0.5 + 1.0
    loss = model.loss(x)
    assert torch.isfinite(loss)
    loss.backward()


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="coupling"):
        small_fm(coupling="hungarian")
    with pytest.raises(ValueError, match="solver"):
        small_fm(solver="rk5")
    with pytest.raises(ValueError, match="sigma_min"):
        small_fm(path="cosine", sigma_min=0.1)
    model = small_fm()
    with pytest.raises(ValueError, match="solver"):
        model.sample(3, solver="leapfrog")
    with pytest.raises(ValueError, match="features"):
        model.log_prob(torch.randn(3, 5))


def test_solve_reports_function_evaluations() -> None:
    model = small_fm()
    x0 = torch.randn(10, 2)
    solution = model.solve(x0, solver="heun", steps=5, return_path=True)
    assert solution.nfe == 10
    assert solution.path is not None and len(solution.path) == 6


@pytest.mark.parametrize("sigma_min", [0.0, 0.01])
def test_linear_path_shortcut_equals_the_general_path(sigma_min: float) -> None:
    torch.manual_seed(0)
    model = small_fm(sigma_min=sigma_min).double()
    randomize_(model, 0.3, torch.Generator().manual_seed(7))
    x0 = torch.randn(16, 2, dtype=torch.float64)
    x1 = torch.randn(16, 2, dtype=torch.float64)
    from pushforward.paired import PairedBatch

    torch.manual_seed(3)
    fast = model.regression_loss(PairedBatch(x0, x1, None))
    model._linear_velocity = False
    torch.manual_seed(3)
    general = model.regression_loss(PairedBatch(x0, x1, None))
    torch.testing.assert_close(fast, general, rtol=1e-12, atol=1e-12)


def test_ot_coupling_straightens_paths() -> None:
    # The claim, in small: with the same network, data and budget, the field
    # learnt from minibatch-OT pairs has straighter trajectories than the one learnt
    # from independent pairs, and so better few-step samples.
    from pushforward.metrics import energy_distance, straightness

    values = torch.as_tensor(sample_toy("8gaussians", 4000, seed=0), dtype=torch.float32)
    mean, std = fit_standardization(values)
    x = (values - mean) / std
    reference = (torch.as_tensor(sample_toy("8gaussians", 2000, seed=9)).float() - mean) / std
    results = {}
    for coupling in ("independent", "ot"):
        torch.manual_seed(0)
        model = small_fm(hidden=[64, 64], coupling=coupling)
        train(model, x, steps=400)
        model.eval()
        with torch.no_grad():
            x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
            fine = model.solve(x0, solver="euler", steps=64, return_path=True)
            two = model.solve(x0, solver="euler", steps=2).state
        assert fine.path is not None
        results[coupling] = (
            straightness(fine.path, fine.times),
            energy_distance(two, reference),
        )
    assert results["ot"][0] < 0.5 * results["independent"][0], results
    assert results["ot"][1] < results["independent"][1], results


# -- the network's own exact divergence in log_prob --------------------------------------


def traced_fm(parameterization: str, guided: bool) -> FlowMatching:
    options: dict[str, object] = {
        "features": 3,
        "hidden": [12, 12, 12],
        "parameterization": parameterization,
        "path": "cond-ot" if parameterization == "velocity" else "cosine",
    }
    if guided:
        options.update(context=2, context_dropout=0.2)
    model = small_fm(**options).double()
    randomize_(model, 0.3, torch.Generator().manual_seed(11))
    return model


FIELD_CASES = [
    pytest.param("velocity", False, id="velocity"),
    pytest.param("data", False, id="data"),
    pytest.param("noise", False, id="noise"),
    pytest.param("velocity", True, id="velocity-guided"),
    pytest.param("noise", True, id="noise-guided"),
]


@pytest.mark.parametrize(("parameterization", "guided"), FIELD_CASES)
def test_velocity_and_divergence_is_the_trace_of_the_velocity(
    parameterization: str, guided: bool
) -> None:
    from pushforward.ode import exact_divergence

    model = traced_fm(parameterization, guided)
    generator = torch.Generator().manual_seed(12)
    x = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    c = torch.randn(6, 2, generator=generator, dtype=torch.float64) if guided else None
    # t = 0 and 1 hit the clamped conversion times; 0.37 is inside.
    for t in (torch.tensor(0.0), torch.tensor(0.37), torch.tensor(1.0)):
        t = t.double()
        for guidance in (1.0, 2.5) if guided else (1.0,):
            velocity, divergence = model.velocity_and_divergence(x, t, c, guidance)
            expected_velocity, expected = exact_divergence(
                lambda z, t=t, guidance=guidance: model.velocity(z, t, c, guidance), x
            )
            torch.testing.assert_close(velocity, expected_velocity, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(divergence, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("parameterization", ["data", "noise"])
def test_divergence_of_a_converted_prediction_by_hand(parameterization: str) -> None:
    # v = A(t) f + B(t) x, so div v = A(t) div f + B(t) D, with, from the conversion
    # formulas (a = alpha_t, s = sigma_t, dots for derivatives):
    #   data:  v = da f + ds (x - a f) / s  ->  A = da - ds a / s,  B = ds / s;
    #   noise: v = da (x - s f) / a + ds f  ->  A = ds - da s / a,  B = da / a.
    model = traced_fm(parameterization, guided=False)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    _, raw_divergence = model.network.velocity_and_divergence(x, t)
    c = model.scheduler(t)
    a, s, da, ds = c.alpha, c.sigma, c.d_alpha, c.d_sigma
    if parameterization == "data":
        slope, offset = da - ds * a / s, ds / s
    else:
        slope, offset = ds - da * s / a, da / a
    _, divergence = model.velocity_and_divergence(x, t)
    torch.testing.assert_close(divergence, slope * raw_divergence + offset * 3, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("parameterization", "guided"), FIELD_CASES)
def test_log_prob_with_the_network_trace_equals_the_generic_path(
    parameterization: str, guided: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pushforward.nn.velocity import VelocityMLP

    model = traced_fm(parameterization, guided)
    generator = torch.Generator().manual_seed(14)
    x = torch.randn(6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    c = torch.randn(6, 2, generator=generator, dtype=torch.float64) if guided else None
    original = VelocityMLP.velocity_and_divergence
    calls = []

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VelocityMLP, "velocity_and_divergence", counted)
    fast = model.log_prob(x, c, solver="rk4", steps=4)
    assert calls  # the network's own trace was used
    parameter = next(model.network.parameters())
    fast_grads = torch.autograd.grad(fast.sum(), [x, parameter])
    monkeypatch.delattr(VelocityMLP, "velocity_and_divergence")
    generic = model.log_prob(x, c, solver="rk4", steps=4)
    generic_grads = torch.autograd.grad(generic.sum(), [x, parameter])
    torch.testing.assert_close(fast, generic, rtol=0, atol=1e-10)
    for mine, theirs in zip(fast_grads, generic_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-10)
    # Hutchinson never asks the network for its trace.
    monkeypatch.setattr(VelocityMLP, "velocity_and_divergence", counted, raising=False)
    calls.clear()
    model.log_prob(x, c, divergence="hutchinson", solver="rk4", steps=2)
    assert not calls


def test_dtype_check_follows_conversions_after_the_first_call() -> None:
    # check_input remembers where the model's first parameter lives; converting the
    # model afterwards (which may replace the tensors) must still be seen.
    model = small_fm(hidden=[8])
    x = torch.randn(4, 2)
    model.loss(x)
    model.double()
    with pytest.raises(TypeError, match=r"float32 but the model.s parameters are torch\.float64"):
        model.loss(x)
    assert torch.isfinite(model.loss(x.double()))
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        model.float()  # new Parameter objects this time
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)
    with pytest.raises(TypeError, match=r"float64 but the model.s parameters are torch\.float32"):
        model.loss(x.double())
    assert torch.isfinite(model.loss(x))
