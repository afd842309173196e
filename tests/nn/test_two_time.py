"""The two-time velocity network: shapes, conditioning on both times, jvp, errors."""

from __future__ import annotations

import pytest
import torch

from pushforward.nn.two_time import TwoTimeVelocityMLP


@pytest.mark.parametrize("residual", [False, True])
def test_output_depends_on_both_times_and_context(residual: bool) -> None:
    torch.manual_seed(0)
    net = TwoTimeVelocityMLP(3, context=2, hidden=(16, 16), residual=residual).double()
    for parameter in net.parameters():  # residual blocks start as the identity
        parameter.data.add_(0.3 * torch.randn_like(parameter))
    x = torch.randn(5, 3, dtype=torch.float64)
    c = torch.randn(5, 2, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    s = torch.rand(5, dtype=torch.float64)
    out = net(x, t, s, c)
    assert out.shape == (5, 3) and out.dtype == torch.float64
    assert not torch.allclose(out, net(x, t, s + 0.1, c))
    assert not torch.allclose(out, net(x, t + 0.1, s, c))
    assert not torch.allclose(out, net(x, t, s, c + 0.1))
    # Rows are independent: each row equals the network applied to that row alone.
    torch.testing.assert_close(out[2:3], net(x[2:3], t[2:3], s[2:3], c[2:3]))
    # Scalars broadcast like per-row values.
    torch.testing.assert_close(
        net(x, 0.5, 0.25, c[:1]), net(x, t * 0 + 0.5, s * 0 + 0.25, c[:1].expand(5, 2))
    )


def test_jvp_in_time_matches_finite_difference() -> None:
    torch.manual_seed(1)
    net = TwoTimeVelocityMLP(2, hidden=(32, 32), residual=True).double()
    for parameter in net.parameters():
        parameter.data.add_(0.3 * torch.randn_like(parameter))
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64)
    s = torch.rand(4, dtype=torch.float64)
    direction = torch.randn(4, 2, dtype=torch.float64)
    _, tangent = torch.func.jvp(
        net, (x, t, s), (direction, torch.ones_like(t), torch.full_like(s, -1.0))
    )
    h = 1e-6
    plus = net(x + h * direction, t + h, s - h)
    minus = net(x - h * direction, t - h, s + h)
    torch.testing.assert_close(tangent, (plus - minus) / (2 * h), atol=1e-7, rtol=1e-6)


def test_errors_name_the_problem() -> None:
    net = TwoTimeVelocityMLP(2, hidden=(8,))
    with pytest.raises(ValueError, match="context=0"):
        net(torch.randn(3, 2), 0.1, 0.2, torch.randn(3, 1))
    with pytest.raises(ValueError, match="one value per sample"):
        net(torch.randn(3, 2), 0.1, torch.rand(4))
    with pytest.raises(ValueError, match="time_embedding"):
        TwoTimeVelocityMLP(2, time_embedding=1)


@pytest.mark.parametrize("residual", [False, True])
def test_divergence_matches_the_autograd_jacobian_trace(residual: bool) -> None:
    torch.manual_seed(2)
    net = TwoTimeVelocityMLP(3, context=1, hidden=(16, 16), residual=residual).double()
    for parameter in net.parameters():
        parameter.data.add_(0.3 * torch.randn_like(parameter))
    x = torch.randn(4, 3, dtype=torch.float64)
    t, s, c = (
        torch.rand(4, dtype=torch.float64),
        torch.rand(4, dtype=torch.float64),
        torch.randn(4, 1, dtype=torch.float64),
    )
    value, divergence = net.velocity_and_divergence(x, t, s, c)
    torch.testing.assert_close(value, net(x, t, s, c))
    for i in range(4):
        jacobian = torch.autograd.functional.jacobian(
            lambda row, i=i: net(row[None], t[i : i + 1], s[i : i + 1], c[i : i + 1])[0], x[i]
        )
        torch.testing.assert_close(divergence[i], torch.trace(jacobian))
