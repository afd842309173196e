r"""Training objectives that fit a flow :math:`q_\theta` to an unnormalized target :math:`\tilde p`.

Each objective's :meth:`Objective.loss` returns one scalar tensor whose *value* is the
objective's Monte-Carlo estimate (a KL up to :math:`\log Z`, say) and whose *gradient* is
the objective's estimator (reparameterised, path gradient, ...), so the training engine
logs the same number whichever estimator is chosen. The target enters tempered,
:math:`\tilde p^\beta`, for annealing (:math:`\beta = 1` is the target itself).

References:
    Rezende & Mohamed (2015), Variational Inference with Normalizing Flows (reverse KL);
    Roeder et al. (2017), Sticking the Landing; Vaitl et al. (2022), Gradients should stay
    on path; Vaitl et al. (2024), Fast and Unified Path Gradient Estimators for Normalizing
    Flows; Li & Turner (2016), Rényi Divergence Variational Inference; Midgley et al.
    (2023), Flow Annealed Importance Sampling Bootstrap.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

import torch
from torch import Tensor

from pushforward.model import Model
from pushforward.options import closest
from pushforward.sampling.fab import FAB
from pushforward.sampling.objective import (
    Objective,
    check_differentiable,
    estimate,
    model_name,
)
from pushforward.sampling.target import Target, checked_log_prob


class ReverseKL(Objective):
    r"""Reverse KL with the reparameterisation trick, up to :math:`\log Z`.

    .. math:: \mathcal{L} = \mathbb{E}_{z \sim p_Z}\big[\log q_\theta(T_\theta(z))
              - \beta \log \tilde p(T_\theta(z))\big] = \mathrm{KL}(q \,\|\, p_\beta) - \log Z_\beta

    Mode-seeking: it may miss modes of a multimodal target. Its gradient holds the score
    term :math:`\partial_\theta \log q_\theta`, whose expectation is zero but whose variance
    is not (the path gradient drops it).

    A model with ``has_path_weights`` (a stochastic normalizing flow) has no density of
    a point; its loss is :math:`-\mathbb{E}[\log w]` over its exact path log-weights, the
    KL between its forward and backward path measures up to :math:`\log Z_\beta`.

    References:
        Rezende & Mohamed (2015), Variational Inference with Normalizing Flows;
        Wu, Köhler & Noé (2020), Stochastic Normalizing Flows (path weights).
    """

    name = "reverse-kl"

    def check(self, model: Model, target: Target) -> None:
        if getattr(model, "has_path_weights", False):
            check_differentiable(target, self.name, model)
            return
        super().check(model, target)

    def loss(
        self, model: Model, target: Target, n: int, beta: float = 1.0, generator: Any = None
    ) -> Tensor:
        if getattr(model, "has_path_weights", False):
            _, log_w = cast(Any, model).rsample_and_log_weight(n, target, beta)
            return -log_w.mean()
        x, log_q = model.rsample_and_log_prob(n)
        return (log_q - beta * checked_log_prob(target, x)).mean()


class PathGradient(Objective):
    r"""Reverse KL with the path gradient (sticking the landing): the score term dropped.

    .. math:: \nabla_\theta \mathcal{L} \approx \mathbb{E}_z\Big[\big(\nabla_x \log q_\theta(x)
              - \beta \nabla_x \log \tilde p(x)\big)^\top \partial_\theta T_\theta(z)\Big],
              \quad x = T_\theta(z)

    with :math:`\nabla_x \log q` held constant. Unbiased, and its variance vanishes as q
    approaches the target. ``estimator="fast"`` (the default) carries
    :math:`\nabla_x \log q` through the layers while sampling (Vaitl et al. 2024; a
    model with ``has_score``); ``"drop-in"`` evaluates :math:`\log q_{\bar\theta}(x)` with
    the parameters detached, an extra pass through the inverse (Roeder et al. 2017). The
    loss value is the reparameterised reverse-KL estimate either way.

    References:
        Roeder et al. (2017), Sticking the Landing: Simple, Lower-Variance Gradient
        Estimators for Variational Inference; Vaitl et al. (2022), Gradients should stay on
        path; Vaitl et al. (2024), Fast and Unified Path Gradient Estimators for
        Normalizing Flows.
    """

    name = "path-gradient"
    ESTIMATORS = ("fast", "drop-in")

    def __init__(self, estimator: str = "fast") -> None:
        if estimator not in self.ESTIMATORS:
            raise ValueError(
                f"unknown path-gradient estimator {estimator!r}"
                f"{closest(estimator, list(self.ESTIMATORS))}; valid: {', '.join(self.ESTIMATORS)}"
            )
        self.estimator = estimator

    def options(self) -> dict[str, Any]:
        return {"estimator": self.estimator}

    def check(self, model: Model, target: Target) -> None:
        super().check(model, target)
        if self.estimator == "fast" and not getattr(model, "has_score", False):
            raise ValueError(
                f"the fast path gradient needs a flow that carries scores while sampling "
                f"(has_score); {model_name(model)} does not: use estimator 'drop-in' or "
                "objective reverse-kl"
            )

    def loss(
        self, model: Model, target: Target, n: int, beta: float = 1.0, generator: Any = None
    ) -> Tensor:
        if self.estimator == "fast":
            x, log_q, score = cast(Any, model).rsample_and_score(n)
            log_p = beta * checked_log_prob(target, x)
            value = (log_q.detach() - log_p).mean()
            surrogate = ((score * x).sum(dim=-1) - log_p).mean()
            return estimate(value, surrogate)
        x, log_q = model.rsample_and_log_prob(n)
        log_p = beta * checked_log_prob(target, x)
        held = log_q_held(model, x)
        return estimate((log_q - log_p).mean(), (held - log_p).mean())


def log_q_held(model: Model, x: Tensor) -> Tensor:
    """``model.log_prob(x)`` with the parameters held constant: gradients reach ``x`` only."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        return model.log_prob(x)
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


