"""Posterior estimation: bounded priors keep samples in the box, batched calls, leakage, NLE."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import pushforward
from pushforward.sbi import BoxUniformPrior, GaussianPrior
from pushforward.sbi.posterior import (
    leakage,
    log_prob_batched,
    sample_batched,
    sample_in_support,
    sample_likelihood_posterior,
)

SMALL = {"transforms": 3, "hidden": [32, 32]}


def _corner_simulations(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """theta ~ U[0, 1]^2, x = theta + 0.1 N(0, I): the posterior of x near a corner
    of the square touches two faces."""
    generator = np.random.default_rng(seed)
    theta = generator.uniform(0.0, 1.0, size=(n, 2))
    return theta, theta + 0.1 * generator.normal(size=(n, 2))


@pytest.fixture(scope="module")
def corner_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    theta, x = _corner_simulations(4000, 0)
    runs = {}
    for name, prior in (("bounded", BoxUniformPrior([0.0, 0.0], [1.0, 1.0])), ("free", None)):
        out = tmp_path_factory.mktemp(name)
        pushforward.train_run(
            out, theta, "nsf", context=x, prior=prior, options=SMALL, train={"steps": 600}
        )
        runs[name] = out
    return runs


CORNER = torch.tensor([[0.99, 0.01]])


def test_bounded_prior_keeps_every_sample_in_the_box(corner_runs: dict[str, Path]) -> None:
    model = pushforward.load(corner_runs["bounded"])
    torch.manual_seed(0)
    samples = model.sample(100_000, CORNER)
    assert bool(((samples >= 0) & (samples <= 1)).all())
    # The posterior does touch the faces: a visible share of its mass lies near them.
    assert float(((samples[:, 0] > 0.95) | (samples[:, 1] < 0.05)).float().mean()) > 0.2
    # The same data without the prior: the flow leaks mass out of the box (this test's
    # first assertion can fail).
    free = pushforward.load(corner_runs["free"])
    prior = BoxUniformPrior([0.0, 0.0], [1.0, 1.0])
    assert float(leakage(free, prior, CORNER, n=20_000)[0]) > 0.05
    assert float(leakage(model, prior, CORNER, n=20_000)[0]) == 0.0


def test_bounded_posterior_density_integrates_to_one_over_the_box(
    corner_runs: dict[str, Path],
) -> None:
    model = pushforward.load(corner_runs["bounded"])
    points = 600
    centres = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    grid = torch.cartesian_prod(centres, centres)
    model = model.double()
    for observation in (CORNER.double(), torch.tensor([[0.5, 0.4]], dtype=torch.float64)):
        with torch.no_grad():
            density = model.log_prob(grid, observation).exp()
        mass = float(density.sum()) / points**2
        assert mass == pytest.approx(1.0, abs=0.01)
    outside = torch.tensor([[1.2, 0.5], [0.5, -0.01]], dtype=torch.float64)
    with torch.no_grad():
        assert torch.isneginf(model.log_prob(outside, CORNER.double())).all()


def test_sample_in_support_corrects_leakage(corner_runs: dict[str, Path]) -> None:
    free = pushforward.load(corner_runs["free"])
    prior = BoxUniformPrior([0.0, 0.0], [1.0, 1.0])
    torch.manual_seed(1)
    restricted = sample_in_support(free, prior, 5000, CORNER)
    assert restricted.samples.shape == (5000, 2)
    assert bool(prior.contains(restricted.samples).all())
    assert 0.0 < restricted.acceptance < 0.95
    assert restricted.log_normalizer == pytest.approx(math.log(restricted.acceptance))


def test_batched_sampling_and_log_prob_match_row_by_row() -> None:
    torch.manual_seed(0)
    model = pushforward.build("nsf", features=2, context=3, transforms=2, hidden=[8])
    contexts = torch.randn(4, 3)
    torch.manual_seed(5)
    batched = sample_batched(model, 6, contexts)
    assert sample_batched(model, 6, contexts, chunk=7).shape == (4, 6, 2)
    torch.manual_seed(5)
    flat = model.sample(24, contexts.repeat_interleave(6, dim=0))
    assert batched.shape == (4, 6, 2)
    torch.testing.assert_close(batched.reshape(24, 2), flat)
    scores = log_prob_batched(model, batched, contexts, chunk=5)
    assert scores.shape == (4, 6)
    for m in range(4):
        torch.testing.assert_close(scores[m], model.log_prob(batched[m], contexts[m]).detach())
    with pytest.raises(ValueError, match="context has 2 features, the model was built for 3"):
        sample_batched(model, 2, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"expected \(M, K, \.\.\.\) with M = 4 observations"):
        log_prob_batched(model, batched[:3], contexts)


def test_likelihood_estimation_recovers_a_conjugate_posterior(tmp_path: Path) -> None:
    """NLE: a flow of x given theta, then MALA over theta, against the exact posterior."""
    generator = np.random.default_rng(3)
    noise = 0.5
    theta = generator.normal(size=(6000, 2))
    x = theta + noise * generator.normal(size=(6000, 2))
    torch.manual_seed(0)
    result = pushforward.train_run(
        tmp_path,
        x,
        "nsf",
        context=theta,
        options=SMALL,
        train={"steps": 800},
    )
    observation = torch.tensor([1.0, -0.5])
    prior = GaussianPrior([0.0, 0.0], std=[1.0, 1.0])
    chains = sample_likelihood_posterior(
        result.model, prior, observation, 4000, chains=20, warmup=300, seed=0
    )
    samples = chains.chains.reshape(-1, 2).double()
    shrink = 1.0 / (1.0 + noise**2)
    exact_mean = shrink * observation.double()
    exact_std = math.sqrt(noise**2 * shrink)
    torch.testing.assert_close(samples.mean(0), exact_mean, atol=0.08, rtol=0)
    torch.testing.assert_close(
        samples.std(0), torch.full((2,), exact_std, dtype=torch.float64), atol=0.06, rtol=0
    )
    assert float(chains.r_hat.max()) < 1.1
