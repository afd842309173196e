"""One-step distillation of a (rectified) flow into a ``distilled`` model, by regression on
the pairs of the teacher's ODE (InstaFlow)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pushforward.fewstep.distilled import DistilledFlow
from pushforward.matching.model import FlowMatching
from pushforward.options import choice
from pushforward.paired import PairedBatch
from pushforward.recipes.pairs import INITIALIZATIONS, fit_pairs, reflow_pairs
from pushforward.registry import build
from pushforward.train.history import History

STUDENT_ARCHITECTURE: tuple[str, ...] = (
    "hidden",
    "residual",
    "time_embedding",
    "time_scale",
    "activation",
)
"""Options of ``distilled`` that shape its network; a student that starts from the
teacher's weights takes the teacher's values of these."""


def student_for(teacher: FlowMatching, *, init: str = "parent", **options: Any) -> DistilledFlow:
    """A ``distilled`` model shaped like ``teacher``'s network, starting from its weights.

    Args:
        teacher: a trained ``fm`` model (built by ``pushforward.build``).
        init: ``"parent"`` (the teacher's network weights) or ``"fresh"`` (drawn
            from torch's global generator).
        **options: ``distilled`` options: ``loss``, and with ``init="fresh"`` the
            network's (:data:`STUDENT_ARCHITECTURE`).

    Returns:
        The untrained :class:`DistilledFlow`, in the teacher's dtype and device.
    """
    init = choice("init", init, INITIALIZATIONS)
    config = getattr(teacher, "config", None) or {}
    if config.get("model") != "fm" or not isinstance(teacher, FlowMatching):
        raise ValueError(
            "distillation needs a teacher built by pushforward.build('fm', ...) "
            f"(its config names {config.get('model')!r})"
        )
    parent = config["options"]
    for key in options:
        if key not in ("loss", *STUDENT_ARCHITECTURE):
            raise ValueError(
                f"option {key!r} of the distilled model comes from the teacher; "
                f"options that may be set: loss, {', '.join(STUDENT_ARCHITECTURE)}"
            )
    if init == "parent":
        fixed = [key for key in options if key in STUDENT_ARCHITECTURE]
        if fixed and any(options[key] != parent.get(key) for key in fixed):
            raise ValueError(
                f"option {fixed[0]!r} changes the network, which starts from the teacher's "
                'weights; set init="fresh" to change it'
            )
        if teacher.parameterization != "velocity":
            raise ValueError(
                f"the teacher predicts {teacher.parameterization!r}, not the velocity, so its "
                'weights do not start a one-step map; set init="fresh"'
            )
    resolved: dict[str, Any] = {
        "features": parent["features"],
        "context": parent["context"],
        "shape": parent.get("shape"),
        "base": parent.get("base", "normal"),
        "presence_flag": teacher.guided,
        "source_rows": parent.get("source_rows", 0),
    }
    resolved.update({key: parent[key] for key in STUDENT_ARCHITECTURE if key in parent})
    resolved.update(options)
    student = build("distilled", **resolved)
    if not isinstance(student, DistilledFlow):
        raise TypeError("the 'distilled' builder did not return a DistilledFlow")
    # The student lives in the teacher's units: it keeps its preprocessing.
    student.set_preprocessing(copy.deepcopy(teacher.preprocessing))
    reference = next(iter(teacher.parameters()), None)
    if reference is not None:
        student.to(dtype=reference.dtype, device=reference.device)
    # The source (an empirical base's rows) is the teacher's, whatever the initial weights.
    student.base.load_state_dict(teacher.base.state_dict())
    if init == "parent":
        student.network.load_state_dict(teacher.network.state_dict())
    return student


@dataclass
class DistillationResult:
    """The outcome of :func:`distill`.

    Attributes:
        model: the trained one-step model.
        pairs: the teacher's pairs it was trained on.
        history: the training history.
    """

    model: DistilledFlow
    pairs: PairedBatch
    history: History


def distill(
    teacher: FlowMatching,
    pairs: int | PairedBatch,
    context: Tensor | None = None,
    *,
    solver: str = "dopri5",
    solver_steps: int | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-6,
    guidance: float = 1.0,
    init: str = "parent",
    options: dict[str, Any] | None = None,
    seed: int = 0,
    **fit_options: Any,
) -> DistillationResult:
    r"""Distils ``teacher`` into a one-step model by regression on its ODE's pairs.

    .. math:: \theta^\star = \arg\min_\theta \mathbb E_{x_0}\,
              d\big(x_0 + v_\theta(x_0, 0, c),\; \Phi_1(x_0)\big)

    with :math:`\Phi_1` the teacher's ODE map (:func:`reflow_pairs`), the student
    started from the teacher's velocity network (:func:`student_for`) and trained
    through :func:`pushforward.train.fit`.

    References: Liu et al. (2024), InstaFlow: One Step is Enough for High-Quality
    Diffusion-Based Text-to-Image Generation.

    Args:
        teacher: the trained (ideally reflowed) ``fm`` model.
        pairs: how many pairs to draw, or pairs already made by :func:`reflow_pairs`.
        context: ``(n, context)`` context rows of the pairs (conditional models).
        solver, solver_steps, atol, rtol: the teacher's ODE solve.
        guidance: classifier-free guidance scale of the teacher's field.
        init: ``"parent"`` (the teacher's weights) or ``"fresh"``.
        options: ``distilled`` options (``loss="pseudo-huber"``, ...).
        seed: seeds the source points, fresh weights and the training run.
        **fit_options: keywords of :func:`pushforward.train.fit`.

    Returns:
        A :class:`DistillationResult`.
    """
    if isinstance(pairs, PairedBatch):
        coupling = pairs
    else:
        reference = next(iter(teacher.parameters()), None)
        device = torch.device("cpu") if reference is None else reference.device
        coupling = reflow_pairs(
            teacher,
            pairs,
            context,
            solver=solver,
            steps=solver_steps,
            atol=atol,
            rtol=rtol,
            guidance=guidance,
            generator=torch.Generator(device=device).manual_seed(seed),
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = student_for(teacher, init=init, **(options or {}))
    history = fit_pairs(student, coupling, seed=seed, **fit_options)
    return DistillationResult(student, coupling, history)
