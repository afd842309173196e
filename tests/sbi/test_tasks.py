"""Benchmark tasks: simulators against their densities, reference posteriors against independent
samplers or grids, reproducibility from the generator, the registry's errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import Bernoulli, MultivariateNormal

from pushforward.sbi.priors import BoxUniformPrior
from pushforward.sbi.tasks import TASKS, Task, make_task, tempered_smc
from pushforward.sbi.tasks.bernoulli_glm import BernoulliGLM
from pushforward.sbi.tasks.gaussian_linear import GaussianLinear
from pushforward.sbi.tasks.slcp import DIAGONAL_JITTER, NonCentredCoordinates

NAMES = list(TASKS)
F64 = torch.float64


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _grid(low: Tensor, high: Tensor, step: float) -> tuple[Tensor, Tensor, Tensor]:
    """Midpoints of a 2-D grid over ``[low, high]``: the points ``(m, 2)`` and each axis."""
    axes = [
        torch.arange(lo + step / 2, hi, step, dtype=F64) for lo, hi in zip(low, high, strict=True)
    ]
    first, second = torch.meshgrid(axes[0], axes[1], indexing="ij")
    return torch.stack((first.reshape(-1), second.reshape(-1)), dim=-1), axes[0], axes[1]


def _total_variation(
    samples: Tensor, points: Tensor, log_density: Tensor, low, high, bins
) -> float:
    """Total variation between a histogram of ``samples`` and the grid density on the same bins."""
    mass = torch.softmax(log_density, 0)
    edges = [torch.linspace(lo, hi, bins + 1, dtype=F64) for lo, hi in zip(low, high, strict=True)]

    def histogram(values: Tensor, weights: Tensor) -> Tensor:
        i = torch.bucketize(values[:, 0].contiguous(), edges[0]) - 1
        j = torch.bucketize(values[:, 1].contiguous(), edges[1]) - 1
        inside = (i >= 0) & (i < bins) & (j >= 0) & (j < bins)
        counts = torch.zeros(bins * bins, dtype=F64)
        counts.index_add_(0, (i * bins + j)[inside], weights[inside])
        return counts

    exact = histogram(points, mass)
    empirical = histogram(
        samples, torch.full((samples.shape[0],), 1.0 / samples.shape[0], dtype=F64)
    )
    outside = 1.0 - float(empirical.sum())
    return 0.5 * (float((exact - empirical).abs().sum()) + outside)


# ---------------------------------------------------------------- the contract, every task


@pytest.mark.parametrize("name", NAMES)
def test_simulate_is_seeded_by_the_generator_only(name: str) -> None:
    task = make_task(name)
    theta = task.prior.sample(7, _generator(0))
    state = torch.get_rng_state()
    x = task.simulate(theta, _generator(1))
    again = task.simulate(theta, _generator(1))
    other = task.simulate(theta, _generator(2))
    assert torch.equal(state, torch.get_rng_state())
    assert x.shape == (7, task.x_features) and x.dtype == F64
    assert torch.equal(x, again)
    assert not torch.equal(x, other)
    assert task.theta_features == task.prior.features == theta.shape[1]


@pytest.mark.parametrize("name", NAMES)
def test_observations_and_simulations_are_reproducible(name: str) -> None:
    task = make_task(name)
    state = torch.get_rng_state()
    theta_o, x_o = task.observations(3, seed=5)
    assert torch.equal(state, torch.get_rng_state())
    assert theta_o.shape == (3, task.theta_features) and x_o.shape == (3, task.x_features)
    again = task.observations(3, seed=5)
    assert torch.equal(theta_o, again.theta) and torch.equal(x_o, again.x)
    # The first observations do not depend on how many are asked for.
    fewer = task.observations(2, seed=5)
    assert torch.equal(fewer.theta, theta_o[:2]) and torch.equal(fewer.x, x_o[:2])
    assert not torch.equal(task.observations(3, seed=6).theta, theta_o)
    assert bool(torch.isfinite(task.prior.log_prob(theta_o)).all())

    theta, x = task.simulations(50, seed=1)
    assert theta.shape == (50, task.theta_features) and x.shape == (50, task.x_features)
    assert theta.dtype == x.dtype == F64
    repeat = task.simulations(50, seed=1)
    assert torch.equal(theta, repeat.theta) and torch.equal(x, repeat.x)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("name", NAMES)
def test_log_likelihood_broadcasts_and_the_posterior_adds_the_prior(name: str) -> None:
    task = make_task(name)
    theta, x = task.simulations(6, seed=2)
    shared = task.log_likelihood(theta, x[0])
    assert shared.shape == (6,) and bool(torch.isfinite(shared).all())
    torch.testing.assert_close(shared, task.log_likelihood(theta, x[:1].expand(6, -1)))
    rowwise = task.log_likelihood(theta, x)
    assert rowwise.shape == (6,)
    posterior = task.unnormalized_log_posterior(theta, x[0])
    torch.testing.assert_close(posterior, shared + task.prior.log_prob(theta))


@pytest.mark.parametrize("name", NAMES)
def test_shapes_are_refused_in_the_users_words(name: str) -> None:
    task = make_task(name)
    theta, x = task.simulations(4, seed=0)
    with pytest.raises(ValueError, match=f"theta of shape \\(n, {task.theta_features}\\)"):
        task.simulate(theta[:, :1], _generator(0))
    with pytest.raises(ValueError, match="takes x of shape"):
        task.log_likelihood(theta, x[:3])
    with pytest.raises(ValueError, match="one observation"):
        task.reference_posterior(x, 10, _generator(0))
    with pytest.raises(ValueError, match="positive integer"):
        task.reference_posterior(x[0], 0, _generator(0))


@pytest.mark.parametrize("name", NAMES)
def test_reference_posterior_is_reproducible_and_in_the_support(name: str) -> None:
    task = make_task(name)
    _, x_o = task.observations(1, seed=11)
    state = torch.get_rng_state()
    samples = task.reference_posterior(x_o[0], 300, _generator(3))
    assert torch.equal(state, torch.get_rng_state())
    assert samples.shape == (300, task.theta_features) and samples.dtype == F64
    assert torch.equal(samples, task.reference_posterior(x_o[0], 300, _generator(3)))
    assert bool(torch.isfinite(task.unnormalized_log_posterior(samples, x_o[0])).all())
    assert torch.unique(samples, dim=0).shape[0] == 300


# ---------------------------------------------------------------- two moons


def _moons_centre(theta: Tensor) -> Tensor:
    """The ring's centre for ``theta: (2,)``, from the definition."""
    shift = torch.stack(
        (-(theta[0] + theta[1]).abs() / math.sqrt(2), (theta[1] - theta[0]) / math.sqrt(2))
    )
    return torch.tensor([0.25, 0.0], dtype=F64) + shift


