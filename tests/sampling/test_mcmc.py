"""Flow MCMC: exactness with perfect proposals, moments of known targets, supports, diagnostics."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pushforward
from pushforward.sampling import CallableTarget
from pushforward.sampling.mcmc import (
    KERNELS,
    FlowProposal,
    PulledBackLogDensity,
    base_to_data,
    data_to_base,
    effective_sample_size,
    run_mcmc,
    split_r_hat,
)
from pushforward.sampling.mcmc.density import DataLogDensity
from pushforward.sampling.mcmc.independent import gumbel_max_choice
from pushforward.sampling.mcmc.metropolis import log_acceptance_ratio, metropolis_accept
from pushforward.transforms.preprocessing import Preprocessing
from pushforward.transforms.standardize import Standardize

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN = torch.tensor([0.5, -0.5], dtype=torch.float64)
STD = torch.tensor([1.2, 0.8], dtype=torch.float64)


def make_flow(
    name: str = "realnvp",
    perturb: float = 0.1,
    seed: int = 0,
    mean: tuple[float, float] | None = None,
    std: tuple[float, float] | None = None,
    dtype: torch.dtype = torch.float64,
) -> pushforward.Model:
    """A small flow, its zero-initialised last layers perturbed, optionally standardised."""
    torch.manual_seed(seed)
    flow = pushforward.build(name, features=2, transforms=2, hidden=[16])
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(perturb * torch.randn_like(parameter))
    if mean is not None and std is not None:
        flow.set_preprocessing(Preprocessing(Standardize(torch.tensor(mean), torch.tensor(std))))
    return flow.to(dtype).eval()


def gaussian_target(mean: torch.Tensor = MEAN, std: torch.Tensor = STD) -> CallableTarget:
    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((x - mean.to(x)) / std.to(x)).square().sum(-1)

    return CallableTarget(log_prob, features=2, name="gaussian")


def mixture_log_prob(x: torch.Tensor) -> torch.Tensor:
    """0.3 N((-2, 0), 0.5^2 I) + 0.7 N((2, 0), 0.5^2 I), unnormalised."""
    left = -0.5 * ((x - x.new_tensor([-2.0, 0.0])) / 0.5).square().sum(-1)
    right = -0.5 * ((x - x.new_tensor([2.0, 0.0])) / 0.5).square().sum(-1)
    return torch.logaddexp(left + math.log(0.3), right + math.log(0.7))


# -- exactness with a perfect proposal -----------------------------------------------------


def test_imh_with_the_target_as_proposal_accepts_every_move():
    flow = make_flow(perturb=0.3)
    target = CallableTarget(lambda x: flow.log_prob(x) + 3.0, features=2)
    result = run_mcmc(target, flow, "imh", chains=32, steps=100, seed=1)
    assert result.acceptance == 1.0
    assert bool((result.acceptance_per_chain == 1.0).all())
    assert result.target_evaluations == 32 * (1 + 100)


def test_isir_with_the_target_as_proposal_moves_freely():
    flow = make_flow(perturb=0.3)
    target = CallableTarget(lambda x: flow.log_prob(x) - 1.0, features=2)
    particles = 5
    result = run_mcmc(target, flow, "isir", chains=32, steps=200, seed=2, particles=particles)
    # Equal weights: the current state is kept with probability 1/N only.
    expected, draws = (particles - 1) / particles, 32 * 200
    assert abs(result.acceptance - expected) < 4 * math.sqrt(expected * (1 - expected) / draws)
    assert result.target_evaluations == 32 * (1 + (particles - 1) * 200)
    assert bool((result.ess > 0.5 * draws).all())


def test_imh_acceptance_falls_as_the_proposal_mismatch_grows():
    flow = make_flow(perturb=0.0)  # the identity: the proposal is N(0, I)
    rates = []
    for scale in (1.0, 1.4, 2.0, 3.0):
        target = gaussian_target(torch.zeros(2), torch.full((2,), scale))
        rates.append(run_mcmc(target, flow, "imh", chains=32, steps=200, seed=3).acceptance)
    assert rates[0] > 0.99
    assert all(a > b + 0.05 for a, b in itertools.pairwise(rates)), rates


def test_defensive_mixture_frees_chains_trapped_in_heavy_tails():
    flow = make_flow(perturb=0.0)  # proposal N(0, I); target N(0, 9 I)
    target = gaussian_target(torch.zeros(2), torch.full((2,), 3.0))
    plain = run_mcmc(target, flow, "imh", chains=32, steps=400, seed=4)
    mixed = run_mcmc(
        target, flow, "imh", chains=32, steps=400, seed=4, defensive=0.2, defensive_scale=5.0
    )
    plain_var = plain.chains.reshape(-1, 2).var(0)
    mixed_var = mixed.chains.reshape(-1, 2).var(0)
    assert bool((plain_var < 6.0).all())  # trapped: the tails are badly under-visited
    assert bool(((mixed_var - 9.0).abs() < 1.5).all()), mixed_var
    assert bool((mixed.r_hat < 1.05).all()) and bool((plain.r_hat > 1.1).all())


def test_defensive_proposal_density_matches_its_draws():
    flow = make_flow(perturb=0.2)
    proposal = FlowProposal(flow, defensive=0.3, defensive_scale=4.0)
    generator = torch.Generator().manual_seed(5)
    x, log_q = proposal.sample(200, generator)
    torch.testing.assert_close(log_q, proposal.log_prob(x))
    # The mixture density integrates to one: a 1-D check along each axis is not enough,
    # so integrate on a grid in 2-D.
    grid = torch.linspace(-20, 20, 401, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    mass = proposal.log_prob(points).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(float(mass) - 1.0) < 1e-3


# -- every kernel samples known targets ---------------------------------------------------

MOMENT_RUNS = {
    "imh": {},
    "isir": {"particles": 5},
    "neutra": {"leapfrog_steps": 4, "step_size": 0.3, "jitter": 0.3},
    "neutra-mala": {"step_size": 0.3},
    "local-global": {"local_steps": 2, "particles": 4},
    "hmc": {"leapfrog_steps": 6, "step_size": 0.25, "adapt_step_size": False, "jitter": 0.3},
    "mala": {"step_size": 0.3},
}


def test_every_kernel_is_in_the_moment_sweep():
    assert set(MOMENT_RUNS) == set(KERNELS)


@pytest.mark.parametrize("kernel", KERNELS)
def test_chain_moments_match_a_gaussian_target(kernel):
    # A flow that is close to the target but not equal: standardised and perturbed.
    flow = make_flow(perturb=0.05, mean=(0.4, -0.4), std=(1.4, 1.0))
    result = run_mcmc(
        gaussian_target(),
        flow,
        kernel,
        chains=16,
        steps=200,
        warmup=50,
        seed=6,
        **MOMENT_RUNS[kernel],
    )
    assert result.chains.shape == (200, 16, 2) and result.chains.dtype == torch.float64
    draws = result.chains.reshape(-1, 2)
    # Monte-Carlo standard errors from each statistic's own ESS, capped at the draws'
    # number (HMC's antithetic draws can exceed it for the mean, not for the square).
    ess = result.ess.clamp(max=draws.shape[0])
    assert bool((ess > 100).all()), ess
    mean_error = (draws.mean(0) - MEAN).abs() / (draws.std(0) / ess.sqrt())
    assert bool((mean_error < 4.0).all()), (draws.mean(0), ess)
    squares = (result.chains - MEAN).square()
    square_ess = effective_sample_size(squares, rank_normalized=False).clamp(max=draws.shape[0])
    var_error = (squares.reshape(-1, 2).mean(0) - STD**2).abs() / (
        squares.reshape(-1, 2).std(0) / square_ess.sqrt()
    )
    assert bool((var_error < 4.0).all()), (draws.var(0), square_ess)
    assert bool((result.r_hat < 1.05).all()), result.r_hat


@pytest.mark.parametrize("kernel", ["isir", "local-global"])
def test_mode_weights_of_a_two_component_mixture(kernel):
    # A wide proposal covering both modes: N((0, 0), diag(2.5^2, 1)).
    flow = make_flow(perturb=0.0, mean=(0.0, 0.0), std=(2.5, 1.0))
    target = CallableTarget(mixture_log_prob, features=2)
    result = run_mcmc(target, flow, kernel, chains=16, steps=250, seed=7, particles=8)
    right = (result.chains[..., 0] > 0).to(torch.float64)
    per_chain = right.mean(0)
    standard_error = per_chain.std() / math.sqrt(per_chain.numel())
    assert abs(float(right.mean()) - 0.7) < 4 * float(standard_error) + 0.02


@pytest.mark.parametrize("kernel", KERNELS)
def test_states_never_leave_a_box_support(kernel):
    def log_prob(x: torch.Tensor) -> torch.Tensor:
        inside = ((x > 0) & (x < 1)).all(-1)
        # The log of the distance to the edge, masked before it is evaluated outside.
        safe = torch.where(inside.unsqueeze(-1), x, torch.full_like(x, 0.5))
        values = torch.log(safe * (1 - safe)).sum(-1)
        return torch.where(inside, values, torch.full_like(values, -math.inf))

    flow = make_flow(perturb=0.1, mean=(0.5, 0.5), std=(0.5, 0.5))
    target = CallableTarget(log_prob, features=2)
    init = torch.full((8, 2), 0.5, dtype=torch.float64)
    options = {k: v for k, v in MOMENT_RUNS[kernel].items() if k != "adapt_step_size"}
    result = run_mcmc(
        target, flow, kernel, chains=8, steps=60, warmup=10, seed=8, init=init, **options
    )
    chains = result.chains
    assert bool(torch.isfinite(chains).all())
    assert bool(((chains > 0) & (chains < 1)).all())
    assert 0.0 < result.acceptance < 1.0


def test_mala_step_size_tuning_reaches_its_target_acceptance():
    flow = make_flow(perturb=0.0)
    target = gaussian_target(torch.zeros(2), torch.tensor([1.0, 3.0]))
    result = run_mcmc(
        target, flow, "mala", chains=16, steps=200, warmup=200, seed=9, step_size=0.01
    )
    assert abs(result.acceptance - 0.574) < 0.08, result.acceptance
    assert result.details["step_size"] > 0.1


# -- NeuTra's latent density -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["realnvp", "nsf"])
def test_pulled_back_density_is_the_change_of_variables(name):
    flow = make_flow(name, perturb=0.3, mean=(1.0, -2.0), std=(2.0, 0.5))
    target = gaussian_target()
    latent = PulledBackLogDensity(DataLogDensity(target), flow)
    z = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    x, logabsdet = base_to_data(flow, z)
    expected = []
    for row in z:
        jacobian = torch.autograd.functional.jacobian(
            lambda v: base_to_data(flow, v.unsqueeze(0))[0].squeeze(0), row
        )
        expected.append(torch.linalg.slogdet(jacobian).logabsdet)
    torch.testing.assert_close(logabsdet.detach(), torch.stack(expected))
    torch.testing.assert_close(
        latent.log_prob(z).detach(), target.log_prob(x).detach() + torch.stack(expected)
    )
    # The same map seen from the model's own density and its inverse.
    base = -0.5 * z.square().sum(-1) - math.log(2 * math.pi)
    torch.testing.assert_close(flow.log_prob(x).detach(), base - torch.stack(expected))
    torch.testing.assert_close(data_to_base(flow, x).detach(), z)


def test_neutra_needs_an_explicit_bijection():
    model = pushforward.build("fm", features=2).double()
    with pytest.raises(TypeError, match="explicit bijection"):
        run_mcmc(gaussian_target(), model, "neutra", chains=2, steps=4)


# -- the entry point: errors, reproducibility, dtype ------------------------------------------


def test_unknown_kernel_names_the_closest():
    with pytest.raises(ValueError, match="did you mean 'isir'"):
        run_mcmc(gaussian_target(), make_flow(), "isr")


@pytest.mark.parametrize(
    ("kernel", "options", "message"),
    [
        ("imh", {"defensive": 1.0}, "defensive"),
        ("imh", {"defensive_scale": -1.0}, "defensive_scale"),
        ("isir", {"particles": 1}, "particles"),
        ("hmc", {"step_size": 0.0}, "step_size"),
        ("neutra", {"leapfrog_steps": 0}, "leapfrog_steps"),
        ("hmc", {"jitter": 1.0}, "jitter"),
        ("mala", {"target_acceptance": 1.5}, "target_acceptance"),
        ("local-global", {"global_kernel": "mh"}, "global_kernel"),
        ("local-global", {"local_stepz": 2}, "did you mean 'local_steps'"),
        ("imh", {"step_size": 0.1}, "unknown option 'step_size'"),
    ],
)
def test_invalid_kernel_options_are_named(kernel, options, message):
    with pytest.raises(ValueError, match=message):
        run_mcmc(gaussian_target(), make_flow(), kernel, chains=2, steps=4, **options)


def test_runs_repeat_exactly_and_leave_the_global_generator_alone():
    flow = make_flow(perturb=0.1)
    state = torch.get_rng_state()
    first = run_mcmc(gaussian_target(), flow, "local-global", chains=4, steps=10, seed=11)
    assert torch.equal(torch.get_rng_state(), state)
    again = run_mcmc(
        gaussian_target(),
        flow,
        "local-global",
        chains=4,
        steps=10,
        generator=torch.Generator().manual_seed(11),
    )
    other = run_mcmc(gaussian_target(), flow, "local-global", chains=4, steps=10, seed=12)
    assert torch.equal(first.chains, again.chains)
    assert not torch.equal(first.chains, other.chains)


@pytest.mark.parametrize("kernel", ["imh", "neutra-mala"])
def test_float32_follows_the_model(kernel):
    flow = make_flow(dtype=torch.float32)
    result = run_mcmc(gaussian_target(), flow, kernel, chains=4, steps=8, seed=13)
    assert result.chains.dtype == torch.float32
    assert result.r_hat.dtype == torch.float32


def test_hmc_from_init_needs_no_model():
    init = torch.zeros(4, 2, dtype=torch.float64)
    result = run_mcmc(gaussian_target(), None, "hmc", chains=4, steps=8, init=init, seed=14)
    assert result.chains.shape == (8, 4, 2)
    with pytest.raises(ValueError, match="needs a model"):
        run_mcmc(gaussian_target(), None, "imh", chains=4, steps=8, init=init)


# -- the Metropolis rule and the i-SIR choice ------------------------------------------------

log_values = st.one_of(st.just(-math.inf), st.floats(-1e6, 1e6))


@given(st.lists(st.tuples(log_values, log_values), min_size=1, max_size=20))
def test_acceptance_ratio_is_never_nan_and_rejects_zero_density(pairs):
    proposed = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
    current = torch.tensor([c for _, c in pairs], dtype=torch.float64)
    ratio = log_acceptance_ratio(proposed, current)
    assert not bool(torch.isnan(ratio).any())
    accepted = metropolis_accept(ratio, torch.Generator().manual_seed(0))
    assert not bool(accepted[proposed == -math.inf].any())
    assert bool(accepted[(proposed > -math.inf) & (current == -math.inf)].all())


@given(st.lists(st.lists(log_values, min_size=3, max_size=3), min_size=1, max_size=10))
def test_isir_choice_never_picks_a_zero_weight(rows):
    weights = torch.tensor(rows, dtype=torch.float64)
    chosen = gumbel_max_choice(weights, torch.Generator().manual_seed(0))
    picked = weights[torch.arange(len(rows)), chosen]
    somewhere = (weights > -math.inf).any(-1)
    assert bool((picked[somewhere] > -math.inf).all())
    assert bool((chosen[~somewhere] == 0).all())


def test_isir_choice_follows_the_weights():
    weights = torch.tensor([[0.1, 0.3, 0.6]], dtype=torch.float64).log().expand(20000, 3)
    chosen = gumbel_max_choice(weights, torch.Generator().manual_seed(1))
    frequencies = torch.bincount(chosen, minlength=3).to(torch.float64) / 20000
    torch.testing.assert_close(frequencies, weights[0].exp(), atol=0.015, rtol=0)


# -- diagnostics ------------------------------------------------------------------------------


def ar1(steps: int, chains: int, rho: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(steps, chains, 1, dtype=torch.float64, generator=generator)
    draws = torch.empty_like(noise)
    draws[0] = noise[0]
    for t in range(1, steps):
        draws[t] = rho * draws[t - 1] + math.sqrt(1 - rho**2) * noise[t]
    return draws


def test_r_hat_is_one_for_iid_chains_and_large_for_stuck_ones():
    generator = torch.Generator().manual_seed(15)
    iid = torch.randn(1000, 4, 3, dtype=torch.float64, generator=generator)
    assert bool(((split_r_hat(iid) - 1.0).abs() < 0.01).all())
    stuck = torch.arange(4, dtype=torch.float64).reshape(1, 4, 1).expand(200, 4, 2)
    assert bool((split_r_hat(stuck) > 1.1).all())
    shifted = iid + torch.tensor([0.0, 0.0, 2.0, 2.0], dtype=torch.float64).reshape(1, 4, 1)
    assert bool((split_r_hat(shifted) > 1.1).all())
    # Split chains see a drift within each chain, though the chains agree with each other.
    drift = iid + torch.linspace(0, 3, 1000, dtype=torch.float64).reshape(-1, 1, 1)
    assert bool((split_r_hat(drift) > 1.1).all())


@given(st.floats(0.01, 100.0), st.floats(-100.0, 100.0), st.integers(0, 2**16))
def test_r_hat_is_invariant_under_increasing_affine_maps(scale, shift, seed):
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randn(40, 3, 2, dtype=torch.float64, generator=generator)
    draws[:, 0] += 0.5
    torch.testing.assert_close(split_r_hat(scale * draws + shift), split_r_hat(draws))
    torch.testing.assert_close(
        effective_sample_size(draws[:, [2, 0, 1]]), effective_sample_size(draws)
    )


@pytest.mark.parametrize("rank_normalized", [True, False])
def test_ess_of_iid_draws_is_their_number(rank_normalized):
    generator = torch.Generator().manual_seed(16)
    draws = torch.randn(2000, 4, 3, dtype=torch.float64, generator=generator)
    ess = effective_sample_size(draws, rank_normalized=rank_normalized)
    assert bool(((ess / 8000 - 1.0).abs() < 0.12).all()), ess


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_ess_of_an_ar1_chain(rho):
    draws = ar1(5000, 4, rho, seed=17)
    expected = 20000 * (1 - rho) / (1 + rho)
    for rank_normalized in (True, False):
        ess = float(effective_sample_size(draws, rank_normalized=rank_normalized)[0])
        assert abs(ess / expected - 1.0) < 0.2, (ess, expected)


def test_diagnostics_refuse_too_short_chains():
    with pytest.raises(ValueError, match="at least 4 steps"):
        split_r_hat(torch.zeros(3, 2, 1))
