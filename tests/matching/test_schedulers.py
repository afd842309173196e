"""Schedulers: derivatives against autograd, boundary values, closed forms, the registry."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

from pushforward.matching.schedulers import (
    SCHEDULERS,
    CondOTScheduler,
    PolynomialScheduler,
    Scheduler,
    VPScheduler,
    make_scheduler,
)

# Every registered name with its defaults, plus non-default options that take
# other branches (sigma_min > 0, an exponent below 1).
CASES: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in SCHEDULERS] + [
    ("cond-ot", {"sigma_min": 0.1}),
    ("polynomial", {"exponent": 0.5}),
    ("polynomial", {"exponent": 3.0}),
    ("vp", {"beta_min": 0.5, "beta_max": 5.0}),
]
IDS = [f"{name}{options or ''}" for name, options in CASES]


def _scheduler(case: tuple[str, dict[str, Any]]) -> Scheduler:
    name, options = case
    return make_scheduler(name, **options)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_derivatives_match_autograd(case: tuple[str, dict[str, Any]]) -> None:
    scheduler = _scheduler(case)
    t = torch.linspace(0.01, 0.99, 49, dtype=torch.float64, requires_grad=True)
    c = scheduler(t)
    (d_alpha,) = torch.autograd.grad(c.alpha.sum(), t, retain_graph=True)
    (d_sigma,) = torch.autograd.grad(c.sigma.sum(), t)
    torch.testing.assert_close(c.d_alpha, d_alpha, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(c.d_sigma, d_sigma, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_boundary_values(case: tuple[str, dict[str, Any]]) -> None:
    scheduler = _scheduler(case)
    c = scheduler(torch.tensor([0.0, 1.0], dtype=torch.float64))
    name, options = case
    sigma_end = scheduler.options().get("sigma_min", 0.0)
    assert c.alpha[1].item() == pytest.approx(1.0, abs=1e-12)
    assert c.sigma[1].item() == pytest.approx(sigma_end, abs=1e-12)
    alpha_0, sigma_0 = _closed_form(name, options, 0.0)[:2]
    assert c.alpha[0].item() == pytest.approx(alpha_0, rel=1e-12, abs=1e-12)
    assert c.sigma[0].item() == pytest.approx(sigma_0, rel=1e-12, abs=1e-12)
    if not options:
        # With default options the source end is (nearly) pure noise; VP's alpha_0 is
        # exp(-(beta_min + beta_max) / 4) = 0.0066.
        assert c.alpha[0].item() == pytest.approx(0.0, abs=1e-2)
        assert c.sigma[0].item() == pytest.approx(1.0, abs=1e-4)
    for value in (c.alpha, c.sigma, c.d_alpha, c.d_sigma):
        assert torch.isfinite(value).all()


def test_exact_source_end_except_vp() -> None:
    for scheduler in (CondOTScheduler(0.2), make_scheduler("cosine"), PolynomialScheduler(0.7)):
        c = scheduler(torch.zeros(1, dtype=torch.float64))
        assert c.alpha.item() == 0.0
        assert c.sigma.item() == 1.0
    vp = VPScheduler(beta_min=0.1, beta_max=20.0)
    c = vp(torch.zeros(1, dtype=torch.float64))
    assert c.alpha.item() == pytest.approx(math.exp(-(0.1 + 20.0) / 4), rel=1e-12)
    assert c.sigma.item() == pytest.approx(math.sqrt(1 - math.exp(-(0.1 + 20.0) / 2)), rel=1e-12)


def _closed_form(name: str, options: dict[str, Any], t: float) -> tuple[float, ...]:
    """(alpha, sigma, d_alpha, d_sigma) written out independently with the math module."""
    if name in ("cond-ot", "linear"):
        m = options.get("sigma_min", 0.0)
        return t, 1 - (1 - m) * t, 1.0, -(1 - m)
    if name == "cosine":
        h = math.pi / 2
        return math.sin(h * t), math.cos(h * t), h * math.cos(h * t), -h * math.sin(h * t)
    if name == "polynomial":
        n = options.get("exponent", 2.0)
        rate = n * t ** (n - 1) if t > 0 or n >= 1 else math.inf
        return t**n, 1 - t**n, rate, -rate
    if name == "vp":
        b0, b1 = options.get("beta_min", 0.1), options.get("beta_max", 20.0)
        s = 1 - t
        alpha = math.exp(-0.5 * (b0 * s + 0.5 * (b1 - b0) * s**2))
        d_alpha = 0.5 * (b0 + (b1 - b0) * s) * alpha
        sigma = math.sqrt(1 - alpha**2)
        return alpha, sigma, d_alpha, (-alpha * d_alpha / sigma if sigma else -math.inf)
    raise AssertionError(f"no closed form written for {name!r}: add one")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_closed_forms(case: tuple[str, dict[str, Any]]) -> None:
    name, options = case
    grid = [0.05, 0.3, 0.5, 0.77, 0.95]
    c = _scheduler(case)(torch.tensor(grid, dtype=torch.float64))
    for i, t in enumerate(grid):
        got = (c.alpha[i].item(), c.sigma[i].item(), c.d_alpha[i].item(), c.d_sigma[i].item())
        assert got == pytest.approx(_closed_form(name, options, t), rel=1e-12, abs=1e-12)


def test_vp_d_sigma_finite_at_data_end() -> None:
    vp = VPScheduler()
    t = torch.tensor([1.0, 1.0 - 1e-5], dtype=torch.float64)
    c = vp(t)
    assert c.sigma[0].item() == 0.0
    assert torch.isfinite(c.d_sigma).all()
    # Read just inside the interval: the value at 1 equals the value at 1 - 1e-5.
    assert c.d_sigma[0].item() == c.d_sigma[1].item()
    c32 = vp(torch.ones(3, dtype=torch.float32))
    assert torch.isfinite(c32.d_sigma).all()


def test_polynomial_below_one_finite_at_source_end() -> None:
    c = PolynomialScheduler(0.5)(torch.tensor([0.0, 1e-5], dtype=torch.float64))
    assert torch.isfinite(c.d_alpha).all()
    assert c.d_alpha[0].item() == c.d_alpha[1].item() == pytest.approx(0.5 / math.sqrt(1e-5))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype_follow_t(case: tuple[str, dict[str, Any]], dtype: torch.dtype) -> None:
    t = torch.rand(3, 4, dtype=dtype)
    c = _scheduler(case)(t)
    for value in (c.alpha, c.sigma, c.d_alpha, c.d_sigma):
        assert value.shape == t.shape
        assert value.dtype == dtype
        assert value.device == t.device


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rebuilt_from_name_and_options(case: tuple[str, dict[str, Any]]) -> None:
    scheduler = _scheduler(case)
    options = json.loads(json.dumps(scheduler.options()))
    rebuilt = make_scheduler(scheduler.name, **options)
    assert rebuilt == scheduler
    assert type(rebuilt) is type(scheduler)
    t = torch.rand(7, dtype=torch.float64)
    for a, b in zip(vars(scheduler(t)).values(), vars(rebuilt(t)).values(), strict=True):
        assert torch.equal(a, b)


def test_linear_is_an_alias_of_cond_ot() -> None:
    assert SCHEDULERS["linear"] is CondOTScheduler
    assert make_scheduler("linear").name == "cond-ot"


def test_unknown_names_and_options() -> None:
    with pytest.raises(ValueError, match=r"unknown scheduler 'cosin'.*did you mean 'cosine'"):
        make_scheduler("cosin")
    with pytest.raises(ValueError, match="valid schedulers: cond-ot, linear, cosine, vp"):
        make_scheduler("ddpm")
    with pytest.raises(ValueError, match=r"unknown option 'sigma' .*did you mean 'sigma_min'"):
        make_scheduler("cond-ot", sigma=0.1)
    with pytest.raises(ValueError, match="takes no options"):
        make_scheduler("cosine", sigma_min=0.1)
    with pytest.raises(ValueError, match="sigma_min"):
        make_scheduler("cond-ot", sigma_min=1.0)
    with pytest.raises(ValueError, match="beta_max"):
        make_scheduler("vp", beta_min=2.0, beta_max=1.0)
    with pytest.raises(ValueError, match="exponent"):
        make_scheduler("polynomial", exponent=0)
    with pytest.raises(TypeError, match="floating-point"):
        CondOTScheduler()(torch.arange(3))
