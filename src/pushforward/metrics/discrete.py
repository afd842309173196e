"""Sample metrics for token sequences: total variation of marginals and joints, bits per token.

Samples are integer tensors ``(n, L)`` with position ``i`` in ``[0, vocab[i])``. The
total variation distance between two laws on a finite set is

.. math:: \\mathrm{TV}(p, q) = \\tfrac12 \\sum_s |p(s) - q(s)| \\in [0, 1].

Frequencies are counted with ``torch.bincount`` in the device of the inputs; results
are Python floats. An empirical TV is biased upwards by sampling noise:
:func:`tv_noise_floor` gives its size for an exact table at a given sample size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Histograms over at most this many states are dense; beyond it (large vocabularies,
# bigrams of them) only the states that occur are counted, via torch.unique.
_DENSE_STATES = 1 << 24


def _check_tokens(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor of integer tokens, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex:
        raise TypeError(f"{name} must hold integer tokens, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (n, length), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} holds no sequences")
    return x.long()


def _check_range(x: Tensor, name: str, vocab: tuple[int, ...]) -> None:
    limit = torch.tensor(vocab, device=x.device)
    bad = (x < 0) | (x >= limit)
    if bool(bad.any()):
        row, column = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"{name} has token {int(x[row, column])} at row {row}, position {column}, "
            f"outside the vocabulary [0, {vocab[column]})"
        )


def _vocab_sizes(vocab: int | Sequence[int], length: int) -> tuple[int, ...]:
    if isinstance(vocab, int) and not isinstance(vocab, bool):
        sizes: tuple[int, ...] = (vocab,) * length
    elif isinstance(vocab, Sequence) and not isinstance(vocab, str):
        sizes = tuple(vocab)
    else:
        raise TypeError(f"vocab must be a size or one size per position, got {vocab!r}")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes):
        raise ValueError(f"vocabulary sizes must be positive integers, got {vocab!r}")
    if len(sizes) != length:
        raise ValueError(f"vocab has {len(sizes)} sizes but the sequences have length {length}")
    return sizes


def _pair(
    samples: Tensor, reference: Tensor, vocab: int | Sequence[int]
) -> tuple[Tensor, Tensor, Tensor]:
    x = _check_tokens(samples, "samples")
    y = _check_tokens(reference, "reference").to(x.device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"samples have length {x.shape[1]} but the reference has length {y.shape[1]}"
        )
    sizes = _vocab_sizes(vocab, x.shape[1])
    _check_range(x, "samples", sizes)
    _check_range(y, "reference", sizes)
    return x, y, torch.tensor(sizes, device=x.device)


def _segment_tv(a: Tensor, b: Tensor, sizes: Tensor) -> Tensor:
    """The TV between ``a`` and ``b`` counted separately in each segment of states.

    Args:
        a: ``(n, S)`` state indices, column ``s`` in ``[0, sizes[s])``.
        b: ``(m, S)`` state indices in the same segments.
        sizes: ``(S,)`` the number of states of each segment.

    Returns:
        float64 ``(S,)``, the TV of each segment's frequencies.
    """
    ends = sizes.cumsum(0)
    starts = ends - sizes
    a_flat, b_flat = (a + starts).reshape(-1), (b + starts).reshape(-1)
    total = int(ends[-1])
    if total <= _DENSE_STATES:
        states = torch.arange(total, device=a.device)
        a_counts = torch.bincount(a_flat, minlength=total)
        b_counts = torch.bincount(b_flat, minlength=total)
    else:
        states, inverse = torch.unique(torch.cat([a_flat, b_flat]), return_inverse=True)
        a_counts = torch.bincount(inverse[: a_flat.numel()], minlength=states.numel())
        b_counts = torch.bincount(inverse[a_flat.numel() :], minlength=states.numel())
    gap = (a_counts.double() / a.shape[0] - b_counts.double() / b.shape[0]).abs()
    segment = torch.searchsorted(ends, states, right=True)
    tv = torch.zeros(sizes.numel(), dtype=torch.float64, device=a.device)
    return 0.5 * tv.index_add_(0, segment, gap)


def unigram_tv(samples: Tensor, reference: Tensor, vocab: int | Sequence[int]) -> float:
    """The mean over positions of the TV between the per-position token frequencies.

    .. math:: \\frac1L \\sum_{i=1}^{L} \\tfrac12 \\sum_v |\\hat p_i(v) - \\hat q_i(v)|

    Args:
        samples: integer tokens ``(n, L)``.
        reference: integer tokens ``(m, L)``.
        vocab: the vocabulary size, or one size per position.

    Returns:
        The mean TV, in ``[0, 1]``.
    """
    x, y, sizes = _pair(samples, reference, vocab)
    return float(_segment_tv(x, y, sizes).mean())


def bigram_tv(samples: Tensor, reference: Tensor, vocab: int | Sequence[int]) -> float:
    """The mean over adjacent positions of the TV between the joint frequencies of pairs.

    .. math:: \\frac{1}{L-1} \\sum_{i=1}^{L-1} \\tfrac12 \\sum_{u,v}
              |\\hat p_{i,i+1}(u, v) - \\hat q_{i,i+1}(u, v)|

    Args:
        samples: integer tokens ``(n, L)``, ``L >= 2``.
        reference: integer tokens ``(m, L)``.
        vocab: the vocabulary size, or one size per position.

    Returns:
        The mean TV, in ``[0, 1]``.
    """
    x, y, sizes = _pair(samples, reference, vocab)
    if x.shape[1] < 2:
        raise ValueError("bigram_tv needs sequences of length at least 2, got length 1")
    # Pair (x_i, x_{i+1}) as the single state x_i * vocab[i+1] + x_{i+1}.
    x_pairs = x[:, :-1] * sizes[1:] + x[:, 1:]
    y_pairs = y[:, :-1] * sizes[1:] + y[:, 1:]
    return float(_segment_tv(x_pairs, y_pairs, sizes[:-1] * sizes[1:]).mean())


def _check_table(probabilities: Tensor) -> Tensor:
    if not isinstance(probabilities, Tensor) or not probabilities.dtype.is_floating_point:
        raise TypeError("probabilities must be a floating-point tensor shaped like the vocab")
    if probabilities.dim() == 0:
        raise ValueError("probabilities must have one dimension per position, got a scalar")
    if not bool(torch.isfinite(probabilities).all()) or bool((probabilities < 0).any()):
        raise ValueError("probabilities must be finite and non-negative")
    total = float(probabilities.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"probabilities must sum to 1, got {total:.8g}")
    return probabilities


def _flat_index(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Row-major index of each sequence ``(n, L)`` in a table of ``shape``."""
    strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
    return (x * torch.tensor(strides, device=x.device)).sum(dim=1)


