"""Marginal tail-adaptive spline flows (mTAF): ``tails="adaptive"`` of ``nsf`` and ``nsf-ar``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import pushforward
from pushforward.distributions import StandardNormal
from pushforward.flows.tails import MarginalTailBase
from pushforward.metrics.tails import estimate_tails
from pushforward.train.batches import Rows
from pushforward.train.fit import preprocessed_rows
from tests.contract import (
    assert_invertible,
    assert_logdet_matches_jacobian,
    flow_log_density,
    grid_integral_2d,
    randomize_,
)

pytestmark = pytest.mark.usefixtures("one_thread")

DEGREES = (2.0, 3.0, 5.0)
SMALL = {"transforms": 3, "hidden": [16, 16]}


def heavy_and_light(n: int, seed: int) -> torch.Tensor:
    """Student-t marginals (nu = 2, 3, 5) beside a Gaussian one, at other scales and centres."""
    torch.manual_seed(seed)
    heavy = torch.distributions.StudentT(torch.tensor(DEGREES)).sample((n,))
    x = torch.cat([heavy, torch.randn(n, 1)], dim=1)
    return x * torch.tensor([2.0, 0.5, 1.0, 3.0]) + torch.tensor([1.0, 0.0, -2.0, 5.0])


def tail_base(model: pushforward.Model) -> MarginalTailBase:
    base = getattr(model, "base", None)
    assert isinstance(base, MarginalTailBase)
    return base


# -- options -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["maf", "realnvp", "fm"])
def test_models_without_tail_options_refuse_them_by_name(name):
    with pytest.raises(ValueError, match=f"unknown option 'tails' for model '{name}'"):
        pushforward.build(name, features=2, tails="adaptive")
    with pytest.raises(ValueError, match=f"unknown option 'tail_df' for model '{name}'"):
        pushforward.build(name, features=2, tail_df=[2.0, None])


@pytest.mark.parametrize("name", ["nsf", "nsf-ar"])
def test_incompatible_tail_options_are_errors_naming_both_options(name):
    with pytest.raises(ValueError, match=r"option 'tails' must be one of 'gaussian', 'adaptive'"):
        pushforward.build(name, features=2, tails="heavy")
    with pytest.raises(ValueError, match=r"tails='adaptive'.*base='student-t'"):
        pushforward.build(name, features=2, tails="adaptive", base="student-t")
    with pytest.raises(ValueError, match=r"'tail_df'.*tails='gaussian'"):
        pushforward.build(name, features=2, tail_df=[2.0, None])
    with pytest.raises(ValueError, match=r"'tail_df' must list one value per feature \(2\)"):
        pushforward.build(name, features=2, tails="adaptive", tail_df=[2.0])
    with pytest.raises(ValueError, match="positive numbers or None"):
        pushforward.build(name, features=2, tails="adaptive", tail_df=[-1.0, None])


def test_adaptive_tails_refuse_an_lu_layer_naming_both_options():
    with pytest.raises(ValueError, match=r"tails='adaptive'.*linear='lu'"):
        pushforward.build("nsf", features=2, tails="adaptive", linear="lu")


@pytest.mark.parametrize("name", ["nsf", "nsf-ar"])
def test_gaussian_tails_are_the_flow_as_before(name):
    torch.manual_seed(0)
    before = pushforward.build(name, features=3, **SMALL)
    torch.manual_seed(0)
    adaptive = pushforward.build(name, features=3, tails="adaptive", **SMALL)
    assert isinstance(before.base, StandardNormal)
    assert before.config["options"]["tails"] == "gaussian"
    # The layers are the same, drawn from the same generator; only the base differs.
    layers = {
        key: value for key, value in adaptive.state_dict().items() if key.startswith("transform")
    }
    assert layers.keys() == {k for k in before.state_dict() if k.startswith("transform")}
    for key, value in layers.items():
        torch.testing.assert_close(value, before.state_dict()[key], rtol=0, atol=0)
    # Until initialised, the adaptive base is Gaussian.
    x = torch.randn(7, 3)
    torch.testing.assert_close(adaptive.log_prob(x), before.log_prob(x))


# -- the bijection and its density ---------------------------------------------------------


@pytest.mark.parametrize("name", ["nsf", "nsf-ar"])
def test_an_adaptive_flow_is_invertible_with_the_right_log_det_and_integrates_to_one(name):
    torch.manual_seed(0)
    model = pushforward.build(name, features=2, tails="adaptive", tail_df=[3.0, None], **SMALL)
    model.double()
    randomize_(model, 0.15, torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(16, 2, generator=generator, dtype=torch.float64)
    x[8:] *= 10  # beyond the spline's bounds, where the tails live
    assert_invertible(model.transform, x, atol=1e-8)
    assert_logdet_matches_jacobian(model.transform, x)
    # The Student-t marginal puts 3e-5 of its mass beyond |z| = 40 (P(|T_3| > 40)).
    integral = grid_integral_2d(flow_log_density(model.transform, model.base), -40.0, 40.0, 800)
    assert integral == pytest.approx(1.0, abs=0.02)
    samples, log_prob = model.sample_and_log_prob(64)
    torch.testing.assert_close(log_prob, model.log_prob(samples))


def test_the_base_is_the_product_of_its_student_t_and_normal_marginals():
    base = MarginalTailBase((3,), [2.5, None, 7.0]).double()
    z = torch.randn(10, 3, dtype=torch.float64) * 4
    student = torch.distributions.StudentT(torch.tensor([2.5, 7.0], dtype=torch.float64))
    expected = student.log_prob(z[:, [0, 2]]).sum(1) + torch.distributions.Normal(
        0.0, 1.0
    ).log_prob(z[:, 1])
    torch.testing.assert_close(base.log_prob(z), expected)
    assert base.heavy.tolist() == [True, False, True] and not base.awaits_data
    with pytest.raises(ValueError, match="cannot draw from a given generator"):
        base.sample(4, generator=torch.Generator())
    # A base of Gaussian marginals only draws from a given generator.
    gaussian = MarginalTailBase((2,))
    assert gaussian.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 2)


# -- the tails, estimated and sampled ------------------------------------------------------


def test_given_degrees_of_freedom_are_kept_by_initialisation():
    model = pushforward.build("nsf", features=2, tails="adaptive", tail_df=[4.0, None], **SMALL)
    model.initialize(torch.randn(2000, 2))
    assert model.base.df[0].item() == 4.0 and math.isinf(model.base.df[1].item())


def test_a_run_estimates_the_tails_from_its_whole_training_split_and_saves_them(tmp_path: Path):
    x = heavy_and_light(20_000, seed=0)
    result = pushforward.train_run(
        tmp_path / "run",
        x,
        "nsf",
        options={"transforms": 2, "hidden": [16], "tails": "adaptive"},
        train={"steps": 1, "batch_size": 256, "validation": 0.1},
    )
    model = result.model
    assert not model.base.awaits_data
    # The estimate of the training rows in the model's units (the flow starts at the
    # identity), with k = ceil(sqrt(18000)) order statistics, not a batch's 16.
    train_rows, _ = pushforward.train.config.validation_split(20_000, 0.1, 0)
    rows = preprocessed_rows(model, Rows(x[train_rows]))
    expected = estimate_tails(rows.x)
    torch.testing.assert_close(model.base.df, expected.df, rtol=1e-4, atol=0)
    assert model.base.heavy.tolist() == [True, True, True, False]
    # Saved with the weights: the loaded model is the same model.
    loaded = pushforward.load(tmp_path / "run")
    assert not loaded.base.awaits_data
    torch.testing.assert_close(loaded.base.df, model.base.df, rtol=0, atol=0)
    torch.testing.assert_close(loaded.log_prob(x[:100]), model.log_prob(x[:100]), rtol=0, atol=0)


def test_the_engine_alone_estimates_the_tails_from_the_first_batch():
    model = pushforward.build("nsf-ar", features=4, tails="adaptive", transforms=2, hidden=[16])
    pushforward.fit(model, heavy_and_light(4000, seed=1), steps=2, batch_size=2000, quiet=True)
    assert not model.base.awaits_data and model.base.heavy[:2].all()


@pytest.mark.parametrize("name", ["nsf", "nsf-ar"])
def test_a_trained_adaptive_flow_samples_the_data_tails_and_a_gaussian_one_cannot(
    tmp_path: Path, name
):
    x = heavy_and_light(20_000, seed=2)
    models = {}
    for kind in ("adaptive", "gaussian"):
        torch.manual_seed(0)
        models[kind] = pushforward.train_run(
            tmp_path / kind,
            x,
            name,
            options={"transforms": 2, "hidden": [32], "tails": kind},
            train={"steps": 150, "batch_size": 512, "validation": 0.1, "lr": 3e-3},
        ).model
    adaptive = models["adaptive"]
    base = tail_base(adaptive)
    truth = torch.tensor(DEGREES)
    assert ((base.df[:3] - truth).abs() / truth < 0.2).all(), base.df
    torch.manual_seed(1)
    samples = adaptive.sample(50_000)
    estimate = estimate_tails(samples)
    # Hill's estimate is biased at any finite k (about -10% for nu = 5 at k = 224), so
    # the model's samples are held to the estimate of as many samples of the truth.
    reference = estimate_tails(heavy_and_light(50_000, seed=3)).tail_index[:3]
    relative = (estimate.tail_index[:3] - reference).abs() / reference
    assert (relative < 0.2).all(), (estimate.tail_index, reference)
    assert estimate.heavy.tolist() == [True, True, True, False]
    # Beyond the spline bound (model units), each marginal is its base marginal: the
    # data's tails there for the adaptive flow, a Gaussian's (Jaini et al. 2020) else.
    bound = 5.0
    data_far = (adaptive.preprocessing.encode(x)[0].abs() > bound).float().mean(0)
    for kind, model in models.items():
        torch.manual_seed(1)
        far = (model.preprocessing.encode(model.sample(50_000))[0].abs() > bound).float().mean(0)
        assert far[3] < 1e-4
        if kind == "adaptive":
            torch.testing.assert_close(far[:3], data_far[:3], rtol=0.3, atol=1e-3)
        else:
            assert (far < 1e-4).all() and (data_far[:3] > 1e-3).all(), (far, data_far)


# -- the default of a run ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nsf", "nsf-ar"])
def test_a_run_on_vector_data_defaults_to_adaptive_tails(tmp_path: Path, name: str) -> None:
    """bench/density_quality.py's finding, applied where the option can be."""
    data = heavy_and_light(2000, seed=3).double()
    train = {"steps": 2, "batch_size": 64}
    run = pushforward.train_run(tmp_path / "plain", data, name, options=SMALL, train=train)
    assert run.config["model"]["options"]["tails"] == "adaptive"
    assert isinstance(run.model.base, MarginalTailBase)
    # Heavier marginals get fewer degrees of freedom than the Gaussian one (0: normal).
    inverse_df = tail_base(run.model).inverse_df
    assert float(inverse_df[0]) > 0 and float(inverse_df[3]) < float(inverse_df[0])
    # Told otherwise, or where adaptive tails do not apply: the base is kept.
    for label, options, context in [
        ("gaussian", {**SMALL, "tails": "gaussian"}, None),
        ("student", {**SMALL, "base": "student-t"}, None),
        ("conditional", SMALL, data[:, :1] + 0.1),
    ]:
        other = pushforward.train_run(
            tmp_path / label, data, name, options=options, context=context, train=train
        )
        assert other.config["model"]["options"]["tails"] == "gaussian", label
        assert not isinstance(other.model.base, MarginalTailBase), label


def test_a_resumed_run_keeps_the_tails_it_was_started_with(tmp_path: Path) -> None:
    data = heavy_and_light(2000, seed=4).double()
    out = tmp_path / "run"
    options = {**SMALL, "tails": "gaussian"}
    pushforward.train_run(out, data, "nsf", options=options, train={"steps": 2})
    resumed = pushforward.train_run(
        out, data, "nsf", options=SMALL, train={"steps": 4}, resume=True
    )
    assert resumed.config["model"]["options"]["tails"] == "gaussian"
    assert resumed.history.steps_done == 4