@pytest.mark.parametrize("theta", [[0.3, -0.5], [-0.8, -0.6], [0.0, 0.9]])
def test_two_moons_likelihood_is_the_simulators_density(theta: list[float]) -> None:
    task = make_task("two_moons")
    theta_t = torch.tensor(theta, dtype=F64)
    centre = _moons_centre(theta_t)
    low, high = centre - 0.16, centre + 0.16
    points, _, _ = _grid(low, high, 0.0005)
    log_density = task.log_likelihood(theta_t.expand(points.shape[0], 2), points)
    assert float(torch.exp(log_density).sum()) * 0.0005**2 == pytest.approx(1.0, abs=2e-3)
    # and simulations fall where the density says
    x = task.simulate(theta_t.expand(40_000, 2), _generator(4))
    tv = _total_variation(x, points, log_density, low.tolist(), high.tolist(), bins=16)
    assert tv < 0.03


@pytest.mark.parametrize("theta_o", [[-0.8176656, -0.5756806], [0.3, -0.28], [0.55, 0.05]])
def test_two_moons_reference_matches_the_posterior_on_a_grid(theta_o: list[float]) -> None:
    # sbibm's first observation's parameters, then two near the line theta1 + theta2 = 0,
    # where both branches of the absolute value meet and p1 < x1 happens.
    task = make_task("two_moons")
    x_o = task.simulate(torch.tensor([theta_o], dtype=F64), _generator(8))[0]
    samples = task.reference_posterior(x_o, 20_000, _generator(9))
    low, high = [-1.0, -1.0], [1.0, 1.0]
    points, _, _ = _grid(torch.tensor(low), torch.tensor(high), 0.002)
    log_posterior = task.unnormalized_log_posterior(points, x_o)
    assert _total_variation(samples, points, log_posterior, low, high, bins=40) < 0.05


