"""``Model.initialize``: the one explicit step of data-dependent initialisation."""

from __future__ import annotations

import torch

import pushforward
from pushforward.distributions import make_base
from pushforward.flows.flow import Flow
from pushforward.transforms.base import Compose, Inverse
from pushforward.transforms.normalization import ActNorm, BatchNorm
from tests.contract import randomize_


def actnorms(model: torch.nn.Module) -> list[ActNorm]:
    return [m for m in model.modules() if isinstance(m, ActNorm)]


def far_from_standard(n: int = 400, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    return torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64) + z * torch.tensor(
        [4.0, 0.3, 1.5], dtype=torch.float64
    )


def test_each_actnorm_standardises_what_it_sees_in_order():
    torch.manual_seed(0)
    model = pushforward.build("realnvp", features=3, transforms=3, hidden=[8]).double()
    randomize_(model, 0.3, torch.Generator().manual_seed(1))
    layers = actnorms(model)
    assert len(layers) == 3 and all(layer.awaits_data for layer in layers)
    x = far_from_standard()
    assert model.initialize(x) is model
    assert not any(layer.awaits_data for layer in layers)
    # Replay the pass: every ActNorm's output has zero mean and unit variance.
    seen = x
    for layer in model.transform.transforms:
        seen, _ = layer(seen)
        if isinstance(layer, ActNorm):
            zeros = torch.zeros(3, dtype=torch.float64)
            torch.testing.assert_close(seen.mean(0), zeros, atol=1e-10, rtol=0)
            # 1e-4: the eps of 1e-6 added to a variance of 0.09 leaves 1.1e-5.
            torch.testing.assert_close(seen.var(0, unbiased=False), zeros + 1, atol=1e-4, rtol=0)


def test_it_runs_once_and_log_prob_never_initialises():
    torch.manual_seed(0)
    model = pushforward.build("realnvp", features=3, transforms=2, hidden=[8]).double()
    x = far_from_standard()
    model.train()
    before = model.log_prob(x)
    # log_prob in training mode is the identity-initialised flow, with no side effect.
    assert all(layer.awaits_data for layer in actnorms(model))
    torch.testing.assert_close(model.log_prob(x), before, atol=0, rtol=0)
    model.initialize(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.initialize(10.0 * far_from_standard(seed=3))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_the_pass_changes_nothing_but_the_awaiting_layers():
    # ActNorm after a BatchNorm: initialised from batch-normalised values, as in a
    # training step, while the running statistics, the RNG and the modes stay as they were.
    flow = Flow(
        Compose([BatchNorm(3), ActNorm(3), Inverse(ActNorm(3))]), make_base("normal", (3,))
    ).double()
    flow.eval()
    flow.transform.transforms[0].train()
    x = far_from_standard()
    running = [b.clone() for b in flow.transform.transforms[0].buffers()]
    rng = torch.get_rng_state()
    flow.initialize(x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(
        torch.equal(a, b)
        for a, b in zip(flow.transform.transforms[0].buffers(), running, strict=True)
    )
    assert not flow.training and flow.transform.transforms[0].training
    assert not flow.transform.transforms[1].training
    first, backwards = actnorms(flow)
    assert not first.awaits_data
    normalised = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    expected = -0.5 * torch.log(normalised.var(0, unbiased=False) + first.eps)
    torch.testing.assert_close(first.log_scale.detach(), expected)
    # An ActNorm run backwards is not reached by log_prob: it stays the identity, and
    # its next forward does not initialise either.
    assert backwards.awaits_data
    y, _ = backwards(x)
    assert backwards.awaits_data and torch.equal(y, x)


def test_models_without_data_dependent_layers_are_left_alone():
    torch.manual_seed(0)
    for name, options in [("nsf", {"transforms": 2, "hidden": [8]}), ("fm", {"hidden": [8]})]:
        model = pushforward.build(name, features=3, **options).double()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        rng = torch.get_rng_state()
        assert model.initialize(far_from_standard()) is model
        assert torch.equal(torch.get_rng_state(), rng)
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_fresh_realnvp_samples_and_scores_alike():
    # The 1.7-nat disagreement of a lazily initialised ActNorm is gone.
    torch.manual_seed(0)
    model = pushforward.build("realnvp", features=2).double()
    samples, log_prob = model.sample_and_log_prob(256)
    torch.testing.assert_close(model.log_prob(samples), log_prob, atol=1e-10, rtol=0)
    model.initialize(3.0 + 2.0 * samples)
    samples, log_prob = model.sample_and_log_prob(256)
    torch.testing.assert_close(model.log_prob(samples), log_prob, atol=1e-10, rtol=0)
