"""FAB's prioritised replay buffer: draws follow the weights, the weight correction for a moved
flow, the ring's overwriting, and its contents as exact state."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pushforward.sampling.replay_buffer import PrioritisedReplayBuffer, log_weight_correction

WEIGHTS = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0], dtype=torch.float64)


def filled(capacity: int = 8) -> PrioritisedReplayBuffer:
    buffer = PrioritisedReplayBuffer(capacity=capacity, min_fill=5)
    x = torch.arange(5, dtype=torch.float64)[:, None].repeat(1, 2)
    buffer.add(x, WEIGHTS.log(), torch.zeros(5, dtype=torch.float64))
    return buffer


@pytest.mark.parametrize("replacement", [True, False])
def test_draws_follow_the_weights(replacement: bool):
    buffer = filled()
    torch.manual_seed(0)
    if replacement:
        indices = buffer.sample(40_000, replacement=True).indices
    else:  # one draw at a time: the Gumbel-max trick is an exact categorical draw
        indices = torch.cat([buffer.sample(1).indices for _ in range(8_000)])
    frequencies = torch.bincount(indices, minlength=5).double() / indices.numel()
    expected = WEIGHTS / WEIGHTS.sum()
    tolerance = 4 * torch.sqrt(expected * (1 - expected) / indices.numel())
    assert bool(((frequencies - expected).abs() < tolerance).all()), frequencies


def test_draws_without_replacement_are_distinct_and_favour_heavy_points():
    buffer = filled()
    torch.manual_seed(1)
    counts = torch.zeros(5)
    for _ in range(2_000):
        indices = buffer.sample(2).indices
        assert indices.unique().numel() == 2
        counts[indices] += 1
    assert counts.argmax() == 4 and counts.argmin() == 0
    with pytest.raises(ValueError, match="distinct"):
        buffer.sample(6)


def test_the_weight_correction_follows_the_flow():
    buffer = filled()
    indices = torch.tensor([1, 4, 2])
    log_q_new = torch.tensor([0.5, -1.0, math.nan], dtype=torch.float64)
    correction = buffer.update(indices, log_q_new)
    assert buffer.log_w is not None and buffer.log_q is not None
    # log w <- log w - (log q_new - log q_old) for alpha = 2; the NaN point is killed.
    torch.testing.assert_close(correction[:2], torch.tensor([-0.5, 1.0], dtype=torch.float64))
    assert buffer.log_w[1] == pytest.approx(math.log(2.0) - 0.5)
    assert buffer.log_w[4] == pytest.approx(math.log(10.0) + 1.0)
    assert buffer.log_w[2] == -math.inf
    assert buffer.log_q[1] == 0.5 and buffer.log_q[4] == -1.0
    # A second move corrects from the stored log q, not the first.
    buffer.update(torch.tensor([1]), torch.tensor([0.25], dtype=torch.float64))
    assert buffer.log_w[1] == pytest.approx(math.log(2.0) - 0.25)
    general = log_weight_correction(torch.tensor([1.0]), torch.tensor([0.0]), alpha=3.0)
    assert float(general) == -2.0


def test_the_ring_overwrites_the_oldest_and_skips_invalid_rows():
    buffer = filled(capacity=8)
    assert buffer.can_sample and buffer.size == 5
    x = torch.full((4, 2), 7.0, dtype=torch.float64)
    log_w = torch.tensor([0.0, math.nan, 0.0, -math.inf], dtype=torch.float64)
    buffer.add(x, log_w, torch.zeros(4, dtype=torch.float64))
    assert buffer.size == 7 and buffer.next == 7
    buffer.add(torch.full((3, 2), 9.0, dtype=torch.float64), torch.zeros(3), torch.zeros(3))
    assert buffer.size == 8 and buffer.next == 2
    assert buffer.x is not None
    assert buffer.x[:2, 0].tolist() == [9.0, 9.0] and buffer.x[2, 0] == 2.0
    with pytest.raises(ValueError, match="buffer_min"):
        PrioritisedReplayBuffer(capacity=4, min_fill=5)
    empty = PrioritisedReplayBuffer(capacity=4, min_fill=2)
    with pytest.raises(ValueError, match="at least 2"):
        empty.sample(1)


def test_contents_round_trip_as_state():
    buffer = filled()
    json_part, tensors = buffer.state()
    copy = PrioritisedReplayBuffer(capacity=8, min_fill=5)
    copy.restore(json.loads(json.dumps(json_part)), tensors)
    torch.manual_seed(2)
    a = buffer.sample(3)
    torch.manual_seed(2)
    b = copy.sample(3)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.x, b.x)
    with pytest.raises(ValueError, match="capacity"):
        PrioritisedReplayBuffer(capacity=9, min_fill=5).restore(json_part, tensors)
