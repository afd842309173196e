"""The flow-matching family's shared density: a network's own trace against the generic one."""

from __future__ import annotations

import pytest
import torch

import pushforward
from pushforward.ode.likelihood import log_likelihood


@pytest.mark.parametrize("name", ["meanflow", "shortcut"])
def test_fast_exact_divergence_matches_the_generic_trace(name: str) -> None:
    # log_prob uses the network's hand-pushed Jacobian trace; the generic
    # forward-mode trace of the same field must give the same density.
    torch.manual_seed(3)
    model = pushforward.build(name, features=2, hidden=[16, 16], time_embedding=8).double()
    for parameter in model.parameters():
        parameter.data.add_(0.2 * torch.randn_like(parameter))
    x = torch.randn(6, 2, dtype=torch.float64)
    fast = model.log_prob(x, solver="rk4", steps=8)
    generic = log_likelihood(
        lambda t, z: model.velocity(z, t.expand(z.shape[0])),
        x,
        model.base.log_prob,
        method="rk4",
        steps=8,
        divergence="exact",
    ).log_prob
    torch.testing.assert_close(fast, generic, atol=1e-10, rtol=1e-10)
