r"""FAB: the flow fitted by the :math:`\alpha = 2` divergence, its samples found by AIS.

FAB minimises :math:`D_2(p \,\|\, q_\theta) \propto \log \int p^2 / q_\theta`, mass-covering.
Its gradient is :math:`-\mathbb{E}_g[\nabla_\theta \log q_\theta]` up to a positive factor,
with :math:`g \propto p^2 / q_\theta`, the density that minimises the variance of the
importance weights of this divergence. FAB estimates that expectation with annealed
importance sampling from :math:`q_\theta` towards :math:`g`:

.. math:: \mathcal{L}(\theta) = -\sum_{i=1}^n \bar w_i \log q_\theta(x_i), \qquad
          \bar w_i = \operatorname{softmax}_i(\log w_i^{\mathrm{AIS}}),

with the points and weights held constant (Midgley et al. 2023, Algorithm 1). With the
prioritised replay buffer (Algorithm 2) each AIS batch is added to a buffer, and
``buffer_updates`` gradient steps follow, each on ``n`` points drawn from the buffer in
proportion to their weights:

.. math:: \mathcal{L}(\theta) = -\frac1n \sum_{i=1}^n \min\big(c,\ e^{-(\log q_\theta(x_i)
          - \log q_{\theta_i}(x_i))}\big) \log q_\theta(x_i),

the factor correcting each weight for the flow's moves since :math:`x_i` was weighed, and
then stored in the buffer (:mod:`pushforward.sampling.replay_buffer`).

References:
    Midgley, Stimper, Simm, Schölkopf & Hernández-Lobato (2023), Flow Annealed Importance
    Sampling Bootstrap, ICLR (the reference code: lollcat/fab-torch, lollcat/fab-jax);
    Neal (2001), Annealed Importance Sampling.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pushforward.model import Model
from pushforward.options import positive_float, positive_int
from pushforward.sampling.ais import AISResult, AnnealedImportanceSampler
from pushforward.sampling.objective import Objective, check_differentiable, model_name
from pushforward.sampling.replay_buffer import PrioritisedReplayBuffer
from pushforward.sampling.target import Target, checked_log_prob

ALPHA = 2.0
"""The divergence FAB minimises, and the exponent of its AIS target :math:`p^2 / q`."""


class TemperedLogDensity:
    """:math:`\\beta \\log \\tilde p(x)`, the target as the engine tempers it, values checked."""

    def __init__(self, target: Target, beta: float) -> None:
        self.target = target
        self.beta = float(beta)

    def __call__(self, x: Tensor) -> Tensor:
        values = checked_log_prob(self.target, x)
        return values if self.beta == 1.0 else self.beta * values


class FAB(Objective):
    r"""Flow Annealed Importance Sampling Bootstrap, with or without its replay buffer.

    Each :meth:`loss` without the buffer runs AIS from ``n`` samples of the flow towards
    :math:`\tilde p^2 / q_\theta` and returns :math:`-\sum_i \bar w_i \log q_\theta(x_i)`;
    with the buffer, it runs AIS once every ``buffer_updates`` calls (filling the buffer to
    ``buffer_min`` at the first) and returns the buffer loss of the module docstring.

    **The loss value** is, either way, an estimate of the cross-entropy
    :math:`-\mathbb{E}_{g}[\log q_\theta]` of the flow on :math:`g \propto \tilde p^2 / q`
    (self-normalised AIS weights, or buffer samples with their weight corrections); it
    falls as the flow covers the target, but is not a divergence. The :math:`\alpha = 2`
    divergence itself is the ``alpha`` objective's value; ``last_result`` holds the last
    AIS run (its ESS and :math:`\log \hat Z_g`).

    Carried state (checkpointed, :meth:`state`): the tuned AIS step sizes, the buffer's
    contents, the buffer batches still to be used, and :attr:`target_evaluations`.

    References:
        Midgley et al. (2023), Flow Annealed Importance Sampling Bootstrap, ICLR.

    Args:
        n_intermediate: AIS's intermediate densities :math:`K`.
        transition: AIS's kernel, ``"hmc"`` (needs a differentiable target) or ``"metropolis"``.
        leapfrog_steps: HMC's leapfrog steps (FAB: 5).
        transition_steps: kernel steps per intermediate density (FAB: 1).
        step_size: the kernels' initial step size (FAB: 1.0).
        adaptation: step-size tuning, ``"fab"`` (FAB's multiplicative rule),
            ``"dual-averaging"`` or ``"fixed"``.
        target_acceptance: the acceptance rate tuning aims at (FAB: 0.65).
        spacing: ``"linear"`` or ``"geometric"`` inverse temperatures.
        buffer: use the prioritised replay buffer.
        buffer_capacity: the most points the buffer holds (FAB's GMM: 12800).
        buffer_min: points needed before the buffer is sampled (FAB's GMM: 1280); at
            least ``batch_size * buffer_updates``, better ten times that (FAB's heuristic):
            the draws are without replacement, and a draw of most of the buffer ignores
            the weights.
        buffer_updates: gradient steps per AIS batch (FAB's GMM: 4).
        weight_clip: the largest weight correction :math:`c` in the buffer loss (fab-jax:
            10), or ``None`` for none.

    Example:
        >>> import torch, pushforward
        >>> from pushforward.sampling import CallableTarget
        >>> flow = pushforward.build("realnvp", features=2, transforms=2, hidden=[8])
        >>> target = CallableTarget(lambda x: -0.5 * (x**2).sum(-1), features=2)
        >>> fab = FAB(n_intermediate=1, leapfrog_steps=2)
        >>> loss = fab.loss(flow, target, 16)
        >>> loss.shape, fab.target_evaluations  # 16 starts + 16 points * 2 leapfrog steps
        (torch.Size([]), 48)
    """

    name = "fab"
    TRANSITIONS = AnnealedImportanceSampler.TRANSITIONS

    def __init__(
        self,
        n_intermediate: int = 4,
        transition: str = "hmc",
        leapfrog_steps: int = 5,
        transition_steps: int = 1,
        step_size: float = 1.0,
        adaptation: str = "fab",
        target_acceptance: float = 0.65,
        spacing: str = "linear",
        buffer: bool = False,
        buffer_capacity: int = 12_800,
        buffer_min: int = 1_280,
        buffer_updates: int = 4,
        weight_clip: float | None = 10.0,
    ) -> None:
        self.sampler = AnnealedImportanceSampler(
            n_intermediate,
            transition,
            ALPHA,
            spacing,
            leapfrog_steps,
            transition_steps,
            step_size,
            adaptation,
            target_acceptance,
        )
        if not isinstance(buffer, bool):
            raise ValueError(f"option 'buffer' must be True or False, got {buffer!r}")
        positive_int("buffer_updates", buffer_updates)
        if weight_clip is not None:
            positive_float("weight_clip", weight_clip)
        self._options: dict[str, Any] = {
            "n_intermediate": n_intermediate,
            "transition": transition,
            "leapfrog_steps": leapfrog_steps,
            "transition_steps": transition_steps,
            "step_size": float(step_size),
            "adaptation": adaptation,
            "target_acceptance": float(target_acceptance),
            "spacing": spacing,
            "buffer": buffer,
            "buffer_capacity": buffer_capacity,
            "buffer_min": buffer_min,
            "buffer_updates": buffer_updates,
            "weight_clip": None if weight_clip is None else float(weight_clip),
        }
        self.buffer = PrioritisedReplayBuffer(buffer_capacity, buffer_min) if buffer else None
        self.buffer_updates = buffer_updates
        self.weight_clip = weight_clip
        self.pending: list[Tensor] = []
        self.target_evaluations = 0
        self.last_result: AISResult | None = None

    def options(self) -> dict[str, Any]:
        return dict(self._options)

    def check(self, model: Model, target: Target) -> None:
        if not (model.has_log_prob and model.has_sample):
            raise ValueError(
                f"objective 'fab' needs a model with samples and their log-density "
                f"(sample_and_log_prob, log_prob); {model_name(model)} has none"
            )
        if self._options["transition"] == "hmc":
            check_differentiable(
                target,
                "fab with HMC transitions",
                model,
                'or use Metropolis transitions: --set objective.transition="metropolis"',
            )

    def loss(
        self, model: Model, target: Target, n: int, beta: float = 1.0, generator: Any = None
    ) -> Tensor:
        if self.buffer is None:
            return self._ais_loss(model, self._ais(model, target, n, beta))
        return self._buffer_loss(model, target, self.buffer, n, beta)

    def _ais(self, model: Model, target: Target, n: int, beta: float) -> AISResult:
        with torch.no_grad():
            x, _ = model.sample_and_log_prob(n)
        result = self.sampler.run(x, model.log_prob, TemperedLogDensity(target, beta))
        self.target_evaluations += result.target_evaluations
        self.last_result = result
        return result

    def _ais_loss(self, model: Model, result: AISResult) -> Tensor:
        kept = result.kept
        if not bool(kept.any()):
            return result.x.new_full((), math.nan)  # the engine skips the step
        log_q = model.log_prob(result.x[kept])
        weights = torch.softmax(result.log_w[kept], dim=0).to(log_q)
        return -(weights * log_q).sum()

    def _buffer_loss(
        self, model: Model, target: Target, buffer: PrioritisedReplayBuffer, n: int, beta: float
    ) -> Tensor:
        reference = model._reference()
        if reference is not None:
            buffer.follow(reference)
        if not self.pending:
            self._refill(model, target, buffer, n, beta)
        indices = self.pending.pop(0)
        assert buffer.x is not None  # filled by _refill
        x = buffer.x[indices]
        log_q = model.log_prob(x)
        correction = buffer.update(indices, log_q.detach(), ALPHA)
        usable = torch.isfinite(correction)
        if not bool(usable.all()):
            # Evaluate again without the killed points: a NaN row would poison the gradient.
            log_q, correction = model.log_prob(x[usable]), correction[usable]
        factor = correction.exp()
        if self.weight_clip is not None:
            factor = factor.clamp(max=self.weight_clip)
        return -(factor.to(log_q) * log_q).sum() / indices.numel()

    def _refill(
        self, model: Model, target: Target, buffer: PrioritisedReplayBuffer, n: int, beta: float
    ) -> None:
        """One AIS batch into the buffer (more at the start, up to ``buffer_min``); then the
        next ``buffer_updates`` batches drawn from it without replacement."""
        needed = n * self.buffer_updates
        if needed > buffer.min_fill:
            raise ValueError(
                f"FAB's buffer draws batch_size * buffer_updates = {n} * {self.buffer_updates} "
                f"= {needed} distinct points per AIS batch, more than buffer_min="
                f"{buffer.min_fill}: raise buffer_min (and buffer_capacity) or lower them"
            )
        while True:
            before = buffer.size
            result = self._ais(model, target, n, beta)
            buffer.add(result.x, result.log_w, result.log_q)
            if buffer.can_sample:
                break
            if buffer.size == before:
                raise RuntimeError(
                    "no AIS sample had a finite weight while filling FAB's buffer: check that "
                    "the target's log-density is finite where the flow puts its samples"
                )
        drawn = buffer.sample(needed).indices
        self.pending = list(drawn.reshape(self.buffer_updates, n).unbind(0))

    def state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        json_part: dict[str, Any] = {
            "target_evaluations": self.target_evaluations,
            "ais": self.sampler.state(),
            "pending": len(self.pending),
        }
        tensors: dict[str, Tensor] = {}
        if self.buffer is not None:
            buffer_json, buffer_tensors = self.buffer.state()
            json_part["buffer"] = buffer_json
            tensors.update({f"buffer_{key}": value for key, value in buffer_tensors.items()})
        if self.pending:
            tensors["pending"] = torch.stack(self.pending).contiguous()
        return json_part, tensors

    def restore(self, json_part: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        if not json_part:
            return
        self.target_evaluations = int(json_part["target_evaluations"])
        self.sampler.restore(json_part["ais"])
        if self.buffer is not None:
            if "buffer" not in json_part:
                raise ValueError("the checkpoint was written by FAB without its buffer")
            prefix = "buffer_"
            self.buffer.restore(
                json_part["buffer"],
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
            )
        pending = tensors.get("pending")
        self.pending = [] if pending is None else list(pending.clone().unbind(0))
        if len(self.pending) != int(json_part["pending"]):
            raise ValueError("the checkpoint's FAB state is inconsistent (pending batches)")
