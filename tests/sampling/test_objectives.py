"""Objectives against a target: path gradients, their fast pass, and the loss values.

With q equal to the target every log-weight is log Z and every path-gradient estimator
is exactly zero (zero variance), while the reparameterised reverse KL's gradient is not;
the fast path gradient equals the drop-in one computed through the inverse; every
estimator of a step reports the same loss value.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pushforward
from pushforward.distributions.normal import StandardNormal
from pushforward.flows.flow import Flow
from pushforward.sampling import CallableTarget
from pushforward.sampling.importance import evaluate_sampler, importance_log_weights
from pushforward.sampling.objectives import OBJECTIVES, log_q_held, make_objective
from pushforward.transforms.base import Compose
from pushforward.transforms.coupling import Coupling, alternating_mask
from pushforward.transforms.elementwise import ElementwiseAffine
from pushforward.transforms.maps import RationalQuadraticSplineMap
from tests.contract import randomize_

LOG_Z = 1.75


class GaussianTarget:
    """exp(LOG_Z) times N(mu, diag(sigma^2)), written independently of any flow."""

    def __init__(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        self.mu, self.sigma = mu, sigma
        self.features = mu.numel()
        self.log_z = LOG_Z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        standard = (x - self.mu) / self.sigma
        normal = -0.5 * standard.square().sum(-1) - self.sigma.log().sum()
        return normal - 0.5 * self.features * math.log(2 * math.pi) + LOG_Z


def exact_gaussian_flow(mu: torch.Tensor, sigma: torch.Tensor) -> Flow:
    """A flow that is exactly N(mu, diag(sigma^2)): an affine layer between identity couplings."""
    d = mu.numel()
    affine = ElementwiseAffine(d).double()  # set in float64, not rounded through float32
    with torch.no_grad():
        log_scale = -sigma.log()  # data to base: z = (x - mu) / sigma
        bound = affine.log_scale_bound
        affine.unconstrained_scale.copy_(bound * torch.atanh(log_scale / bound))
        affine.shift.copy_(-mu / sigma)
    layers = [
        Coupling(d, RationalQuadraticSplineMap(bins=4), alternating_mask(d, 0), hidden=[8]),
        affine,
        Coupling(d, RationalQuadraticSplineMap(bins=4), alternating_mask(d, 1), hidden=[8]),
    ]
    return Flow(Compose(layers), StandardNormal((d,))).double()


def random_flow(name: str, features: int, seed: int) -> pushforward.Model:
    torch.manual_seed(seed)
    options = {"transforms": 3, "hidden": [16]}
    if name == "realnvp":
        options["linear"] = "lu"
    model = pushforward.build(name, features=features, **options).double()
    randomize_(model, 0.3, torch.Generator().manual_seed(seed))
    return model


def gradient(model: pushforward.Model, loss: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in model.parameters()
        ]
    )


def own_target(model: pushforward.Model, shift: float = LOG_Z) -> CallableTarget:
    """The model's own density plus a constant, as a target (parameters held)."""

    class Own:
        features = model.features
        log_z = shift

        def log_prob(self, x: torch.Tensor) -> torch.Tensor:
            return log_q_held(model, x) + shift

    return CallableTarget(Own())


def test_an_exact_flow_gives_every_log_weight_log_z_and_ess_one():
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    sigma = torch.tensor([0.7, 1.3, 2.0], dtype=torch.float64)
    flow = exact_gaussian_flow(mu, sigma)
    target = CallableTarget(GaussianTarget(mu, sigma))
    _, log_w = importance_log_weights(flow, target, 5000)
    assert float((log_w - LOG_Z).abs().max()) < 1e-10
    result = evaluate_sampler(flow, target, n=5000, samples=flow.sample(2000))
    # The standard error is the square root of rounding-level weight differences.
    assert abs(result.log_z - LOG_Z) < 1e-10 and result.log_z_se < 1e-6
    assert abs(result.ess - 1.0) < 1e-12 and abs(result.forward_ess - 1.0) < 1e-12
    assert abs(result.elbo - LOG_Z) < 1e-10 and abs(result.eubo - LOG_Z) < 1e-10


