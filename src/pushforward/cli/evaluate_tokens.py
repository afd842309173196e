"""``pushforward eval`` for token models: the likelihood bound and sample statistics."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pushforward.data.tokens import load_tokens
from pushforward.metrics.discrete import (
    bigram_tv,
    bits_per_token,
    joint_tv,
    tv_noise_floor,
    unigram_tv,
)
from pushforward.token_model import TokenModel

EVAL_BATCH = 4096


def evaluate_tokens(
    config: dict[str, Any],
    model: TokenModel,
    data: str,
    context: Tensor | None,
    n: int | None,
    seed: int,
    options: dict[str, Any],
    sampling: dict[str, Any],
) -> dict[str, Any]:
    r"""The metrics of a token model on test tokens ``data``, as one JSON-ready dict.

    ``nll_bound`` is :math:`-\frac1n \sum_j \mathrm{ELBO}(x_j)` in nats per sequence,
    an upper bound on the negative log-likelihood (the model's ``log_prob`` is a
    bound, ``log_prob_is_bound``), with ``nll_bound_se`` its standard error over the
    sequences (the bound's own Monte Carlo noise included) and ``bits_per_token``
    the bound in bits per position. With ``--exact`` the log-likelihood is the
    exact one, by enumeration, and the keys are ``nll``, ``nll_se``. A built-in set
    with exact probabilities adds its ``entropy``. Sample statistics compare one
    sample per test row with the test tokens: ``unigram_tv`` and ``bigram_tv``, the
    total variation of the per-position and adjacent-pair token frequencies; a
    built-in set adds ``joint_tv``, the total variation of the samples' joint
    frequencies to its exact probabilities, beside ``joint_tv_noise_floor``, the same
    statistic for as many exact samples (what a perfect model would score).
    """
    vocab = tuple(config["data"].get("vocab") or model.vocab)
    tokens = load_tokens(data, vocab="columns", n=n, seed=seed)
    x = tokens.values
    if x.shape[1] != len(model.vocab):
        raise ValueError(
            f"the test tokens have length {x.shape[1]}; the run was trained on sequences of "
            f"length {len(model.vocab)}"
        )
    x = model.check_input(x)
    if context is not None and context.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"the context has {context.shape[0]} rows but the data has {x.shape[0]}; "
            "pass one row per data row, or a single row"
        )
    rows = int(x.shape[0])
    result: dict[str, Any] = {"n": rows, "data": tokens.source}
    if model.has_log_prob:
        result.update(_likelihood(model, x, context, seed, options))
    if tokens.exact is not None:
        result["entropy"] = float(tokens.exact.entropy())
    samples = _samples(model, x.shape[0], context, seed, sampling)
    result["unigram_tv"] = float(unigram_tv(samples, x, vocab))
    if x.shape[1] > 1:
        result["bigram_tv"] = float(bigram_tv(samples, x, vocab))
    if tokens.exact is not None:
        # Against the exact joint, with the same statistic's value for exact samples.
        table = tokens.exact.log_probs().exp()
        result["joint_tv"] = float(joint_tv(samples, table))
        result["joint_tv_noise_floor"] = float(tv_noise_floor(table, rows, seed=seed))
    return result


def _likelihood(
    model: TokenModel, x: Tensor, context: Tensor | None, seed: int, options: dict[str, Any]
) -> dict[str, Any]:
    """``nll_bound`` (or, with ``exact``, ``nll``), its standard error and ``bits_per_token``."""
    exact = bool(options.get("exact", False))
    pieces = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, x.shape[0], EVAL_BATCH):
            chunk = context
            if context is not None and context.shape[0] != 1:
                chunk = context[start : start + EVAL_BATCH]
            pieces.append(model.log_prob(x[start : start + EVAL_BATCH], chunk, **options))
    nll = -torch.cat(pieces).double()
    rows = int(nll.numel())
    key = "nll" if exact else "nll_bound"
    return {
        key: float(nll.mean()),
        key + "_se": float(nll.std() / math.sqrt(rows)) if rows > 1 else 0.0,
        "bits_per_token": float(bits_per_token(float(nll.mean()), len(model.vocab))),
    }


def _samples(
    model: TokenModel, n: int, context: Tensor | None, seed: int, options: dict[str, Any]
) -> Tensor:
    pieces = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, n, EVAL_BATCH):
            rows = min(EVAL_BATCH, n - start)
            chunk = context
            if context is not None and context.shape[0] != 1:
                chunk = context[start : start + rows]
            pieces.append(model.sample(rows, chunk, **options))
    return torch.cat(pieces)
