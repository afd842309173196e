from __future__ import annotations

import pytest
import torch
from torch import nn

import pushforward
from pushforward.train import EMA
from tests.train.models import small_flow, state_equal


def test_plain_recursion_matches_closed_form() -> None:
    layer = nn.Linear(3, 2).double()
    initial = layer.weight.detach().clone()
    ema = EMA(layer, decay=0.9, warmup=False)
    values = [torch.full_like(initial, float(v)) for v in (1.0, -2.0, 4.0)]
    for value in values:
        with torch.no_grad():
            layer.weight.copy_(value)
        ema.update(layer)
    # shadow = b^3 w0 + (1-b)(b^2 v1 + b v2 + v3)
    b = 0.9
    expected = b**3 * initial + (1 - b) * (b**2 * values[0] + b * values[1] + values[2])
    torch.testing.assert_close(ema.shadow["weight"], expected, rtol=0, atol=1e-12)


def test_warmup_decay_schedule() -> None:
    ema = EMA(nn.Linear(1, 1), decay=0.999)
    decays = []
    for _ in range(3):
        decays.append(ema.current_decay())
        ema.updates += 1
    assert decays == pytest.approx([1 / 10, 2 / 11, 3 / 12])
    ema.updates = 10**6
    assert ema.current_decay() == 0.999


def test_applied_swaps_in_and_restores() -> None:
    model = small_flow()
    ema = EMA(model, decay=0.5, warmup=False)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    ema.update(model)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.applied(model):
        inside = {k: v.clone() for k, v in model.state_dict().items()}
    assert state_equal(model.state_dict(), raw)
    name = next(n for n, _ in model.named_parameters())
    torch.testing.assert_close(inside[name], raw[name] - 0.5)
    # Integer buffers (MADE orders) are never averaged.
    integer = [k for k, v in raw.items() if not v.is_floating_point()]
    assert integer and all(torch.equal(inside[k], raw[k]) for k in integer)
    # The full-model EMA state loads into a fresh copy.
    fresh = small_flow(seed=3)
    fresh.load_state_dict(ema.module_state(model), strict=True)
    assert state_equal(fresh.state_dict(), inside)


def test_rejects_bad_decay() -> None:
    with pytest.raises(ValueError, match="decay"):
        EMA(nn.Linear(1, 1), decay=1.0)


def test_constant_buffers_are_left_out() -> None:
    # An fm model with an empirical source: its stored rows are data, not weights.
    rows = torch.randn(50, 2)
    model = pushforward.build("fm", features=2, hidden=[8], base="empirical", source_rows=50)
    model.base.assign_rows(rows)
    ema = EMA(model, decay=0.9)
    assert "base.rows" not in ema.shadow and "base.rows" in model.state_dict()
    assert any(name.startswith("network.") for name in ema.shadow)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    ema.update(model)
    ema.copy_to(model)
    assert torch.equal(model.base.rows, rows)
    # The averaged state still loads into a copy of the model with strict=True.
    copy = pushforward.build("fm", features=2, hidden=[8], base="empirical", source_rows=50)
    copy.load_state_dict(ema.module_state(model))
    assert torch.equal(copy.base.rows, rows)
