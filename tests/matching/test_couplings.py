"""Couplings: exact OT against brute force, permutations, conditional groups, Sinkhorn limits."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch

from pushforward.matching.couplings import (
    COUPLINGS,
    IndependentCoupling,
    OTCoupling,
    SinkhornCoupling,
    independent_coupling,
    make_coupling,
    minibatch_ot_coupling,
    sinkhorn_coupling,
)
from pushforward.matching.optimal_transport import ot_assignment, sinkhorn_plan
from pushforward.paired import PairedBatch


def _cost(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """Mean squared distance between paired rows, by explicit differences."""
    return (x0 - x1).reshape(x0.shape[0], -1).square().sum(dim=1).mean().item()


def _source_rows(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """For each row of ``new``, the index of the identical row of ``old`` (rows distinct)."""
    flat_new, flat_old = new.reshape(new.shape[0], -1), old.reshape(old.shape[0], -1)
    equal = (flat_new[:, None, :] == flat_old[None, :, :]).all(dim=2)
    assert (equal.sum(dim=1) == 1).all(), "a coupled source row is not a row of x0"
    return equal.int().argmax(dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("event", [(3,), (1, 2, 2)], ids=str)
def test_ot_assignment_is_optimal_by_brute_force(seed: int, event: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.randn((6, *event), generator=generator, dtype=torch.float64)
    x1 = torch.randn((6, *event), generator=generator, dtype=torch.float64) + 0.5
    perm = ot_assignment(x0, x1)
    assert perm.dtype == torch.long
    assert sorted(perm.tolist()) == list(range(6))
    best = min(_cost(x0[list(p)], x1) for p in itertools.permutations(range(6)))
    assert _cost(x0[perm], x1) == pytest.approx(best, rel=1e-12)


def test_ot_assignment_float32_and_trivial_sizes() -> None:
    x0, x1 = torch.randn(6, 2), torch.randn(6, 2)
    best = min(_cost(x0.double()[list(p)], x1.double()) for p in itertools.permutations(range(6)))
    assert _cost(x0.double()[ot_assignment(x0, x1)], x1.double()) == pytest.approx(best, rel=1e-6)
    assert ot_assignment(x0[:1], x1[:1]).tolist() == [0]
    assert ot_assignment(x0[:0], x1[:0]).numel() == 0


def test_ot_assignment_recovers_a_shuffle() -> None:
    # Data that is a small perturbation of a shuffled source: OT undoes the shuffle.
    x0 = torch.randn(40, 5, dtype=torch.float64) * 10
    shuffle = torch.randperm(40)
    x1 = x0[shuffle] + 1e-3 * torch.randn(40, 5, dtype=torch.float64)
    assert torch.equal(ot_assignment(x0, x1), shuffle)


def test_minibatch_ot_is_a_permutation_and_lowers_the_cost() -> None:
    x0 = torch.randn(64, 2, dtype=torch.float64)
    x1 = torch.randn(64, 2, dtype=torch.float64) * 0.5 + torch.tensor([3.0, 0.0])
    context = torch.randn(64, 3)
    pairs = minibatch_ot_coupling(x0, x1)
    rows = _source_rows(pairs.x0, x0)
    assert sorted(rows.tolist()) == list(range(64))
    assert pairs.x1 is x1 and pairs.context is None
    assert _cost(pairs.x0, x1) < 0.9 * _cost(x0, x1)
    # A distinct continuous context per row leaves nothing to re-pair: independent.
    conditional = minibatch_ot_coupling(x0, x1, context)
    assert torch.equal(conditional.x0, x0)
    assert conditional.context is context


@pytest.mark.parametrize("coupling", [minibatch_ot_coupling, sinkhorn_coupling])
@pytest.mark.parametrize("labels_as", ["rows", "vector"])
def test_conditional_coupling_never_pairs_across_contexts(
    coupling: Callable[..., PairedBatch], labels_as: str
) -> None:
    n = 48
    labels = torch.randint(0, 3, (n,))
    context = labels if labels_as == "vector" else torch.stack([labels, 2 * labels], 1).double()
    x0 = torch.randn(n, 2, dtype=torch.float64)
    x1 = torch.randn(n, 2, dtype=torch.float64) + labels[:, None].double()
    pairs = coupling(x0, x1, context)
    rows = _source_rows(pairs.x0, x0)
    assert torch.equal(labels[rows], labels)
    assert pairs.x1 is x1 and pairs.context is context
    if coupling is minibatch_ot_coupling:
        for label in range(3):
            group = (labels == label).nonzero().squeeze(1)
            best = _cost(x0[group][ot_assignment(x0[group], x1[group])], x1[group])
            assert _cost(pairs.x0[group], x1[group]) == pytest.approx(best, rel=1e-12)


def test_single_context_row_is_shared_by_all() -> None:
    x0, x1 = torch.randn(10, 2), torch.randn(10, 2)
    pairs = minibatch_ot_coupling(x0, x1, torch.ones(1, 4))
    assert torch.equal(pairs.x0, x0[ot_assignment(x0, x1)])


def _matrix_scaling_sinkhorn(cost: np.ndarray, reg: float, rounds: int) -> np.ndarray:
    """Cuturi's original Sinkhorn (kernel space, not log domain), as an independent reference."""
    n, m = cost.shape
    kernel = np.exp(-cost / reg)
    u, v = np.ones(n), np.ones(m)
    for _ in range(rounds):
        u = (1 / n) / (kernel @ v)
        v = (1 / m) / (kernel.T @ u)
    return u[:, None] * kernel * v[None, :]