def joint_tv(samples: Tensor, probabilities: Tensor) -> float:
    """The TV between the empirical joint law of ``samples`` and an exact table.

    .. math:: \\tfrac12 \\sum_{x} |\\hat p(x) - p(x)|

    Args:
        samples: integer tokens ``(n, L)``.
        probabilities: the exact table, shape ``vocab`` (``L`` dimensions), summing to 1.

    Returns:
        The TV, in ``[0, 1]``.
    """
    table = _check_table(probabilities)
    x = _check_tokens(samples, "samples").to(table.device)
    shape = tuple(table.shape)
    if x.shape[1] != len(shape):
        raise ValueError(
            f"samples have length {x.shape[1]} but the table has {len(shape)} dimensions "
            f"(shape {shape})"
        )
    _check_range(x, "samples", shape)
    counts = torch.bincount(_flat_index(x, shape), minlength=table.numel())
    frequency = counts.to(torch.float64) / x.shape[0]
    return float(0.5 * (frequency - table.reshape(-1).to(torch.float64)).abs().sum())


def tv_noise_floor(probabilities: Tensor, n: int, draws: int = 20, seed: int = 0) -> float:
    """The mean :func:`joint_tv` of ``n`` exact samples from the table itself.

    .. math:: \\mathbb E_{x_{1:n} \\sim p}\\, \\tfrac12 \\sum_x |\\hat p_n(x) - p(x)|

    A model's ``joint_tv`` at sample size ``n`` cannot be told apart from a perfect fit
    below this value, which shrinks like :math:`n^{-1/2}`.

    Args:
        probabilities: the exact table, shape ``vocab``, summing to 1.
        n: the sample size.
        draws: the number of independent samples of size ``n`` averaged.
        seed: seed of the generator (on the table's device).

    Returns:
        The mean TV over ``draws`` samples.
    """
    table = _check_table(probabilities)
    for option, value in (("n", n), ("draws", draws)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{option} must be a positive integer, got {value!r}")
    generator = torch.Generator(device=table.device).manual_seed(int(seed))
    flat = table.reshape(-1).to(torch.float64)
    total = 0.0
    for _ in range(draws):
        index = torch.multinomial(flat, n, replacement=True, generator=generator)
        counts = torch.bincount(index, minlength=flat.numel())
        total += float(0.5 * (counts.to(torch.float64) / n - flat).abs().sum())
    return total / draws


def bits_per_token(nll: float | Tensor, length: int) -> float | Tensor:
    """A negative log-likelihood per sequence in nats, as bits per token.

    .. math:: \\text{bpt} = \\frac{\\text{NLL}}{L \\ln 2}

    Args:
        nll: nats per sequence, a number or a tensor of any shape.
        length: the number of tokens ``L`` per sequence.

    Returns:
        Bits per token, of the same kind and shape as ``nll``.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    return nll / (length * math.log(2))
