r"""Flow matching on the probability simplex, through the sphere's positive orthant.

Each position's one-hot token is a vertex :math:`e_k` of the simplex; the
square-root map sends the simplex onto the positive orthant of the unit sphere, where
the Fisher-Rao geodesics are great-circle arcs (:mod:`pushforward.matching.simplex.path`).
A source point :math:`s_0` moves along the arc to :math:`e_{x_1}`, and the model learns
the marginal velocity field on the sphere, either

* ``objective="denoiser"``: a posterior :math:`p_{1|t}(x_1^i \mid s_t)` per position,
  trained by cross-entropy, whose velocity
  :func:`~pushforward.matching.simplex.path.posterior_velocity` is exact for the
  factorised path; or
* ``objective="velocity"``: the velocity itself, projected onto the tangent space and
  regressed on the geodesic's :math:`\dot s_t` (Riemannian flow matching with the
  sphere's metric, a constant multiple of Fisher-Rao's).

Sampling takes Euler steps along the exponential map, :math:`s \leftarrow
\exp_s(h\, u_t(s))`, projected back onto the orthant against overshoot, and rounds
each position to its largest coordinate at the end. The model has no likelihood
(``has_log_prob`` is False): a density on the sphere is not a probability of tokens.

References: Davis et al. (2024), Fisher Flow Matching for Generative Modeling over
Discrete Data; Cheng et al. (2024), Categorical Flow Matching on Statistical
Manifolds; Jo & Hwang (2025), Continuous Diffusion Model for Language Modeling; Chen
& Lipman (2024), Flow Matching on General Geometries; Ho & Salimans (2022),
Classifier-Free Diffusion Guidance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from pushforward.geometry.sphere import sphere_tangent
from pushforward.matching.simplex.options import SphereEulerOptions
from pushforward.matching.simplex.path import (
    SIMPLEX_SOURCES,
    posterior_velocity,
    sample_simplex_path,
    sample_source,
    sphere_euler,
)
from pushforward.nn.velocity import flagged_context
from pushforward.options import choice, positive_int, unit_interval
from pushforward.token_model import TokenModel

SIMPLEX_OBJECTIVES: tuple[str, ...] = ("denoiser", "velocity")
"""What the network learns: the token posterior (cross-entropy) or the velocity (regression)."""

LAST_TRAINING_TIME = 1.0 - 1e-4
"""Training times stop short of 1, where every path has reached its vertex."""


class SimplexFlowMatching(TokenModel):
    """Flow matching of tokens on the sphere's positive orthant (Davis et al. 2024).

    Args:
        network: maps ``(s_t: (batch, L, V) float, t: (batch,), context or None)`` to
            ``(batch, L, V)``: logits of the posterior (``denoiser``) or an ambient
            velocity (``velocity``).
        vocab: the vocabulary size of each position.
        context_features: context size (0 for unconditional).
        objective: ``denoiser`` or ``velocity``.
        source: ``orthant`` or ``simplex`` (:data:`SIMPLEX_SOURCES`).
        context_dropout: probability of dropping the context in training, for
            classifier-free guidance (the network then takes a presence flag).
        steps: the sampler's default Euler steps.
    """

    network: nn.Module
    valid: Tensor
    has_log_prob = False
    has_rsample = False
    sample_options = SphereEulerOptions

    def __init__(
        self,
        network: nn.Module,
        vocab: Sequence[int],
        context_features: int = 0,
        *,
        objective: str = "denoiser",
        source: str = "orthant",
        context_dropout: float = 0.0,
        steps: int = 100,
    ) -> None:
        super().__init__(vocab, context_features)
        self.network = network
        self.objective = choice("objective", objective, SIMPLEX_OBJECTIVES)
        self.source = choice("source", source, SIMPLEX_SOURCES)
        self.context_dropout = unit_interval("context_dropout", context_dropout)
        self.guided = self.context_dropout > 0 and self.context_features > 0
        self.steps = positive_int("steps", steps)
        limits = torch.tensor(self.vocab)
        # A table's shorter columns: coordinates a position cannot take stay at zero.
        valid = torch.arange(self.vocab_size)[None, :] < limits[:, None]
        self.register_buffer("valid", valid, persistent=False)
        self.has_invalid = not bool(valid.all())

    # -- the network ------------------------------------------------------------------

    def _network_context(self, context: Tensor | None, keep: Tensor | None) -> Tensor | None:
        """The context as the network sees it: with a presence flag when guidance is on."""
        return flagged_context(context, keep, self.guided)

    def _output(self, s_t: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        """Masked logits (``denoiser``) or the tangent velocity (``velocity``)."""
        out = self.network(s_t, t, context)
        if self.objective == "denoiser":
            if self.has_invalid:
                out = out.masked_fill(~self.valid, torch.finfo(out.dtype).min)
            return out
        if self.has_invalid:
            out = out * self.valid.to(out.dtype)
        return sphere_tangent(s_t, out)

    def velocity(
        self, s_t: Tensor, t: Tensor, context: Tensor | None = None, guidance: float = 1.0
    ) -> Tensor:
        r"""The learnt velocity :math:`u_t(s_t)`, ``(batch, L, V)``, tangent at ``s_t``.

        With a guidance scale :math:`w \ne 1` (a model trained with context dropout),
        a denoiser's log-posterior is :math:`\log p_\varnothing + w(\log p_c - \log
        p_\varnothing)`, normalised again; a velocity model's velocity is
        :math:`u_\varnothing + w (u_c - u_\varnothing)`.

        Args:
            s_t: ``(batch, L, V)`` points of the orthant.
            t: ``(batch,)`` times in ``[0, 1)``.
            context: ``(batch, context)`` in the model's units, or ``None``.
            guidance: classifier-free guidance scale.
        """
        conditional = self._output(s_t, t, self._network_context(context, None))
        if guidance != 1.0 and context is not None:
            if not self.guided:
                raise ValueError(
                    "guidance needs a model trained with context_dropout > 0 (classifier-free)"
                )
            absent = torch.zeros(context.shape[0], 1, dtype=context.dtype, device=context.device)
            unconditional = self._output(s_t, t, self._network_context(context, absent))
            if self.objective == "denoiser":
                conditional = functional.log_softmax(conditional, dim=-1)
                unconditional = functional.log_softmax(unconditional, dim=-1)
            conditional = unconditional + guidance * (conditional - unconditional)
        if self.objective == "velocity":
            return conditional
        return posterior_velocity(s_t, functional.softmax(conditional, dim=-1), t)

    # -- training -----------------------------------------------------------------------

    def _loss(self, x: Tensor, context: Tensor | None, prepared: Any = None) -> Tensor:
        """Cross-entropy of the posterior, or the velocity's squared error, per position."""
        dtype = self._float_dtype()
        n, length = x.shape
        t = torch.rand(n, dtype=dtype, device=x.device) * LAST_TRAINING_TIME
        s0 = sample_source(self.source, (n, length), self.valid, dtype=dtype)
        path = sample_simplex_path(s0, x, t)
        keep = None
        if self.guided and context is not None:
            keep = (torch.rand(n, 1, dtype=dtype, device=x.device) >= self.context_dropout).to(
                dtype
            )
        out = self._output(path.s_t, t, self._network_context(context, keep))
        if self.objective == "denoiser":
            return functional.cross_entropy(out.reshape(n * length, -1), x.reshape(-1))
        return ((out - path.ds_t) ** 2).sum(dim=-1).mean()

    # -- sampling ---------------------------------------------------------------------------

    def _rsample_and_log_prob(
        self,
        n: int,
        context: Tensor | None,
        options: SphereEulerOptions,
        log_prob_options: Any,
    ) -> tuple[Tensor, Tensor | None]:
        dtype = self._float_dtype()
        steps = self.steps if options.steps is None else options.steps
        s = sample_source(
            self.source, (n, len(self.vocab)), self.valid, dtype=dtype, generator=options.generator
        )
        return sphere_euler(
            lambda s_t, t: self.velocity(s_t, t, context, options.guidance), s, self.valid, steps
        ), None
