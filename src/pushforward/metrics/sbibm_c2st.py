"""The C2ST of the sbibm benchmark: scikit-learn's MLPClassifier in k-fold CV, batched in torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from pushforward.metrics.batched_mlp import (
    ALPHA,
    BATCH_SIZE,
    BETA1,
    BETA2,
    LEARNING_RATE,
    N_ITER_NO_CHANGE,
    TOL,
    MLPBuffers,
    MLPLayout,
    adam_step,
    glorot_uniform_mlp,
    log_loss_gradient,
    mlp_forward,
    padded_rows,
)

# Test-fold forward passes hold at most this many hidden activations at once.
_EVAL_CHUNK = 1 << 24


@dataclass(frozen=True)
class SbibmC2STResult:
    """The outcome of :func:`sbibm_c2st` for ``P`` pairs of samples.

    Attributes:
        accuracy: ``(P,)`` float64, the mean of the fold accuracies (sbibm's statistic).
        fold_accuracies: ``(P, folds)`` float64, the held-out accuracy of each fold.
        epochs: ``(P, folds)`` int64, the epochs each fold's classifier trained.
        converged: ``(P, folds)`` bool, whether it stopped by the tolerance rule rather
            than at ``max_epochs`` (where scikit-learn warns ``ConvergenceWarning``).
        loss: ``(P, folds)`` float64, the training loss of the last epoch (sklearn's
            ``loss_``: mean log-loss plus the L2 term).
    """

    accuracy: Tensor
    fold_accuracies: Tensor
    epochs: Tensor
    converged: Tensor
    loss: Tensor


def kfold_test_indices(n: int, folds: int, generator: torch.Generator) -> list[Tensor]:
    """The test indices of scikit-learn's ``KFold(folds, shuffle=True)``, with torch's RNG.

    A random permutation of ``range(n)`` cut into consecutive parts; the first
    ``n % folds`` parts hold one index more. Not stratified: a part's class mix is
    random, as in sbibm.

    Args:
        n: the number of rows.
        folds: the number of parts, at most ``n``.
        generator: a CPU generator for the permutation.

    Returns:
        ``folds`` index tensors ``(n_k,)`` on the CPU.
    """
    permutation = torch.randperm(n, generator=generator)
    sizes = [n // folds + (1 if k < n % folds else 0) for k in range(folds)]
    return list(torch.split(permutation, sizes))


def _pairs(
    x: Tensor | Sequence[Tensor], y: Tensor | Sequence[Tensor]
) -> list[tuple[Tensor, Tensor]]:
    """Checks the inputs and returns them as a list of ``(x_p, y_p)``."""
    if isinstance(x, Tensor) != isinstance(y, Tensor):
        raise ValueError("x and y must both be tensors or both be sequences of tensors")
    if isinstance(x, Tensor) and isinstance(y, Tensor):
        if x.dim() != y.dim() or x.dim() not in (2, 3):
            raise ValueError(
                "x and y must both be (n, features) or both (pairs, n, features), got shapes "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        xs = [x] if x.dim() == 2 else list(x.unbind(0))
        ys = [y] if y.dim() == 2 else list(y.unbind(0))
    else:
        xs, ys = list(x), list(y)
    if len(xs) != len(ys):
        raise ValueError(f"x holds {len(xs)} samples and y {len(ys)}; they come in pairs")
    if not xs:
        raise ValueError("no pairs of samples given")
    for p, (xp, yp) in enumerate(zip(xs, ys, strict=True)):
        for name, sample in (("x", xp), ("y", yp)):
            if not isinstance(sample, Tensor) or sample.dim() != 2:
                raise ValueError(f"{name} of pair {p} must be a (n, features) tensor")
    features = xs[0].shape[1]
    for p, (xp, yp) in enumerate(zip(xs, ys, strict=True)):
        for name, sample in (("x", xp), ("y", yp)):
            if not sample.is_floating_point():
                raise ValueError(f"{name} of pair {p} has dtype {sample.dtype}; expected floats")
            if sample.shape[1] != features:
                raise ValueError(
                    f"{name} of pair {p} has {sample.shape[1]} features, pair 0 has {features}; "
                    "one batched network needs one dimension (call once per dimension)"
                )
            if sample.device != xs[0].device:
                raise ValueError(
                    f"{name} of pair {p} is on {sample.device}, x of pair 0 on {xs[0].device}"
                )
            if not bool(torch.isfinite(sample).all()):
                raise ValueError(f"{name} of pair {p} holds NaN or infinite values")
    return list(zip(xs, ys, strict=True))


def sbibm_c2st(
    x: Tensor | Sequence[Tensor],
    y: Tensor | Sequence[Tensor],
    *,
    seed: int | Sequence[int] = 1,
    folds: int = 5,
    max_epochs: int = 10000,
    hidden_factor: int = 10,
    dtype: torch.dtype = torch.float32,
) -> SbibmC2STResult:
    r"""The classifier two-sample test of sbibm, with all folds and pairs trained at once.

    For each pair, with :math:`\mu, \sigma` the mean and (unbiased) standard deviation
    of ``x`` per feature, the rows :math:`(x_i - \mu)/\sigma` labelled 0 and
    :math:`(y_j - \mu)/\sigma` labelled 1 are split by shuffled (unstratified) k-fold;
    on each training part a ReLU MLP ``d -> 10d -> 10d -> 1`` is trained as
    scikit-learn's ``MLPClassifier(hidden_layer_sizes=(10d, 10d), max_iter=10000,
    solver="adam", random_state=seed)`` trains it, and the statistic is the mean over
    folds of the held-out accuracy

    .. math:: \hat a = \frac{1}{K} \sum_k \frac{1}{|T_k|} \sum_{i \in T_k}
              \mathbb{1}[\mathbb{1}[f_k(z_i) > 0] = \ell_i],

    about 1/2 when ``x`` and ``y`` come from one distribution (with equal sizes) and up
    to 1 when they differ (Lopez-Paz & Oquab, 2017; sbibm's ``c2st``, Lueckmann et al.,
    2021).

    The same as in sbibm and scikit-learn: the z-score, the unstratified shuffled
    k-fold (the first ``n % folds`` folds one row larger), Glorot-uniform initial
    weights and biases (:func:`glorot_uniform_mlp`); each epoch a new permutation of
    the training rows, cut into minibatches of ``min(200, n_train)`` rows (the last
    one smaller); per minibatch the mean log-loss plus :math:`\tfrac{\alpha}{2B}
    \lVert W \rVert^2` (:math:`\alpha = 10^{-4}`, weights only, ``B`` the minibatch's
    rows) and its gradient; scikit-learn's Adam (:func:`adam_step`: learning rate
    :math:`10^{-3}`, :math:`\beta = (0.9, 0.999)`, :math:`\epsilon = 10^{-8}`); the
    epoch loss, the row-weighted mean of the minibatch losses with the probabilities
    clipped to :math:`[\epsilon_\text{mach}, 1 - \epsilon_\text{mach}]`; the stop once
    that loss has failed to fall below the best so far minus :math:`10^{-4}` for more
    than 10 epochs running, or after ``max_epochs``; the predicted class, logit > 0
    (scikit-learn: probability > 1/2, the same up to rounding). As in sbibm, every
    fold's classifier starts from ``random_state=seed``, so the folds of a pair share
    their initial weights and their stream of epoch permutations (which permute
    different training sets). No row is dropped: folds and pairs of unequal size are
    padded with rows that every sum masks out, so each classifier sees exactly its own
    rows and minibatches.

    What differs: the random streams are torch's, not NumPy's (fold split, initial
    weights, minibatch orders), so the results agree with sbibm's in distribution, not
    bit for bit; the arithmetic is float32 by default, as scikit-learn's on the float32
    arrays sbibm hands it (``dtype=torch.float64`` for float64, also when the inputs
    are float64), in another summation order.

    Batching: the ``P * folds`` classifiers train side by side as one batched network
    (``torch.bmm`` on weights ``(P * folds, in, out)``), each with its own minibatch
    order, Adam state and stopping; a classifier that stops leaves the batch. A pair's
    result does not depend on the other pairs of the call: its streams come from its
    own seed (pairs of the same seed and size draw the same streams, as separate sbibm
    calls would), and on the CPU it is bitwise the same alone or in any batch (the
    tests check it; on a GPU the kernels may round differently per batch size).

    References:
        Lopez-Paz & Oquab (2017), Revisiting Classifier Two-Sample Tests.
        Lueckmann et al. (2021), Benchmarking Simulation-Based Inference.

    Args:
        x: the reference samples, ``(pairs, n, d)``, or ``(n, d)`` for one pair, or a
            sequence of ``(n_p, d)`` tensors; float32 or float64.
        y: the samples to compare, likewise (``(pairs, m, d)`` or ``(m_p, d)``).
        seed: sbibm's ``seed`` (its default 1): seeds the folds and the classifiers; one
            for all pairs or one per pair.
        folds: the number of cross-validation folds.
        max_epochs: scikit-learn's ``max_iter``, in epochs.
        hidden_factor: hidden width per input feature (sbibm: 10).
        dtype: the arithmetic, ``torch.float32`` (default) or ``torch.float64``.

    Returns:
        :class:`SbibmC2STResult`, on the device of the inputs.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(2, 300, 1, generator=g)
        >>> y = torch.randn(2, 300, 1, generator=g) + torch.tensor([0.0, 3.0]).view(2, 1, 1)
        >>> result = sbibm_c2st(x, y)
        >>> result.accuracy.shape, bool(result.accuracy[1] > 0.85)
        (torch.Size([2]), True)
    """
    pairs = _pairs(x, y)
    count = len(pairs)
    seeds = [int(seed)] * count if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds given for {count} pairs")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if int(folds) < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if int(max_epochs) < 1:
        raise ValueError(f"max_epochs must be positive, got {max_epochs}")
    if int(hidden_factor) < 1:
        raise ValueError(f"hidden_factor must be positive, got {hidden_factor}")
    folds = int(folds)
    for p, (xp, yp) in enumerate(pairs):
        if xp.shape[0] < 2:
            raise ValueError(f"x of pair {p} has {xp.shape[0]} rows; its z-score needs 2")
        if xp.shape[0] + yp.shape[0] < folds:
            raise ValueError(
                f"pair {p} has {xp.shape[0] + yp.shape[0]} rows in all, fewer than folds={folds}"
            )
    inputs, labels = [], []
    for p, (xp, yp) in enumerate(pairs):
        xp, yp = xp.detach().double(), yp.detach().double()
        mean, std = xp.mean(dim=0), xp.std(dim=0)
        if not bool((std > 0).all()):
            raise ValueError(f"x of pair {p} has a constant feature; its z-score divides by 0")
        inputs.append(torch.cat([(xp - mean) / std, (yp - mean) / std]).to(dtype))
        labels.append(torch.cat([xp.new_zeros(xp.shape[0]), yp.new_ones(yp.shape[0])]).to(dtype))
    layout = MLPLayout(pairs[0][0].shape[1], int(hidden_factor) * pairs[0][0].shape[1])
    return _train_and_score(inputs, labels, seeds, folds, int(max_epochs), layout)


@dataclass(frozen=True)
class _Minibatches:
    """One epoch's minibatch plan for ``A`` models, each cutting its own training rows.

    Model ``a`` takes ``min(200, n_a)`` permuted rows per step, the last step fewer;
    models with fewer steps than the longest sit the remaining steps out. Padding
    rows (weight 0) keep every step's shape ``(A, B)``.

    Attributes:
        positions: ``(S, A, B)`` positions in each model's permuted training rows.
        weight: ``(S, A, B')`` 1 / (rows in the step) on real rows, 0 on padding, with
            ``B' = padded_rows(B)``.
        valid: ``(S, A, B')`` 1 on real rows, 0 on padding.
        l2: ``(S, A, 1)`` alpha / (rows in the step), the gradient's L2 coefficient.
        on: ``(S, A)`` whether the model takes step ``s``.
        all_on: per step, whether every model takes it (then no masking is needed).
    """

    positions: Tensor
    weight: Tensor
    valid: Tensor
    l2: Tensor
    on: Tensor
    all_on: list[bool]


def _plan_minibatches(n_train: Tensor, width: int, dtype: torch.dtype) -> _Minibatches:
    size = n_train.clamp(max=BATCH_SIZE)
    steps = int(((n_train + size - 1) // size).max())
    rows = int(size.max())
    step = torch.arange(steps, device=n_train.device).view(-1, 1, 1)
    row = torch.arange(padded_rows(rows), device=n_train.device).view(1, 1, -1)
    positions = step * size.view(1, -1, 1) + row
    valid = (row < size.view(1, -1, 1)) & (positions < n_train.view(1, -1, 1))
    count = valid.sum(dim=-1)
    per_row = 1.0 / count.clamp(min=1).to(torch.float64)
    valid_float = valid.to(dtype)
    return _Minibatches(
        positions=positions[..., :rows].clamp(max=width - 1),
        weight=valid_float * per_row.unsqueeze(-1).to(dtype),
        valid=valid_float,
        l2=(ALPHA * per_row).to(dtype).unsqueeze(-1),
        on=count > 0,
        all_on=(count > 0).all(dim=1).tolist(),
    )


@dataclass(frozen=True)
class _Problem:
    """The padded data and the folds of every model ``m = pair * folds + fold``.

    Attributes:
        data: ``(pairs * N, d + 1)`` z-scored rows, pair ``p`` from row ``p * N``, with a
            last column of ones (the biases' input).
        target: ``(pairs * N,)`` the labels, 0 for x and 1 for y.
        train: ``(M, T)`` each model's training rows in ascending order, padded.
        n_train: ``(M,)`` the number of training rows.
        tests: ``(M, S)`` each model's test rows, padded.
        n_test: ``(M,)`` the number of test rows.
        group: ``(M,)`` the model's group: pairs of one seed and size share streams.
        initial: ``(M, size)`` the initial parameters.
        generators: per group, the classifiers' generator (epoch permutations).
        group_train: per group, the largest training size of its folds.
    """

    data: Tensor
    target: Tensor
    train: Tensor
    n_train: Tensor
    tests: Tensor
    n_test: Tensor
    group: Tensor
    initial: Tensor
    generators: list[torch.Generator]
    group_train: list[int]


def _build_problem(
    inputs: list[Tensor], labels: list[Tensor], seeds: list[int], folds: int, layout: MLPLayout
) -> _Problem:
    device, dtype = inputs[0].device, inputs[0].dtype
    width = max(z.shape[0] for z in inputs)
    data = inputs[0].new_ones(len(inputs) * width, layout.features + 1)
    target = inputs[0].new_zeros(len(inputs) * width)
    for p, (z, label) in enumerate(zip(inputs, labels, strict=True)):
        data[p * width : p * width + z.shape[0], :-1] = z
        target[p * width : p * width + z.shape[0]] = label
    # Pairs of one seed and size draw the same streams, as separate sbibm calls
    # would; one generator per such group keeps the draws per epoch few.
    groups: dict[tuple[int, int], int] = {}
    generators, group_train, initial, splits = [], [], [], []
    sizes = [layout.features, layout.hidden, layout.hidden, 1]
    for p, z in enumerate(inputs):
        key = (seeds[p], z.shape[0])
        if key not in groups:
            groups[key] = len(groups)
            splits.append(kfold_test_indices(key[1], folds, torch.Generator().manual_seed(key[0])))
            generator = torch.Generator().manual_seed(key[0])
            initial.append(layout.flatten(glorot_uniform_mlp(sizes, generator)))
            generators.append(generator)
            group_train.append(key[1] - key[1] // folds)
    group, train, tests = [], [], []
    for p, z in enumerate(inputs):
        g = groups[(seeds[p], z.shape[0])]
        for test in splits[g]:
            keep = torch.ones(z.shape[0], dtype=torch.bool)
            keep[test] = False
            group.append(g)
            train.append(p * width + torch.nonzero(keep).flatten())
            tests.append(p * width + test)
    pad = torch.nn.utils.rnn.pad_sequence
    return _Problem(
        data=data,
        target=target,
        train=pad(train, batch_first=True).to(device),
        n_train=torch.tensor([t.numel() for t in train], device=device),
        tests=pad(tests, batch_first=True).to(device),
        n_test=torch.tensor([t.numel() for t in tests], device=device),
        group=torch.tensor(group, device=device),
        initial=torch.stack([initial[g] for g in group]).to(device=device, dtype=dtype),
        generators=generators,
        group_train=group_train,
    )


@dataclass(frozen=True)
class _Cohort:
    """The classifiers still training and their state; stopped ones leave it.

    ``model``, ``group``, ``n_train``: ``(A,)`` their indices, groups, training sizes;
    ``flat``, ``first``, ``second``: ``(A, size)`` parameters and Adam's moments;
    ``updates``: ``(A,)`` Adam's step count; ``best``, ``stall``: ``(A,)`` the best
    epoch loss so far and the epochs without improvement.
    """

    model: Tensor
    group: Tensor
    n_train: Tensor
    flat: Tensor
    first: Tensor
    second: Tensor
    updates: Tensor
    best: Tensor
    stall: Tensor

    def select(self, keep: Tensor) -> _Cohort:
        return _Cohort(*(getattr(self, f.name)[keep] for f in fields(self)))


def _permuted_rows(problem: _Problem, cohort: _Cohort) -> Tensor:
    """``(A, T)`` each model's training rows in this epoch's random order (valid first).

    sklearn permutes ``range(n_train)`` each epoch; here each group draws one
    permutation, and a fold one row short uses it without its last index.
    """
    width = problem.train.shape[1]
    table = torch.full((len(problem.generators), width), width - 1, dtype=torch.long)
    for g in torch.unique(cohort.group).tolist():
        size = problem.group_train[g]
        table[g, :size] = torch.randperm(size, generator=problem.generators[g])
    order = table.to(cohort.group.device)[cohort.group]
    if bool((cohort.n_train < width).any()):
        dropped = (order >= cohort.n_train.unsqueeze(-1)).to(torch.uint8)
        order = order.gather(1, torch.argsort(dropped, dim=1, stable=True))
    return problem.train[cohort.model].gather(1, order)


def _train_epoch(
    problem: _Problem, cohort: _Cohort, plan: _Minibatches, layout: MLPLayout
) -> Tensor:
    """One epoch of minibatch Adam for every model of ``cohort``, in place.

    Returns:
        ``(A,)`` float64, sklearn's epoch loss: the row-weighted mean of the minibatch
        losses, each the mean clipped log-loss plus ``alpha / (2 B) * ||W||^2``.
    """
    flat, models = cohort.flat, cohort.flat.shape[0]
    rows = _permuted_rows(problem, cohort)
    batches = rows[torch.arange(models, device=rows.device).view(1, -1, 1), plan.positions]
    steps, _, batch = batches.shape
    targets = F.pad(problem.target[batches], (0, plan.valid.shape[-1] - batch))
    signs = 1.0 - 2.0 * targets
    count = cohort.updates + plan.on.to(torch.float64).cumsum(dim=0)
    rate = LEARNING_RATE * torch.sqrt(1.0 - BETA2**count) / (1.0 - BETA1**count)
    rate = rate.to(flat.dtype).unsqueeze(-1)
    # sklearn clips the probabilities to [eps, 1 - eps], which bounds each row's loss.
    eps = torch.finfo(flat.dtype).eps
    low, high = -math.log1p(-eps), -math.log(eps)
    mask = layout.weight_mask(flat)
    buffers = MLPBuffers.create(models, batch, layout, flat)
    blocks = layout.views(flat)
    data_loss, penalty = [], []
    for step in range(steps):
        features = problem.data.index_select(0, batches[step].flatten()).view(models, batch, -1)
        grad = log_loss_gradient(blocks, features, targets[step], plan.weight[step], buffers)
        row_loss = F.softplus(signs[step] * buffers.logits).clamp_(low, high)
        data_loss.append(torch.linalg.vecdot(row_loss, plan.valid[step]))
        weights = flat * mask
        penalty.append(torch.linalg.vecdot(weights, flat))
        grad.addcmul_(weights, plan.l2[step])
        if plan.all_on[step]:
            adam_step(flat, cohort.first, cohort.second, grad, rate[step])
        else:
            # A model with fewer minibatches sits this step out, its state untouched.
            on = torch.nonzero(plan.on[step]).flatten()
            part = (flat[on], cohort.first[on], cohort.second[on])
            adam_step(part[0], part[1], part[2], grad[on], rate[step][on])
            for full, new in zip((flat, cohort.first, cohort.second), part, strict=True):
                full.index_copy_(0, on, new)
    cohort.updates.copy_(count[-1])
    # Rows of (models, steps) summed along the row: the same order whatever the models.
    on = plan.on.T.to(torch.float64)
    loss = torch.stack(data_loss, dim=1).double().sum(dim=1)
    loss = loss + 0.5 * ALPHA * (torch.stack(penalty, dim=1).double() * on).sum(dim=1)
    return loss / cohort.n_train.double()


def _test_accuracy(problem: _Problem, flat: Tensor, model: Tensor, layout: MLPLayout) -> Tensor:
    """Held-out accuracy ``(A,)`` float64 of the models ``model`` with parameters ``flat``."""
    rows, count = problem.tests[model], problem.n_test[model]
    chunk = max(1, _EVAL_CHUNK // (rows.shape[1] * (layout.hidden + 1)))
    position = torch.arange(rows.shape[1], device=rows.device)
    hits = []
    for start in range(0, flat.shape[0], chunk):
        part = slice(start, start + chunk)
        index = rows[part]
        buffers = MLPBuffers.create(index.shape[0], index.shape[1], layout, flat)
        mlp_forward(layout.views(flat[part]), problem.data[index], buffers)
        predicted = buffers.logits[:, : index.shape[1]] > 0
        right = predicted == (problem.target[index] > 0.5)
        hits.append((right & (position < count[part, None])).sum(dim=1))
    return torch.cat(hits).double() / count.double()


def _train_and_score(
    inputs: list[Tensor],
    labels: list[Tensor],
    seeds: list[int],
    folds: int,
    max_epochs: int,
    layout: MLPLayout,
) -> SbibmC2STResult:
    """Trains the ``len(inputs) * folds`` classifiers side by side and scores them.

    Args:
        inputs: per pair, the z-scored rows ``(N_p, d)`` in the compute dtype.
        labels: per pair, ``(N_p,)`` 0 for x, 1 for y, same dtype.
        seeds: per pair, the seed of its fold split and of its classifiers.
    """
    problem = _build_problem(inputs, labels, seeds, folds, layout)
    models = problem.group.numel()
    device = problem.data.device
    flat = problem.initial.clone()
    cohort = _Cohort(
        model=torch.arange(models, device=device),
        group=problem.group,
        n_train=problem.n_train,
        flat=flat,
        first=torch.zeros_like(flat),
        second=torch.zeros_like(flat),
        updates=torch.zeros(models, device=device, dtype=torch.float64),
        best=torch.full((models,), math.inf, device=device, dtype=torch.float64),
        stall=torch.zeros(models, device=device, dtype=torch.long),
    )
    accuracy = torch.zeros(models, device=device, dtype=torch.float64)
    epochs = torch.zeros(models, device=device, dtype=torch.long)
    converged = torch.zeros(models, device=device, dtype=torch.bool)
    final_loss = torch.zeros(models, device=device, dtype=torch.float64)
    plan = _plan_minibatches(cohort.n_train, problem.train.shape[1], flat.dtype)
    for epoch in range(1, max_epochs + 1):
        loss = _train_epoch(problem, cohort, plan, layout)
        # sklearn's rule: no improvement by tol for more than n_iter_no_change epochs.
        improved = loss <= cohort.best - TOL
        cohort.stall.copy_(torch.where(improved, 0, cohort.stall + 1))
        cohort.best.copy_(torch.minimum(cohort.best, loss))
        done = cohort.stall > N_ITER_NO_CHANGE
        stop = done | (epoch == max_epochs)
        if not bool(stop.any()):
            continue
        gone = cohort.model[stop]
        accuracy[gone] = _test_accuracy(problem, cohort.flat[stop], gone, layout)
        epochs[gone] = epoch
        converged[gone] = done[stop]
        final_loss[gone] = loss[stop]
        if bool(stop.all()):
            break
        cohort = cohort.select(~stop)
        plan = _plan_minibatches(cohort.n_train, problem.train.shape[1], flat.dtype)

    pairs = len(inputs)
    fold_accuracies = accuracy.view(pairs, folds)
    return SbibmC2STResult(
        accuracy=fold_accuracies.mean(dim=1),
        fold_accuracies=fold_accuracies,
        epochs=epochs.view(pairs, folds),
        converged=converged.view(pairs, folds),
        loss=final_loss.view(pairs, folds),
    )
