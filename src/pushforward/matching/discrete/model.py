r"""Discrete flow matching: a probability denoiser over tokens and its CTMC sampler.

A mixture path moves every position of a sequence from a source token (the mask,
or a uniform draw) to its data token at a random time with probability
:math:`\kappa_t`. The model learns the probability denoiser
:math:`p_{1|t}(x_1^i \mid x_t, c)` of each position; the marginal velocity of the
path, the jump rates

.. math:: u_t(y, x_t)^i = \frac{\dot\kappa_t}{1 - \kappa_t}
          \bigl[p_{1|t}(y \mid x_t) - \delta_{x_t^i}(y)\bigr],

generate the data distribution from the source, and Euler steps of that
continuous-time Markov chain (:func:`~pushforward.matching.discrete.sampler.ctmc_sample`)
sample it. ``log_prob`` is an evidence lower bound
(:func:`~pushforward.matching.discrete.bound.elbo`), which the model states with
``log_prob_is_bound``.

References: Gat et al. (2024), Discrete Flow Matching; Campbell et al. (2024),
Generative Flows on Discrete State-Spaces; Shaul et al. (2024), Flow Matching with
General Discrete Paths: A Kinetic-Optimal Perspective (the bound); Ho & Salimans
(2022), Classifier-Free Diffusion Guidance; Nisonoff et al. (2024), Unlocking
Guidance for Discrete State-Space Diffusion and Flow Models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from pushforward.matching.discrete.bound import BoundEstimate, elbo, generalized_kl
from pushforward.matching.discrete.exact import exact_log_prob
from pushforward.matching.discrete.options import BoundLogProbOptions, CTMCSampleOptions
from pushforward.matching.discrete.path import (
    MaskedSource,
    MixtureSource,
    UniformSource,
    sample_mixture_path,
)
from pushforward.matching.discrete.sampler import ctmc_sample
from pushforward.matching.discrete.schedulers import KappaScheduler
from pushforward.nn.velocity import flagged_context
from pushforward.options import choice, finite, positive_int, unit_interval
from pushforward.token_model import TokenModel

LAST_TRAINING_REMAINDER = 1e-5
"""Training times stop where :math:`1 - \\kappa_t` reaches this (finite jump coefficients)."""

EXACT_BATCH = 8192
"""Enumerated states per network call of ``exact=True``."""

DISCRETE_LOSSES: tuple[str, ...] = ("cross-entropy", "generalized-kl")
"""Training objectives of the denoiser: the cross-entropy of :math:`p_{1|t}` at the
data tokens (Gat et al. 2024), or the mixture path's generalized KL, whose time
integral is the negative ELBO (Shaul et al. 2024)."""


class DiscreteFlowMatching(TokenModel):
    """Discrete flow matching on a mixture path (Gat et al. 2024; Campbell et al. 2024).

    Args:
        network: maps ``(x_t: (batch, L) int64 in [0, states), t: (batch,),
            context or None)`` to logits ``(batch, L, vocab_size)``.
        vocab: the vocabulary size of each position.
        source: the path's source (:class:`MaskedSource` or :class:`UniformSource`).
        scheduler: :math:`\\kappa_t`.
        context_features: context size (0 for unconditional).
        loss: ``cross-entropy`` or ``generalized-kl``.
        context_dropout: probability of dropping the context in training, for
            classifier-free guidance (the network then takes a presence flag).
        steps, eta: the sampler's default Euler steps and corrector stochasticity.
        draws: default Monte Carlo draws of the likelihood bound.
    """

    network: nn.Module
    invalid: Tensor
    has_rsample = False
    log_prob_is_bound = True
    sample_options = CTMCSampleOptions
    log_prob_options = BoundLogProbOptions

    def __init__(
        self,
        network: nn.Module,
        vocab: Sequence[int],
        source: MixtureSource,
        scheduler: KappaScheduler,
        context_features: int = 0,
        *,
        loss: str = "cross-entropy",
        context_dropout: float = 0.0,
        steps: int = 100,
        eta: float = 0.0,
        draws: int = 16,
    ) -> None:
        super().__init__(vocab, context_features)
        if isinstance(source, UniformSource) and len(set(self.vocab)) > 1:
            raise ValueError(
                "the uniform path needs one vocabulary for every position; a table whose "
                "columns have different sizes takes path='masked'"
            )
        self.network = network
        self.source = source
        self.scheduler = scheduler
        self.states = source.states(self.vocab_size)
        self.loss_kind = choice("loss", loss, DISCRETE_LOSSES)
        self.context_dropout = unit_interval("context_dropout", context_dropout)
        self.guided = self.context_dropout > 0 and self.context_features > 0
        self.steps = positive_int("steps", steps)
        self.eta = finite("eta", eta)
        self.draws = positive_int("draws", draws)
        limits = torch.tensor(self.vocab)
        # Tokens a position cannot take (a table's shorter columns) get no probability.
        invalid = torch.arange(self.vocab_size)[None, :] >= limits[:, None]
        self.register_buffer("invalid", invalid, persistent=False)
        self.has_invalid = bool(invalid.any())
        # Training times stop short of 1, where the generalized KL's jump coefficient diverges.
        remainder = torch.tensor(1.0 - LAST_TRAINING_REMAINDER, dtype=torch.float64)
        self.last_training_time = float(scheduler.time(remainder))

    # -- the denoiser -------------------------------------------------------------

    def _network_context(self, context: Tensor | None, keep: Tensor | None) -> Tensor | None:
        """The context as the network sees it: with a presence flag when guidance is on."""
        return flagged_context(context, keep, self.guided)

    def _logits(self, x_t: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        logits = self.network(x_t, t, context)
        if self.has_invalid:
            logits = logits.masked_fill(self.invalid, torch.finfo(logits.dtype).min)
        return logits

    def denoiser_logits(
        self, x_t: Tensor, t: Tensor, context: Tensor | None = None, guidance: float = 1.0
    ) -> Tensor:
        r"""Log-probabilities :math:`\log p_{1|t}(\cdot \mid x_t, c)`, ``(batch, L, vocab_size)``.

        With a guidance scale :math:`w \ne 1` (a model trained with context dropout),
        :math:`\log p_w = \log p_\varnothing + w (\log p_c - \log p_\varnothing)`,
        normalised again: the rates' geometric mixture of Nisonoff et al. (2024) for
        the mixture path's factorised denoiser.

        Args:
            x_t: ``(batch, L)`` states in ``[0, states)``, in the model's units.
            t: ``(batch,)`` times.
            context: ``(batch, context)`` in the model's units, or ``None``.
            guidance: classifier-free guidance scale.
        """
        conditional = functional.log_softmax(
            self._logits(x_t, t, self._network_context(context, None)), dim=-1
        )
        if guidance == 1.0 or context is None:
            return conditional
        if not self.guided:
            raise ValueError(
                "guidance needs a model trained with context_dropout > 0 (classifier-free)"
            )
        absent = torch.zeros(context.shape[0], 1, dtype=context.dtype, device=context.device)
        unconditional = functional.log_softmax(
            self._logits(x_t, t, self._network_context(context, absent)), dim=-1
        )
        guided = unconditional + guidance * (conditional - unconditional)
        return functional.log_softmax(guided, dim=-1)

    def _log_posterior(self, context: Tensor | None, guidance: float) -> Any:
        """``(x_t, t) -> log p_{1|t}``: the denoiser with the context rows of the batch."""

        def log_posterior(x_t: Tensor, t: Tensor) -> Tensor:
            rows = None if context is None else _rows_for(context, x_t.shape[0])
            return self.denoiser_logits(x_t, t, rows, guidance)

        return log_posterior

    def _row_posterior(self, context: Tensor | None, guidance: float) -> Any:
        """``(z, t, rows) -> p_{1|t}``: the denoiser at enumerated states of given data rows."""

        def posterior(z: Tensor, t: Tensor, rows: Tensor | None) -> Tensor:
            chunk = None
            if context is not None:
                chunk = context[:1].expand(z.shape[0], -1) if rows is None else context[rows]
            pieces = [
                self.denoiser_logits(
                    z[start : start + EXACT_BATCH],
                    t[start : start + EXACT_BATCH],
                    None if chunk is None else chunk[start : start + EXACT_BATCH],
                    guidance,
                ).exp()
                for start in range(0, z.shape[0], EXACT_BATCH)
            ]
            return torch.cat(pieces)

        return posterior

    # -- training -------------------------------------------------------------------

    def _loss(self, x: Tensor, context: Tensor | None, prepared: Any = None) -> Tensor:
        """The denoiser's objective on tokens ``x: (batch, L)``: mean per position."""
        reference = self._reference()
        dtype = torch.get_default_dtype() if reference is None else reference.dtype
        n, length = x.shape
        t = torch.rand(n, dtype=dtype, device=x.device) * self.last_training_time
        x0 = self.source.sample(tuple(x.shape), self.vocab_size, device=x.device)
        x_t = sample_mixture_path(x0, x, self.scheduler.kappa(t))
        keep = None
        if self.guided and context is not None:
            keep = (torch.rand(n, 1, dtype=dtype, device=x.device) >= self.context_dropout).to(
                dtype
            )
        logits = self._logits(x_t, t, self._network_context(context, keep))
        if self.loss_kind == "cross-entropy":
            return functional.cross_entropy(logits.reshape(n * length, -1), x.reshape(-1))
        return generalized_kl(logits, x, x_t, t, self.scheduler, self.source).mean() / length

    # -- likelihood bound and sampling ------------------------------------------------

    def _log_prob(self, x: Tensor, context: Tensor | None, options: BoundLogProbOptions) -> Tensor:
        dtype = self._float_dtype()
        if options.exact:
            shared = context is None or bool((context == context[:1]).all())
            if not shared and not isinstance(self.source, MaskedSource):
                raise ValueError(
                    "exact=True on a uniform path enumerates one context at a time; "
                    "pass a single context row"
                )
            return exact_log_prob(
                self._row_posterior(context, options.guidance),
                x,
                self.scheduler,
                self.source,
                self.vocab_size,
                dtype=dtype,
                shared=shared,
            )
        return self.bound(x, context, options).value

    def bound(
        self, x: Tensor, context: Tensor | None = None, options: BoundLogProbOptions | None = None
    ) -> BoundEstimate:
        """The likelihood bound of each sequence with its Monte Carlo standard error.

        Args:
            x: ``(batch, L)`` tokens, checked; ``context`` in the data's units.
            options: the bound's draws, guidance and random stream.

        Returns:
            A :class:`~pushforward.matching.discrete.bound.BoundEstimate`.
        """
        options = BoundLogProbOptions() if options is None else options
        x = self.check_input(x)
        context = self.encode_context(self.check_context(context, x.shape[0]))
        draws = self.draws if options.draws is None else options.draws
        return elbo(
            self._log_posterior(context, options.guidance),
            x,
            self.scheduler,
            self.source,
            self.vocab_size,
            draws=draws,
            generator=options.generator,
            dtype=self._float_dtype(),
        )

    def _rsample_and_log_prob(
        self,
        n: int,
        context: Tensor | None,
        options: CTMCSampleOptions,
        log_prob_options: BoundLogProbOptions | None,
    ) -> tuple[Tensor, Tensor | None]:
        device = self.invalid.device
        x0 = self.source.sample(
            (n, len(self.vocab)), self.vocab_size, device=device, generator=options.generator
        )
        log_posterior = self._log_posterior(context, options.guidance)
        tokens = ctmc_sample(
            lambda x_t, t: log_posterior(x_t, t).exp(),
            x0,
            self.scheduler,
            self.source,
            self.vocab_size,
            steps=self.steps if options.steps is None else options.steps,
            eta=self.eta if options.eta is None else options.eta,
            generator=options.generator,
            dtype=self._float_dtype(),
        )
        if log_prob_options is None:
            return tokens, None
        return tokens, self._log_prob(tokens, context, log_prob_options)


def _rows_for(context: Tensor, rows: int) -> Tensor:
    """The context of ``rows`` rows: itself, each row repeated (bound draws), or one row."""
    if context.shape[0] == rows:
        return context
    if context.shape[0] == 1:
        return context.expand(rows, -1)
    if rows % context.shape[0] == 0:
        return context.repeat_interleave(rows // context.shape[0], dim=0)
    raise ValueError(f"the denoiser got {rows} rows for a context of {context.shape[0]}")
