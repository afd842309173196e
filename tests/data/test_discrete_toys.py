"""Built-in discrete sets: exact tables against closed forms, samplers against the tables."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pushforward.data.discrete_toys import (
    DISCRETE_TOYS,
    EightGaussiansGrid,
    FirstKOnes,
    MarkovChain,
    get_discrete_toy,
)
from pushforward.data.toys import get_toy

NAMES = sorted(DISCRETE_TOYS)


def test_the_three_sets_are_built_in():
    assert NAMES == ["8gaussians-grid", "first-k-ones", "markov-chain"]
    assert get_discrete_toy("first-k-ones").vocab == (2,) * 10
    assert get_discrete_toy("8gaussians-grid").vocab == (64, 64)
    assert get_discrete_toy("markov-chain").vocab == (4,) * 6


@pytest.mark.parametrize("name", NAMES)
def test_table_is_a_normalised_float64_law(name):
    toy = get_discrete_toy(name)
    table = toy.log_probs()
    assert table.dtype == torch.float64
    assert tuple(table.shape) == toy.vocab
    assert toy.length == len(toy.vocab) == table.dim()
    assert abs(float(table.exp().sum()) - 1.0) < 1e-12
    assert not bool(torch.isnan(table).any()) and not bool((table == math.inf).any())


@pytest.mark.parametrize("name", NAMES)
def test_log_probs_returns_a_copy_of_the_cache(name):
    toy = get_discrete_toy(name)
    table = toy.log_probs()
    table.zero_()
    assert abs(float(toy.log_probs().exp().sum()) - 1.0) < 1e-12


def _empirical_tv(samples: torch.Tensor, table: torch.Tensor) -> tuple[float, float]:
    """TV of the sample frequencies to ``exp(table)`` and its bound on the mean.

    E|p_hat - p| <= sqrt(p (1 - p) / n), and TV moves by at most 1/n when one sample
    changes, so it exceeds its mean by t with probability at most exp(-2 n t^2).
    """
    n = samples.shape[0]
    probabilities = table.exp().reshape(-1)
    index = torch.zeros(n, dtype=torch.long)
    for position, size in enumerate(table.shape):
        index = index * size + samples[:, position]
    frequency = torch.bincount(index, minlength=probabilities.numel()).double() / n
    tv = 0.5 * float((frequency - probabilities).abs().sum())
    bound = 0.5 * float((probabilities * (1 - probabilities) / n).sqrt().sum())
    return tv, bound


@pytest.mark.parametrize("name", NAMES)
def test_sample_is_reproducible_and_follows_the_table(name):
    toy = get_discrete_toy(name)
    samples = toy.sample(100_000, seed=3)
    assert samples.dtype == torch.int64 and samples.shape == (100_000, toy.length)
    assert torch.equal(samples, toy.sample(100_000, seed=3))
    assert not torch.equal(samples[:100], toy.sample(100, seed=4))
    tv, bound = _empirical_tv(samples, toy.log_probs())
    assert tv < bound + 0.01  # a deviation of 0.01 has probability below exp(-20)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_indexes_the_table(name):
    toy = get_discrete_toy(name)
    table = toy.log_probs()
    generator = torch.Generator().manual_seed(0)
    x = torch.stack([torch.randint(0, v, (200,), generator=generator) for v in toy.vocab], 1)
    expected = torch.tensor([float(table[tuple(row)]) for row in x.tolist()], dtype=torch.float64)
    log_prob = toy.log_prob(x)
    assert log_prob.dtype == torch.float64 and log_prob.shape == (200,)
    assert torch.equal(log_prob, expected)
    assert bool(torch.isfinite(toy.log_prob(toy.sample(500, seed=1))).all())


@pytest.mark.parametrize("name", NAMES)
def test_sample_of_zero_and_bad_sizes(name):
    toy = get_discrete_toy(name)
    assert toy.sample(0).shape == (0, toy.length)
    for n in (-1, 2.5, True):
        with pytest.raises(ValueError, match="non-negative integer"):
            toy.sample(n)


def test_log_prob_rejects_bad_tokens():
    toy = get_discrete_toy("first-k-ones")
    with pytest.raises(ValueError, match=r"shape \(n, 10\)"):
        toy.log_prob(torch.zeros(3, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(n, 10\)"):
        toy.log_prob(torch.zeros(10, dtype=torch.long))
    bad = torch.zeros(4, 10, dtype=torch.long)
    bad[2, 5] = 2
    with pytest.raises(ValueError, match=r"token 2 at row 2, position 5 .*\[0, 2\)"):
        toy.log_prob(bad)
    bad[2, 5] = -1
    with pytest.raises(ValueError, match="outside the vocabulary"):
        toy.log_prob(bad)
    with pytest.raises(TypeError, match="integer"):
        toy.log_prob(torch.zeros(4, 10))
    with pytest.raises(TypeError, match="tensor"):
        toy.log_prob([[0] * 10])


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'first-k-ones'"):
        get_discrete_toy("first-k-one")
    with pytest.raises(ValueError, match="valid sets: 8gaussians-grid, first-k-ones"):
        get_discrete_toy("nothing-like-it")


def test_first_k_ones_support_and_entropy():
    toy = FirstKOnes()
    assert abs(toy.entropy() - math.log(11)) < 1e-12
    valid = {tuple([1] * k + [0] * (10 - k)) for k in range(11)}
    samples = toy.sample(20_000, seed=5)
    seen = {tuple(row) for row in samples.tolist()}
    assert seen == valid
    counts = torch.bincount(samples.sum(dim=1), minlength=11).double() / 20_000
    assert float((counts - 1 / 11).abs().max()) < 0.01  # sd of each count is 0.002
    assert int(torch.isfinite(toy.log_probs()).sum()) == 11


def _axis_probabilities_by_erf(centres: list[float]) -> list[float]:
    """Marginal cell probabilities along one axis, written with math.erf."""

    def cdf(z: float) -> float:
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    edges = [-3 + 6 * j / 64 for j in range(65)]
    result = []
    for j in range(64):
        total = 0.0
        for c in centres:
            high = 1.0 if j == 63 else cdf((edges[j + 1] - c) / 0.2)
            low = 0.0 if j == 0 else cdf((edges[j] - c) / 0.2)
            total += (high - low) / 8
        result.append(total)
    return result


def test_gaussian_grid_marginal_matches_a_direct_1d_computation():
    table = EightGaussiansGrid().log_probs().exp()
    first = [2 * math.cos(2 * math.pi * k / 8) for k in range(8)]
    second = [2 * math.sin(2 * math.pi * k / 8) for k in range(8)]
    expected_first = torch.tensor(_axis_probabilities_by_erf(first), dtype=torch.float64)
    expected_second = torch.tensor(_axis_probabilities_by_erf(second), dtype=torch.float64)
    assert torch.allclose(table.sum(dim=1), expected_first, rtol=0, atol=1e-13)
    assert torch.allclose(table.sum(dim=0), expected_second, rtol=0, atol=1e-13)


def test_gaussian_grid_is_symmetric_and_peaks_at_the_centres():
    toy = EightGaussiansGrid()
    table = toy.log_probs().exp()
    assert torch.allclose(table, table.T, rtol=0, atol=1e-15)
    assert torch.allclose(table, table.flip(0), rtol=0, atol=1e-15)
    width = 6 / 64
    centre_cells = [
        (math.floor((x + 3) / width), math.floor((y + 3) / width))
        for x, y in toy.centres().tolist()
    ]
    peak = float(table.max())
    # A cell at a centre holds about width^2 / (2 pi sd^2 * 8) of the mass: ~0.0044.
    assert 0.0035 < peak < 0.0045
    for i, j in centre_cells:
        assert float(table[i, j]) > 0.5 * peak
    i, j = divmod(int(table.argmax()), 64)
    assert min(max(abs(i - a), abs(j - b)) for a, b in centre_cells) <= 1
    assert float(table[0, 0]) < 1e-20 and float(table[32, 32]) < 1e-20


def test_gaussian_grid_is_the_quantised_continuous_toy():
    points = get_toy("8gaussians").sample(100_000, seed=7)
    cells = ((points + 3) / (6 / 64)).floor().long().clamp(0, 63)
    tv, bound = _empirical_tv(cells, EightGaussiansGrid().log_probs())
    assert tv < bound + 0.01


def test_gaussian_grid_entropy_is_near_the_continuous_one_plus_the_cell_size():
    # H_discrete ~ h - log(cell area) for cells much smaller than the sd.
    continuous = math.log(8) + 1 + math.log(2 * math.pi * 0.2**2)
    assert abs(EightGaussiansGrid().entropy() - (continuous - 2 * math.log(6 / 64))) < 0.05


def test_markov_chain_is_stationary_and_not_uniform():
    chain = MarkovChain()
    transition, stationary = chain.transition(), chain.stationary()
    assert torch.allclose(transition.sum(dim=1), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(stationary @ transition, stationary, rtol=0, atol=1e-14)
    assert abs(float(stationary.sum()) - 1) < 1e-14 and bool((stationary > 0).all())
    assert float(stationary.max() - stationary.min()) > 0.1
    assert float(transition.max()) >= 0.5


def test_markov_chain_marginals_are_all_the_stationary_law():
    chain = MarkovChain()
    table = chain.log_probs().exp()
    stationary, transition = chain.stationary(), chain.transition()
    for position in range(6):
        others = [d for d in range(6) if d != position]
        assert torch.allclose(table.sum(dim=others), stationary, rtol=0, atol=1e-14)
    for position in range(5):
        others = [d for d in range(6) if d not in (position, position + 1)]
        pair = stationary[:, None] * transition
        assert torch.allclose(table.sum(dim=others), pair, rtol=0, atol=1e-14)


def test_markov_chain_entropy_is_the_chain_rule():
    chain = MarkovChain()
    stationary, transition = chain.stationary(), chain.transition()
    rate = -float((stationary[:, None] * transition * transition.log()).sum())
    expected = -float((stationary * stationary.log()).sum()) + 5 * rate
    assert abs(chain.entropy() - expected) < 1e-12


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=6, max_size=6))
def test_markov_chain_table_factorises(sequence):
    chain = MarkovChain()
    pi = chain.stationary().tolist()
    transition = chain.transition().tolist()
    expected = math.log(pi[sequence[0]])
    for a, b in itertools.pairwise(sequence):
        expected += math.log(transition[a][b])
    got = float(chain.log_prob(torch.tensor([sequence])))
    assert abs(got - expected) < 1e-12
