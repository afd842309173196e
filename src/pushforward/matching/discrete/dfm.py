"""The registered ``dfm`` builder: discrete flow matching over tokens."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pushforward.matching.discrete.model import DiscreteFlowMatching
from pushforward.matching.discrete.path import MIXTURE_SOURCES, make_mixture_source
from pushforward.matching.discrete.schedulers import make_kappa_scheduler
from pushforward.nn.one_hot_mlp import OneHotMLP
from pushforward.nn.token_transformer import TokenTransformer
from pushforward.options import choice, hidden_widths, positive_float, positive_int, sizes
from pushforward.registry import register
from pushforward.token_model import vocab_option

NETWORKS: tuple[str, ...] = ("auto", "mlp", "transformer")
"""Denoiser networks: an MLP over one-hot tokens, a transformer over positions, or
``auto`` (the MLP for sequences of up to :data:`MLP_LENGTH` tokens)."""

MLP_LENGTH = 8
"""The longest sequence ``network="auto"`` gives the one-hot MLP (short tables, grids)."""

DFM_TRAIN_DEFAULTS = {"lr": 1e-3}
"""The peak learning rate ``pushforward train`` uses for ``dfm``."""


def token_network(
    network: str,
    states: int,
    vocab: int,
    length: int,
    context: int,
    context_dropout: float,
    hidden: Sequence[int],
    width: int,
    depth: int,
    heads: int,
) -> nn.Module:
    """The denoiser network of a token model, shared by ``dfm`` and ``simplex-fm``.

    Args:
        network: ``auto`` (the MLP for up to :data:`MLP_LENGTH` positions), ``mlp`` or
            ``transformer``.
        states: values an input position can take (``vocab + 1`` with a mask token).
        vocab: real tokens, the width of the output.
        length: sequence length ``L``.
        context: context size; a network trained for guidance
            (``context_dropout > 0``) takes a presence flag after the context.
        hidden: the MLP's hidden widths.
        width, depth, heads: the transformer's width, blocks and attention heads.
    """
    flagged = context + (1 if float(context_dropout) > 0 and context else 0)
    kind = choice("network", network, NETWORKS)
    if kind == "auto":
        kind = "mlp" if length <= MLP_LENGTH else "transformer"
    if kind == "mlp":
        return OneHotMLP(
            states, vocab, length, context_features=flagged, hidden=hidden_widths(hidden)
        )
    return TokenTransformer(
        states,
        vocab,
        length,
        context_features=flagged,
        width=positive_int("width", width),
        depth=positive_int("depth", depth),
        heads=positive_int("heads", heads),
    )


@register("dfm", train=DFM_TRAIN_DEFAULTS, data="tokens")
def discrete_flow_matching(
    features: int,
    vocab: int | Sequence[int],
    context: int = 0,
    path: str = "masked",
    scheduler: str = "polynomial",
    exponent: float = 1.0,
    loss: str = "cross-entropy",
    network: str = "auto",
    hidden: Sequence[int] = (256, 256),
    width: int = 128,
    depth: int = 2,
    heads: int = 4,
    context_dropout: float = 0.0,
    steps: int = 100,
    eta: float = 0.0,
    draws: int = 16,
) -> DiscreteFlowMatching:
    """Discrete flow matching on a mixture path (Gat et al. 2024; Campbell et al. 2024).

    Args:
        features: the sequence length ``L`` (the number of columns of a table).
        vocab: the vocabulary size shared by every position, or one per position
            (a categorical table); ``pushforward train`` infers it from the data.
        context: context size (0 for unconditional).
        path: the mixture path's source: ``masked`` (absorbing) or ``uniform``.
        scheduler: ``kappa_t``: ``polynomial`` (``t ** exponent``), ``linear``, ``cosine``.
        exponent: the polynomial scheduler's exponent.
        loss: ``cross-entropy`` or ``generalized-kl``.
        network: ``auto``, ``mlp`` (one-hot inputs) or ``transformer``.
        hidden: the MLP's hidden widths.
        width, depth, heads: the transformer's width, blocks and attention heads.
        context_dropout: probability of dropping the context in training
            (classifier-free guidance; 0 disables it).
        steps, eta: the sampler's default Euler steps and corrector stochasticity.
        draws: default Monte Carlo draws of the likelihood bound.
    """
    length, context = sizes(features, context)
    sizes_of = vocab_option(vocab if isinstance(vocab, int) else list(vocab), length)
    source = make_mixture_source(choice("path", path, tuple(MIXTURE_SOURCES)))
    options = (
        {"exponent": positive_float("exponent", exponent)} if scheduler == "polynomial" else {}
    )
    if scheduler != "polynomial" and exponent != 1.0:
        raise ValueError(
            f"option 'exponent' applies to the 'polynomial' scheduler, not {scheduler!r}"
        )
    kappa = make_kappa_scheduler(scheduler, **options)
    top = max(sizes_of)
    states = source.states(top)
    denoiser = token_network(
        network, states, top, length, context, context_dropout, hidden, width, depth, heads
    )
    return DiscreteFlowMatching(
        denoiser,
        sizes_of,
        source,
        kappa,
        context,
        loss=loss,
        context_dropout=context_dropout,
        steps=steps,
        eta=eta,
        draws=draws,
    )
