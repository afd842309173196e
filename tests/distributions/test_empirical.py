"""The empirical source: uniform draws of stored rows, no density, and flows that transport it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from scipy import stats

import pushforward
from pushforward.distributions import Empirical
from pushforward.matching import FlowMatching
from pushforward.transforms import Preprocessing, Standardize
from tests.contract import randomize_

ROWS = torch.tensor(
    [[0.0, 1.0], [2.0, -1.0], [-3.0, 0.5], [4.0, 4.0], [1.5, -2.5]], dtype=torch.float64
)


def _row_index(samples: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """For each sample the index of the stored row it equals exactly (-1 for none)."""
    equal = (samples[:, None, :] == rows[None, :, :]).all(dim=2)
    index = equal.to(torch.int64).argmax(dim=1)
    return torch.where(equal.any(dim=1), index, torch.full_like(index, -1))


# -- the distribution -------------------------------------------------------------


def test_draws_only_stored_rows_uniformly() -> None:
    source = Empirical(ROWS)
    samples = source.sample(20_000, torch.Generator().manual_seed(3))
    index = _row_index(samples, ROWS)
    assert bool((index >= 0).all()), "a draw is not one of the stored rows"
    counts = torch.bincount(index, minlength=ROWS.shape[0]).numpy()
    # Uniform: each row has probability 1/5; chi-square with 4 degrees of freedom.
    assert stats.chisquare(counts).pvalue > 1e-3
    assert counts.min() > 0.9 * 20_000 / 5


def test_a_row_drawn_more_often_is_not_uniform() -> None:
    # The frequency check above can fail: rows repeated in the buffer are drawn more often.
    source = Empirical(torch.cat([ROWS, ROWS[:1].expand(5, 2)]))
    samples = source.sample(10_000, torch.Generator().manual_seed(3))
    counts = torch.bincount(_row_index(samples, ROWS), minlength=5).numpy()
    assert stats.chisquare(counts).pvalue < 1e-6
    assert abs(counts[0] / 10_000 - 6 / 10) < 0.03


def test_generator_makes_draws_reproducible_and_dtype_follows_the_rows() -> None:
    source = Empirical(ROWS.float())
    a = source.sample(50, torch.Generator().manual_seed(7))
    b = source.sample(50, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert source.double().sample(4).dtype == torch.float64
    assert source.event_shape == (2,) and source.count == 5
    assert not source.rsample(3).requires_grad


def test_log_prob_raises() -> None:
    with pytest.raises(NotImplementedError, match="no density"):
        Empirical(ROWS).log_prob(ROWS)
    assert Empirical.has_density is False


def test_zeros_are_filled_by_assign_rows_and_by_state_dict() -> None:
    placeholder = Empirical.zeros(5, (2,), dtype=torch.float64)
    assert torch.equal(placeholder.rows, torch.zeros(5, 2, dtype=torch.float64))
    placeholder.assign_rows(ROWS)
    assert torch.equal(placeholder.rows, ROWS)
    loaded = Empirical.zeros(5, (2,), dtype=torch.float64)
    loaded.load_state_dict(Empirical(ROWS).state_dict())
    assert torch.equal(loaded.rows, ROWS)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Empirical(torch.zeros(0, 2)), "at least one row"),
        (lambda: Empirical(torch.zeros(3)), "shape"),
        (lambda: Empirical(torch.tensor([[0.0, float("nan")]])), "NaN"),
        (lambda: Empirical(torch.zeros(3, 2, dtype=torch.int64)), "floating"),
        (lambda: Empirical.zeros(0, (2,)), "at least one row"),
        (lambda: Empirical.zeros(5, (2,)).assign_rows(torch.zeros(4, 2)), "5 rows"),
    ],
)
def test_bad_rows_are_refused(make, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        make()


# -- flow matching from an empirical source ---------------------------------------


def make_transport(rows: torch.Tensor = ROWS) -> FlowMatching:
    torch.manual_seed(0)
    model = pushforward.build(
        "fm",
        features=2,
        hidden=[16],
        time_embedding=8,
        base="empirical",
        source_rows=rows.shape[0],
    ).double()
    randomize_(model, 0.2, torch.Generator().manual_seed(1))
    assert isinstance(model, FlowMatching) and isinstance(model.base, Empirical)
    model.base.assign_rows(rows)
    return model


def test_a_flow_from_an_empirical_source_has_no_log_prob() -> None:
    model = make_transport()
    assert model.has_log_prob is False and FlowMatching.has_log_prob is True
    for call in (lambda: model.log_prob(ROWS), lambda: model.sample_and_log_prob(3)):
        with pytest.raises(NotImplementedError, match="empirical source"):
            call()
    wrapped = model.set_preprocessing(
        Preprocessing(Standardize(torch.zeros(2).double(), torch.ones(2).double()))
    )
    assert wrapped.has_log_prob is False
    with pytest.raises(NotImplementedError, match="empirical source"):
        wrapped.log_prob(ROWS)


def test_samples_are_the_transported_stored_rows() -> None:
    model = make_transport()
    torch.manual_seed(5)
    samples = model.sample(40, solver="rk4", steps=6)
    with torch.no_grad():
        images = model.transport(ROWS, solver="rk4", steps=6)
    distances = (samples[:, None, :] - images[None, :, :]).norm(dim=2)
    assert float(distances.min(dim=1).values.max()) < 1e-12
    # transport is the ODE solve from the given points.
    expected = model.solve(ROWS, solver="rk4", steps=6).state
    torch.testing.assert_close(model.transport(ROWS, solver="rk4", steps=6), expected)


def test_ot_coupling_prepares_pairs_of_stored_rows() -> None:
    model = make_transport()
    data = torch.randn(64, 2, dtype=torch.float64)
    pairs = model.prepare_batch(data, None, seed=11)
    assert pairs is not None and model.coupling.name == "ot"
    assert bool((_row_index(pairs.x0, ROWS) >= 0).all())
    # The exact assignment pairs a permutation of the batch's data rows.
    assert torch.equal(pairs.x1.sort(dim=0).values, data.sort(dim=0).values)
    assert torch.isfinite(model.loss(data, prepared=pairs))


def test_builder_options_are_checked() -> None:
    with pytest.raises(ValueError, match="needs source_rows"):
        pushforward.build("fm", features=2, base="empirical")
    with pytest.raises(ValueError, match="applies to base 'empirical'"):
        pushforward.build("fm", features=2, source_rows=4)


def test_standardized_transport_and_save_load(tmp_path: Path) -> None:
    model = make_transport()
    mean, std = torch.tensor([1.0, -2.0]).double(), torch.tensor([0.5, 3.0]).double()
    source_mean = torch.tensor([10.0, 20.0]).double()
    source_std = torch.tensor([2.0, 4.0]).double()
    x0 = torch.randn(9, 2, dtype=torch.float64) * source_std + source_mean
    inner = model.transport((x0 - source_mean) / source_std, solver="rk4", steps=6)
    expected = mean + std * inner
    wrapped = model.set_preprocessing(
        Preprocessing(Standardize(mean, std), source=Standardize(source_mean, source_std))
    )
    torch.testing.assert_close(wrapped.transport(x0, solver="rk4", steps=6), expected)

    pushforward.save(wrapped, tmp_path / "run")
    loaded = pushforward.load(tmp_path / "run")
    assert isinstance(loaded, FlowMatching) and loaded.has_log_prob is False
    standardize = loaded.preprocessing.source
    assert isinstance(standardize, Standardize)
    assert torch.equal(standardize.mean, source_mean)
    assert torch.equal(standardize.std, source_std)
    assert isinstance(loaded.base, Empirical)
    assert torch.equal(loaded.base.rows, ROWS)
    torch.testing.assert_close(loaded.transport(x0, solver="rk4", steps=6), expected)


def test_source_standardization_is_refused_for_a_normalizing_flow() -> None:
    flow = pushforward.build("nsf", features=2, hidden=[8], transforms=1)
    ones, zeros = torch.ones(2), torch.zeros(2)
    with pytest.raises(ValueError, match="source standardisation"):
        flow.set_preprocessing(
            Preprocessing(Standardize(zeros, ones), None, Standardize(zeros, ones))
        )
