"""The CTMC sampler with the exact denoiser: one step, convergence in steps, the corrector."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pushforward.matching.discrete import (
    CosineKappa,
    ExactDenoiser,
    LinearKappa,
    MaskedSource,
    PolynomialKappa,
    UniformSource,
    ctmc_sample,
    euler_step,
    transition_probabilities,
)
from pushforward.matching.discrete.sampler import categorical, final_step
from tests.matching.discrete.laws import (
    first_k_ones,
    index_of,
    random_table,
    sampler_law,
    total_variation,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCES = [MaskedSource(), UniformSource()]
SOURCE_IDS = ["masked", "uniform"]


def _frequencies(x: torch.Tensor, vocab: int, length: int) -> torch.Tensor:
    counts = torch.bincount(index_of(x, vocab), minlength=vocab**length).double()
    return counts / counts.sum()


def test_one_step_masked_sampler_draws_the_product_of_marginals():
    table = first_k_ones(10)
    # Position i is 1 in the sequences with k > i: with probability (10 - i) / 11.
    ones = torch.tensor([(10 - i) / 11 for i in range(10)], dtype=torch.float64)
    valid = sum(
        float(torch.prod(torch.where(torch.arange(10) < k, ones, 1 - ones))) for k in range(11)
    )
    assert valid == pytest.approx(0.143264, abs=5e-7)
    oracle = ExactDenoiser(table, LinearKappa(), MaskedSource())
    n = 200_000
    x0 = torch.full((n, 10), 2)
    x = ctmc_sample(
        oracle,
        x0,
        LinearKappa(),
        MaskedSource(),
        2,
        steps=1,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
    )
    hit = float(table.reshape(-1)[index_of(x, 2)].isfinite().double().mean())
    assert abs(hit - valid) < 4 * math.sqrt(valid * (1 - valid) / n)
    # Each position on its own has the data's marginal.
    torch.testing.assert_close(x.double().mean(0), ones, atol=0.005, rtol=0)


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
@pytest.mark.parametrize(
    "scheduler",
    [LinearKappa(), CosineKappa(), PolynomialKappa(2.0)],
    ids=["linear", "cosine", "quadratic"],
)
def test_the_samplers_law_converges_to_the_target_as_steps_grow(source, scheduler):
    table = random_table((3, 3, 3), seed=3)
    target = table.exp().reshape(-1)
    oracle = ExactDenoiser(table, scheduler, source)
    distances = [
        total_variation(sampler_law(oracle, scheduler, source, 3, 3, steps), target)
        for steps in (1, 10, 100, 1000)
    ]
    assert distances[0] > 0.05, "one step should be visibly off on a correlated table"
    assert all(a > b for a, b in itertools.pairwise(distances)), distances
    assert distances[-1] < 0.01, distances


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_the_corrector_keeps_the_target(source):
    table = random_table((3, 3, 3), seed=4)
    target = table.exp().reshape(-1)
    oracle = ExactDenoiser(table, LinearKappa(), source)
    plain = total_variation(sampler_law(oracle, LinearKappa(), source, 3, 3, 400), target)
    corrected = total_variation(
        sampler_law(oracle, LinearKappa(), source, 3, 3, 400, eta=1.0), target
    )
    assert corrected < 0.01 and plain < 0.01
    # The corrector changes the path: the law differs from the plain sampler's at few steps.
    few = sampler_law(oracle, LinearKappa(), source, 3, 3, 5)
    few_corrected = sampler_law(oracle, LinearKappa(), source, 3, 3, 5, eta=1.0)
    assert total_variation(few, few_corrected) > 1e-3


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
@pytest.mark.parametrize("eta", [0.0, 2.0])
def test_samples_follow_the_samplers_exact_law(source, eta):
    table = random_table((3, 3), seed=6)
    oracle = ExactDenoiser(table, CosineKappa(), source)
    law = sampler_law(oracle, CosineKappa(), source, 3, 2, 6, eta=eta)
    n = 100_000
    generator = torch.Generator().manual_seed(2)
    x0 = source.sample((n, 2), 3, generator=generator)
    x = ctmc_sample(
        oracle,
        x0,
        CosineKappa(),
        source,
        3,
        steps=6,
        eta=eta,
        dtype=torch.float64,
        generator=generator,
    )
    frequencies = _frequencies(x, 3, 2)
    # Each cell within 5 standard errors of its exact probability.
    error = (law * (1 - law) / n).sqrt()
    assert bool(((frequencies - law).abs() <= 5 * error + 1e-12).all())


def test_the_fast_step_has_the_general_steps_law():
    generator = torch.Generator().manual_seed(3)
    probabilities = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], dtype=torch.float64)
    for source, x_t in (
        (UniformSource(), torch.tensor([1, 2])),
        (MaskedSource(), torch.tensor([3, 3])),
    ):
        n = 100_000
        p = probabilities.expand(n, 2, 3)
        x = x_t.expand(n, 2)
        kappa_t = torch.full((n,), 0.3, dtype=torch.float64)
        kappa_s = torch.full((n,), 0.6, dtype=torch.float64)
        law = transition_probabilities(p[:1], x[:1], kappa_t[:1], kappa_s[:1], 0.1, source, 3)[0]
        moved = euler_step(p, x, kappa_t, kappa_s, 0.1, source, 3, generator=generator)
        states = source.states(3)
        for i in range(2):
            frequencies = torch.bincount(moved[:, i], minlength=states).double() / n
            torch.testing.assert_close(frequencies, law[i], atol=0.006, rtol=0)


def test_transition_probabilities_sum_to_one_even_for_a_large_corrector_step():
    probabilities = torch.softmax(torch.randn(5, 4, 3, dtype=torch.float64), -1)
    for source in SOURCES:
        x_t = source.sample((5, 4), 3)
        kappa_t = torch.full((5,), 0.95, dtype=torch.float64)
        kappa_s = torch.full((5,), 0.99, dtype=torch.float64)
        law = transition_probabilities(
            probabilities, x_t, kappa_t, kappa_s, 0.5, source, 3, eta=50.0
        )
        assert bool((law >= 0).all())
        torch.testing.assert_close(law.sum(-1), torch.ones(5, 4, dtype=torch.float64))


def test_a_masked_paths_final_step_keeps_unmasked_tokens():
    probabilities = torch.full((2, 3, 4), 0.25, dtype=torch.float64)
    x_t = torch.tensor([[1, 4, 4], [4, 3, 0]])
    x = final_step(probabilities, x_t, MaskedSource(), 4)
    assert int(x[0, 0]) == 1 and int(x[1, 1]) == 3 and int(x[1, 2]) == 0
    assert int(x.max()) < 4


def test_categorical_draws_each_row_in_proportion():
    weights = torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    draws = categorical(weights.expand(50_000, 2, 3), torch.Generator().manual_seed(4))
    assert bool((draws[:, 1] == 2).all())
    assert float((draws[:, 0] == 1).double().mean()) == pytest.approx(0.75, abs=0.01)
    assert bool((draws[:, 0] != 2).all())


def test_bad_arguments_are_refused():
    oracle = ExactDenoiser(random_table((2, 2)), LinearKappa(), MaskedSource())
    x0 = torch.full((3, 2), 2)
    with pytest.raises(ValueError, match="steps"):
        ctmc_sample(oracle, x0, LinearKappa(), MaskedSource(), 2, steps=0)
    with pytest.raises(ValueError, match="eta"):
        ctmc_sample(oracle, x0, LinearKappa(), MaskedSource(), 2, eta=-1.0)
