"""Token sample metrics: TV of marginals, pairs and joints against hand counts, bits per token."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pushforward.metrics import discrete
from pushforward.metrics.discrete import (
    bigram_tv,
    bits_per_token,
    joint_tv,
    tv_noise_floor,
    unigram_tv,
)


def tokens(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def naive_tv(a: list[tuple[int, ...]], b: list[tuple[int, ...]]) -> float:
    """TV between the frequencies of two lists of states, by dictionaries."""
    p, q = Counter(a), Counter(b)
    return 0.5 * sum(abs(p[s] / len(a) - q[s] / len(b)) for s in set(p) | set(q))


def test_unigram_tv_by_hand():
    # p = (1/2, 1/2), q = (3/4, 1/4): TV = 1/4.
    assert unigram_tv(tokens([[0], [0], [1], [1]]), tokens([[0], [0], [0], [1]]), 2) == 0.25
    # Position 0 (vocab 2): (1, 0) vs (1/2, 1/2), TV 1/2. Position 1 (vocab 3):
    # (0, 1/2, 1/2) vs (1/2, 0, 1/2), TV 1/2; the mean is 1/2.
    x = tokens([[0, 1], [0, 2]])
    y = tokens([[0, 0], [1, 2]])
    assert unigram_tv(x, y, (2, 3)) == pytest.approx(0.5, abs=1e-15)
    # Different sample sizes: (2/3, 1/3) vs (0, 1), TV 2/3.
    assert unigram_tv(tokens([[0], [0], [1]]), tokens([[1]]), 2) == pytest.approx(2 / 3)


def test_bigram_tv_sees_what_unigrams_cannot():
    x = tokens([[0, 0], [1, 1]])
    y = tokens([[0, 1], [1, 0]])
    assert unigram_tv(x, y, 2) == 0.0
    assert bigram_tv(x, y, 2) == 1.0


def test_bigram_tv_averages_adjacent_pairs_by_hand():
    # Pairs (0, 1): identical {(0,1), (1,0)} in both, TV 0. Pairs (1, 2): x has
    # {(1,2), (0,2)}, y has {(1,2), (0,0)}: TV 1/2. Mean 1/4.
    x = tokens([[0, 1, 2], [1, 0, 2]])
    y = tokens([[0, 1, 2], [1, 0, 0]])
    assert bigram_tv(x, y, (2, 2, 3)) == pytest.approx(0.25, abs=1e-15)


def test_identical_or_reordered_samples_have_zero_tv():
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (300, 4), generator=generator)
    shuffled = x[torch.randperm(300, generator=generator)]
    assert unigram_tv(x, x, 5) == 0.0 and bigram_tv(x, shuffled, 5) == 0.0
    table = torch.bincount(x[:, 0] * 5 + x[:, 1], minlength=25).double().reshape(5, 5) / 300
    assert joint_tv(x[:, :2], table) == pytest.approx(0.0, abs=1e-15)


samples_strategy = st.integers(1, 3).flatmap(
    lambda length: st.tuples(
        st.lists(st.lists(st.integers(0, 2), min_size=length, max_size=length), min_size=1),
        st.lists(st.lists(st.integers(0, 2), min_size=length, max_size=length), min_size=1),
    )
)


@settings(max_examples=80, deadline=None)
@given(samples_strategy)
def test_tv_metrics_match_a_dictionary_count(pair):
    a, b = pair
    x, y = tokens(a), tokens(b)
    length = x.shape[1]
    unigrams = [naive_tv([(r[i],) for r in a], [(r[i],) for r in b]) for i in range(length)]
    assert unigram_tv(x, y, 3) == pytest.approx(sum(unigrams) / length, abs=1e-12)
    assert unigram_tv(x, y, 3) == pytest.approx(unigram_tv(y, x, 3), abs=1e-12)
    assert 0.0 <= unigram_tv(x, y, 3) <= 1.0 + 1e-12
    if length > 1:
        pairs = [
            naive_tv([tuple(r[i : i + 2]) for r in a], [tuple(r[i : i + 2]) for r in b])
            for i in range(length - 1)
        ]
        assert bigram_tv(x, y, 3) == pytest.approx(sum(pairs) / (length - 1), abs=1e-12)


def test_sparse_counting_agrees_with_dense(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(0, 7, (500, 5), generator=generator)
    y = torch.randint(0, 7, (400, 5), generator=generator) // 2
    dense = (unigram_tv(x, y, 7), bigram_tv(x, y, 7))
    monkeypatch.setattr(discrete, "_DENSE_STATES", 1)
    sparse = (unigram_tv(x, y, 7), bigram_tv(x, y, 7))
    assert sparse == pytest.approx(dense, abs=1e-14)
    assert dense[0] > 0.1


def test_joint_tv_by_hand():
    table = torch.tensor([[0.5, 0.0], [0.0, 0.5]], dtype=torch.float64)
    # Frequencies (1, 0, 0, 0): TV = (1/2 + 1/2) / 2.
    assert joint_tv(tokens([[0, 0], [0, 0]]), table) == pytest.approx(0.5)
    assert joint_tv(tokens([[0, 0], [1, 1]]), table) == pytest.approx(0.0, abs=1e-15)
    # Frequencies (0, 1/2, 1/2, 0) have no mass where the table has it.
    assert joint_tv(tokens([[0, 1], [1, 0]]), table) == pytest.approx(1.0)
    # Row-major layout: token 0 indexes the first axis of the table.
    skew = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    assert joint_tv(tokens([[0, 1]]), skew) == 0.0
    assert joint_tv(tokens([[1, 0]]), skew) == 1.0


def test_tv_noise_floor_matches_its_normal_approximation_and_shrinks():
    table = torch.full((2, 2), 0.25, dtype=torch.float64)
    n = 10_000
    # E|p_hat - p| -> sqrt(2 p (1 - p) / (pi n)) for each of the 4 states.
    expected = 0.5 * 4 * math.sqrt(2 * 0.25 * 0.75 / (math.pi * n))
    assert tv_noise_floor(table, n, draws=2000) == pytest.approx(expected, rel=0.05)
    floors = [tv_noise_floor(table, size, draws=50) for size in (100, 1_000, 10_000)]
    assert floors[0] > floors[1] > floors[2]
    assert tv_noise_floor(table, 500, seed=3) == tv_noise_floor(table, 500, seed=3)


def test_bits_per_token():
    assert bits_per_token(math.log(2) * 7, 7) == pytest.approx(1.0, abs=1e-15)
    nll = torch.tensor([math.log(2) * 3, math.log(4) * 3], dtype=torch.float64)
    result = bits_per_token(nll, 3)
    assert isinstance(result, torch.Tensor)
    assert torch.allclose(result, torch.tensor([1.0, 2.0], dtype=torch.float64))
    for length in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="length"):
            bits_per_token(1.0, length)


def test_bad_inputs_are_errors():
    x = tokens([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="length 2 but the reference has length 3"):
        unigram_tv(x, tokens([[0, 0, 0]]), 2)
    with pytest.raises(ValueError, match="vocab has 3 sizes"):
        unigram_tv(x, x, (2, 2, 2))
    with pytest.raises(ValueError, match=r"reference has token 2 at row 0, position 1"):
        bigram_tv(x, tokens([[0, 2]]), 2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        unigram_tv(tokens([[-1, 0]]), x, 2)
    with pytest.raises(ValueError, match="length at least 2"):
        bigram_tv(tokens([[0], [1]]), tokens([[0]]), 2)
    with pytest.raises(TypeError, match="integer tokens"):
        unigram_tv(x.double(), x, 2)
    with pytest.raises(TypeError, match="tensor"):
        unigram_tv([[0, 1]], x, 2)
    with pytest.raises(ValueError, match="shape"):
        unigram_tv(torch.zeros(4, dtype=torch.long), x, 2)
    with pytest.raises(ValueError, match="no sequences"):
        unigram_tv(torch.zeros(0, 2, dtype=torch.long), x, 2)
    with pytest.raises(ValueError, match="positive integers"):
        unigram_tv(x, x, 0)
    table = torch.full((2, 2), 0.25, dtype=torch.float64)
    with pytest.raises(ValueError, match="length 3 but the table has 2 dimensions"):
        joint_tv(tokens([[0, 0, 0]]), table)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        joint_tv(tokens([[0, 2]]), table)
    with pytest.raises(ValueError, match="sum to 1"):
        joint_tv(x, 2 * table)
    with pytest.raises(ValueError, match="non-negative"):
        joint_tv(x, torch.tensor([[1.5, -0.5], [0.0, 0.0]], dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        joint_tv(x, torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        tv_noise_floor(table, 0)
