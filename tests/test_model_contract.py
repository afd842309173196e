"""Every registered model through one contract, driven by ``pushforward.available()``.

A model of vectors joins by registration alone (token models have their own sweep,
``tests/test_token_model_contract.py``): its name must have an entry in
``tests.contract.SMALL_OPTIONS`` (small sizes, cheap solvers), or the sweep
fails naming it. A model whose ``sample`` needs keywords (an SNF's target) names them in
``tests.contract.SAMPLE_OPTIONS``.
Checked for every model: shapes of the protocol's answers, dtype and device
following the inputs, float64 end to end, save/load identity, the agreement of
``sample_and_log_prob`` with ``log_prob`` on a model fresh out of ``build``, a
density integrating to one on a 2-D grid (models with ``has_log_prob``), and
errors on bad inputs. Models without a density skip only the density checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

import pushforward
from pushforward.model import Model
from pushforward.registry import builder_for, data_kind, keywords
from tests.contract import (
    LOG_PROB_OPTIONS,
    LOSS_FUNCTIONS,
    SMALL_OPTIONS,
    VARIANTS,
    grid_integral_2d,
    randomize_,
    registered_name,
    sample_options,
    small_options,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_NAMES = pushforward.available()
NAMES = [name for name in ALL_NAMES if data_kind(name) == "vectors"]
CASES = NAMES + [case for case in VARIANTS if registered_name(case) in NAMES]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FEATURES = 2
CONTEXT = 2


def make(
    case: str,
    context: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    scale: float | None = 0.15,
    seed: int = 0,
) -> Model:
    """A small model; with ``scale``, its weights perturbed (seeded) so it is not trivial."""
    torch.manual_seed(seed)
    model = pushforward.build(
        registered_name(case), features=FEATURES, context=context, **small_options(case)
    )
    model.to(device=device, dtype=dtype)
    if scale is not None:
        randomize_(model, scale, torch.Generator().manual_seed(seed + 1))
    return model


def data(n: int, dtype: torch.dtype = torch.float64, device: str = "cpu", seed: int = 1) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, FEATURES, generator=generator, dtype=dtype).to(device)


def contexts(n: int, dtype: torch.dtype = torch.float64, device: str = "cpu", seed: int = 2):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, CONTEXT, generator=generator, dtype=dtype).to(device)


def loss_of(case: str, model: Model, x: Tensor, c: Tensor | None) -> Tensor:
    special = LOSS_FUNCTIONS.get(registered_name(case))
    return model.loss(x, c) if special is None else special(model, x, c)


# -- the catalogue ---------------------------------------------------------------------


def test_the_catalogue_names_exactly_the_registered_models():
    missing = sorted(set(ALL_NAMES) - set(SMALL_OPTIONS))
    stale = sorted(set(SMALL_OPTIONS) - set(ALL_NAMES))
    assert not missing, f"registered models without SMALL_OPTIONS (add them): {missing}"
    assert not stale, f"SMALL_OPTIONS entries for unregistered models: {stale}"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_a_direct_call_of_the_builder_stores_what_build_stores(name):
    options = {"features": FEATURES, "context": CONTEXT, **small_options(name)}
    torch.manual_seed(0)
    built = pushforward.build(name, **options)
    torch.manual_seed(0)
    direct = builder_for(name)(**options)
    assert built.config == direct.config
    assert built.config["model"] == name
    assert set(built.config["options"]) == set(keywords(name))


# -- shapes, dtype, device ---------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("context", [0, CONTEXT])
@pytest.mark.parametrize("case", CASES)
def test_shapes_dtype_and_device_follow_the_inputs(case, context, dtype, device):
    model = make(case, context, dtype, device)
    x = data(12, dtype, device)
    c = contexts(12, dtype, device) if context else None
    one_row = c[0] if c is not None else None

    def follows(tensor: Tensor, shape: tuple[int, ...]) -> None:
        assert tensor.shape == shape
        assert tensor.dtype == dtype and tensor.device == x.device

    loss = loss_of(case, model, x, c)
    follows(loss, ())
    assert torch.isfinite(loss)
    options = sample_options(case)
    samples = model.sample(7, one_row, **options)
    follows(samples, (7, FEATURES))
    assert not samples.requires_grad
    assert torch.isfinite(samples).all()
    if model.has_rsample:
        follows(model.rsample(5, one_row, **options), (5, FEATURES))
    if model.has_log_prob:
        log_prob = model.log_prob(x, c)
        follows(log_prob, (12,))
        assert torch.isfinite(log_prob).all()
        samples, log_prob = model.sample_and_log_prob(6, one_row)
        follows(samples, (6, FEATURES))
        follows(log_prob, (6,))
        assert not samples.requires_grad and not log_prob.requires_grad
    else:
        with pytest.raises(NotImplementedError, match="log_prob"):
            model.log_prob(x, c)
        with pytest.raises(NotImplementedError, match="sample_and_log_prob"):
            model.sample_and_log_prob(6, one_row)


@pytest.mark.parametrize("case", CASES)
def test_float64_end_to_end(case):
    model = make(case, CONTEXT, torch.float32).double()
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert all(b.dtype == torch.float64 for b in model.buffers() if b.is_floating_point())
    x, c = data(16), contexts(16)
    model.train()
    loss = loss_of(case, model, x, c)
    assert loss.dtype == torch.float64
    loss.backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients, "the loss reaches no parameter"
    assert all(g.dtype == torch.float64 and torch.isfinite(g).all() for g in gradients)
    model.eval()
    assert model.sample(4, c[0], **sample_options(case)).dtype == torch.float64
    if model.has_log_prob:
        assert model.log_prob(x, c).dtype == torch.float64
    with pytest.raises(TypeError, match="dtype"):
        loss_of(case, model, x.float(), c)


@pytest.mark.parametrize("case", CASES)
def test_reparameterised_samples_carry_gradients(case):
    model = make(case, CONTEXT)
    if not model.has_rsample:
        with pytest.raises(NotImplementedError, match="rsample"):
            model.rsample(4, contexts(1)[0])
        return
    c = contexts(16)
    samples = model.rsample(16, c, **sample_options(case))
    total = samples.sum()
    if model.has_log_prob:
        samples, log_prob = model.rsample_and_log_prob(16, c)
        assert samples.shape == (16, FEATURES) and log_prob.shape == (16,)
        total = total + samples.sum() + log_prob.sum()
    total.backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
    assert any(bool((g != 0).any()) for g in gradients)


# -- save and load -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES)
def test_save_and_load_give_identical_answers(case, dtype, tmp_path):
    model = make(case, CONTEXT, dtype, scale=0.2).eval()
    model.initialize(data(64, dtype), contexts(64, dtype))
    pushforward.save(model, tmp_path)
    loaded = pushforward.load(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert not loaded.training
    assert next(loaded.parameters()).dtype == dtype
    saved, reloaded = model.state_dict(), loaded.state_dict()
    assert saved.keys() == reloaded.keys()
    assert all(torch.equal(saved[key], reloaded[key]) for key in saved)
    x, c = data(10, dtype), contexts(10, dtype)
    if model.has_log_prob:
        torch.testing.assert_close(loaded.log_prob(x, c), model.log_prob(x, c), atol=0, rtol=0)
    options = sample_options(case)
    torch.manual_seed(5)
    first = model.sample(7, c[0], **options)
    torch.manual_seed(5)
    torch.testing.assert_close(loaded.sample(7, c[0], **options), first, atol=0, rtol=0)


# -- sample_and_log_prob and log_prob --------------------------------------------------------


@pytest.mark.parametrize("context", [0, CONTEXT])
@pytest.mark.parametrize("case", CASES)
def test_sample_and_log_prob_agrees_with_log_prob_fresh_from_build(case, context):
    torch.manual_seed(3)
    name = registered_name(case)
    model = pushforward.build(name, features=FEATURES, context=context, **small_options(case))
    model.double()  # and in training mode, as built
    if not model.has_log_prob:
        pytest.skip(f"{name} has no density (has_log_prob is False)")
    c = contexts(1)[0] if context else None
    # 1e-8: tighter than the 1e-6 the contract asks for; every model meets it.
    samples, log_prob = model.sample_and_log_prob(64, c)
    torch.testing.assert_close(model.log_prob(samples, c), log_prob, atol=1e-8, rtol=1e-8)
    # And with weights away from the start (initialised from data where a layer
    # waits for it), where the answers are not those of the base.
    randomize_(model, 0.3, torch.Generator().manual_seed(4))
    model.initialize(data(64), contexts(64) if context else None)
    samples, log_prob = model.sample_and_log_prob(64, c)
    torch.testing.assert_close(model.log_prob(samples, c), log_prob, atol=1e-8, rtol=1e-8)


# -- normalisation ---------------------------------------------------------------------------


def assert_not_standard_normal(log_density: Callable[[Tensor], Tensor]) -> None:
    """Guards the normalisation test against a model that stayed its base."""
    x = data(2000, seed=6)
    standard = -0.5 * x.square().sum(1) - math.log(2 * math.pi)
    assert (log_density(x) - standard).abs().mean() > 0.05


# A 600-point grid on [-9, 9]^2 resolves the flows' spline kinks to 1e-3; the ODE
# models' densities are smooth, and 150 points resolve them as well for a fraction
# of the cost. Weights at scale 0.15 keep the mass inside the box.
GRID_POINTS = {"flow": 600, "ode": 150}


@pytest.mark.parametrize("context", [0, CONTEXT])
@pytest.mark.parametrize("case", CASES)
def test_density_integrates_to_one_on_a_2d_grid(case, context):
    model = make(case, context, seed=1).eval()
    if not model.has_log_prob:
        pytest.skip(f"{registered_name(case)} has no density (has_log_prob is False)")
    model.initialize(data(256), contexts(256) if context else None)
    c = torch.tensor([0.7, -1.2], dtype=torch.float64) if context else None
    options = LOG_PROB_OPTIONS.get(registered_name(case), {})

    def log_density(points: Tensor) -> Tensor:
        with torch.no_grad():
            return model.log_prob(points, c, **options)

    assert_not_standard_normal(log_density)
    points = GRID_POINTS["flow" if isinstance(model, pushforward.Flow) else "ode"]
    total = grid_integral_2d(log_density, -9.0, 9.0, points)
    assert abs(total - 1.0) < 1e-3


# -- bad inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", NAMES)
def test_bad_inputs_are_errors_in_the_users_words(case):
    conditional = make(case, CONTEXT, torch.float32)
    unconditional = make(case, 0, torch.float32)
    x, c = data(4, torch.float32), contexts(4, torch.float32)
    answers: list[Callable[[Model, Tensor, Tensor | None], Any]] = [
        lambda model, x, c: loss_of(case, model, x, c)
    ]
    if conditional.has_log_prob:
        answers.append(lambda model, x, c: model.log_prob(x, c))
    for answer in answers:
        with pytest.raises(ValueError, match="data has 3 features, the model was built for 2"):
            answer(conditional, torch.randn(4, 3), c)
        for bad in (math.nan, math.inf, -math.inf):
            broken = x.clone()
            broken[1, 0] = bad
            with pytest.raises(ValueError, match="data contains NaN or Inf"):
                answer(conditional, broken, c)
            broken_context = c.clone()
            broken_context[2, 1] = bad
            with pytest.raises(ValueError, match="context contains NaN or Inf"):
                answer(conditional, x, broken_context)
        with pytest.raises(ValueError, match="context has 3 rows but there are 4 data rows"):
            answer(conditional, x, c[:3])
        with pytest.raises(TypeError, match="floating-point"):
            answer(conditional, torch.ones(4, 2, dtype=torch.long), c)
        with pytest.raises(ValueError, match="shape"):
            answer(conditional, x.unsqueeze(-1), c)
        with pytest.raises(TypeError, match="dtype"):
            answer(conditional, x.double(), c)
        with pytest.raises(ValueError, match="context has 3 features, the model was built for 2"):
            answer(conditional, x, torch.randn(4, 3))
        with pytest.raises(ValueError, match="conditional on 2 context features"):
            answer(conditional, x, None)
        with pytest.raises(ValueError, match="unconditional"):
            answer(unconditional, x, c)
    with pytest.raises(ValueError, match="context has 3 features, the model was built for 2"):
        conditional.sample(4, torch.randn(3))
    with pytest.raises(ValueError, match="conditional on 2 context features"):
        conditional.sample(4)
    with pytest.raises(ValueError, match="context has 3 rows but there are 5 data rows"):
        conditional.sample(5, torch.randn(3, 2))
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.sample(4, c[0])
    with pytest.raises(ValueError, match="non-negative int"):
        conditional.sample(-1, c[0])


@pytest.mark.parametrize("name", ALL_NAMES)
def test_an_unknown_option_lists_the_valid_ones(name):
    with pytest.raises(ValueError) as error:
        pushforward.build(name, features=FEATURES, not_an_option=1)
    message = str(error.value)
    assert f"unknown option 'not_an_option' for model {name!r}" in message
    assert "valid options: " + ", ".join(keywords(name)) in message
    with pytest.raises(ValueError, match=r"needs option\(s\) 'features'"):
        pushforward.build(name)
