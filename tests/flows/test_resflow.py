"""The residual flow ``resflow``: exact and estimated densities, sampling, options.

``resflow`` is registered when :mod:`pushforward.flows.residual` is imported, which
this file does itself.
"""

from __future__ import annotations

import pytest
import torch

import pushforward
from pushforward.flows.residual import EXACT_FEATURES, LogLikelihoodEstimate, ResidualFlow
from tests.contract import grid_integral_2d, randomize_

pytestmark = pytest.mark.usefixtures("one_thread")


def small(features: int = 2, seed: int = 0, scale: float = 0.3, **options) -> ResidualFlow:
    """A small random float64 resflow in evaluation mode, its ActNorms set from data."""
    torch.manual_seed(seed)
    options = {"transforms": 2, "hidden": [16], **options}
    model = pushforward.build("resflow", features=features, **options).double()
    randomize_(model, scale, torch.Generator().manual_seed(seed + 1))
    context = options.get("context", 0)
    c = points(256, context, seed=seed + 3) if context else None
    model.initialize(points(256, features, seed=seed + 2) * 1.5 + 0.5, c)
    assert isinstance(model, ResidualFlow)
    return model.eval()


def points(n: int, features: int = 2, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, features, generator=torch.Generator().manual_seed(seed)).double()


def test_the_exact_density_integrates_to_one_on_a_grid():
    model = small(coefficient=0.97, scale=0.5)
    assert model.estimator.mode == "exact"

    def log_density(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.log_prob(x)

    # Not the base: the blocks moved the mass.
    x = points(500, seed=4)
    standard = -0.5 * x.square().sum(1) - torch.log(torch.tensor(2 * torch.pi)).double()
    assert float((log_density(x) - standard).abs().mean()) > 0.05
    total = grid_integral_2d(log_density, -8.0, 8.0, 200)
    assert abs(total - 1.0) < 0.02


def test_the_estimated_log_likelihood_is_unbiased_with_its_standard_error():
    model = small(scale=0.5)
    x = points(6, seed=5)
    with torch.no_grad():
        exact = model.log_prob(x)
        generator = torch.Generator().manual_seed(6)
        estimate = model.log_prob_estimate(x, draws=400, logdet="estimate", generator=generator)
    assert isinstance(estimate, LogLikelihoodEstimate) and not estimate.exact
    assert estimate.draws.shape == (400, 6)
    assert ((estimate.mean - exact).abs() < 3 * estimate.stderr).all()
    assert (estimate.stderr > 0).all()
    mean, stderr = estimate.mean_over_rows()
    assert abs(mean - float(exact.mean())) < 3 * stderr
    # Seeded draws repeat; exact mode has one draw and no error.
    again = model.log_prob_estimate(
        x, draws=400, logdet="estimate", generator=torch.Generator().manual_seed(6)
    )
    torch.testing.assert_close(again.draws, estimate.draws, atol=0, rtol=0)
    exactly = model.log_prob_estimate(x)
    assert exactly.exact and exactly.draws.shape == (1, 6)
    assert exactly.mean_over_rows()[1] == 0.0 and (exactly.stderr == 0).all()
    with pytest.raises(ValueError, match="option 'draws'"):
        model.log_prob_estimate(x, draws=1, logdet="estimate")


def test_log_prob_options_are_checked_and_draws_average():
    model = small()
    x = points(4)
    with pytest.raises(ValueError, match="option 'logdet'"):
        model.log_prob(x, logdet="brute")
    with pytest.raises(ValueError, match=r"unknown option 'samples'.*valid options: logdet"):
        model.log_prob(x, samples=2)
    one = model.log_prob(x, logdet="estimate", generator=torch.Generator().manual_seed(1))
    many = model.log_prob(
        x, logdet="estimate", draws=50, probes=2, generator=torch.Generator().manual_seed(1)
    )
    exact = model.log_prob(x)
    assert float((many - exact).abs().max()) < float((one - exact).abs().max().detach()) + 0.05


def test_logdet_auto_is_exact_for_small_event_sizes_only():
    torch.manual_seed(0)
    assert pushforward.build("resflow", features=EXACT_FEATURES).estimator.mode == "exact"
    wide = pushforward.build("resflow", features=EXACT_FEATURES + 1, transforms=1, hidden=[8])
    assert wide.estimator.mode == "estimate"
    assert pushforward.build("resflow", features=2, logdet="estimate").estimator.mode == "estimate"


@pytest.mark.parametrize("value", [1.0, 1.2, 0.0])
def test_a_coefficient_of_one_or_more_is_an_error_naming_it(value):
    with pytest.raises(ValueError, match="option 'coefficient'"):
        pushforward.build("resflow", features=2, coefficient=value)


def test_samples_invert_every_block_and_agree_with_log_prob():
    model = small(coefficient=0.97, scale=0.5)
    torch.manual_seed(7)
    samples, log_prob = model.sample_and_log_prob(64)
    torch.testing.assert_close(model.log_prob(samples), log_prob, atol=1e-9, rtol=1e-9)
    torch.manual_seed(7)
    torch.testing.assert_close(model.sample(64), samples, atol=1e-12, rtol=0)
    z = model.base.sample(8)
    with torch.no_grad():
        x, _ = model.transform.inverse(z)
        back, _ = model.transform(x)
    torch.testing.assert_close(back, z, atol=1e-10, rtol=0)


@pytest.mark.parametrize("logdet", ["exact", "estimate"])
def test_training_in_float64_lowers_the_loss(logdet):
    torch.manual_seed(0)
    model = pushforward.build(
        "resflow", features=2, transforms=2, hidden=[16], logdet=logdet
    ).double()
    # A banana: no affine map (the ActNorms alone) fits it.
    x = points(256)
    x = torch.stack([x[:, 0], 0.3 * x[:, 1] + x[:, 0].square() - 1], dim=1)
    model.initialize(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        before = -model.log_prob(x).mean()
    for _ in range(40):
        loss = model.loss(x)
        assert loss.dtype == torch.float64
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = -model.log_prob(x, logdet="exact").mean()
    assert float(after) < float(before) - 0.05


def test_a_conditional_flow_reads_its_context():
    model = small(context=2, scale=0.5)
    x = points(5)
    c = points(5, 2, seed=8)
    with torch.no_grad():
        assert not torch.allclose(model.log_prob(x, c), model.log_prob(x, c.flip(0)))
        samples = model.sample(5, c[0])
    assert samples.shape == (5, 2) and torch.isfinite(samples).all()