# ---------------------------------------------------------------- Gaussian mixture


def test_gaussian_mixture_likelihood_is_the_simulators_density() -> None:
    task = make_task("gaussian_mixture")
    theta = torch.tensor([1.5, -2.0], dtype=F64)
    low, high = theta - 7.0, theta + 7.0
    points, _, _ = _grid(low, high, 0.01)
    log_density = task.log_likelihood(theta.expand(points.shape[0], 2), points)
    assert float(torch.exp(log_density).sum()) * 0.01**2 == pytest.approx(1.0, abs=1e-4)
    x = task.simulate(theta.expand(40_000, 2), _generator(5))
    # Half the draws come from the narrow component: within 0.3 of theta, the mass is
    # 0.5 (1 - e^{-4.5}) + 0.5 (1 - e^{-0.045}).
    near = ((x - theta) ** 2).sum(-1) < 0.3**2
    expected = 0.5 * (1 - math.exp(-4.5)) + 0.5 * (1 - math.exp(-0.045))
    assert float(near.double().mean()) == pytest.approx(expected, abs=4 * math.sqrt(0.25 / 40_000))
    tv = _total_variation(x, points, log_density, (theta - 4).tolist(), (theta + 4).tolist(), 16)
    assert tv < 0.04


@pytest.mark.parametrize("x_o", [[1.0, -3.0], [9.6, -2.0], [-9.9, 9.8]])
def test_gaussian_mixture_reference_matches_the_truncated_mixture(x_o: list[float]) -> None:
    task = make_task("gaussian_mixture")
    x = torch.tensor(x_o, dtype=F64)
    samples = task.reference_posterior(x, 40_000, _generator(6))
    assert bool(task.prior.contains(samples).all())
    low = torch.clamp(x - 6.0, min=-10.0)
    high = torch.clamp(x + 6.0, max=10.0)
    points, _, _ = _grid(low, high, 0.01)
    log_posterior = task.unnormalized_log_posterior(points, x)
    tv = _total_variation(samples, points, log_posterior, low.tolist(), high.tolist(), 24)
    assert tv < 0.05
    # The truncation takes mass from the broad component only, so the narrow core's
    # share rises near an edge: compare it with the grid's.
    core = ((points - x) ** 2).sum(-1) < 0.3**2
    exact = float(torch.softmax(log_posterior, 0)[core].sum())
    found = float((((samples - x) ** 2).sum(-1) < 0.3**2).double().mean())
    assert found == pytest.approx(exact, abs=4 * math.sqrt(0.25 / 40_000))


# ---------------------------------------------------------------- Gaussian linear


