"""The one-step distilled model: its map, loss, sampling cost and save/load."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

import pushforward
from pushforward.fewstep.distilled import DistilledFlow
from pushforward.matching.model import FlowMatching
from pushforward.paired import PairedBatch
from pushforward.recipes.distill import student_for
from pushforward.transforms import Preprocessing, Standardize
from tests.contract import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")


def small_teacher(**options: object) -> FlowMatching:
    defaults: dict[str, object] = {"features": 2, "hidden": [16, 16], "time_embedding": 8}
    defaults.update(options)
    torch.manual_seed(0)
    model = pushforward.build("fm", **defaults)
    assert isinstance(model, FlowMatching)
    randomize_(model, 0.3, torch.Generator().manual_seed(1))
    return model.double()


def test_registered_without_log_prob() -> None:
    assert "distilled" in pushforward.available()
    model = pushforward.build("distilled", features=3, hidden=[8, 8], time_embedding=4)
    assert isinstance(model, DistilledFlow)
    assert not model.has_log_prob and model.has_sample and model.has_rsample
    with pytest.raises(NotImplementedError, match="log_prob"):
        model.log_prob(torch.zeros(2, 3))
    with pytest.raises(NotImplementedError, match="log_prob"):
        model.sample_and_log_prob(2)


def test_sampling_is_one_network_evaluation() -> None:
    student = student_for(small_teacher())
    calls = []
    handle = student.network.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(5)
    samples = student.sample(300)
    handle.remove()
    assert len(calls) == 1 and samples.shape == (300, 2) and not samples.requires_grad
    torch.manual_seed(5)
    x0 = student.base.sample(300)
    torch.testing.assert_close(samples, student.transport(x0).detach(), rtol=0, atol=0)
    # rsample is the same map with gradients to the parameters.
    torch.manual_seed(5)
    student.rsample(300).square().sum().backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("loss", ["mse", "pseudo-huber"])
def test_regression_loss_closed_form(loss: str) -> None:
    student = student_for(small_teacher(), loss=loss)
    generator = torch.Generator().manual_seed(3)
    x0 = torch.randn(40, 2, generator=generator, dtype=torch.float64)
    x1 = torch.randn(40, 2, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        error = student.transport(x0) - x1
    if loss == "mse":
        expected = error.square().mean()
    else:
        c = 0.00054 * math.sqrt(2)
        expected = ((error.square().sum(1) + c**2).sqrt() - c).mean() / 2
    value = student.regression_loss(PairedBatch(x0, x1, None))
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="pairs"):
        student.loss(x1)


def test_save_and_load_give_identical_outputs(tmp_path: Path) -> None:
    teacher = small_teacher(context=2)
    student = student_for(teacher).float()
    randomize_(student, 0.1, torch.Generator().manual_seed(4))
    mean, std = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    folded = copy.deepcopy(student).set_preprocessing(
        Preprocessing(Standardize(mean, std), Standardize(torch.zeros(2), torch.ones(2)))
    )
    pushforward.save(folded, tmp_path)
    loaded = pushforward.load(tmp_path)
    assert not loaded.has_log_prob
    context = torch.randn(20, 2, generator=torch.Generator().manual_seed(6))
    torch.manual_seed(8)
    expected = folded.sample(20, context)
    torch.manual_seed(8)
    torch.testing.assert_close(loaded.sample(20, context), expected, rtol=0, atol=0)
    # In original units: mean + std * (one-step map of the base draw).
    torch.manual_seed(8)
    x0 = student.base.sample(20)
    torch.testing.assert_close(expected, mean + std * student.transport(x0, context).detach())