@pytest.mark.parametrize("epsilon", [0.05, 0.3])
def test_sinkhorn_plan_matches_matrix_scaling(epsilon: float) -> None:
    x0 = torch.randn(12, 3, dtype=torch.float64)
    x1 = torch.randn(9, 3, dtype=torch.float64) + 1
    cost = ((x0[:, None, :] - x1[None, :, :]) ** 2).sum(dim=2).numpy()
    plan = sinkhorn_plan(x0, x1, epsilon=epsilon, iterations=500)
    reference = _matrix_scaling_sinkhorn(cost, epsilon * cost.mean(), 2000)
    np.testing.assert_allclose(plan.numpy(), reference, atol=1e-12, rtol=1e-8)
    torch.testing.assert_close(plan.sum(dim=0), torch.full((9,), 1 / 9, dtype=torch.float64))
    torch.testing.assert_close(plan.sum(dim=1), torch.full((12,), 1 / 12, dtype=torch.float64))


def test_sinkhorn_limits() -> None:
    x0 = torch.randn(32, 2, dtype=torch.float64)
    x1 = torch.randn(32, 2, dtype=torch.float64) + torch.tensor([2.0, 0.0])
    cost = torch.cdist(x0, x1).square()
    exact = _cost(x0[ot_assignment(x0, x1)], x1)
    independent = cost.mean().item()
    # Small epsilon: the plan's cost approaches exact OT (more iterations are needed
    # as epsilon shrinks). Pairs drawn column by column have the plan's cost on average.
    sharp = sinkhorn_plan(x0, x1, epsilon=0.01, iterations=400)
    plan_cost = (sharp * cost).sum().item()
    assert plan_cost == pytest.approx(exact, rel=0.01)
    generator = torch.Generator().manual_seed(0)
    sharp_draws = [
        _cost(sinkhorn_coupling(x0, x1, epsilon=0.01, iterations=400, generator=generator).x0, x1)
        for _ in range(20)
    ]
    assert sum(sharp_draws) / len(sharp_draws) == pytest.approx(plan_cost, rel=0.02)
    assert max(sharp_draws) < 0.7 * independent
    # A huge epsilon gives the uniform (independent) plan.
    flat = sinkhorn_plan(x0, x1, epsilon=1e4, iterations=10)
    torch.testing.assert_close(
        flat * 32 * 32, torch.ones(32, 32, dtype=torch.float64), atol=1e-3, rtol=0
    )
    draws = [
        _cost(sinkhorn_coupling(x0, x1, epsilon=1e4, iterations=5, generator=generator).x0, x1)
        for _ in range(50)
    ]
    assert sum(draws) / len(draws) == pytest.approx(independent, rel=0.05)


def test_sinkhorn_is_reproducible_with_a_generator() -> None:
    x0, x1 = torch.randn(16, 2), torch.randn(16, 2)
    a = sinkhorn_coupling(x0, x1, generator=torch.Generator().manual_seed(3))
    b = sinkhorn_coupling(x0, x1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.x0, b.x0)
    assert a.x0.dtype == torch.float32


