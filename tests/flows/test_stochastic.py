"""The stochastic normalizing flow ``snf``: exact path weights, their reductions, training.

The unbiasedness tests compare :math:`\\log \\frac1n \\sum_i w_i` with a known
:math:`\\log Z` within three delta-method standard errors. They can fail: with every
layer's :math:`\\Delta S` dropped, a setting like theirs misses by more than eight.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import pushforward
from pushforward.flows import Flow, StochasticNormalizingFlow
from pushforward.sampling import CallableTarget
from pushforward.sampling.importance import (
    evaluate_sampler,
    importance_log_weights,
    log_z_estimate,
    reverse_ess,
)
from pushforward.sampling.objectives import make_objective
from pushforward.sampling.targets.gaussian_mixture import GaussianMixtureTarget
from tests.contract import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")

# A 1-D Gaussian of known normaliser: log p~(x) = -(x - 1.5)^2 / (2 * 0.7^2) + 0.3.
MEAN, SCALE, OFFSET = 1.5, 0.7, 0.3
LOG_Z = OFFSET + 0.5 * math.log(2 * math.pi * SCALE**2)
STEPS = {"langevin": 0.1, "metropolis": 0.8, "hmc": 0.3}


def gaussian_1d(x: Tensor) -> Tensor:
    return -0.5 * ((x[:, 0] - MEAN) / SCALE) ** 2 + OFFSET


TARGET_1D = CallableTarget(gaussian_1d, features=1, name="gaussian-1d")


def build(seed: int = 0, **options) -> StochasticNormalizingFlow:
    torch.manual_seed(seed)
    options = {"features": 1, "transforms": 2, "hidden": [8], **options}
    model = pushforward.build("snf", **options).double()
    assert isinstance(model, StochasticNormalizingFlow)
    return model


def log_z_and_ess(model: StochasticNormalizingFlow, target, n: int, seed: int = 1):
    torch.manual_seed(seed)
    _, log_w = model.sample_and_log_weight(n, target)
    assert log_w.dtype == torch.float64 and log_w.shape == (n,)
    return (*log_z_estimate(log_w), reverse_ess(log_w))


def mismatched(model: StochasticNormalizingFlow) -> StochasticNormalizingFlow:
    """The couplings' weights perturbed (seeded), so the flow is neither the identity nor fit."""
    randomize_(model.flows, 0.25, torch.Generator().manual_seed(4))
    return model


@pytest.mark.parametrize("intermediate", ["pushforward", "prior"])
@pytest.mark.parametrize("kind", ["langevin", "metropolis", "hmc"])
def test_path_weights_give_an_unbiased_log_z_with_a_mismatched_flow(kind, intermediate):
    layers = 2 if kind == "hmc" else 6
    options = {"coupling_map": "affine", "intermediate": intermediate, "step_size": STEPS[kind]}
    snf = mismatched(build(stochastic=[kind] * layers, **options))
    log_z, se, ess = log_z_and_ess(snf, TARGET_1D, 20_000)
    assert abs(log_z - LOG_Z) < 3 * se, (log_z, LOG_Z, se)
    flow_only = mismatched(build(stochastic=[], **options))
    _, _, flow_ess = log_z_and_ess(flow_only, TARGET_1D, 20_000)
    assert flow_ess < 0.5
    if intermediate == "pushforward":
        # The stochastic layers matter: the same flow without them samples worse. (The
        # prior's intermediates pull towards the base in every layer's coordinates, which
        # can undo part of what a flow does: unbiased still, not better here.)
        assert ess > 1.3 * flow_ess, (ess, flow_ess)


@pytest.mark.parametrize("kind", ["langevin", "metropolis", "hmc"])
def test_stochastic_layers_alone_are_annealed_importance_sampling(kind):
    layers = 3 if kind == "hmc" else 8
    snf = build(transforms=0, stochastic=[kind] * layers, step_size=STEPS[kind])
    assert all(p.numel() == 1 for p in snf.parameters())  # the step sizes alone
    log_z, se, ess = log_z_and_ess(snf, TARGET_1D, 20_000)
    assert abs(log_z - LOG_Z) < 3 * se, (log_z, LOG_Z, se)
    assert se < 0.02
    plain = build(transforms=0, stochastic=[])
    assert ess > 1.2 * log_z_and_ess(plain, TARGET_1D, 20_000)[2]


