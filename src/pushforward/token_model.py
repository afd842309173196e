"""Models of integer tokens: sequences ``(batch, L)`` over a vocabulary, or categorical tables.

A :class:`TokenModel` speaks the same protocol as every model (``loss``,
``log_prob``, ``sample``), on int64 tokens: position ``i`` takes values in
``[0, vocab[i])`` (one shared vocabulary for sequences, one per column for a
categorical table). Tokens are never standardised: the model's preprocessing is
the identity on the data (a context may still be standardised), and ``sample``
returns int64 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from pushforward.data.tokens import check_tokens
from pushforward.model import Model
from pushforward.options import positive_int
from pushforward.transforms.preprocessing import Preprocessing


def vocab_option(vocab: int | Sequence[int], length: int | None = None) -> tuple[int, ...]:
    """The ``vocab`` option as one size per position.

    Args:
        vocab: one vocabulary size shared by every position (then ``length`` is
            needed), or one size per position (a categorical table).
        length: the sequence length, when ``vocab`` is one size.

    Returns:
        ``(vocab_0, ..., vocab_{L-1})``, each at least 2.
    """
    if isinstance(vocab, bool):
        raise ValueError(f"option 'vocab' must be a token count or a list of them, got {vocab!r}")
    if isinstance(vocab, int):
        if length is None:
            raise ValueError("a shared vocabulary size needs the sequence length (features)")
        sizes = (vocab,) * positive_int("features", length)
    else:
        sizes = tuple(vocab)
        if length is not None and len(sizes) != length:
            raise ValueError(
                f"option 'vocab' lists {len(sizes)} sizes but the sequences have length {length}"
            )
        if not sizes:
            raise ValueError("option 'vocab' lists no sizes")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"every vocabulary size must be an int of at least 2, got {size!r}")
    return sizes


class TokenModel(Model):
    """A model of int64 tokens ``(batch, L)``, position ``i`` in ``[0, vocab[i])``.

    Args:
        vocab: the vocabulary size of each position.
        context_features: size of the (float) context, 0 for unconditional.
    """

    data_kind: ClassVar[str] = "tokens"

    def __init__(self, vocab: Sequence[int], context_features: int = 0) -> None:
        super().__init__()
        self.vocab = vocab_option(list(vocab))
        self.event_shape = (len(self.vocab),)
        self.context_features = int(context_features)

    @property
    def vocab_size(self) -> int:
        """The largest vocabulary of any position: the width of the model's token axis."""
        return max(self.vocab)

    def _float_dtype(self) -> torch.dtype:
        """The dtype of the model's parameters (the default dtype before it has any)."""
        reference = self._reference()
        return torch.get_default_dtype() if reference is None else reference.dtype

    def check_input(self, x: Tensor, match_dtype: bool = True) -> Tensor:
        """Checks that ``x`` is an integer tensor ``(batch, L)`` of tokens in the vocabulary.

        ``match_dtype`` is accepted for the protocol's sake: tokens are int64 whatever
        the model's float dtype.
        """
        return check_tokens(x, self.vocab)

    def set_preprocessing(self, preprocessing: Preprocessing) -> Model:
        """Installs a preprocessing of the context only: tokens are never standardised."""
        if preprocessing.data is not None or preprocessing.source is not None:
            raise ValueError(
                "tokens are never standardised: a token model takes a preprocessing of "
                "its context only"
            )
        return super().set_preprocessing(preprocessing)
