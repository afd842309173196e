from __future__ import annotations

import itertools
import math

import pytest

from pushforward.train import warmup_cosine


def test_warmup_is_linear_and_reaches_one() -> None:
    factors = [warmup_cosine(s, 100, 10) for s in range(10)]
    assert factors == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)


def test_cosine_decay_closed_form_and_end() -> None:
    total, warmup = 110, 10
    for step in (10, 35, 60, 85, 110):
        expected = 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert warmup_cosine(step, total, warmup) == pytest.approx(expected)
    assert warmup_cosine(60, total, warmup) == pytest.approx(0.5)
    assert warmup_cosine(500, total, warmup) == pytest.approx(0.0)


def test_final_factor_and_monotone_decay() -> None:
    factors = [warmup_cosine(s, 50, 0, final=0.1) for s in range(60)]
    assert factors[0] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(factors))
