"""Every registered token model through one contract, driven by ``pushforward.available()``.

The models whose data are tokens (``data_kind(name) == "tokens"``) join by
registration alone, with an entry in ``tests.contract.SMALL_OPTIONS``. Checked for
every one: shapes and dtypes of the protocol's answers (int64 tokens in the
vocabulary, float losses and bounds in the model's dtype), float64 end to end,
save/load identity, the exact distribution (enumerated) summing to one with the
bound below it, per-column vocabularies, and errors on bad inputs.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

import pushforward
from pushforward.model import Model
from pushforward.registry import data_kind
from tests.contract import SMALL_OPTIONS, randomize_

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = [name for name in pushforward.available() if data_kind(name) == "tokens"]
LENGTH = 2
CONTEXT = 2


def make(
    name: str, context: int = 0, dtype: torch.dtype = torch.float64, seed: int = 0, **options
) -> Model:
    torch.manual_seed(seed)
    model = pushforward.build(
        name, features=LENGTH, context=context, **{**SMALL_OPTIONS[name], **options}
    )
    model.to(dtype)
    randomize_(model, 0.3, torch.Generator().manual_seed(seed + 1))
    return model


def tokens(n: int, vocab: int = 3, seed: int = 1) -> Tensor:
    return torch.randint(vocab, (n, LENGTH), generator=torch.Generator().manual_seed(seed))


def contexts(n: int, dtype: torch.dtype = torch.float64, seed: int = 2) -> Tensor:
    return torch.randn(n, CONTEXT, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def all_states(vocab: tuple[int, ...]) -> Tensor:
    return torch.tensor(list(itertools.product(*(range(v) for v in vocab))))


def test_there_are_token_models_to_sweep():
    assert NAMES, "no registered token model"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("context", [0, CONTEXT])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes(name, context, dtype):
    model = make(name, context, dtype)
    x = tokens(12)
    c = contexts(12, dtype) if context else None
    loss = model.loss(x, c)
    assert loss.shape == () and loss.dtype == dtype and torch.isfinite(loss)
    samples = model.sample(7, None if c is None else c[0])
    assert samples.shape == (7, LENGTH) and samples.dtype == torch.int64
    assert bool(((samples >= 0) & (samples < 3)).all())
    if not model.has_log_prob:
        return
    log_prob = model.log_prob(x, c)
    assert log_prob.shape == (12,) and log_prob.dtype == dtype
    assert bool(torch.isfinite(log_prob).all()) and bool((log_prob <= 0).all())
    assert model.log_prob_is_bound
    drawn, scored = model.sample_and_log_prob(5, None if c is None else c[0])
    assert drawn.shape == (5, LENGTH) and drawn.dtype == torch.int64 and scored.shape == (5,)


@pytest.mark.parametrize("name", NAMES)
def test_float64_end_to_end(name):
    model = make(name, CONTEXT, torch.float32).double()
    loss = model.loss(tokens(16), contexts(16))
    assert loss.dtype == torch.float64
    loss.backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(g.dtype == torch.float64 for g in gradients)
    assert all(torch.isfinite(g).all() for g in gradients)


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_give_identical_answers(name, tmp_path):
    model = make(name, CONTEXT).eval()
    pushforward.save(model, tmp_path)
    loaded = pushforward.load(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config
    saved, reloaded = model.state_dict(), loaded.state_dict()
    assert saved.keys() == reloaded.keys()
    assert all(torch.equal(saved[key], reloaded[key]) for key in saved)
    x, c = tokens(10), contexts(10)
    if model.has_log_prob:
        first = model.log_prob(x, c, generator=torch.Generator().manual_seed(3))
        again = loaded.log_prob(x, c, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(again, first, atol=0, rtol=0)
    else:
        torch.manual_seed(4)
        first = model.loss(x, c)
        torch.manual_seed(4)
        torch.testing.assert_close(loaded.loss(x, c), first, atol=0, rtol=0)
    torch.manual_seed(5)
    drawn = model.sample(7, c[0])
    torch.manual_seed(5)
    assert torch.equal(loaded.sample(7, c[0]), drawn)


@pytest.mark.parametrize("vocab", [3, [3, 2]])
@pytest.mark.parametrize("name", NAMES)
def test_the_exact_distribution_sums_to_one_and_the_bound_lies_below_it(name, vocab):
    model = make(name, vocab=vocab).eval()
    if not model.has_log_prob:
        pytest.skip(f"{name} has no likelihood (has_log_prob is False)")
    states = all_states(model.vocab)
    with torch.no_grad():
        exact = model.log_prob(states, exact=True)
        bound = model.log_prob(states, draws=256, generator=torch.Generator().manual_seed(0))
    assert float(exact.exp().sum()) == pytest.approx(1.0, abs=1e-6)
    # A lower bound on average over the states (each estimate is noisy by itself).
    assert float((bound - exact).mean()) < 0.02
    # Every sampled token lies in its column's vocabulary.
    samples = model.sample(500)
    limits = torch.tensor(model.vocab)
    assert bool(((samples >= 0) & (samples < limits)).all())


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_are_errors_in_the_users_words(name):
    conditional = make(name, CONTEXT, torch.float32)
    unconditional = make(name, 0, torch.float32)
    x, c = tokens(4), contexts(4, torch.float32)
    answers = [lambda model, x, c: model.loss(x, c)]
    if conditional.has_log_prob:
        answers.append(lambda model, x, c: model.log_prob(x, c))
    for answer in answers:
        with pytest.raises(TypeError, match="integer"):
            answer(conditional, x.float(), c)
        with pytest.raises(ValueError, match="vocabulary"):
            answer(conditional, x + 3, c)
        with pytest.raises(ValueError, match=r"vocabulary|negative"):
            answer(conditional, x - 3, c)
        with pytest.raises(ValueError, match="length"):
            answer(conditional, torch.zeros(4, 3, dtype=torch.long), c)
        with pytest.raises(ValueError, match="context has 3 rows but there are 4 data rows"):
            answer(conditional, x, c[:3])
        with pytest.raises(ValueError, match="context has 3 features, the model was built for 2"):
            answer(conditional, x, torch.randn(4, 3))
        with pytest.raises(ValueError, match="conditional on 2 context features"):
            answer(conditional, x, None)
        with pytest.raises(ValueError, match="unconditional"):
            answer(unconditional, x, c)
    with pytest.raises(ValueError, match="conditional on 2 context features"):
        conditional.sample(4)
    with pytest.raises(ValueError, match="unknown option 'stpes'"):
        conditional.sample(4, c[0], stpes=3)