def test_gaussian_linear_likelihood_and_posterior_in_closed_form() -> None:
    task = make_task("gaussian_linear")
    assert isinstance(task, GaussianLinear) and task.theta_features == 10
    theta, x = task.simulations(5, seed=3)
    expected = MultivariateNormal(theta, 0.1 * torch.eye(10, dtype=F64)).log_prob(x)
    torch.testing.assert_close(task.log_likelihood(theta, x), expected)
    torch.testing.assert_close(task.prior.cov, 0.1 * torch.eye(10, dtype=F64))
    # simulated noise has variance 0.1
    sims = task.simulate(torch.zeros(50_000, 10, dtype=F64), _generator(0))
    assert float(sims.var(0).mean()) == pytest.approx(0.1, rel=0.01)

    x_o = x[0]
    samples = task.reference_posterior(x_o, 20_000, _generator(1))
    # (prior precision 10 + noise precision 10)^-1 = 0.05; mean 0.05 * 10 * x_o
    mean, variance = 0.5 * x_o, 0.05
    error = (samples.mean(0) - mean) / math.sqrt(variance / 20_000)
    assert float(error.abs().max()) < 4.5
    cov = torch.cov(samples.T)
    assert float(
        (cov - variance * torch.eye(10, dtype=F64)).abs().max()
    ) < 6 * variance * math.sqrt(2 / 20_000)


def test_tempered_smc_recovers_a_conjugate_posterior_and_its_evidence() -> None:
    task = GaussianLinear(features=3)
    x_o = torch.tensor([0.4, -0.7, 0.1], dtype=F64)

    def log_likelihood(theta: Tensor) -> Tensor:
        return task.log_likelihood(theta, x_o)

    result = tempered_smc(task.prior, log_likelihood, 4000, _generator(2))
    assert result.temperatures[0] == 0 and result.temperatures[-1] == 1
    assert bool((result.temperatures.diff() > 0).all())
    evidence = MultivariateNormal(torch.zeros(3, dtype=F64), 0.2 * torch.eye(3, dtype=F64))
    assert float(result.log_evidence) == pytest.approx(float(evidence.log_prob(x_o)), abs=0.1)
    error = (result.samples.mean(0) - 0.5 * x_o) / math.sqrt(0.05 / 4000)
    assert float(error.abs().max()) < 4.5
    assert result.samples.var(0).tolist() == pytest.approx([0.05] * 3, rel=0.08)
    assert 0.15 < float(result.acceptance[-20:].mean()) < 0.45


# ---------------------------------------------------------------- SLCP


def _slcp_covariance(theta: Tensor) -> Tensor:
    """``(2, 2)``, sbibm's covariance written from the definition."""
    s_1, s_2, rho = theta[2] ** 2, theta[3] ** 2, torch.tanh(theta[4])
    cov = torch.stack(
        (torch.stack((s_1**2, rho * s_1 * s_2)), torch.stack((rho * s_1 * s_2, s_2**2)))
    )
    return cov + DIAGONAL_JITTER * torch.eye(2, dtype=F64)


def test_slcp_likelihood_and_simulator_match_the_gaussian_definition() -> None:
    task = make_task("slcp")
    theta, x = task.simulations(6, seed=4)
    expected = torch.stack(
        [
            MultivariateNormal(theta[i, :2], _slcp_covariance(theta[i]))
            .log_prob(x[i].reshape(4, 2))
            .sum()
            for i in range(6)
        ]
    )
    torch.testing.assert_close(task.log_likelihood(theta, x), expected)
    theta_0 = torch.tensor([0.5, -1.0, 1.2, -0.9, 0.8], dtype=F64)
    sims = task.simulate(theta_0.expand(50_000, 5), _generator(1)).reshape(-1, 2)
    torch.testing.assert_close(sims.mean(0), theta_0[:2], atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(sims.T), _slcp_covariance(theta_0), atol=0.03, rtol=0.02)
    # the four draws of one simulation are independent
    pairs = task.simulate(theta_0.expand(50_000, 5), _generator(2))
    assert abs(float(torch.corrcoef(pairs[:, [0, 2]].T)[0, 1])) < 0.02


def test_slcp_move_coordinates_are_a_bijection_with_the_right_jacobian() -> None:
    task = make_task("slcp")
    _, x_o = task.observations(1, seed=0)
    coordinates = NonCentredCoordinates(x_o[0])
    theta = task.folded_prior.sample(5, _generator(0))
    phi = coordinates.to_moves(theta)
    back, log_det = coordinates.from_moves(phi)
    torch.testing.assert_close(back, theta)
    for i in range(5):
        jacobian = torch.autograd.functional.jacobian(
            lambda p: coordinates.from_moves(p.unsqueeze(0))[0][0], phi[i]
        )
        assert float(log_det[i]) == pytest.approx(
            float(torch.linalg.slogdet(jacobian)[1]), abs=1e-8
        )