@pytest.mark.parametrize("kind", ["metropolis", "hmc"])
def test_a_target_proportional_to_the_base_gives_every_path_the_weight_z(kind):
    # Every rho_k is then the base up to a constant: the Delta S of reversible kernels
    # telescope to log p_Z(z) - log p_Z(x), so log w = log Z exactly, whatever the moves.
    target = CallableTarget(lambda x: -0.5 * x.square().sum(-1) + 2.0, features=2)
    snf = build(features=2, transforms=0, stochastic=[kind] * 4, step_size=0.7)
    torch.manual_seed(0)
    x, log_w = snf.sample_and_log_weight(500, target)
    expected = 2.0 + math.log(2 * math.pi)
    torch.testing.assert_close(log_w, torch.full_like(log_w, expected), atol=1e-10, rtol=0)
    assert (x.std(0) > 0.8).all()


def test_without_stochastic_layers_the_weights_are_the_flows_importance_weights():
    snf = build(features=2, transforms=3, stochastic=[])
    randomize_(snf, 0.3, torch.Generator().manual_seed(3))
    target = GaussianMixtureTarget(torch.tensor([[-1.0, 0.5], [1.0, -0.5]]), 0.7)
    flow = Flow(snf.flows[0], snf.base)
    torch.manual_seed(4)
    x, log_w = snf.sample_and_log_weight(300, target)
    torch.manual_seed(4)
    flow_x, log_q = flow.sample_and_log_prob(300)
    torch.testing.assert_close(x, flow_x, atol=0, rtol=0)
    torch.testing.assert_close(log_w, target.log_prob(x) - log_q, atol=1e-12, rtol=0)
    # Without stochastic layers no target is needed to sample.
    torch.manual_seed(4)
    torch.testing.assert_close(snf.sample(300), flow_x, atol=0, rtol=0)


def test_training_improves_the_ess_beyond_the_plain_flow_at_the_same_budget():
    target = GaussianMixtureTarget(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.6)
    results = {}
    for name, kinds in (("snf", ["langevin"] * 4), ("flow", [])):
        model = build(features=2, hidden=[16], coupling_map="affine", stochastic=kinds)
        initial = ess_of(model, target)
        pushforward.fit(
            model,
            target=target,
            objective="reverse-kl",
            steps=100,
            batch_size=128,
            lr=1e-2,
            quiet=True,
            seed=0,
        )
        results[name] = (initial, ess_of(model, target))
    (snf_before, snf_after), (_, flow_after) = results["snf"], results["flow"]
    assert snf_after > 2.0 * snf_before, results
    assert snf_after > flow_after + 0.05, results


def ess_of(model, target) -> float:
    torch.manual_seed(3)
    _, log_w = importance_log_weights(model, target, 4000)
    return reverse_ess(log_w)


def test_gradients_reach_the_flow_and_the_step_sizes():
    snf = build(features=2, stochastic=["langevin", "hmc", "metropolis"], leapfrog_steps=2)
    snf.lambdas = (0.3, 0.6, 0.9)  # no layer at lambda = 1: every step size shapes the weights
    target = GaussianMixtureTarget(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), 0.8)
    torch.manual_seed(0)
    x, log_w = snf.rsample_and_log_weight(64, target)
    assert x.requires_grad and log_w.requires_grad
    (-log_w.mean()).backward()
    steps = [layer.log_step_size.grad for layer in snf.layers]
    assert all(g is not None and torch.isfinite(g) and g != 0 for g in steps), steps
    couplings = [p.grad for p in snf.flows.parameters() if p.grad is not None]
    assert couplings and all(torch.isfinite(g).all() for g in couplings)


