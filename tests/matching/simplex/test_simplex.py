"""Flow matching on the simplex: the orthant's source and paths, the exact posterior
(its conditional densities integrate to one), the sampler converging with the exact
posterior, and a trained ``simplex-fm`` drawing a small categorical law."""

from __future__ import annotations

import math

import pytest
import torch

import pushforward
from pushforward.geometry import sphere_log, sphere_tangent
from pushforward.matching.simplex import (
    posterior_velocity,
    sample_simplex_path,
    sample_source,
)
from pushforward.matching.simplex.oracle import ExactSimplexDenoiser, conditional_log_density
from pushforward.matching.simplex.path import sphere_euler
from pushforward.metrics.discrete import joint_tv

pytestmark = pytest.mark.usefixtures("one_thread")
DTYPE = torch.float64


@pytest.mark.parametrize("source", ["orthant", "simplex"])
def test_source_points_lie_on_the_orthant_and_skip_invalid_tokens(source):
    valid = torch.tensor([[True, True, True], [True, True, False]])
    s = sample_source(
        source, (500, 2), valid, dtype=DTYPE, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(s.norm(dim=-1), torch.ones(500, 2, dtype=DTYPE))
    assert bool((s >= 0).all()) and bool((s[:, 1, 2] == 0).all())


def test_the_path_runs_from_the_source_to_the_vertex_tangentially():
    valid = torch.ones(2, 4, dtype=torch.bool)
    s0 = sample_source("orthant", (64, 2), valid, dtype=DTYPE)
    x = torch.randint(4, (64, 2))
    for t in (0.0, 0.3, 1.0):
        path = sample_simplex_path(s0, x, torch.full((64,), t, dtype=DTYPE))
        assert bool((path.s_t >= -1e-12).all())
        inner = (path.s_t * path.ds_t).sum(-1)
        torch.testing.assert_close(inner, torch.zeros_like(inner), atol=1e-10, rtol=0)
    torch.testing.assert_close(path.s_t, torch.nn.functional.one_hot(x, 4).to(DTYPE), atol=1e-9,
                               rtol=0)  # fmt: skip


def test_the_posterior_velocity_is_the_mean_of_the_logarithms_to_the_vertices():
    valid = torch.ones(3, 5, dtype=torch.bool)
    s = sample_source("orthant", (10, 3), valid, dtype=DTYPE)
    p = torch.softmax(torch.randn(10, 3, 5, dtype=DTYPE), -1)
    t = torch.rand(10, dtype=DTYPE) * 0.9
    expected = (
        sum(
            p[..., k : k + 1]
            * sphere_log(s, torch.nn.functional.one_hot(torch.tensor(k), 5).to(DTYPE).expand_as(s))
            for k in range(5)
        )
        / (1 - t)[:, None, None]
    )
    velocity = posterior_velocity(s, p, t)
    torch.testing.assert_close(velocity, expected)
    torch.testing.assert_close(sphere_tangent(s, velocity), velocity)


@pytest.mark.parametrize("source", ["orthant", "simplex"])
@pytest.mark.parametrize("t", [0.0, 0.4, 0.8])
def test_the_conditional_densities_integrate_to_one_over_the_orthant(source, t):
    # The positive orthant of S^2 in spherical angles, a midpoint grid; the constant
    # the log-density leaves out is the source's: 8 / (4 pi) (orthant) or 2 (simplex).
    n = 600
    polar = (torch.arange(n, dtype=DTYPE) + 0.5) * (math.pi / 2) / n
    azimuth = (torch.arange(n, dtype=DTYPE) + 0.5) * (math.pi / 2) / n
    a, b = torch.meshgrid(polar, azimuth, indexing="ij")
    s = torch.stack([a.sin() * b.cos(), a.sin() * b.sin(), a.cos()], -1).reshape(-1, 1, 3)
    area = (a.sin() * (math.pi / 2 / n) ** 2).reshape(-1)
    times = torch.full((s.shape[0],), t, dtype=DTYPE)
    log_density = conditional_log_density(s, times, torch.ones(1, 3, dtype=torch.bool), source)
    constant = 8 / (4 * math.pi) if source == "orthant" else 8.0
    for k in range(3):
        mass = float((log_density[:, 0, k].exp() * area).sum()) * constant
        assert mass == pytest.approx(1.0, abs=0.01)


def test_the_exact_posterior_is_the_prior_at_time_zero():
    table = torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=DTYPE).log()
    oracle = ExactSimplexDenoiser(table, "orthant")
    s = sample_source("orthant", (5, 2), oracle.valid, dtype=DTYPE)
    p = oracle(s, torch.zeros(5, dtype=DTYPE))
    torch.testing.assert_close(p[:, 0], torch.tensor([0.3, 0.7], dtype=DTYPE).expand(5, 2))
    torch.testing.assert_close(p[:, 1], torch.tensor([0.4, 0.6], dtype=DTYPE).expand(5, 2))


@pytest.mark.parametrize("source", ["orthant", "simplex"])
def test_the_sampler_with_the_exact_posterior_converges_to_the_table(source):
    table = torch.tensor([[0.30, 0.05, 0.15], [0.02, 0.28, 0.20]], dtype=DTYPE)
    oracle = ExactSimplexDenoiser(table.log(), source)
    n = 40_000
    distances = {}
    for steps in (2, 200):
        s0 = sample_source(source, (n, 2), oracle.valid, dtype=DTYPE,
                           generator=torch.Generator().manual_seed(steps))  # fmt: skip
        x = sphere_euler(lambda s, t: posterior_velocity(s, oracle(s, t), t), s0, oracle.valid,
                         steps)  # fmt: skip
        assert bool((x[:, 0] < 2).all())
        distances[steps] = float(joint_tv(x, table))
    # 40,000 samples of 6 cells: the noise floor is about 0.005.
    assert distances[200] < 0.015 < distances[2]


@pytest.mark.parametrize("objective", ["denoiser", "velocity"])
def test_a_trained_model_draws_a_small_categorical_law(objective):
    torch.manual_seed(0)
    probabilities = torch.tensor([0.6, 0.3, 0.1])
    data = torch.multinomial(probabilities, 20_000, replacement=True)[:, None]
    model = pushforward.build("simplex-fm", features=1, vocab=3, objective=objective,
                              hidden=[64, 64], steps=64)  # fmt: skip
    pushforward.fit(model, data, steps=1500, batch_size=256, lr=2e-3, ema=0.99, quiet=True, seed=0)
    x = model.eval().sample(20_000, generator=torch.Generator().manual_seed(1))
    frequencies = torch.bincount(x[:, 0], minlength=3).double() / x.shape[0]
    assert 0.5 * float((frequencies - probabilities.double()).abs().sum()) < 0.05


def test_guidance_and_options_are_checked():
    model = pushforward.build("simplex-fm", features=2, vocab=4, context=2, hidden=[16])
    with pytest.raises(ValueError, match="context_dropout"):
        model.sample(3, torch.zeros(2), guidance=2.0)
    guided = pushforward.build("simplex-fm", features=2, vocab=4, context=2, hidden=[16],
                               context_dropout=0.2, objective="velocity")  # fmt: skip
    x = guided.sample(5, torch.zeros(2), guidance=3.0, steps=4)
    assert x.shape == (5, 2) and x.dtype == torch.int64
    for options, match in (({"objective": "score"}, "objective"), ({"source": "dirichet"},
                           "simplex"), ({"network": "cnn"}, "network")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            pushforward.build("simplex-fm", features=2, vocab=4, **options)
    with pytest.raises(ValueError, match="steps"):
        model.sample(3, torch.zeros(2), steps=0)