def _conjugate_importance_sample(x_o: Tensor, count: int, generator: torch.Generator):
    """SLCP's folded posterior by importance sampling, independently of the SMC.

    Proposal: :math:`S \\sim \\mathcal{IW}(C, 3)` (C the scatter of the four points),
    :math:`m \\mid S \\sim \\mathcal{N}(\\bar x, S / 4)`, mapped to theta; the likelihood
    cancels, leaving the weight :math:`|S|^{3/2} / |\\partial(m, S)/\\partial\\theta|`.
    """
    points = x_o.reshape(4, 2)
    centre = points.mean(0)
    scatter = (points - centre).T @ (points - centre)
    root = torch.linalg.cholesky(torch.linalg.inv(scatter))
    bartlett = torch.zeros(count, 2, 2, dtype=F64)
    bartlett[:, 0, 0] = torch.randn(count, 3, generator=generator, dtype=F64).pow(2).sum(-1).sqrt()
    bartlett[:, 1, 1] = torch.randn(count, 2, generator=generator, dtype=F64).pow(2).sum(-1).sqrt()
    bartlett[:, 1, 0] = torch.randn(count, generator=generator, dtype=F64)
    factor = root @ bartlett
    cov = torch.linalg.inv(factor @ factor.transpose(-1, -2))
    normal = torch.randn(count, 2, 1, generator=generator, dtype=F64)
    mean = centre + (torch.linalg.cholesky(cov / 4) @ normal).squeeze(-1)
    s_1 = (cov[:, 0, 0] - DIAGONAL_JITTER).clamp_min(1e-300).sqrt()
    s_2 = (cov[:, 1, 1] - DIAGONAL_JITTER).clamp_min(1e-300).sqrt()
    rho = cov[:, 0, 1] / (s_1 * s_2)
    valid = (cov[:, 0, 0] > DIAGONAL_JITTER) & (cov[:, 1, 1] > DIAGONAL_JITTER) & (rho.abs() < 1)
    theta_5 = torch.atanh(rho.clamp(-1 + 1e-15, 1 - 1e-15))
    theta = torch.stack((mean[:, 0], mean[:, 1], s_1.sqrt(), s_2.sqrt(), theta_5), dim=-1)
    valid &= BoxUniformPrior([-3.0, -3.0, 0.0, 0.0, -3.0], [3.0] * 5).contains(theta)
    log_weight = (
        1.5 * torch.log(torch.linalg.det(cov))
        - 5 * torch.log(theta[:, 2] * theta[:, 3])
        + 2 * torch.log(torch.cosh(theta_5))
    )
    return theta[valid], torch.softmax(log_weight[valid], 0)


@pytest.mark.parametrize("index", [0, 1, 3])
def test_slcp_reference_matches_conjugate_importance_sampling(index: int) -> None:
    task = make_task("slcp")
    _, x_o = task.observations(4, seed=3)
    x = x_o[index]
    n = 4000
    samples = task.reference_posterior(x, n, _generator(index))
    assert bool(task.prior.contains(samples).all())
    # The four mirror images have equal mass.
    quadrant = 2 * (samples[:, 2] > 0).long() + (samples[:, 3] > 0).long()
    shares = torch.bincount(quadrant, minlength=4).double() / n
    assert float((shares - 0.25).abs().max()) < 4 * math.sqrt(0.25 * 0.75 / n)

    folded = torch.cat((samples[:, :2], samples[:, 2:4].abs(), samples[:, 4:]), dim=-1)
    theta, weight = _conjugate_importance_sample(x, 1_000_000, _generator(100 + index))
    ess = float(1 / (weight**2).sum())
    assert ess > 1000
    mean = (weight[:, None] * theta).sum(0)
    std = (weight[:, None] * (theta - mean) ** 2).sum(0).sqrt()
    error = (folded.mean(0) - mean) / (std * math.sqrt(1 / n + 1 / ess))
    assert float(error.abs().max()) < 4.5
    ratio = folded.std(0) / std
    assert float((ratio - 1).abs().max()) < 0.08
    log_lik = task.log_likelihood(folded, x).mean()
    exact = (weight * task.log_likelihood(theta, x)).sum()
    spread = task.log_likelihood(folded, x).std()
    assert abs(float(log_lik - exact)) < 4.5 * float(spread) * math.sqrt(1 / n + 1 / ess)