class ForwardKL(Objective):
    r"""Forward KL from exact target samples: maximum likelihood, mass-covering.

    .. math:: \mathcal{L} = \mathbb{E}_{x \sim p}\big[\log \tilde p(x) - \log q_\theta(x)\big]
              = \mathrm{KL}(p \,\|\, q) + \log Z

    With ``path_gradient=True`` the gradient is the forward path gradient of Vaitl et
    al. (2024): the target pushed to the base, :math:`\hat p_\theta = (T_\theta^{-1})_\# p`,
    is fitted to the base by :math:`\mathrm{KL}(\hat p_\theta \,\|\, p_Z)`, whose path
    gradient :math:`\mathbb{E}_p[(\nabla_z \log \hat p_\theta - \nabla_z \log p_Z)^\top
    \partial_\theta T^{-1}_\theta(x)]` needs the target's score, carried through the layers
    in the normalizing direction. The target is not tempered (its samples are of
    :math:`\beta = 1`).

    References:
        Papamakarios et al. (2021), Normalizing Flows for Probabilistic Modeling and
        Inference; Vaitl et al. (2024), Fast and Unified Path Gradient Estimators for
        Normalizing Flows.
    """

    name = "forward-kl"
    needs_samples = True
    needs_target_gradient = False

    def __init__(self, path_gradient: bool = False) -> None:
        self.path_gradient = bool(path_gradient)

    def options(self) -> dict[str, Any]:
        return {"path_gradient": self.path_gradient}

    def check(self, model: Model, target: Target) -> None:
        if not model.has_log_prob:
            raise ValueError(
                f"objective 'forward-kl' needs a density; {model_name(model)} has none"
            )
        if not target.has_sample:
            super().check(model, target)
        if self.path_gradient:
            check_differentiable(target, "forward-kl with path_gradient", model)
        if self.path_gradient and not callable(getattr(model, "normalize_and_score", None)):
            raise ValueError(
                f"the forward path gradient needs a flow that carries scores to its base "
                f"(normalize_and_score); {model_name(model)} does not"
            )

    def loss(
        self, model: Model, target: Target, n: int, beta: float = 1.0, generator: Any = None
    ) -> Tensor:
        reference = model._reference()
        assert reference is not None
        x = target.sample(n, generator).to(reference)
        if not self.path_gradient:
            with torch.no_grad():
                log_p = checked_log_prob(target, x)
            return (log_p - model.log_prob(x)).mean()
        score_p, log_p = target_score(target, x)
        z, log_q, direction = cast(Any, model).normalize_and_score(x, score_p)
        surrogate = (direction * z).sum(dim=-1).mean()
        return estimate((log_p - log_q).mean(), surrogate)


