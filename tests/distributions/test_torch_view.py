"""The torch.distributions view of a model: shapes, row order, options, gradients, interop."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.distributions import (
    AffineTransform,
    MultivariateNormal,
    TransformedDistribution,
    constraints,
)

import pushforward
from pushforward import Model
from tests.contract import randomize_

SMALL: dict[str, dict[str, Any]] = {
    "nsf": {"transforms": 2, "hidden": [16], "bins": 4},
    "maf": {"transforms": 2, "hidden": [16]},
    "fm": {"hidden": [16, 16]},
}
# Options both the fm family's sample and log_prob accept today.
OPTIONS: dict[str, dict[str, Any]] = {"fm": {"solver": "rk4", "steps": 8}}


def _model(name: str, context: int = 3, seed: int = 0) -> Model:
    """A small float64 model whose context matters (zero-initialised layers randomised)."""
    torch.manual_seed(seed)
    model = pushforward.build(name, features=2, context=context, **SMALL[name]).double().eval()
    randomize_(model, scale=0.3, generator=torch.Generator().manual_seed(seed))
    return model


class ShiftedNormal(Model):
    r"""Test double: :math:`x \mid c \sim \mathcal N(c, s^2 I)` over 2-D events.

    Its samples sit next to their own context row, so a view that pairs
    samples or values with the wrong context rows is caught.
    """

    has_rsample = True

    def __init__(self, scale: float = 1e-3) -> None:
        super().__init__()
        self.event_shape = (2,)
        self.context_features = 2
        self.scale = scale

    def _log_prob(self, x: Tensor, context: Tensor | None, options: object) -> Tensor:
        assert context is not None
        return torch.distributions.Normal(context, self.scale).log_prob(x).sum(-1)

    def _rsample_and_log_prob(
        self, n: int, context: Tensor | None, options: object, log_prob_options: object
    ) -> tuple[Tensor, Tensor | None]:
        assert context is not None
        x = context + self.scale * torch.randn_like(context)
        return x, None if log_prob_options is None else self._log_prob(x, context, options)


# -- shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("sample_shape", [(), (4,), (3, 2)])
@pytest.mark.parametrize(
    ("context_shape", "batch_shape"),
    [(None, ()), ((3,), ()), ((5, 3), (5,)), ((2, 5, 3), (2, 5))],
    ids=["unconditional", "one-row", "batch", "2d-batch"],
)
def test_shapes(
    sample_shape: tuple[int, ...],
    context_shape: tuple[int, ...] | None,
    batch_shape: tuple[int, ...],
) -> None:
    model = _model("nsf", context=0 if context_shape is None else 3)
    context = None if context_shape is None else torch.randn(context_shape, dtype=torch.float64)
    view = model.distribution(context)
    assert isinstance(view, torch.distributions.Distribution)
    assert view.batch_shape == batch_shape and view.event_shape == (2,)
    expected = (*sample_shape, *batch_shape, 2)
    x = view.sample(sample_shape)
    assert x.shape == expected and not x.requires_grad
    assert view.rsample(sample_shape).shape == expected
    log_prob = view.log_prob(x)
    assert log_prob.shape == (*sample_shape, *batch_shape)
    assert bool(torch.isfinite(log_prob).all())


def test_flags_and_support() -> None:
    view = _model("nsf").distribution(torch.zeros(3, dtype=torch.float64))
    assert view.has_rsample
    assert view.support is constraints.real_vector
    assert view.arg_constraints == {}
    assert not pushforward.build("meanflow", features=2, hidden=[8]).distribution().has_rsample
    assert "batch_shape=()" in repr(view) and "Flow" in repr(view)


# -- each row with its own context --------------------------------------------------


def test_samples_follow_their_context_rows() -> None:
    torch.manual_seed(0)
    context = torch.tensor([[0.0, 0.0], [10.0, -10.0], [-5.0, 3.0]])
    view = ShiftedNormal().distribution(context)
    x = view.sample((4, 2))
    assert x.shape == (4, 2, 3, 2)
    torch.testing.assert_close(x, context.expand(4, 2, 3, 2), atol=1e-2, rtol=0)
    torch.testing.assert_close(view.rsample((5,)), context.expand(5, 3, 2), atol=1e-2, rtol=0)


@pytest.mark.parametrize("value_shape", [(4, 3, 2), (4, 1, 2), (2,), (6, 4, 3, 2)])
def test_log_prob_pairs_values_with_context_rows(value_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    context = torch.tensor([[0.0, 0.0], [1.0, -1.0], [-0.5, 0.3]], dtype=torch.float64)
    model = ShiftedNormal(scale=0.7)
    value = torch.randn(value_shape, dtype=torch.float64)
    got = model.distribution(context).log_prob(value)
    expected = torch.distributions.Normal(context, 0.7).log_prob(value).sum(-1)
    assert got.shape == torch.broadcast_shapes(value_shape[:-1], (3,))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", ["nsf", "maf", "fm"])
def test_log_prob_equals_model_row_by_row(name: str) -> None:
    model = _model(name)
    options = OPTIONS.get(name, {})
    context = 2.0 * torch.randn(3, 3, dtype=torch.float64)
    x = torch.randn(2, 3, 2, dtype=torch.float64)
    got = model.distribution(context, **options).log_prob(x)
    assert got.shape == (2, 3)
    for s in range(2):
        for b in range(3):
            row = model.log_prob(x[s, b : b + 1], context[b : b + 1], **options)
            torch.testing.assert_close(got[s, b], row[0], atol=1e-9, rtol=1e-9)
    # The contexts matter, so pairing a row with another context would be caught.
    assert (got - model.log_prob(x[0], context.flip(0), **options)).abs().max() > 1e-3


def test_options_reach_sample_and_log_prob() -> None:
    model = _model("fm")
    context = torch.randn(3, dtype=torch.float64)
    x = torch.randn(4, 2, dtype=torch.float64)
    coarse = model.distribution(context, solver="euler", steps=1)
    fine = model.distribution(context, solver="rk4", steps=8)
    torch.testing.assert_close(
        fine.log_prob(x), model.log_prob(x, context, solver="rk4", steps=8), rtol=0, atol=0
    )
    assert (coarse.log_prob(x) - fine.log_prob(x)).abs().max() > 1e-4
    torch.manual_seed(1)
    drawn = fine.sample((4,))
    torch.manual_seed(1)
    torch.testing.assert_close(
        drawn, model.sample(4, context, solver="rk4", steps=8), rtol=0, atol=0
    )


# -- gradients ------------------------------------------------------------------------


def test_rsample_gradients_reach_flow_parameters() -> None:
    model = _model("nsf")
    view = model.distribution(torch.randn(4, 3, dtype=torch.float64))
    view.rsample((8,)).square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_rsample_refused_without_reparameterisation() -> None:
    model = pushforward.build("meanflow", features=2, hidden=[8])
    view = model.distribution()
    assert view.sample((3,)).shape == (3, 2)
    with pytest.raises(NotImplementedError, match="MeanFlow"):
        view.rsample((3,))


# -- interoperability ---------------------------------------------------------------------


def test_transformed_distribution_change_of_variables() -> None:
    model = _model("nsf")
    context = torch.randn(5, 3, dtype=torch.float64)
    loc = torch.tensor([1.0, -2.0], dtype=torch.float64)
    scale = torch.tensor([0.5, 3.0], dtype=torch.float64)
    view = model.distribution(context)
    moved = TransformedDistribution(view, [AffineTransform(loc, scale, event_dim=1)])
    assert moved.batch_shape == (5,) and moved.event_shape == (2,)
    y = moved.rsample((4,))
    assert y.shape == (4, 5, 2)
    by_hand = view.log_prob((y - loc) / scale) - torch.log(scale).sum()
    torch.testing.assert_close(moved.log_prob(y), by_hand)


def test_reverse_kl_variational_loop_decreases_kl() -> None:
    torch.manual_seed(0)
    target = MultivariateNormal(torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.3], [0.3, 1.0]]))
    model = pushforward.build("nsf", features=2, transforms=2, hidden=[16], bins=4)
    view = model.distribution()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def kl_estimate(n: int) -> Tensor:
        x = view.rsample((n,))
        return (view.log_prob(x) - target.log_prob(x)).mean()

    with torch.no_grad():
        before = float(kl_estimate(4096))
    for _ in range(100):
        optimizer.zero_grad()
        kl_estimate(256).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(kl_estimate(4096))
    assert before > 0.5
    assert after < 0.1 * before


# -- expand and errors ------------------------------------------------------------


def test_expand_broadcasts_the_contexts() -> None:
    context = torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64)
    view = ShiftedNormal(scale=0.7).distribution(context)
    wide = view.expand((4, 2))
    assert wide.batch_shape == (4, 2)
    value = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(wide.log_prob(value), view.log_prob(value))
    assert wide.sample((3,)).shape == (3, 4, 2, 2)
    with pytest.raises(ValueError, match="cannot expand"):
        view.expand((3,))
    unconditional = _model("nsf", context=0).distribution().expand((6,))
    assert unconditional.sample((2,)).shape == (2, 6, 2)


def test_errors_in_the_users_words() -> None:
    conditional = _model("nsf")
    with pytest.raises(ValueError, match="conditional on 3 context features"):
        conditional.distribution()
    with pytest.raises(ValueError, match="4 features, the model was built for 3"):
        conditional.distribution(torch.zeros(5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="unconditional"):
        _model("nsf", context=0).distribution(torch.zeros(3, dtype=torch.float64))
    view = conditional.distribution(torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"events of shape \(2,\)"):
        view.log_prob(torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="do not broadcast against"):
        view.log_prob(torch.zeros(4, 2, dtype=torch.float64))
    nan = torch.full((5, 2), math.nan, dtype=torch.float64)
    with pytest.raises(ValueError, match="support"):
        conditional.distribution(
            torch.zeros(5, 3, dtype=torch.float64), validate_args=True
        ).log_prob(nan)
