"""Likelihoods of linear flows against closed-form Gaussians, gradients, Meta's flow_matching."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal
from torch.func import functional_call

from pushforward.ode import AugmentedDynamics, LikelihoodResult, log_likelihood

F64 = torch.float64
A = torch.tensor([[-0.4, 0.9, 0.1], [-0.6, 0.2, 0.3], [0.2, -0.1, 0.5]], dtype=F64)
B = torch.tensor([0.5, -1.0, 0.25], dtype=F64)


def affine_velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x @ A.T.to(x.dtype) + B.to(x.dtype)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    flat = z.reshape(z.shape[0], -1)
    return -0.5 * (flat**2).sum(-1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


def pushed_gaussian() -> MultivariateNormal:
    """N(0, I) at t=0 moved by dx/dt = A x + b: x(1) = e^A z + A^{-1} (e^A - I) b."""
    flow_map = torch.linalg.matrix_exp(A)
    mean = torch.linalg.solve(A, (flow_map - torch.eye(3, dtype=F64)) @ B)
    return MultivariateNormal(mean, covariance_matrix=flow_map @ flow_map.T)


def test_exact_log_likelihood_matches_closed_form() -> None:
    target = pushed_gaussian()
    x = target.sample((6,))
    result = log_likelihood(affine_velocity, x, standard_normal_log_prob, atol=1e-10, rtol=1e-10)
    assert isinstance(result, LikelihoodResult)
    assert result.log_prob.shape == (6,)
    assert torch.allclose(result.log_prob, target.log_prob(x), atol=1e-4, rtol=0)
    assert (result.log_prob - target.log_prob(x)).abs().max() < 1e-8
    # The base point is the inverse flow map: z = e^{-A} (x - mean).
    expected_base = (x - target.mean) @ torch.linalg.matrix_exp(-A).T
    assert torch.allclose(result.base_point, expected_base, atol=1e-8)
    assert result.nfe > 6


def test_fixed_step_log_likelihood_converges() -> None:
    target = pushed_gaussian()
    x = target.sample((4,))
    result = log_likelihood(affine_velocity, x, standard_normal_log_prob, method="rk4", steps=40)
    assert torch.allclose(result.log_prob, target.log_prob(x), atol=1e-6, rtol=0)
    assert result.nfe == 4 * 40


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_log_likelihood_is_unbiased(noise: str) -> None:
    target = pushed_gaussian()
    x = target.sample((8,))
    probes = 400
    result = log_likelihood(
        affine_velocity,
        x,
        standard_normal_log_prob,
        divergence="hutchinson",
        probes=probes,
        noise=noise,
        generator=torch.Generator().manual_seed(7),
        atol=1e-10,
        rtol=1e-10,
    )
    error = result.log_prob - target.log_prob(x)
    # With a constant Jacobian A the error is tr(A) - mean_p e_p^T A e_p, whose
    # single-probe variance is sum_{i<j} (A_ij + A_ji)^2 (Rademacher) or 2 tr(S^2),
    # S = (A + A^T) / 2 (Gaussian).
    symmetric = (A + A.T) / 2
    if noise == "rademacher":
        variance = (symmetric.triu(1) * 2).pow(2).sum()
    else:
        variance = 2 * (symmetric @ symmetric).trace()
    standard_error = math.sqrt(variance.item() / (probes * x.shape[0]))
    assert abs(error.mean().item()) < 3 * standard_error
    assert error.abs().min() > 1e-8  # the estimate really is random
    # The estimator uses one fixed draw: the same generator seed reproduces it.
    again = log_likelihood(
        affine_velocity,
        x,
        standard_normal_log_prob,
        divergence="hutchinson",
        probes=probes,
        noise=noise,
        generator=torch.Generator().manual_seed(7),
        atol=1e-10,
        rtol=1e-10,
    )
    assert torch.equal(again.log_prob, result.log_prob)


def test_hutchinson_probes_are_drawn_once_and_kept(monkeypatch) -> None:
    from pushforward.ode import likelihood as module

    draws = []
    original = module.make_probes

    def counting_make_probes(*args, **kwargs):
        draws.append(original(*args, **kwargs))
        return draws[-1]

    monkeypatch.setattr(module, "make_probes", counting_make_probes)
    seen = []

    class Recorder(AugmentedDynamics):
        def __call__(self, t, state):
            seen.append(self.noise)
            return super().__call__(t, state)

    monkeypatch.setattr(module, "AugmentedDynamics", Recorder)
    x = torch.randn(4, 3, dtype=F64)
    result = log_likelihood(
        affine_velocity, x, standard_normal_log_prob, divergence="hutchinson", probes=2
    )
    assert len(draws) == 1 and len(seen) == result.nfe > 6
    assert all(noise is draws[0] for noise in seen)


def test_augmented_dynamics_with_fixed_probes() -> None:
    noise = torch.randn(2, 4, 3, dtype=F64)
    dynamics = AugmentedDynamics(affine_velocity, noise)
    x = torch.randn(4, 3, dtype=F64)
    for t in (1.0, 0.0):
        velocity, divergence = dynamics(torch.tensor(t, dtype=F64), (x, torch.zeros(4, dtype=F64)))
        expected = torch.einsum("pbi,ij,pbj->b", noise, A, noise) / 2
        assert torch.allclose(velocity, affine_velocity(None, x))
        assert torch.allclose(divergence, expected, atol=1e-13)
    exact = AugmentedDynamics(affine_velocity)(torch.tensor(0.5, dtype=F64), (x, x[:, 0]))
    assert torch.allclose(exact[1], A.trace().expand(4), atol=1e-13)


def test_gradient_with_respect_to_x_matches_closed_form() -> None:
    target = pushed_gaussian()
    x = target.sample((5,)).requires_grad_()
    result = log_likelihood(affine_velocity, x, standard_normal_log_prob, atol=1e-10, rtol=1e-10)
    (grad,) = torch.autograd.grad(result.log_prob.sum(), x)
    precision = torch.linalg.inv(target.covariance_matrix)
    expected = -(x.detach() - target.mean) @ precision
    assert torch.allclose(grad, expected, atol=1e-6)


class TimeMLP(nn.Module):
    """A small velocity network with time as an extra input."""

    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, features),
        )  # fmt: skip

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        time = t.reshape(1, 1).expand(x.shape[0], 1)
        return self.net(torch.cat([x, time], dim=-1))


def test_gradients_match_finite_differences() -> None:
    torch.manual_seed(3)
    network = TimeMLP(2, 5).to(F64)
    names = [name for name, _ in network.named_parameters()]
    weights = [p.detach().clone() for p in network.parameters()]
    x = torch.randn(3, 2, dtype=F64)

    def log_prob_sum(x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        def velocity(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return functional_call(network, dict(zip(names, params, strict=True)), (t, z))

        result = log_likelihood(velocity, x, standard_normal_log_prob, method="rk4", steps=3)
        return result.log_prob.sum()

    inputs = [x, *weights]
    leaves = [tensor.clone().requires_grad_() for tensor in inputs]
    gradients = torch.autograd.grad(log_prob_sum(leaves[0], leaves[1:]), leaves)
    # Central differences along random directions in the joint (x, parameters) space.
    generator = torch.Generator().manual_seed(8)
    eps = 1e-6
    for _ in range(3):
        directions = [torch.randn(t.shape, generator=generator, dtype=F64) for t in inputs]
        up = [t + eps * d for t, d in zip(inputs, directions, strict=True)]
        down = [t - eps * d for t, d in zip(inputs, directions, strict=True)]
        numeric = (log_prob_sum(up[0], up[1:]) - log_prob_sum(down[0], down[1:])) / (2 * eps)
        analytic = sum((g * d).sum() for g, d in zip(gradients, directions, strict=True))
        assert analytic.item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-8)
    assert all(g.abs().sum() > 0 for g in gradients)


def test_image_shaped_input() -> None:
    # A 1x1 convolution mixes channels at each pixel: every pixel's channel vector
    # is pushed by e^W independently, so the density is a product over pixels.
    mixing = torch.tensor([[0.3, -0.8], [0.5, -0.2]], dtype=F64)

    def channel_mixing(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,bjhw->bihw", mixing, x)

    x = torch.randn(3, 2, 4, 5, dtype=F64)
    result = log_likelihood(
        channel_mixing, x, standard_normal_log_prob, atol=1e-10, rtol=1e-10, chunk_size=7
    )
    flow_map = torch.linalg.matrix_exp(mixing)
    pixel = MultivariateNormal(torch.zeros(2, dtype=F64), flow_map @ flow_map.T)
    expected = pixel.log_prob(x.permute(0, 2, 3, 1)).sum((1, 2))
    assert result.log_prob.shape == (3,) and result.base_point.shape == x.shape
    assert torch.allclose(result.log_prob, expected, atol=1e-8)


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_float32_in_float32_out(divergence: str) -> None:
    target = pushed_gaussian()
    x = target.sample((4,)).float()
    result = log_likelihood(affine_velocity, x, standard_normal_log_prob, divergence=divergence)
    assert result.log_prob.dtype == torch.float32 and result.base_point.dtype == torch.float32
    if divergence == "exact":
        assert torch.allclose(result.log_prob.double(), target.log_prob(x.double()), atol=1e-3)


def test_bad_options_are_errors() -> None:
    x = torch.randn(2, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"unknown divergence 'exakt' \(did you mean 'exact'"):
        log_likelihood(affine_velocity, x, standard_normal_log_prob, divergence="exakt")
    with pytest.raises(ValueError, match="unknown noise"):
        log_likelihood(affine_velocity, x, standard_normal_log_prob, noise="uniform")
    with pytest.raises(ValueError, match="needs steps="):
        log_likelihood(affine_velocity, x, standard_normal_log_prob, method="rk4")
    with pytest.raises(ValueError, match="t_data and t_base must differ"):
        log_likelihood(affine_velocity, x, standard_normal_log_prob, t_data=0.0)
    with pytest.raises(ValueError, match="unknown ODE method"):
        log_likelihood(affine_velocity, x, standard_normal_log_prob, method="dopri6")
    with pytest.raises(ValueError, match=r"base_log_prob must return shape \(2,\)"):
        log_likelihood(affine_velocity, x, lambda z: z)


class MetaWrapper(nn.Module):
    """flow_matching's model convention: forward(x, t, **extras)."""

    def __init__(self, network: TimeMLP) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras) -> torch.Tensor:
        return self.network(t, x)


