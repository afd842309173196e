"""``dfm`` trained on the grid toy (two tokens over V = 64): samples, the bound, the exact NLL.

The slowest tests of the discrete family (about two minutes on one core): one model is
trained once for the module and checked against the toy's exact joint probabilities.
"""

from __future__ import annotations

import math

import pytest
import torch

import pushforward
from pushforward.data.discrete_toys import get_discrete_toy
from pushforward.metrics.discrete import joint_tv, tv_noise_floor

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLES = 200_000


@pytest.fixture(scope="module")
def trained():
    toy = get_discrete_toy("8gaussians-grid")
    # Fresh rows (a million) rather than a small set: with one-hot inputs the network
    # learns the rows' frequencies, whose own distance to the truth would dominate.
    data = toy.sample(1_000_000, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = pushforward.build("dfm", features=2, vocab=64, hidden=[256, 256])
        pushforward.fit(model, data, steps=3000, batch_size=1024, lr=2e-3, ema=0.999,
                        quiet=True, seed=0)  # fmt: skip
    model.eval()
    return toy, model


def test_samples_reach_the_exact_joint(trained):
    toy, model = trained
    table = toy.log_probs().exp()
    with torch.no_grad():
        x = model.sample(SAMPLES, steps=40, generator=torch.Generator().manual_seed(1))
    assert x.dtype == torch.int64 and int(x.min()) >= 0 and int(x.max()) < 64
    distance = joint_tv(x, table)
    # What exact samples of the same size score: the estimate's noise floor (about 0.027).
    floor = tv_noise_floor(table, SAMPLES, draws=5)
    assert distance < 0.05, (distance, floor)
    assert floor < distance


def test_the_bound_lies_above_the_exact_nll_and_close_to_it(trained):
    toy, model = trained
    table = toy.log_probs().exp().reshape(-1)
    states = torch.cartesian_prod(torch.arange(64), torch.arange(64))
    with torch.no_grad():
        exact = model.log_prob(states, exact=True)
        assert float(exact.exp().sum()) == pytest.approx(1.0, abs=1e-4)
        exact_nll = -float((table * exact).sum())
        test = toy.sample(20_000, seed=5)
        nll = -model.log_prob(test, draws=8, generator=torch.Generator().manual_seed(2))
    bound, error = float(nll.mean()), float(nll.std() / math.sqrt(nll.numel()))
    # exact_nll is the expectation under the truth (no sampling noise); the bound's mean
    # carries its own standard error.
    assert bound > exact_nll - 2 * error, (bound, error, exact_nll)
    assert bound - exact_nll < 0.1, (bound, exact_nll)
    assert exact_nll > toy.entropy()