@pytest.mark.parametrize("estimator", ["fast", "drop-in"])
def test_path_gradients_vanish_at_the_target_where_reverse_kl_does_not(estimator):
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    sigma = torch.tensor([0.7, 1.3], dtype=torch.float64)
    flow = exact_gaussian_flow(mu, sigma)
    randomize_(flow.transform.transforms[0], 0.0)  # keep the exact flow exact
    target = CallableTarget(GaussianTarget(mu, sigma))
    objective = make_objective("path-gradient", estimator=estimator)
    reverse = make_objective("reverse-kl")
    for seed in range(4):
        torch.manual_seed(seed)
        path = gradient(flow, objective.loss(flow, target, 64))
        torch.manual_seed(seed)
        score = gradient(flow, reverse.loss(flow, target, 64))
        assert float(path.abs().max()) < 1e-12
        assert float(score.abs().max()) > 1e-3


@pytest.mark.parametrize("name", ["nsf", "realnvp", "maf"])
@pytest.mark.parametrize("estimator", ["fast", "drop-in"])
def test_path_gradients_vanish_when_the_target_is_the_flow_itself(name, estimator):
    model = random_flow(name, 3, seed=4)
    target = own_target(model)
    objective = make_objective("path-gradient", estimator=estimator)
    for seed in range(3):
        torch.manual_seed(seed)
        loss = objective.loss(model, target, 32)
        assert abs(float(loss.detach()) + LOG_Z) < 1e-9  # KL(q || q) - log Z
        assert float(gradient(model, loss).abs().max()) < 1e-8


