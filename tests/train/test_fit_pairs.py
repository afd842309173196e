"""fit on aligned rows: data with fixed source points (``source=``), as reflow and distill train."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor

import pushforward
from pushforward.matching.time_sampling import sample_times
from pushforward.model import Model
from pushforward.paired import PairedBatch
from pushforward.train import fit
from pushforward.train.batches import EpochBatches, Rows
from pushforward.train.fit import _split
from pushforward.transforms.preprocessing import Preprocessing
from tests.train.models import state_equal

pytestmark = pytest.mark.usefixtures("one_thread")


def small_fm(context: int = 0, **options: Any) -> Model:
    torch.manual_seed(0)
    model = pushforward.build(
        "fm", features=2, context=context, hidden=[16, 16], time_embedding=8, **options
    )
    return model.double()


def pairs(n: int = 64, seed: int = 1) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    x1 = 3.0 + 0.5 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return x0, x1


def test_a_step_on_fixed_pairs_is_the_regression_on_exactly_those_pairs() -> None:
    # With an ot coupling the model would re-pair a batch of data; given source rows,
    # the engine's step must be AdamW's step on the rectified-flow regression of the
    # pairs as given (Liu et al. 2023), here replayed by hand.
    model = small_fm(coupling="ot")
    by_hand = copy.deepcopy(model)
    x0, x1 = pairs()
    fit(model, x1, source=x0, steps=1, batch_size=64, lr=1e-2, warmup=0, clip=None, seed=3)

    order = EpochBatches(64, 64, 3).next()
    a, b = x0[order], x1[order]
    optimizer = torch.optim.AdamW(by_hand.parameters(), lr=1e-2, weight_decay=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        t = sample_times(64, "uniform", dtype=torch.float64, device="cpu")
    x_t = t[:, None] * b + (1 - t[:, None]) * a
    loss = (by_hand.network(x_t, t, None) - (b - a)).square().mean()
    loss.backward()
    optimizer.step()
    for (name, got), want in zip(
        model.state_dict().items(), by_hand.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=name)

    # The source rows are used as given: other pairs of the same points train otherwise.
    shuffled = small_fm(coupling="ot")
    fit(shuffled, x1, source=x0.flip(0), steps=1, batch_size=64, lr=1e-2, warmup=0, seed=3)
    assert not state_equal(shuffled.state_dict(), model.state_dict())


def test_the_validation_split_keeps_the_rows_aligned() -> None:
    model = small_fm(context=1)
    x = torch.arange(40, dtype=torch.float64).reshape(20, 2)
    context = x[:, :1] + 0.5
    source = x + 1000.0
    training, held = _split(model, Rows(x, context, source), 0.25, 0, False)
    assert held is not None
    assert training.x.shape[0] + held.x.shape[0] == 20
    for part in (training, held):
        assert part.source is not None and part.context is not None
        torch.testing.assert_close(part.source, part.x + 1000.0, rtol=0, atol=0)
        torch.testing.assert_close(part.context, part.x[:, :1] + 0.5, rtol=0, atol=0)
        pairs_of = part.pairs()
        assert isinstance(pairs_of, PairedBatch) and pairs_of.x0 is part.source

    # Explicit validation pairs: (data, context, source); without their source refused.
    _, explicit = _split(
        model, Rows(x, context, source), (x[:4], context[:4], source[:4]), 0, False
    )
    assert explicit is not None and explicit.source is not None
    with pytest.raises(ValueError, match="need their source points too"):
        _split(model, Rows(x, context, source), (x[:4], context[:4]), 0, False)
    with pytest.raises(ValueError, match="has no source="):
        _split(model, Rows(x, context), (x[:4], context[:4], source[:4]), 0, False)


def test_validation_on_fixed_pairs_scores_the_held_out_pairs() -> None:
    # The validation loss of a fit with held-out pairs is the model's loss on them, with
    # the engine's fixed validation noise (seed + 2) and no re-pairing.
    model = small_fm(coupling="ot")
    x0, x1 = pairs(96)
    history = fit(
        model,
        x1[:64],
        source=x0[:64],
        validation=(x1[64:], None, x0[64:]),
        steps=3,
        batch_size=32,
        eval_every=3,
        seed=5,
    )
    model.train()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(5 + 2)
        expected = model._loss(x1[64:], None, PairedBatch(x0[64:], x1[64:], None))
    assert history.val_loss[-1] == pytest.approx(float(expected), rel=1e-12)


def test_the_preprocessing_maps_data_context_and_source_each_with_its_own_map() -> None:
    # Rows in the data's units are mapped by the data, context and source maps; the same
    # rows mapped by hand and passed as preprocessed train bitwise the same weights.
    generator = torch.Generator().manual_seed(2)
    x1 = 5.0 + 3.0 * torch.randn(80, 2, generator=generator, dtype=torch.float64)
    context = -2.0 + 0.1 * torch.randn(80, 1, generator=generator, dtype=torch.float64)
    x0 = 10.0 + 4.0 * torch.randn(80, 2, generator=generator, dtype=torch.float64)
    preprocessing = Preprocessing.standardizing(x1, context, x0)
    # A flow between two data sets: the source has its own standardisation.
    model = small_fm(context=1, base="empirical", source_rows=80)
    model.set_preprocessing(preprocessing)
    by_hand = copy.deepcopy(model)
    options: dict[str, Any] = {"steps": 4, "batch_size": 32, "validation": 0.2, "seed": 1}
    fit(model, x1, context, source=x0, **options)
    mapped = preprocessing.encode(x1)[0], preprocessing.encode_context(context)
    fit(by_hand, *mapped, source=preprocessing.encode_source(x0), preprocessed=True, **options)
    assert state_equal(model.state_dict(), by_hand.state_dict())
    # Rows that skip the map are not the same run (the maps are not the identity).
    skipped = copy.deepcopy(by_hand)
    fit(skipped, x1, context, source=x0, preprocessed=True, **options)
    assert not state_equal(skipped.state_dict(), by_hand.state_dict())


def test_bad_source_rows_are_refused_by_name() -> None:
    x0, x1 = pairs(16)
    with pytest.raises(ValueError, match="learns from data alone"):
        fit(pushforward.build("maf", features=2).double(), x1, source=x0, steps=1)
    model = small_fm()
    with pytest.raises(ValueError, match="one row per data row"):
        fit(model, x1, source=x0[:10], steps=1)
    bad = x0.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="source points: data contains NaN"):
        fit(model, x1, source=bad, steps=1)
    with pytest.raises(ValueError, match="source points: data has 3 features"):
        fit(model, x1, source=torch.zeros(16, 3, dtype=torch.float64), steps=1)
    with pytest.raises(TypeError, match=r"source points: data has dtype torch\.float32"):
        fit(model, x1, source=x0.float(), preprocessed=True, steps=1)


def test_a_distilled_model_trains_on_pairs_and_refuses_data_alone() -> None:
    torch.manual_seed(0)
    student = pushforward.build("distilled", features=2, hidden=[16]).double()
    x0, x1 = pairs(64)
    before = student.regression_loss(PairedBatch(x0, x1, None)).item()
    fit(student, x1, source=x0, steps=40, batch_size=64, lr=1e-2, warmup=0)
    assert student.regression_loss(PairedBatch(x0, x1, None)).item() < 0.5 * before
    with pytest.raises(ValueError, match="pass the sources aligned with the ends"):
        fit(student, x1, steps=1)


class Wrapped(Model):
    """A model trained inside a wrapper module, as pair runs did before ``source=``."""

    learns_from_pairs = True

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model
        self.event_shape = model.event_shape
        self.context_features = model.context_features

    def _loss(self, x: Tensor, context: Tensor | None, prepared: Any = None) -> Tensor:
        return self.model._loss(x, context, prepared)


def test_a_checkpoint_of_a_wrapped_model_resumes_into_the_model(tmp_path) -> None:
    x0, x1 = pairs(64)
    options: dict[str, Any] = {"batch_size": 32, "ema": 0.9, "validation": 0.25, "seed": 4}
    straight = small_fm()
    fit(straight, x1, source=x0, steps=8, eval_every=2, **options)

    first = small_fm()
    fit(Wrapped(first), x1, source=x0, steps=4, eval_every=2, checkpoint_dir=tmp_path, **options)
    resumed = small_fm()
    history = fit(
        resumed,
        x1,
        source=x0,
        steps=8,
        eval_every=2,
        checkpoint_dir=tmp_path,
        resume=True,
        **options,
    )
    assert history.steps_done == 8
    assert state_equal(resumed.state_dict(), straight.state_dict())
