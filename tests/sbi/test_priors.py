"""Priors: densities against torch.distributions, JSON round trips, errors in the user's words."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pushforward.sbi.priors import (
    BoxUniformPrior,
    GaussianPrior,
    check_theta_in_prior,
    load_prior,
    prior_from_description,
)


def test_box_uniform_density_samples_and_support() -> None:
    prior = BoxUniformPrior([-1.0, 0.0, 2.0], [1.0, 4.0, 2.5])
    generator = torch.Generator().manual_seed(0)
    theta = prior.sample(20_000, generator)
    assert theta.dtype == torch.float64 and theta.shape == (20_000, 3)
    assert bool(prior.contains(theta).all())
    expected = -math.log(2.0 * 4.0 * 0.5)
    torch.testing.assert_close(
        prior.log_prob(theta), torch.full((20_000,), expected, dtype=torch.float64)
    )
    torch.testing.assert_close(
        theta.mean(0), torch.tensor([0.0, 2.0, 2.25], dtype=torch.float64), atol=0.03, rtol=0
    )
    outside = torch.tensor([[1.5, 1.0, 2.2], [0.0, -0.1, 2.2]], dtype=torch.float64)
    assert torch.isneginf(prior.log_prob(outside)).all()
    assert not bool(prior.contains(outside).any())
    # float32 in, float32 out
    assert prior.log_prob(theta[:3].float()).dtype == torch.float32


def test_gaussian_density_matches_torch() -> None:
    cov = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    prior = GaussianPrior([1.0, -1.0], cov=cov)
    reference = torch.distributions.MultivariateNormal(
        torch.tensor([1.0, -1.0], dtype=torch.float64), cov
    )
    theta = prior.sample(50_000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(prior.log_prob(theta[:100]), reference.log_prob(theta[:100]))
    torch.testing.assert_close(torch.cov(theta.T), cov, atol=0.04, rtol=0)
    diagonal = GaussianPrior([0.0, 0.0], std=[1.0, 3.0])
    normal = torch.distributions.Normal(
        torch.zeros(2, dtype=torch.float64), torch.tensor([1.0, 3.0], dtype=torch.float64)
    )
    torch.testing.assert_close(diagonal.log_prob(theta[:10]), normal.log_prob(theta[:10]).sum(-1))
    assert prior.low is None and bool(prior.contains(theta[:5]).all())


@pytest.mark.parametrize(
    "description",
    [
        {"type": "box_uniform", "low": [-1, 0], "high": [1, 3]},
        {"type": "gaussian", "mean": [0, 1], "std": [1, 2]},
        {"type": "gaussian", "mean": [0, 1], "cov": [[1, 0.2], [0.2, 1]]},
    ],
)
def test_json_round_trip(tmp_path: Path, description: dict) -> None:
    path = tmp_path / "prior.json"
    path.write_text(json.dumps(description))
    prior = load_prior(path)
    again = prior_from_description(prior.description())
    theta = prior.sample(7, torch.Generator().manual_seed(2))
    torch.testing.assert_close(prior.log_prob(theta), again.log_prob(theta))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('["box_uniform"]', "must be a JSON object"),
        ('{"type": "beta"}', "has type 'beta'; known types: box_uniform, gaussian"),
        ('{"type": "box_uniform", "low": [0]}', "missing key 'high'"),
        ('{"type": "box_uniform", "low": [0, 0], "high": [1]}', "low has 2 values and high has 1"),
        ('{"type": "box_uniform", "low": [0, 2], "high": [1, 1]}', "dimension 1 has not"),
        ('{"type": "box_uniform", "low": [0], "high": [1], "mean": [0]}', "unknown key 'mean'"),
        ('{"type": "gaussian", "mean": [0, 0]}', "exactly one of 'cov' and 'std'"),
        ('{"type": "gaussian", "mean": [0, 0], "std": [1, -1]}', "2 positive values"),
        ('{"type": "gaussian", "mean": [0, 0], "cov": [[1, 2], [2, 1]]}', "positive definite"),
        ('{"type": "gaussian", "mean": ["a"], "std": [1]}', "'mean' must be a list of numbers"),
    ],
)
def test_bad_prior_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prior.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="prior file") as error:
        load_prior(path)
    assert message in str(error.value)


def test_missing_prior_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"prior file '.*nope\.json' does not exist"):
        load_prior(tmp_path / "nope.json")


def test_theta_checks_name_the_rows() -> None:
    prior = BoxUniformPrior([0.0, 0.0], [1.0, 1.0])
    theta = torch.tensor([[0.5, 0.5], [1.5, 0.5], [0.2, -3.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"2 rows of theta lie outside .* row 1: \[1.5, 0.5\]"):
        check_theta_in_prior(theta, prior)
    with pytest.raises(ValueError, match="the prior has 2 dimensions but theta has 3"):
        check_theta_in_prior(torch.zeros(4, 3, dtype=torch.float64), prior)
    check_theta_in_prior(theta[:1], prior)
