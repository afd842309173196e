"""sbibm's C2ST in batched torch: chance level, Bayes accuracy, scikit-learn, batching, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from pushforward.metrics.batched_mlp import (
    MLPBuffers,
    MLPLayout,
    adam_step,
    glorot_uniform_mlp,
    log_loss_gradient,
    padded_rows,
)
from pushforward.metrics.sbibm_c2st import kfold_test_indices, sbibm_c2st

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def normal(shape: tuple[int, ...], seed: int, shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) + shift


def phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def test_same_distribution_is_at_chance_level():
    result = sbibm_c2st(normal((8, 1000, 1), 0), normal((8, 1000, 1), 1))
    assert result.accuracy.dtype == torch.float64
    assert result.accuracy.shape == (8,)
    assert torch.allclose(result.accuracy, result.fold_accuracies.mean(dim=1))
    # 2,000 held-out predictions per pair: a binomial standard error of 0.011 per pair.
    se = 0.5 / math.sqrt(2000)
    assert abs(float(result.accuracy.mean()) - 0.5) < 4 * se / math.sqrt(8)
    assert float((result.accuracy - 0.5).abs().max()) < 5 * se
    assert bool(result.converged.all())


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_shifted_gaussians_reach_the_bayes_accuracy(delta):
    """N(0, 1) against N(delta, 1): the best classifier thresholds at delta / 2."""
    result = sbibm_c2st(normal((2, 2000, 1), 2), normal((2, 2000, 1), 3, shift=delta))
    bayes = phi(delta / 2)
    se = math.sqrt(bayes * (1 - bayes) / 4000) / math.sqrt(2)
    # A 1-D classifier of 4,000 rows falls short of the Bayes rule by well under 0.005.
    assert abs(float(result.accuracy.mean()) - bayes) < 4 * se + 0.005


def sklearn_c2st(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float, float]:
    """sbibm's c2st as sbibm writes it, with the fold loop spelled out to read n_iter_, loss_.

    Returns the mean over folds of the held-out accuracy, the epochs and the final loss.
    """
    from sklearn.model_selection import KFold
    from sklearn.neural_network import MLPClassifier

    mean, std = x.mean(axis=0), x.std(axis=0, ddof=1)
    data = np.concatenate([(x - mean) / std, (y - mean) / std]).astype(np.float32)
    target = np.concatenate([np.zeros(len(x)), np.ones(len(y))])
    dim = x.shape[1]
    scores, epochs, losses = [], [], []
    for train, test in KFold(n_splits=5, shuffle=True, random_state=seed).split(data):
        classifier = MLPClassifier(
            activation="relu",
            hidden_layer_sizes=(10 * dim, 10 * dim),
            max_iter=10000,
            solver="adam",
            random_state=seed,
        )
        classifier.fit(data[train], target[train])
        scores.append(classifier.score(data[test], target[test]))
        epochs.append(classifier.n_iter_)
        losses.append(classifier.loss_)
    return float(np.mean(scores)), float(np.mean(epochs)), float(np.mean(losses))


@pytest.mark.slow
def test_agrees_with_scikit_learn_in_distribution():
    """2-D, 2,000 against 2,000, shifts with accuracies 0.5 to 0.76, two data sets each.

    Each data set gets its own seed: with one seed throughout, every run of an
    implementation starts from the same initial weights, and the differences between
    the two implementations would be correlated across data sets.
    """
    pytest.importorskip("sklearn")
    shifts, reps, n = [0.0, 0.3, 0.6, 1.0], 2, 2000
    x = normal((len(shifts) * reps, n, 2), 4).double()
    y = normal((len(shifts) * reps, n, 2), 5).double()
    y += torch.tensor(shifts).repeat_interleave(reps).view(-1, 1, 1)
    seeds = [10 + k for k in range(len(shifts) * reps)]
    ours = sbibm_c2st(x, y, seed=seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.array(
            [sklearn_c2st(x[k].numpy(), y[k].numpy(), seeds[k]) for k in range(len(seeds))]
        )
    accuracy = ours.accuracy.numpy()
    # Both score all 4,000 rows of one data set; their difference is at most the spread
    # of two independent binomial estimates, sqrt(2 a (1 - a) / 4000) per data set.
    for k, shift in enumerate(shifts):
        part = slice(k * reps, (k + 1) * reps)
        bayes = phi(shift * math.sqrt(2) / 2)
        se = math.sqrt(2 * bayes * (1 - bayes) / (2 * n * reps))
        assert abs(accuracy[part].mean() - theirs[part, 0].mean()) < 4 * se, shift
    pooled_se = math.sqrt(2 * 0.25 / (2 * n * len(seeds)))
    assert abs(float(np.mean(accuracy - theirs[:, 0]))) < 4 * pooled_se
    # The stopping rule: epochs vary by about 15% per data set, 6% pooled over eight.
    ratio = ours.epochs.double().mean().item() / theirs[:, 1].mean()
    assert 0.7 < ratio < 1.4
    # The training loss at the stop: seed-to-seed spread about 0.003 per fold, 40 folds.
    assert abs(ours.loss.mean().item() - theirs[:, 2].mean()) < 0.003


def test_early_training_loss_follows_scikit_learn():
    """The loss after 1 and 3 epochs (learning rate, minibatches, Adam, initialisation).

    One data set, eight seeds, five folds: 40 fits each, compared by their standard errors.
    """
    pytest.importorskip("sklearn")
    from sklearn.model_selection import KFold
    from sklearn.neural_network import MLPClassifier

    n, seeds = 2000, list(range(8))
    x, y = normal((n, 2), 6).double(), normal((n, 2), 7, shift=0.6).double()
    ours = {
        epochs: sbibm_c2st(
            x.expand(len(seeds), n, 2), y.expand(len(seeds), n, 2), seed=seeds, max_epochs=epochs
        ).loss.flatten()
        for epochs in (1, 3)
    }
    mean, std = x.mean(dim=0), x.std(dim=0)
    data = torch.cat([(x - mean) / std, (y - mean) / std]).float().numpy()
    target = np.concatenate([np.zeros(n), np.ones(n)])
    curves = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in seeds:
            for train, _ in KFold(n_splits=5, shuffle=True, random_state=seed).split(data):
                classifier = MLPClassifier(
                    hidden_layer_sizes=(20, 20), max_iter=3, random_state=seed
                ).fit(data[train], target[train])
                curves.append(classifier.loss_curve_)
    theirs = np.array(curves)
    for column, epochs in ((0, 1), (2, 3)):
        a, b = ours[epochs].numpy(), theirs[:, column]
        se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        assert abs(a.mean() - b.mean()) < 4 * se, epochs


def test_a_pair_gives_the_same_result_alone_or_in_a_batch():
    """For unequal pairs: folds of unequal size, one pair under 200 training rows.

    Fold accuracies and epochs are bitwise equal; the final losses to 1e-6 relative, as
    some CPUs' batched kernels (an AMD EPYC's, not an Intel Xeon's) sum in another order.

    The small pair trains for thousands of epochs; ``max_epochs`` caps it (and the
    others stop by the tolerance rule before), so both ends of training are covered.
    """
    sizes = [(200, 200, 0.5), (200, 200, 1.0), (203, 150, 0.8), (90, 110, 0.0)]
    seeds = [1, 1, 1, 2]
    xs = [normal((n, 2), 10 + k) for k, (n, _, _) in enumerate(sizes)]
    ys = [normal((m, 2), 20 + k, shift) for k, (_, m, shift) in enumerate(sizes)]
    state = torch.get_rng_state()
    batch = sbibm_c2st(xs, ys, seed=seeds, max_epochs=250)
    assert torch.equal(torch.get_rng_state(), state)
    assert bool(batch.converged[:3].any()) and not bool(batch.converged[3].any())
    for k, seed in enumerate(seeds):
        alone = sbibm_c2st(xs[k], ys[k], seed=seed, max_epochs=250)
        assert torch.equal(alone.fold_accuracies[0], batch.fold_accuracies[k])
        assert torch.equal(alone.epochs[0], batch.epochs[k])
        torch.testing.assert_close(alone.loss[0], batch.loss[k], rtol=1e-6, atol=0)
    stacked = sbibm_c2st(torch.stack(xs[:2]), torch.stack(ys[:2]), max_epochs=250)
    torch.testing.assert_close(stacked.loss, batch.loss[:2], rtol=1e-6, atol=0)
    # Pairs differ in data, not in streams: the same seed gives them the same folds.
    assert not torch.equal(batch.loss[0], batch.loss[1])


def test_float64_and_float32_agree_and_max_epochs_stops():
    x, y = normal((1, 400, 2), 30), normal((1, 400, 2), 31, shift=1.0)
    single = sbibm_c2st(x, y)
    double = sbibm_c2st(x.double(), y.double(), dtype=torch.float64)
    assert abs(float(single.accuracy - double.accuracy)) < 0.03
    short = sbibm_c2st(x, y, max_epochs=3)
    assert short.epochs.tolist() == [[3] * 5]
    assert not bool(short.converged.any())


def test_kfold_test_indices_partition_like_sklearn():
    parts = kfold_test_indices(23, 5, torch.Generator().manual_seed(0))
    assert [p.numel() for p in parts] == [5, 5, 5, 4, 4]
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(23))


def test_glorot_uniform_bounds():
    parameters = glorot_uniform_mlp([3, 300, 300, 1], torch.Generator().manual_seed(0))
    assert [tuple(p.shape) for p in parameters] == [
        (3, 300),
        (300,),
        (300, 300),
        (300,),
        (300, 1),
        (1,),
    ]
    bound = math.sqrt(6 / 600)
    middle = parameters[2]
    assert float(middle.abs().max()) <= bound
    assert float(middle.abs().max()) > 0.999 * bound
    # Uniform on [-b, b] has variance b^2 / 3.
    assert float(middle.var()) == pytest.approx(bound**2 / 3, rel=0.02)
    assert float(parameters[4].abs().max()) <= math.sqrt(6 / 301)


def test_log_loss_gradient_matches_autograd():
    """Backpropagation by hand against autograd of the weighted log-loss, biases included."""
    layout = MLPLayout(features=3, hidden=7)
    models, rows = 4, 9
    parameters = [
        glorot_uniform_mlp([3, 7, 7, 1], torch.Generator().manual_seed(k)) for k in range(4)
    ]
    flat = torch.stack([layout.flatten(p) for p in parameters])
    inputs = torch.ones(models, rows, 4, dtype=torch.float64)
    inputs[..., :3] = torch.randn(models, rows, 3, dtype=torch.float64)
    targets = torch.randint(0, 2, (models, rows)).double()
    weight = torch.rand(models, rows, dtype=torch.float64)
    width = padded_rows(rows)
    pad = (0, width - rows)
    buffers = MLPBuffers.create(models, rows, layout, flat)
    grad = log_loss_gradient(
        layout.views(flat),
        inputs,
        torch.nn.functional.pad(targets, pad),
        torch.nn.functional.pad(weight, pad),
        buffers,
    )

    leaves = [torch.stack([p[k] for p in parameters]).requires_grad_() for k in range(6)]
    w1, b1, w2, b2, w3, b3 = leaves
    h = torch.relu(inputs[..., :3] @ w1 + b1.unsqueeze(1))
    h = torch.relu(h @ w2 + b2.unsqueeze(1))
    logits = (h @ w3 + b3.unsqueeze(1)).squeeze(-1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, targets, weight=weight, reduction="sum"
    )
    expected = torch.stack(
        [layout.flatten(p) for p in zip(*torch.autograd.grad(loss, leaves), strict=True)]
    )
    assert torch.allclose(buffers.logits[:, :rows], logits.detach())
    assert torch.equal(buffers.logits[:, rows:], torch.zeros(models, width - rows, dtype=F64))
    assert torch.allclose(grad, expected)
    # The output block's spare column has no gradient, so it stays 0 under Adam.
    assert torch.equal(layout.views(grad)[2][..., 1], torch.zeros(models, 8, dtype=F64))


def test_adam_step_is_sklearns_update():
    """Three steps against scikit-learn's formula, written out in NumPy."""
    generator = np.random.default_rng(0)
    theta = generator.standard_normal((2, 5))
    flat = torch.tensor(theta)
    first, second = torch.zeros_like(flat), torch.zeros_like(flat)
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t in range(1, 4):
        g = generator.standard_normal((2, 5))
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        rate = 1e-3 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        theta = theta - rate * m / (np.sqrt(v) + 1e-8)
        adam_step(
            flat, first, second, torch.tensor(g), torch.full((2, 1), rate, dtype=torch.float64)
        )
    np.testing.assert_allclose(flat.numpy(), theta, rtol=1e-12)


