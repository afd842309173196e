"""The preprocessing a model holds: units, Jacobian correction, context, save/load, bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import pushforward
from pushforward.transforms import Preprocessing, Standardize
from tests.contract import randomize_

MEAN = torch.tensor([3.0, -1.0], dtype=torch.float64)
STD = torch.tensor([2.0, 0.5], dtype=torch.float64)


def make_fm(context: int = 0) -> pushforward.Model:
    torch.manual_seed(0)
    model = pushforward.build("fm", features=2, context=context, hidden=[16], time_embedding=8)
    randomize_(model, 0.2, torch.Generator().manual_seed(1))
    return model.double()


def standardized(model: pushforward.Model, context: Standardize | None = None) -> pushforward.Model:
    """A copy of ``model`` in the units of data with mean ``MEAN`` and scale ``STD``."""
    return copy.deepcopy(model).set_preprocessing(Preprocessing(Standardize(MEAN, STD), context))


def test_log_prob_is_the_inner_density_with_the_jacobian() -> None:
    inner = make_fm()
    model = standardized(inner)
    x = torch.randn(7, 2, dtype=torch.float64) * STD + MEAN
    expected = inner.log_prob((x - MEAN) / STD, solver="rk4", steps=6) - torch.log(STD).sum()
    torch.testing.assert_close(model.log_prob(x, solver="rk4", steps=6), expected)
    samples, log_prob = model.sample_and_log_prob(5, solver="rk4", steps=40)
    torch.testing.assert_close(log_prob, model.log_prob(samples, solver="rk4", steps=40))


def test_density_in_original_units_integrates_to_one() -> None:
    torch.manual_seed(0)
    flow = pushforward.build("nsf", features=2, hidden=[8], transforms=2).double()
    randomize_(flow, 0.2, torch.Generator().manual_seed(2))
    model = standardized(flow)
    x = torch.randn(9, 2, dtype=torch.float64) * STD + MEAN
    expected = flow.log_prob((x - MEAN) / STD) - torch.log(STD).sum()
    torch.testing.assert_close(model.log_prob(x), expected)
    side_x = torch.linspace(float(MEAN[0] - 12), float(MEAN[0] + 12), 241, dtype=torch.float64)
    side_y = torch.linspace(float(MEAN[1] - 3), float(MEAN[1] + 3), 241, dtype=torch.float64)
    grid = torch.cartesian_prod(side_x, side_y)
    cell = float((side_x[1] - side_x[0]) * (side_y[1] - side_y[0]))
    with torch.no_grad():
        total = float(model.log_prob(grid).exp().sum()) * cell
    assert abs(total - 1.0) < 1e-3


def test_samples_are_in_original_units() -> None:
    inner = make_fm()
    model = standardized(inner)
    torch.manual_seed(3)
    expected = inner.sample(5, steps=3) * STD + MEAN
    torch.manual_seed(3)
    torch.testing.assert_close(model.sample(5, steps=3), expected)


def test_context_is_standardised() -> None:
    inner = make_fm(context=1)
    c_mean = torch.tensor([10.0], dtype=torch.float64)
    c_std = torch.tensor([4.0], dtype=torch.float64)
    model = standardized(inner, Standardize(c_mean, c_std))
    x = torch.randn(3, 2, dtype=torch.float64)
    c = torch.tensor([[14.0]], dtype=torch.float64)
    expected = inner.log_prob(
        (x - MEAN) / STD, torch.tensor([[1.0]], dtype=torch.float64), solver="rk4", steps=4
    )
    torch.testing.assert_close(
        model.log_prob(x, c, solver="rk4", steps=4), expected - torch.log(STD).sum()
    )


def test_save_load_keeps_the_preprocessing(tmp_path: Path) -> None:
    inner = make_fm(context=1)
    model = standardized(
        inner, Standardize(torch.tensor([1.0], dtype=torch.float64), torch.tensor([2.0]).double())
    )
    pushforward.save(model, tmp_path)
    loaded = pushforward.load(tmp_path)
    assert isinstance(loaded.preprocessing.data, Standardize)
    assert isinstance(loaded.preprocessing.context, Standardize)
    x = torch.randn(4, 2, dtype=torch.float64)
    c = torch.randn(4, 1, dtype=torch.float64)
    torch.testing.assert_close(
        loaded.log_prob(x, c, solver="rk4", steps=4), model.log_prob(x, c, solver="rk4", steps=4)
    )


def test_bad_preprocessings_are_refused() -> None:
    inner = make_fm()
    with pytest.raises(ValueError, match="does not fit"):
        inner.set_preprocessing(Preprocessing(Standardize(torch.zeros(3), torch.ones(3))))
    with pytest.raises(ValueError, match="positive"):
        Standardize(torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="unconditional"):
        inner.set_preprocessing(Preprocessing(None, Standardize(torch.zeros(1), torch.ones(1))))
    with pytest.raises(ValueError, match="unknown data preprocessing"):
        Preprocessing.placeholder({"data": {"kind": "logit"}}, torch.float32)


def test_an_identity_preprocessing_leaves_the_protocol_as_it_was() -> None:
    flow = pushforward.build("nsf", features=2, hidden=[8], transforms=2).double()
    assert flow.preprocessing.identity and flow.preprocessing.description() == {}
    x = torch.randn(5, 2, dtype=torch.float64)
    z, context, logabsdet = flow.preprocess(x)
    assert z is x and context is None and logabsdet is None
