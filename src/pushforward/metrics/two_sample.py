"""The classifier two-sample test (C2ST) with a small torch MLP, no sklearn needed."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pushforward.metrics.distances import flatten_samples


@dataclass(frozen=True)
class C2STResult:
    """The outcome of a classifier two-sample test.

    Attributes:
        accuracy: held-out accuracy over all folds; about 0.5 when the samples come
            from the same distribution (with equal sizes), about 1 when they differ.
        stderr: the binomial standard error :math:`\\sqrt{a (1 - a) / N}` of the
            accuracy over the :math:`N` held-out predictions.
        p_value: one-sided p-value of "accuracy > 1/2" under the null
            :math:`a \\sim \\mathcal{N}(1/2, 1/(4N))` (Lopez-Paz & Oquab, 2017).
        fold_accuracies: the accuracy on each held-out fold.
    """

    accuracy: float
    stderr: float
    p_value: float
    fold_accuracies: tuple[float, ...]


def stratified_folds(labels: Tensor, folds: int, generator: torch.Generator) -> list[Tensor]:
    """Split indices into ``folds`` random parts with the same class proportions.

    Args:
        labels: ``(N,)`` integer class labels.
        folds: the number of parts.
        generator: a CPU generator for the shuffles.

    Returns:
        ``folds`` index tensors ``(N_k,)`` on the device of ``labels``.
    """
    parts: list[list[Tensor]] = [[] for _ in range(folds)]
    for value in torch.unique(labels.cpu()).tolist():
        members = torch.nonzero(labels.cpu() == value).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        for k, chunk in enumerate(torch.tensor_split(members, folds)):
            parts[k].append(chunk)
    return [torch.cat(p).to(labels.device) for p in parts]


def init_classifier(sizes: Sequence[int], generator: torch.Generator, like: Tensor) -> list[Tensor]:
    """Weights and biases of an MLP with PyTorch's default uniform initialisation.

    Drawn from ``generator`` (so the global RNG is untouched), then moved to the
    dtype and device of ``like``.

    Args:
        sizes: layer widths ``[in, hidden..., out]``.
        generator: a CPU generator.
        like: a tensor giving dtype and device.

    Returns:
        ``[W_1, b_1, W_2, b_2, ...]``, leaf tensors that require gradients.
    """
    parameters: list[Tensor] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        bound = 1.0 / math.sqrt(fan_in)
        for shape in ((fan_out, fan_in), (fan_out,)):
            values = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
            parameters.append(values.to(dtype=like.dtype, device=like.device).requires_grad_())
    return parameters


def classifier_logits(parameters: Sequence[Tensor], inputs: Tensor) -> Tensor:
    """The logits of the MLP ``[W_1, b_1, ...]`` with SiLU activations: ``(N, d) -> (N,)``."""
    h = inputs
    layers = len(parameters) // 2
    for k in range(layers):
        h = F.linear(h, parameters[2 * k], parameters[2 * k + 1])
        if k < layers - 1:
            h = F.silu(h)
    return h[:, 0]


def c2st(
    x: Tensor,
    y: Tensor,
    *,
    folds: int = 5,
    hidden: Sequence[int] = (64, 64),
    steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> C2STResult:
    r"""Classifier two-sample test: how well can a classifier tell ``x`` from ``y``?

    The pooled sample is labelled (0 for ``x``, 1 for ``y``) and split into
    ``folds`` stratified parts; for each part an MLP is trained by full-batch Adam on
    the others (inputs standardised with the training part's mean and standard
    deviation) and scored on it. The statistic is the held-out accuracy

    .. math:: \hat a = \frac{1}{N} \sum_{i} \mathbb{1}[\hat\ell(z_i) = \ell_i],

    about 1/2 when both samples come from one distribution (with equal sizes;
    otherwise the chance level is the larger class fraction) and near 1 when the
    classifier separates them.

    References:
        Lopez-Paz & Oquab (2017), Revisiting Classifier Two-Sample Tests.

    Args:
        x: ``(n, *event)``.
        y: ``(m, *event)``.
        folds: number of cross-validation folds (at least 2).
        hidden: hidden widths of the classifier.
        steps: full-batch Adam steps per fold.
        lr: Adam learning rate.
        weight_decay: L2 penalty of the weights (AdamW-style decoupled decay).
        seed: seeds the folds and the classifier's initialisation (the global RNG is
            not touched), so a call is reproducible.

    Returns:
        :class:`C2STResult`.
    """
    x, y = flatten_samples(x, y)
    if int(folds) < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if min(x.shape[0], y.shape[0]) < folds:
        raise ValueError(
            f"each sample needs at least folds={folds} points, got {x.shape[0]} and {y.shape[0]}"
        )
    if int(steps) < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    x, y = x.detach(), y.detach()
    inputs = torch.cat([x, y], dim=0)
    labels = torch.cat(
        [
            torch.zeros(x.shape[0], dtype=torch.long, device=x.device),
            torch.ones(y.shape[0], dtype=torch.long, device=x.device),
        ]
    )
    generator = torch.Generator().manual_seed(int(seed))
    parts = stratified_folds(labels, int(folds), generator)
    sizes = [inputs.shape[1], *(int(h) for h in hidden), 1]

    correct = 0
    fold_accuracies: list[float] = []
    for k, test_index in enumerate(parts):
        train_index = torch.cat([p for j, p in enumerate(parts) if j != k])
        train, test = inputs[train_index], inputs[test_index]
        mean = train.mean(dim=0)
        # A constant feature would divide by zero; leave it unscaled instead.
        std = train.std(dim=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        train = (train - mean) / std
        test = (test - mean) / std
        targets = labels[train_index].to(inputs.dtype)

        parameters = init_classifier(sizes, generator, inputs)
        optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
        # Training needs autograd even when the caller evaluates under no_grad.
        with torch.enable_grad():
            for _ in range(int(steps)):
                optimizer.zero_grad(set_to_none=True)
                logits = classifier_logits(parameters, train)
                loss = F.binary_cross_entropy_with_logits(logits, targets)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            predicted = (classifier_logits(parameters, test) > 0).long()
            hits = int((predicted == labels[test_index]).sum())
        correct += hits
        fold_accuracies.append(hits / test_index.numel())

    total = inputs.shape[0]
    accuracy = correct / total
    stderr = math.sqrt(accuracy * (1.0 - accuracy) / total)
    z = (accuracy - 0.5) / math.sqrt(0.25 / total)
    p_value = 0.5 * math.erfc(z / math.sqrt(2.0))
    return C2STResult(accuracy, stderr, p_value, tuple(fold_accuracies))
