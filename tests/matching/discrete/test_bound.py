"""The generalized KL, the likelihood bound and the exact likelihood by enumeration."""

from __future__ import annotations

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
    elbo,
    exact_log_prob,
    generalized_kl,
)
from pushforward.matching.discrete.bound import position_terms
from tests.matching.discrete.laws import first_k_ones, grid, index_of, random_table

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCES = [MaskedSource(), UniformSource()]
SOURCE_IDS = ["masked", "uniform"]


def _log(oracle: ExactDenoiser):
    return lambda x_t, t: oracle(x_t, t).clamp_min(1e-300).log()


def _rows(oracle: ExactDenoiser):
    return lambda z, t, rows: oracle(z, t)


class _RandomDenoiser:
    """A fixed random network of (x_t, t): smooth in t, every position its own softmax."""

    def __init__(self, states: int, vocab: int, length: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(
            length * states, length * vocab, generator=generator, dtype=torch.float64
        )
        self.time = torch.randn(length * vocab, generator=generator, dtype=torch.float64)
        self.states, self.vocab, self.length = states, vocab, length

    def __call__(self, x_t, t, rows=None):
        one_hot = (
            torch.nn.functional.one_hot(x_t, self.states).to(torch.float64).reshape(len(x_t), -1)
        )
        logits = one_hot @ self.weight + torch.sin(3 * t.double())[:, None] * self.time
        return torch.softmax(logits.reshape(len(x_t), self.length, self.vocab), -1)


def test_the_generalized_kl_is_nonnegative_and_zero_at_the_truth():
    generator = torch.Generator().manual_seed(0)
    for source in SOURCES:
        x1 = torch.randint(4, (64, 3), generator=generator)
        x0 = source.sample((64, 3), 4, generator=generator)
        x_t = torch.where(torch.rand(64, 3, generator=generator) < 0.5, x1, x0)
        t = torch.rand(64, generator=generator, dtype=torch.float64)
        logits = torch.randn(64, 3, 4, generator=generator, dtype=torch.float64)
        assert bool((generalized_kl(logits, x1, x_t, t, LinearKappa(), source) >= -1e-12).all())
        perfect = torch.nn.functional.one_hot(x1, 4).double() * 60 - 30
        torch.testing.assert_close(
            generalized_kl(perfect, x1, x_t, t, LinearKappa(), source),
            torch.zeros(64, dtype=torch.float64),
            atol=1e-9,
            rtol=0,
        )


def test_a_masked_paths_unmasked_positions_add_nothing():
    log_p = torch.log_softmax(torch.randn(2, 3, 4, dtype=torch.float64), -1)
    x1 = torch.tensor([[0, 1, 2], [3, 3, 3]])
    x_t = torch.tensor([[0, 4, 2], [4, 4, 3]])
    terms = position_terms(log_p, x1, x_t, MaskedSource(), 4)
    assert float(terms[0, 0]) == 0 and float(terms[0, 2]) == 0 and float(terms[1, 2]) == 0
    assert float(terms[0, 1]) == pytest.approx(float(log_p[0, 1, 1]))


def test_the_masked_bound_of_the_exact_denoiser_is_the_entropy():
    # Acceptance: the mean bound of samples of the truth under the oracle equals the
    # exact entropy within 2 standard errors (the masked bound is tight there).
    table = first_k_ones(10)
    entropy = math.log(11)
    oracle = ExactDenoiser(table, LinearKappa(), MaskedSource())
    x = torch.tensor([[1] * k + [0] * (10 - k) for k in range(11)]).repeat(300, 1)
    estimate = elbo(
        _log(oracle),
        x,
        LinearKappa(),
        MaskedSource(),
        2,
        draws=8,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(1),
    )
    nll = -estimate.value
    error = float(nll.std() / math.sqrt(nll.numel()))
    assert abs(float(nll.mean()) - entropy) < 2 * error, (float(nll.mean()), error)
    assert error < 0.02


@pytest.mark.parametrize("scheduler", [LinearKappa(), CosineKappa()], ids=["linear", "cosine"])
def test_the_uniform_bound_of_the_exact_denoiser_lies_above_the_entropy(scheduler):
    table = random_table((3, 3), seed=2)
    oracle = ExactDenoiser(table, scheduler, UniformSource())
    x = grid(3, 2).repeat(200, 1)
    estimate = elbo(
        _log(oracle),
        x,
        scheduler,
        UniformSource(),
        3,
        draws=16,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(3),
    )
    weights = table.exp().reshape(-1).repeat(200) / 200
    bound = -(weights * estimate.value).sum()
    entropy = -(table.exp() * table).sum()
    assert float(bound) > float(entropy)


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
@pytest.mark.parametrize(
    "scheduler",
    [LinearKappa(), CosineKappa(), PolynomialKappa(2.0)],
    ids=["linear", "cosine", "quadratic"],
)
def test_the_exact_likelihood_of_the_exact_denoiser_is_the_data(source, scheduler):
    table = random_table((3, 3, 2), seed=4)
    oracle = ExactDenoiser(table, scheduler, source)
    x = grid(3, 3)
    x = x[x[:, 2] < 2]
    exact = exact_log_prob(_rows(oracle), x, scheduler, source, 3, dtype=torch.float64)
    torch.testing.assert_close(exact, table.reshape(-1), atol=2e-5, rtol=0)


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_the_exact_likelihood_of_any_denoiser_sums_to_one_and_bounds_hold(source):
    vocab, length = 3, 3
    network = _RandomDenoiser(source.states(vocab), vocab, length, seed=5)
    x = grid(vocab, length)
    exact = exact_log_prob(network, x, CosineKappa(), source, vocab, dtype=torch.float64)
    assert float(exact.exp().sum()) == pytest.approx(1.0, abs=1e-6)
    # The bound, averaged over many draws, lies below the exact value for every sequence.
    estimate = elbo(
        lambda z, t: network(z, t).log(),
        x.repeat_interleave(64, 0),
        CosineKappa(),
        source,
        vocab,
        draws=16,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(6),
    )
    values = estimate.value.reshape(-1, 64)
    mean, error = values.mean(1), values.std(1) / 8
    assert bool((mean <= exact + 3 * error).all())
    assert float((exact - mean).mean()) > 0


def test_the_exact_likelihood_matches_a_fine_simulation_of_the_sampler():
    # The exact value is the law of the sampler as steps grow: compare with the
    # propagated law of the Euler sampler at many steps, for a time-dependent network.
    from tests.matching.discrete.laws import _kernel

    vocab, length, source = 2, 2, MaskedSource()
    network = _RandomDenoiser(3, vocab, length, seed=7)
    exact = exact_log_prob(
        network, grid(vocab, length), LinearKappa(), source, vocab, dtype=torch.float64
    ).exp()
    from pushforward.matching.discrete import transition_probabilities
    from pushforward.matching.discrete.sampler import carry_over

    space = grid(3, length)
    law = torch.zeros(len(space), dtype=torch.float64)
    law[-1] = 1.0
    steps = 2000
    ones = torch.ones(len(space), dtype=torch.float64)
    for k in range(steps - 1):
        t, s = ones * k / steps, ones * (k + 1) / steps
        weights = transition_probabilities(network(space, t), space, t, s, 1 / steps, source, vocab)
        law = law @ _kernel(weights, space)
    final = carry_over(network(space, ones * (steps - 1) / steps), space, source, vocab)
    final = torch.cat([final, final.new_zeros((*final.shape[:-1], 1))], -1)
    law = (law @ _kernel(final, space))[index_of(grid(vocab, length), 3)]
    torch.testing.assert_close(law, exact, atol=2e-3, rtol=0)


def test_too_many_states_are_refused():
    network = _RandomDenoiser(40, 40, 4)
    with pytest.raises(ValueError, match=r"too many|more than"):
        exact_log_prob(
            network, torch.zeros(1, 4, dtype=torch.int64), LinearKappa(), UniformSource(), 40
        )