@given(
    name=st.sampled_from(["nsf", "realnvp"]),
    features=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_fast_path_gradient_equals_the_drop_in_one_and_its_loss_the_reparameterised(
    name, features, seed
):
    model = random_flow(name, features, seed)
    weights = torch.linspace(0.5, 2.0, features, dtype=torch.float64)

    def log_p(x):
        return -0.5 * (weights * x.square()).sum(-1) - 0.3 * x[:, 0] ** 4 + torch.sin(x).sum(-1)

    target = CallableTarget(log_p, features=features)
    losses, gradients = {}, {}
    for label, objective in [
        ("fast", make_objective("path-gradient")),
        ("drop-in", make_objective("path-gradient", estimator="drop-in")),
        ("reparameterised", make_objective("reverse-kl")),
    ]:
        torch.manual_seed(seed)
        loss = objective.loss(model, target, 32)
        losses[label], gradients[label] = float(loss), gradient(model, loss)
    scale = float(gradients["drop-in"].abs().max()) + 1.0
    assert float((gradients["fast"] - gradients["drop-in"]).abs().max()) < 1e-6 * scale
    assert losses["fast"] == pytest.approx(losses["reparameterised"], rel=1e-12, abs=1e-12)
    assert losses["drop-in"] == pytest.approx(losses["reparameterised"], rel=1e-12, abs=1e-12)


def test_forward_path_gradient_vanishes_at_the_target_and_matches_the_kl_value():
    model = random_flow("realnvp", 2, seed=7)

    class Own:
        features = 2
        log_z = 0.0
        has_sample = True

        def log_prob(self, x):
            return log_q_held(model, x)

        def sample(self, n):
            return model.sample(n)

    target = CallableTarget(Own())
    plain = make_objective("forward-kl")
    path = make_objective("forward-kl", path_gradient=True)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(1)
    loss = path.loss(model, target, 64, generator=generator)
    assert abs(float(loss)) < 1e-9  # KL(p || p)
    assert float(gradient(model, loss).abs().max()) < 1e-8
    torch.manual_seed(1)
    assert abs(float(plain.loss(model, target, 64, generator=generator))) < 1e-9


def test_forward_path_gradient_is_unbiased_for_the_kl_gradient():
    # Against a fixed Gaussian target, the mean of the forward path gradient over many
    # batches equals the mean maximum-likelihood gradient (both estimate dKL/dtheta).
    # A flow near the identity: far from the target (large random weights) the forward
    # path gradient is unbiased but heavy-tailed, and one batch would not show it.
    torch.manual_seed(3)
    model = pushforward.build("nsf", features=2, transforms=3, hidden=[16]).double()
    randomize_(model, 0.1, torch.Generator().manual_seed(3))
    mu = torch.tensor([0.3, -0.2], dtype=torch.float64)
    sigma = torch.tensor([1.1, 0.8], dtype=torch.float64)
    gaussian = GaussianTarget(mu, sigma)

    class Sampled(GaussianTarget):
        has_sample = True

        def sample(self, n):
            generator = torch.Generator().manual_seed(99)
            return mu + sigma * torch.randn(n, 2, generator=generator, dtype=torch.float64)

    target = CallableTarget(Sampled(gaussian.mu, gaussian.sigma))
    x_loss = make_objective("forward-kl").loss(model, target, 40_000)
    p_loss = make_objective("forward-kl", path_gradient=True).loss(model, target, 40_000)
    assert float(x_loss) == pytest.approx(float(p_loss), rel=1e-10)
    ml, pg = gradient(model, x_loss), gradient(model, p_loss)
    assert float((ml - pg).norm() / ml.norm()) < 0.1


def test_alpha_objective_is_log_z_times_a_constant_at_the_target():
    mu = torch.zeros(2, dtype=torch.float64)
    sigma = torch.ones(2, dtype=torch.float64)
    flow = exact_gaussian_flow(mu, sigma)
    target = CallableTarget(GaussianTarget(mu, sigma))
    for alpha in (2.0, 0.5, -1.0):
        loss = make_objective("alpha", alpha=alpha).loss(flow, target, 128)
        # E_q[w^alpha] = Z^alpha exactly when q = p.
        assert float(loss) == pytest.approx(LOG_Z / (alpha - 1.0), abs=1e-10)


def test_objective_errors_name_the_problem():
    with pytest.raises(ValueError, match="did you mean 'reverse-kl'"):
        make_objective("reverse_kl")
    with pytest.raises(ValueError, match=r"no option 'alpha'.*valid: estimator"):
        make_objective("path-gradient", alpha=2.0)
    with pytest.raises(ValueError, match="unknown path-gradient estimator 'slow'"):
        make_objective("path-gradient", estimator="slow")
    with pytest.raises(ValueError, match="other than 0 and 1"):
        make_objective("alpha", alpha=1.0)
    target = CallableTarget(lambda x: -x.square().sum(-1), features=2)
    model = pushforward.build("nsf", features=2, transforms=1, hidden=[8])
    with pytest.raises(ValueError, match="needs exact samples of the target"):
        make_objective("forward-kl").check(model, target)

    class NoReparameterisation(Flow):
        has_rsample = False

    plain = NoReparameterisation(model.transform, model.base)
    with pytest.raises(ValueError, match="reparameterised samples"):
        make_objective("reverse-kl").check(plain, target)
    maf = pushforward.build("maf", features=2, transforms=1, hidden=[8])
    make_objective("path-gradient").check(maf, target)  # every Flow carries scores
    assert set(OBJECTIVES) == {"reverse-kl", "path-gradient", "forward-kl", "alpha", "fab"}


def test_a_target_that_is_not_differentiable_is_refused_for_path_gradients():
    model = random_flow("nsf", 2, seed=0)

    class Numpy:
        features = 2
        has_sample = True

        def log_prob(self, x):
            return torch.from_numpy(-(x.detach().numpy() ** 2).sum(-1))

        def sample(self, n):
            return torch.randn(n, 2, dtype=torch.float64)

    target = CallableTarget(Numpy())
    with pytest.raises(ValueError, match="not differentiable"):
        make_objective("forward-kl", path_gradient=True).loss(model, target, 8)


def test_a_reference_scale_is_read_checked_and_broadcast():
    class Wide:
        features = 3
        reference_scale = 20.0

        def log_prob(self, x):
            return -0.5 * (x / 20).square().sum(-1)

    target = CallableTarget(Wide())
    assert target.reference_scale is not None
    assert target.reference_scale.tolist() == [20.0, 20.0, 20.0]
    Wide.reference_scale = -1.0
    with pytest.raises(ValueError, match="reference_scale must be one positive number or 3"):
        CallableTarget(Wide())
