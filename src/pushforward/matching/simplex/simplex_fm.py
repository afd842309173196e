"""The registered ``simplex-fm`` builder: flow matching of tokens on the simplex."""

from __future__ import annotations

from collections.abc import Sequence

from pushforward.matching.discrete.dfm import token_network
from pushforward.matching.simplex.model import SimplexFlowMatching
from pushforward.options import sizes
from pushforward.registry import register
from pushforward.token_model import vocab_option

SIMPLEX_TRAIN_DEFAULTS = {"lr": 1e-3}
"""The peak learning rate ``pushforward train`` uses for ``simplex-fm``."""


@register("simplex-fm", train=SIMPLEX_TRAIN_DEFAULTS, data="tokens")
def simplex_flow_matching(
    features: int,
    vocab: int | Sequence[int],
    context: int = 0,
    objective: str = "denoiser",
    source: str = "orthant",
    network: str = "auto",
    hidden: Sequence[int] = (256, 256),
    width: int = 128,
    depth: int = 2,
    heads: int = 4,
    context_dropout: float = 0.0,
    steps: int = 100,
) -> SimplexFlowMatching:
    """Flow matching on the probability simplex along Fisher-Rao geodesics (Davis et al.
    2024; Cheng et al. 2024): tokens as vertices of the sphere's positive orthant.

    Args:
        features: the sequence length ``L`` (the number of columns of a table).
        vocab: the vocabulary size shared by every position, or one per position;
            ``pushforward train`` infers it from the data.
        context: context size (0 for unconditional).
        objective: ``denoiser`` (a token posterior trained by cross-entropy) or
            ``velocity`` (the velocity regressed on the geodesic's).
        source: ``orthant`` (uniform on the orthant) or ``simplex`` (uniform on the
            simplex, mapped by the square root).
        network: ``auto`` (the MLP up to 8 positions), ``mlp`` or ``transformer``;
            both take the orthant's points as soft one-hot inputs.
        hidden: the MLP's hidden widths.
        width, depth, heads: the transformer's width, blocks and attention heads.
        context_dropout: probability of dropping the context in training
            (classifier-free guidance; 0 disables it).
        steps: the sampler's default Euler steps on the sphere.
    """
    length, context = sizes(features, context)
    sizes_of = vocab_option(vocab if isinstance(vocab, int) else list(vocab), length)
    top = max(sizes_of)
    denoiser = token_network(
        network, top, top, length, context, context_dropout, hidden, width, depth, heads
    )
    return SimplexFlowMatching(
        denoiser,
        sizes_of,
        context,
        objective=objective,
        source=source,
        context_dropout=context_dropout,
        steps=steps,
    )