@pytest.mark.parametrize(("method", "steps"), [("dopri5", None), ("rk4", 20)])
def test_agrees_with_meta_flow_matching(method: str, steps: int | None) -> None:
    solver_module = pytest.importorskip("flow_matching.solver")
    torch.manual_seed(4)
    network = TimeMLP(2, 16).to(F64)
    x = torch.randn(5, 2, dtype=F64)
    tolerance = {"atol": 1e-7, "rtol": 1e-7}
    ours = log_likelihood(
        network, x, standard_normal_log_prob, method=method, steps=steps, **tolerance
    )
    solver = solver_module.ODESolver(velocity_model=MetaWrapper(network))
    base_point, theirs = solver.compute_likelihood(
        x_1=x,
        log_p0=standard_normal_log_prob,
        step_size=None if steps is None else 1 / steps,
        method=method,
        exact_divergence=True,
        time_grid=torch.tensor([1.0, 0.0], dtype=F64),
        **tolerance,
    )
    assert torch.allclose(ours.log_prob.detach(), theirs, atol=1e-4, rtol=0)
    assert torch.allclose(ours.base_point.detach(), base_point, atol=1e-4)


class CountingField:
    """The affine field as ``(t, x) -> (A x + b, tr A + shift)``, counting its calls."""

    def __init__(self, shift: float = 0.0) -> None:
        self.shift = shift
        self.calls = 0

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        trace = A.trace().to(x.dtype) + self.shift
        return affine_velocity(t, x), trace.expand(x.shape[0])


