"""Affine paths: the velocity is the time derivative of the interpolant, shapes are checked."""

from __future__ import annotations

import pytest
import torch

from pushforward.matching.path import AffinePath
from pushforward.matching.schedulers import SCHEDULERS, make_scheduler

SHAPES = [(5, 3), (4, 2, 3, 3)]


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_velocity_is_time_derivative(name: str, shape: tuple[int, ...]) -> None:
    path = AffinePath(make_scheduler(name))
    x0 = torch.randn(shape, dtype=torch.float64)
    x1 = torch.randn(shape, dtype=torch.float64)
    t = torch.linspace(0.02, 0.98, shape[0], dtype=torch.float64)

    def position(times: torch.Tensor) -> torch.Tensor:
        return path.sample(x0, x1, times).x_t

    # Row i of x_t depends on t[i] only, so a tangent of ones gives every row's d/dt.
    _, derivative = torch.autograd.functional.jvp(position, t, torch.ones_like(t))
    sample = path.sample(x0, x1, t)
    torch.testing.assert_close(sample.dx_t, derivative, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_broadcast_matches_row_by_row(name: str) -> None:
    scheduler = make_scheduler(name)
    path = AffinePath(scheduler)
    x0 = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    x1 = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    sample = path.sample(x0, x1, t)
    for i in range(3):
        c = scheduler(t[i])
        torch.testing.assert_close(sample.x_t[i], c.alpha * x1[i] + c.sigma * x0[i])
        torch.testing.assert_close(sample.dx_t[i], c.d_alpha * x1[i] + c.d_sigma * x0[i])
    assert sample.x0 is x0 and sample.x1 is x1
    assert torch.equal(sample.t, t)


def test_linear_path_end_points_and_velocity() -> None:
    path = AffinePath(make_scheduler("cond-ot"))
    x0 = torch.randn(4, 3, dtype=torch.float64)
    x1 = torch.randn(4, 3, dtype=torch.float64)
    start = path.sample(x0, x1, torch.zeros(4, dtype=torch.float64))
    end = path.sample(x0, x1, torch.ones(4, dtype=torch.float64))
    assert torch.equal(start.x_t, x0)
    assert torch.equal(end.x_t, x1)
    torch.testing.assert_close(start.dx_t, x1 - x0, rtol=0, atol=0)
    sigma_min = 0.1
    narrow = AffinePath(make_scheduler("cond-ot", sigma_min=sigma_min))
    end = narrow.sample(x0, x1, torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(end.x_t, x1 + sigma_min * x0)
    torch.testing.assert_close(end.dx_t, x1 - (1 - sigma_min) * x0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_the_data(dtype: torch.dtype) -> None:
    path = AffinePath(make_scheduler("vp"))
    x = torch.randn(6, 2, dtype=dtype)
    sample = path.sample(x, x, torch.rand(6, dtype=torch.float64))
    assert sample.x_t.dtype == sample.dx_t.dtype == sample.t.dtype == dtype
    assert torch.isfinite(sample.dx_t).all()


def test_clear_errors() -> None:
    path = AffinePath(make_scheduler("cosine"))
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"x0 has shape \(4, 2\) but data x1 has shape \(4, 3\)"):
        path.sample(torch.randn(4, 2), x, torch.rand(4))
    with pytest.raises(ValueError, match=r"t must have shape \(batch,\) = \(4,\), got \(4, 1\)"):
        path.sample(x, x, torch.rand(4, 1))
    with pytest.raises(ValueError, match=r"got \(\)"):
        path.sample(x, x, torch.tensor(0.5))
    with pytest.raises(TypeError, match="floating-point"):
        path.sample(x, x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x0 is torch.float64 but data x1 is torch.float32"):
        path.sample(x.double(), x, torch.rand(4))
    with pytest.raises(TypeError, match="needs a Scheduler"):
        AffinePath("cosine")  # type: ignore[arg-type]