# ---------------------------------------------------------------- Bernoulli GLM


def test_bernoulli_glm_stimulus_design_and_statistics_are_sbibms() -> None:
    task = make_task("bernoulli_glm")
    assert isinstance(task, BernoulliGLM)
    # the first values of sbibm's stimulus_I.pt
    first = [0.49671414, -0.1382643, 0.64768857, 1.5230298, -0.23415338]
    torch.testing.assert_close(task.stimulus[:5], torch.tensor(first, dtype=F64), atol=1e-7, rtol=0)
    # sbibm's observation 1: its raw spike train and its stored summary statistics
    raw = (
        "11011111111000000111111100011101111000001111000011100011"
        "11001100011111001110000000111000111110000111"
    )
    spikes = torch.tensor([[float(c) for c in raw]], dtype=F64)
    stored = [56.0, 3.32306, 14.356438, 11.104893, -4.167525, -18.507809, -21.917496, -9.553517]
    stored += [-0.357257, -5.497825]
    torch.testing.assert_close(
        task.statistics(spikes)[0], torch.tensor(stored, dtype=F64), atol=2e-5, rtol=0
    )
    # sbibm's formula: the count, then conv1d of the spikes with the stimulus, last nine lags
    y = task.simulate_spikes(task.prior.sample(3, _generator(0)), _generator(1))
    stimulus = task.stimulus.reshape(1, 1, -1)
    lagged = torch.nn.functional.conv1d(y.unsqueeze(1), stimulus, padding=8).squeeze(1)[:, -9:]
    torch.testing.assert_close(task.statistics(y), torch.cat((y.sum(-1, keepdim=True), lagged), -1))


def test_bernoulli_glm_prior_is_sbibms_smoothness_prior() -> None:
    precision = torch.linalg.inv(make_task("bernoulli_glm").prior.cov)
    # F = D^2 + diag(sqrt(i/9)): its first column is (1, -2, 1, 0, ...), its last
    # diagonal entry 1 + sqrt(8/9).
    assert float(precision[0, 0]) == pytest.approx(0.5)
    assert float(precision[1, 1]) == pytest.approx(6.0)
    assert float(precision[9, 9]) == pytest.approx((1 + math.sqrt(8 / 9)) ** 2)
    assert float(precision[0, 1:].abs().max()) < 1e-10
    assert float(precision[1, 4].abs()) < 1e-10  # second differences reach two lags only


def test_bernoulli_glm_likelihood_is_the_bernoulli_likelihood_of_the_spikes() -> None:
    task = make_task("bernoulli_glm")
    theta = task.prior.sample(5, _generator(2))
    spikes = task.simulate_spikes(theta, _generator(3))
    expected = Bernoulli(logits=theta @ task.design.T).log_prob(spikes).sum(-1)
    torch.testing.assert_close(task.log_likelihood(theta, task.statistics(spikes)), expected)
    # the spikes fire at the rate sigmoid(X theta)
    many = task.simulate_spikes(theta[:1].expand(20_000, -1), _generator(4))
    rate = torch.sigmoid(task.design @ theta[0])
    error = (many.mean(0) - rate) / torch.sqrt(rate * (1 - rate) / 20_000).clamp_min(1e-3)
    assert float(error.abs().max()) < 5