def test_velocity_and_divergence_is_used_for_the_exact_divergence() -> None:
    target = pushed_gaussian()
    x = target.sample((6,))
    plain_calls = []

    def counted_velocity(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        plain_calls.append(t)
        return affine_velocity(t, z)

    tolerance = {"atol": 1e-10, "rtol": 1e-10}
    field = CountingField()
    fast = log_likelihood(
        counted_velocity, x, standard_normal_log_prob, velocity_and_divergence=field, **tolerance
    )
    generic = log_likelihood(affine_velocity, x, standard_normal_log_prob, **tolerance)
    assert field.calls == fast.nfe > 6 and not plain_calls
    assert (fast.log_prob - target.log_prob(x)).abs().max() < 1e-8
    torch.testing.assert_close(fast.log_prob, generic.log_prob, rtol=0, atol=1e-10)
    torch.testing.assert_close(fast.base_point, generic.base_point, rtol=0, atol=1e-10)
    # Its divergence is the one integrated: one more unit of divergence over the unit
    # time interval takes exactly one nat off log p.
    shifted = log_likelihood(
        affine_velocity,
        x,
        standard_normal_log_prob,
        velocity_and_divergence=CountingField(shift=1.0),
        **tolerance,
    )
    torch.testing.assert_close(shifted.log_prob, fast.log_prob - 1.0, rtol=0, atol=1e-9)


def test_hutchinson_ignores_velocity_and_divergence() -> None:
    x = torch.randn(4, 3, dtype=F64)
    field = CountingField(shift=5.0)
    options = {"divergence": "hutchinson", "probes": 3, "method": "rk4", "steps": 4}
    with_field = log_likelihood(
        affine_velocity,
        x,
        standard_normal_log_prob,
        generator=torch.Generator().manual_seed(1),
        velocity_and_divergence=field,
        **options,
    )
    without = log_likelihood(
        affine_velocity,
        x,
        standard_normal_log_prob,
        generator=torch.Generator().manual_seed(1),
        **options,
    )
    assert field.calls == 0
    assert torch.equal(with_field.log_prob, without.log_prob)


def test_velocity_and_divergence_errors_name_the_problem() -> None:
    x = torch.randn(4, 3, dtype=F64)

    def wrong_shape(t: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return affine_velocity(t, z), A.trace().expand(z.shape[0], 1)

    with pytest.raises(ValueError, match=r"must return shapes \(4, 3\) and \(4,\)"):
        log_likelihood(
            affine_velocity, x, standard_normal_log_prob, velocity_and_divergence=wrong_shape
        )
    with pytest.raises(TypeError, match="velocity_and_divergence must be a callable"):
        log_likelihood(
            affine_velocity,
            x,
            standard_normal_log_prob,
            velocity_and_divergence=A,  # type: ignore[arg-type]
        )


def test_velocity_mlp_trace_through_the_likelihood_matches_the_generic_path() -> None:
    from pushforward.nn.velocity import VelocityMLP

    network = VelocityMLP(3, hidden=(8, 8, 8), time_embedding=4, time_scale=2.0).to(F64)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(2.0)
    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(2))

    def velocity(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return network(z, t)

    def velocity_and_divergence(t: torch.Tensor, z: torch.Tensor):
        return network.velocity_and_divergence(z, t)

    options = {"method": "rk4", "steps": 6}
    fast = log_likelihood(
        velocity,
        x,
        standard_normal_log_prob,
        velocity_and_divergence=velocity_and_divergence,
        **options,
    )
    generic = log_likelihood(velocity, x, standard_normal_log_prob, **options)
    torch.testing.assert_close(fast.log_prob, generic.log_prob, rtol=0, atol=1e-11)
    assert (fast.log_prob - standard_normal_log_prob(x)).abs().max() > 1e-3


def linear_velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x @ A.T.to(x.dtype)


def test_step_hook_maps_the_points_after_each_step_and_leaves_the_divergence() -> None:
    # A linear field commutes with x -> -x, an isometry: negating after every step
    # negates the base point once a step and changes no log-density.
    x = pushed_gaussian().sample((5,))
    calls = []

    def negate(t: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        calls.append(float(t))
        return -points

    plain = log_likelihood(linear_velocity, x, standard_normal_log_prob, method="rk4", steps=7)
    hooked = log_likelihood(
        linear_velocity, x, standard_normal_log_prob, method="rk4", steps=7, step_hook=negate
    )
    torch.testing.assert_close(hooked.base_point, -plain.base_point, atol=1e-12, rtol=0)
    torch.testing.assert_close(hooked.log_prob, plain.log_prob, atol=1e-12, rtol=0)
    assert calls == pytest.approx([1 - k / 7 for k in range(1, 8)])


def test_step_hook_folds_a_constant_flow_into_an_interval() -> None:
    # dx/dt = 2 on [0, 1], integrated back from t = 1 with Euler steps of 1/4, each
    # folded back into [0, 1]: x -> fold(x - 1/2) four times.
    def fold(t: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        phase = torch.remainder(points, 2.0)
        return torch.where(phase <= 1, phase, 2 - phase)

    def uniform_log_prob(z: torch.Tensor) -> torch.Tensor:
        return torch.zeros(z.shape[0], dtype=z.dtype)

    def constant_velocity(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.full_like(z, 2.0)

    x = torch.tensor([[0.1], [0.45], [0.8]], dtype=F64)
    result = log_likelihood(
        constant_velocity, x, uniform_log_prob, method="euler", steps=4, step_hook=fold
    )
    expected = x
    for _ in range(4):
        expected = fold(torch.zeros(()), expected - 0.5)
    torch.testing.assert_close(result.base_point, expected, atol=1e-15, rtol=0)
    assert bool(((result.base_point >= 0) & (result.base_point <= 1)).all())
    assert torch.equal(result.log_prob, torch.zeros(3, dtype=F64))


def test_step_hook_needs_a_fixed_step_method() -> None:
    x = pushed_gaussian().sample((2,))
    with pytest.raises(ValueError, match="step_hook needs a fixed-step method"):
        log_likelihood(linear_velocity, x, standard_normal_log_prob, step_hook=lambda t, z: z)
    with pytest.raises(ValueError, match="step_hook must return points of shape"):
        log_likelihood(
            linear_velocity,
            x,
            standard_normal_log_prob,
            method="euler",
            steps=2,
            step_hook=lambda t, z: z[:1],
        )
