"""scikit-learn's 8x8 handwritten digits: the first built-in image data set.

scikit-learn is an optional extra (``pip install 'pushforward[data]'``); the
1,797 images ship inside its wheel, so nothing is downloaded.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pushforward.data.dequantization import uniform_dequantize

DIGIT_LEVELS = 17
"""Pixels of the digits take the integer values 0..16."""

DIGIT_SHAPE = (1, 8, 8)
"""Event shape of one digit image ``(channels, height, width)``."""


def _digits() -> tuple[Tensor, Tensor]:
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ImportError(
            "the digits data set needs scikit-learn: pip install 'pushforward[data]'"
        ) from None
    bunch = sklearn_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64).round()
    return images.reshape(-1, *DIGIT_SHAPE), torch.as_tensor(bunch.target, dtype=torch.long)


def _order(total: int, n: int | None, generator: torch.Generator) -> Tensor:
    if n is None:
        return torch.arange(total)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= total:
        raise ValueError(f"the digits data set has {total} images; cannot take n={n!r}")
    return torch.randperm(total, generator=generator)[:n]


def load_digits(
    dequantize: bool = True,
    seed: int = 0,
    n: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""The 8x8 digits as images ``(n, 1, 8, 8)`` scaled to ``[0, 1]``.

    Pixel values :math:`v \in \{0, \dots, 16\}` become :math:`(v + u)/17` with
    :math:`u \sim U[0, 1)` (uniform dequantisation, so a continuous density can
    be fitted; report :func:`~pushforward.data.dequantization.bits_per_dim` with
    ``n_levels=17``), or the cell centres :math:`(v + 1/2)/17` when
    ``dequantize`` is false.

    References:
        Alpaydin & Kaynak (1998), Optical Recognition of Handwritten Digits (UCI);
        Theis et al. (2016), A note on the evaluation of generative models.

    Args:
        dequantize: add uniform noise (seeded by ``seed``) instead of using cell centres.
        seed: seeds the noise and, when ``n`` is given, the random choice of images.
        n: the number of images (a seeded random subset); ``None`` for all 1,797 in order.
        dtype: floating dtype of the result.

    Returns:
        ``(n, 1, 8, 8)`` tensor; :func:`digit_labels` with the same ``n`` and
        ``seed`` gives the matching classes.

    Raises:
        ImportError: scikit-learn is not installed.
    """
    images, _ = _digits()
    generator = torch.Generator().manual_seed(int(seed))
    images = images[_order(images.shape[0], n, generator)]
    if dequantize:
        scaled = uniform_dequantize(images, DIGIT_LEVELS, generator)
    else:
        scaled = (images + 0.5) / DIGIT_LEVELS
    return scaled.to(dtype)


def digit_labels(seed: int = 0, n: int | None = None) -> Tensor:
    """The classes ``(n,)`` (int64) of the images :func:`load_digits` gives for ``n``, ``seed``."""
    _, labels = _digits()
    generator = torch.Generator().manual_seed(int(seed))
    return labels[_order(labels.shape[0], n, generator)]