@pytest.mark.parametrize(
    ("x", "y", "options", "message"),
    [
        (torch.zeros(2, 50, 2), torch.zeros(3, 50, 2), {}, "pairs"),
        (torch.zeros(50, 2), torch.zeros(50, 3), {}, "features"),
        (torch.zeros(2, 50, 2), torch.zeros(50, 2), {}, "both"),
        ([torch.zeros(50, 2)], torch.zeros(50, 2), {}, "both be tensors"),
        ([torch.randn(50, 2), torch.randn(50, 3)], [torch.randn(50, 2)] * 2, {}, "features"),
        (torch.randn(50, 2), torch.full((50, 2), math.nan), {}, "NaN"),
        (torch.randn(2, 1), torch.randn(2, 1), {}, "fewer than folds"),
        (torch.randn(1, 1), torch.randn(9, 1), {}, "z-score"),
        (torch.ones(50, 1), torch.randn(50, 1), {}, "constant feature"),
        (torch.zeros(50, 2, dtype=torch.long), torch.zeros(50, 2), {}, "floats"),
        (torch.randn(50, 2), torch.randn(50, 2), {"folds": 1}, "folds"),
        (torch.randn(50, 2), torch.randn(50, 2), {"max_epochs": 0}, "max_epochs"),
        (torch.randn(50, 2), torch.randn(50, 2), {"seed": [1, 2]}, "seeds"),
        (torch.randn(50, 2), torch.randn(50, 2), {"dtype": torch.float16}, "dtype"),
    ],
)
def test_bad_inputs_are_refused(x, y, options, message):
    with pytest.raises(ValueError, match=message):
        sbibm_c2st(x, y, **options)