def test_the_objective_and_the_diagnostics_use_the_path_weights():
    snf = build(features=2, stochastic=["metropolis"] * 2, step_size=0.5)
    target = GaussianMixtureTarget(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), 0.8)
    reverse_kl = make_objective("reverse-kl")
    reverse_kl.check(snf, target)
    torch.manual_seed(0)
    loss = reverse_kl.loss(snf, target, 32, beta=0.5)
    torch.manual_seed(0)
    _, log_w = snf.rsample_and_log_weight(32, target, beta=0.5)
    torch.testing.assert_close(loss, -log_w.mean())
    with pytest.raises(ValueError, match="rsample_and_log_prob"):
        make_objective("alpha").check(snf, target)
    torch.manual_seed(1)
    _, weights = importance_log_weights(snf, target, 100, chunk=40)
    torch.manual_seed(1)
    expected = torch.cat([snf.sample_and_log_weight(n, target)[1] for n in (40, 40, 20)])
    torch.testing.assert_close(weights, expected, atol=0, rtol=0)
    result = evaluate_sampler(snf, target, n=2000)
    assert abs(result.log_z - 0.0) < 3 * result.log_z_se and 0 < result.ess <= 1


def test_samples_need_the_target_and_have_no_density():
    snf = build(features=2)
    target = GaussianMixtureTarget(torch.tensor([[0.0, 0.0]]), 1.0)
    with pytest.raises(ValueError, match="move towards a target"):
        snf.sample(4)
    with pytest.raises(ValueError, match="unknown option 'targt'"):
        snf.sample(4, targt=target)
    with pytest.raises(ValueError, match="beta"):
        snf.sample(4, target=target, beta=1.5)
    with pytest.raises(ValueError, match="features=2"):
        snf.sample(4, target=CallableTarget(lambda x: -x.square().sum(-1), features=3))
    assert snf.sample(4, target=target).shape == (4, 2)
    with pytest.raises(NotImplementedError, match="log_prob"):
        snf.log_prob(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(NotImplementedError, match="fit it to a target"):
        snf.loss(torch.zeros(3, 2, dtype=torch.float64))
    assert not snf.trains_from_data and snf.has_path_weights


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stochastic": ["langevin", "mala"]}, "option 'stochastic' must be one of"),
        ({"stochastic": ["langevin"] * 2, "positions": [2, 1]}, "non-decreasing"),
        ({"stochastic": ["langevin"] * 2, "positions": [1, 5]}, r"in \[0, 2\]"),
        ({"stochastic": ["langevin"] * 2, "lambdas": [0.5]}, "1 values for 2 stochastic"),
        ({"stochastic": ["langevin"], "lambdas": [1.5]}, "fraction"),
        ({"step_size": -0.1}, "positive number"),
        ({"leapfrog_steps": 0}, "integer >= 1"),
        ({"intermediate": "halfway"}, "option 'intermediate' must be one of"),
        ({"coupling_map": "spline-ish"}, "option 'coupling_map' must be one of"),
        ({"transforms": -1}, "integer >= 0"),
    ],
)
def test_bad_options_are_errors_that_name_them(options, message):
    with pytest.raises(ValueError, match=message):
        pushforward.build("snf", features=2, **{"transforms": 2, **options})


def test_the_layout_puts_each_stochastic_layer_after_its_coupling_layers():
    snf = pushforward.build(
        "snf", features=2, transforms=5, stochastic=["metropolis", "hmc"], positions=[0, 3]
    )
    assert [len(block) for block in snf.blocks] == [0, 3, 2]
    assert [layer.kind for layer in snf.layers] == ["metropolis", "hmc"]
    assert snf.lambdas == (0.5, 1.0)
    default = pushforward.build("snf", features=2, transforms=4)
    assert [len(block) for block in default.blocks] == [1, 1, 1, 1, 0]


def test_fixed_step_sizes_are_buffers_that_are_saved(tmp_path):
    snf = build(features=2, stochastic=["langevin"], step_size=0.2, learn_step_size=False)
    assert "layers.0.log_step_size" in dict(snf.named_buffers())
    pushforward.save(snf, tmp_path)
    loaded = pushforward.load(tmp_path)
    assert float(loaded.layers[0].step_size) == pytest.approx(0.2)