def test_bernoulli_glm_likelihood_sums_to_one_over_every_spike_train() -> None:
    task = BernoulliGLM(duration=10)
    bits = torch.arange(2**10).unsqueeze(-1).bitwise_right_shift(torch.arange(10)) & 1
    statistics = task.statistics(bits.to(F64))
    assert torch.unique(statistics, dim=0).shape[0] == 2**10  # one x per spike train
    theta = task.prior.sample(3, _generator(5))
    for row in theta:
        log_probability = task.log_likelihood(row.expand(2**10, -1), statistics)
        assert float(torch.logsumexp(log_probability, 0)) == pytest.approx(0.0, abs=1e-10)


def _laplace_importance_sample(task: Task, x_o: Tensor, count: int, generator: torch.Generator):
    """The GLM posterior by importance sampling from a Student-t at its Laplace approximation."""

    def log_posterior(theta: Tensor) -> Tensor:
        return task.unnormalized_log_posterior(theta.unsqueeze(0), x_o)[0]

    theta = torch.zeros(task.theta_features, dtype=F64)
    for _ in range(30):  # Newton's method: the posterior is log-concave
        gradient = torch.autograd.functional.jacobian(log_posterior, theta)
        hessian = torch.autograd.functional.hessian(log_posterior, theta)
        theta = theta - torch.linalg.solve(hessian, gradient)
    cov = torch.linalg.inv(-hessian)
    df, d = 5, task.theta_features
    factor = torch.linalg.cholesky(cov)
    normal = torch.randn(count, d, generator=generator, dtype=F64)
    chi = torch.randn(count, df, generator=generator, dtype=F64).pow(2).sum(-1)
    draws = theta + (normal @ factor.T) / torch.sqrt(chi / df).unsqueeze(-1)
    white = torch.linalg.solve_triangular(factor, (draws - theta).T, upper=False).T
    log_proposal = -(df + d) / 2 * torch.log1p(white.pow(2).sum(-1) / df)
    log_weight = task.unnormalized_log_posterior(draws, x_o) - log_proposal
    return draws, torch.softmax(log_weight, 0)


@pytest.mark.parametrize("index", [0, 1])
def test_bernoulli_glm_reference_matches_laplace_importance_sampling(index: int) -> None:
    task = make_task("bernoulli_glm")
    _, x_o = task.observations(2, seed=3)
    x = x_o[index]
    n = 4000
    samples = task.reference_posterior(x, n, _generator(index))
    theta, weight = _laplace_importance_sample(task, x, 200_000, _generator(50 + index))
    ess = float(1 / (weight**2).sum())
    assert ess > 50_000
    mean = (weight[:, None] * theta).sum(0)
    std = (weight[:, None] * (theta - mean) ** 2).sum(0).sqrt()
    error = (samples.mean(0) - mean) / (std * math.sqrt(1 / n + 1 / ess))
    assert float(error.abs().max()) < 4.5
    assert float((samples.std(0) / std - 1).abs().max()) < 0.07
    log_posterior = task.unnormalized_log_posterior(samples, x)
    exact = (weight * task.unnormalized_log_posterior(theta, x)).sum()
    bound = 4.5 * float(log_posterior.std()) * math.sqrt(1 / n + 1 / ess)
    assert abs(float(log_posterior.mean() - exact)) < bound


# ---------------------------------------------------------------- the registry


def test_make_task_builds_every_registered_task() -> None:
    for name, kind in TASKS.items():
        task = make_task(name)
        assert type(task) is kind and task.name == name
    assert set(TASKS) == {
        "two_moons",
        "slcp",
        "gaussian_linear",
        "gaussian_mixture",
        "bernoulli_glm",
    }


def test_make_task_refuses_an_unknown_name_with_a_hint() -> None:
    with pytest.raises(ValueError) as error:
        make_task("two_moon")
    message = str(error.value)
    assert "unknown task 'two_moon'" in message
    assert "did you mean 'two_moons'" in message
    for name in TASKS:
        assert name in message
    with pytest.raises(ValueError, match="valid tasks: two_moons, slcp"):
        make_task("mystery")