def target_score(target: Target, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(grad log p~(x), log p~(x))`` by autograd, both detached.

    Raises:
        ValueError: the target's log-density is not differentiable in ``x``.
    """
    with torch.enable_grad():
        point = x.detach().requires_grad_(True)
        log_p = checked_log_prob(target, point)
        if not log_p.requires_grad:
            raise ValueError(
                f"target {target.name!r} is not differentiable: its log_prob must be built "
                "from torch operations on its input for a path gradient"
            )
        (score,) = torch.autograd.grad(log_p.sum(), point)
    return score, log_p.detach()


class AlphaDivergence(Objective):
    r"""An :math:`\alpha`-divergence from samples of q, with the reparameterisation trick.

    .. math:: \mathcal{L}_\alpha = \frac{1}{\alpha(\alpha - 1)} \log \frac1n
              \sum_i w_i^\alpha, \quad \log w_i = \beta \log \tilde p(x_i) - \log q(x_i)

    the log of Amari's :math:`\alpha`-divergence's moment :math:`\mathbb{E}_q[w^\alpha]`
    (Rényi's divergence of order :math:`\alpha` up to a factor, Li & Turner 2016). For
    :math:`\alpha > 1` it is mass-covering (:math:`\alpha = 2`: the :math:`\chi^2`
    divergence FAB minimises, Midgley et al. 2023); for :math:`\alpha < 1` mode-seeking.
    The limits :math:`\alpha \to 0, 1` are the two KLs (use forward-kl / reverse-kl).

    References:
        Li & Turner (2016), Rényi Divergence Variational Inference; Midgley et al. (2023),
        Flow Annealed Importance Sampling Bootstrap.
    """

    name = "alpha"

    def __init__(self, alpha: float = 2.0) -> None:
        alpha = float(alpha)
        if not torch.isfinite(torch.tensor(alpha)) or alpha in (0.0, 1.0):
            raise ValueError(
                f"alpha must be a finite number other than 0 and 1 (the KL limits: use "
                f"forward-kl or reverse-kl), got {alpha}"
            )
        self.alpha = alpha

    def options(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def loss(
        self, model: Model, target: Target, n: int, beta: float = 1.0, generator: Any = None
    ) -> Tensor:
        x, log_q = model.rsample_and_log_prob(n)
        log_w = beta * checked_log_prob(target, x) - log_q
        moment = torch.logsumexp(self.alpha * log_w, dim=0) - torch.log(log_w.new_tensor(n))
        return moment / (self.alpha * (self.alpha - 1.0))


OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (ReverseKL, PathGradient, ForwardKL, AlphaDivergence, FAB)
}


def make_objective(name: str | Objective, **options: Any) -> Objective:
    """The objective called ``name`` with its options; unknown names list the valid ones."""
    if isinstance(name, Objective):
        return name
    if name not in OBJECTIVES:
        names = list(OBJECTIVES)
        raise ValueError(
            f"unknown objective {name!r}{closest(str(name), names)}; valid: {', '.join(names)}"
        )
    chosen = OBJECTIVES[name]
    valid = [key for key in inspect.signature(chosen).parameters]
    for key in options:
        if key not in valid:
            listed = ", ".join(valid) if valid else "none"
            raise ValueError(
                f"objective {name!r} has no option {key!r}{closest(key, valid)}; valid: {listed}"
            )
    return chosen(**options)