@pytest.mark.parametrize("name", list(COUPLINGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_coupling_on_images(name: str, dtype: torch.dtype) -> None:
    x0 = torch.randn(8, 1, 4, 4, dtype=dtype)
    x1 = torch.randn(8, 1, 4, 4, dtype=dtype)
    context = torch.randint(0, 2, (8, 1))
    for ctx in (None, context):
        pairs = make_coupling(name)(x0, x1, ctx)
        assert pairs.x0.shape == x0.shape and pairs.x0.dtype == dtype
        assert pairs.x1 is x1 and pairs.context is ctx
        rows = _source_rows(pairs.x0, x0)
        if name != "sinkhorn":
            assert sorted(rows.tolist()) == list(range(8))
        if ctx is not None:
            assert torch.equal(context[rows], context)
    if name == "ot":
        pairs = make_coupling(name)(x0, x1)
        flat = ot_assignment(x0.reshape(8, -1), x1.reshape(8, -1))
        assert torch.equal(pairs.x0, x0[flat])


def test_make_coupling_and_errors() -> None:
    assert isinstance(make_coupling("independent"), IndependentCoupling)
    with pytest.raises(ValueError, match=r"unknown coupling 'sinkorn'.*did you mean 'sinkhorn'"):
        make_coupling("sinkorn")
    with pytest.raises(ValueError, match="valid couplings: independent, ot, sinkhorn"):
        make_coupling("exact")
    with pytest.raises(ValueError, match=r"unknown option 'eps'.*did you mean 'epsilon'"):
        make_coupling("sinkhorn", eps=0.1)
    with pytest.raises(ValueError, match="takes no options"):
        make_coupling("ot", epsilon=0.1)
    x0, x1 = torch.randn(6, 2), torch.randn(6, 2)
    bound = make_coupling("sinkhorn", epsilon=1e-3, iterations=200)
    assert torch.equal(bound(x0, x1).x0, x0[ot_assignment(x0, x1)])
    with pytest.raises(ValueError, match=r"x0 has shape \(6, 2\) but data x1 has shape \(5, 2\)"):
        minibatch_ot_coupling(x0, x1[:5])
    with pytest.raises(ValueError, match=r"context has shape \(4, 1\)"):
        independent_coupling(x0, x1, torch.zeros(4, 1))
    with pytest.raises(ValueError, match="'epsilon' must be a positive number"):
        sinkhorn_coupling(x0, x1, epsilon=0.0)
    with pytest.raises(ValueError, match="NaN"):
        ot_assignment(x0, torch.full_like(x1, float("nan")))


@pytest.mark.parametrize("features", [2, 16])
def test_ot_assignment_matches_scipy_on_the_plain_cost(features: int) -> None:
    # The row and column reduction must not change the optimum: against scipy on the
    # unreduced float64 cost of a full-size batch.
    from scipy.optimize import linear_sum_assignment

    generator = torch.Generator().manual_seed(features)
    x0 = torch.randn(256, features, generator=generator)
    x1 = 3.0 * torch.rand(256, features, generator=generator) - 1.0
    cost = torch.cdist(x1.double(), x0.double()).square().numpy()
    rows, columns = linear_sum_assignment(cost)
    best = float(cost[rows, columns].sum())
    perm = ot_assignment(x0, x1)
    ours = float(((x0.double()[perm] - x1.double()) ** 2).sum())
    assert ours == pytest.approx(best, rel=1e-6)
    assert sorted(perm.tolist()) == list(range(256))


def test_coupling_objects_are_the_functions_and_rebuild_by_name() -> None:
    generator = torch.Generator().manual_seed(4)
    x0 = torch.randn(12, 3, generator=generator, requires_grad=True)
    x1 = torch.randn(12, 3, generator=generator)
    context = torch.randint(0, 3, (12, 1), generator=generator)
    expected = {
        "independent": independent_coupling(x0, x1, context),
        "ot": minibatch_ot_coupling(x0, x1, context),
        "sinkhorn": sinkhorn_coupling(
            x0, x1, context, epsilon=0.2, generator=torch.Generator().manual_seed(9)
        ),
    }
    objects = {
        "independent": IndependentCoupling(),
        "ot": OTCoupling(),
        "sinkhorn": SinkhornCoupling(epsilon=0.2),
    }
    for name, coupling in objects.items():
        pairs = coupling(x0, x1, context, torch.Generator().manual_seed(9))
        assert torch.equal(pairs.x0, expected[name].x0)
        assert pairs.x1 is x1 and pairs.context is context
        # Pairing is computed without gradients, whatever the inputs track.
        assert not pairs.x0.requires_grad or name == "independent"
        assert coupling.costs_something == (name != "independent")
        rebuilt = make_coupling(coupling.name, **coupling.options())
        assert rebuilt == coupling and hash(rebuilt) == hash(coupling)
        assert type(rebuilt) is COUPLINGS[name]
    assert SinkhornCoupling(epsilon=0.2) != SinkhornCoupling()
    assert repr(SinkhornCoupling()) == "SinkhornCoupling(epsilon=0.05, iterations=100)"
    with pytest.raises(ValueError, match="'iterations' must be an integer >= 1"):
        SinkhornCoupling(iterations=0)
