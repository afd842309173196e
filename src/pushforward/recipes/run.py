"""Reflow and distill runs: a new run directory trained on a flow-matching run's pairs.

:func:`reflow_run` and :func:`distill_run` are what ``pushforward reflow`` and
``pushforward distill`` do, which only parse their flags into these arguments. A run
reads a flow-matching run (the parent), draws source points and solves its ODE for
their ends (the coupling the model induces), and trains a new model on those pairs
through the training engine: ``reflow`` an ``fm`` model (the next rectified flow,
Liu et al. 2023), ``distill`` a one-step ``distilled`` model. The new run directory is
a normal one: the parent's data and standardisation records (so the model is in the
data's original units), ``metrics.jsonl``, checkpoints, the model, a ``lineage``
entry in ``config.json`` saying where the pairs came from, and ``pairs.safetensors``:
the pairs trained on, so that a resumed run continues without solving the ODE again.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pushforward.data import load_array
from pushforward.matching import FlowMatching
from pushforward.matching.model import SOLVERS
from pushforward.model import Model
from pushforward.ode import FIXED_STEP_METHODS
from pushforward.options import choice, closest
from pushforward.paired import PairedBatch
from pushforward.recipes.distill import student_for
from pushforward.recipes.pair_files import (
    METHODS,
    PAIRS_FILE,
    check_out,
    check_resumable,
    pairs_bytes,
    previous_run,
    read_pairs,
)
from pushforward.recipes.pairs import INITIALIZATIONS, fit_pairs, reflow_pairs
from pushforward.recipes.reflow import rectified_model
from pushforward.serialization import atomic_write_bytes, save
from pushforward.train.callbacks import Callback
from pushforward.train.config import DEFAULT_EVAL_EVERY, TrainingConfig, validation_split
from pushforward.train.run import RunResult
from pushforward.train.run_directory import (
    CHECKPOINTS,
    METRICS_FILE,
    MetricsLog,
    open_run,
    run_header,
    write_config,
)

PAIRS_DEFAULT = 20_000
"""Pairs drawn by default: 2000 steps of 512 see each about 50 times."""

FIXED_SOLVER_STEPS = 100
"""Steps of a fixed-step pair solver when ``solver_steps`` is not given."""

PAIR_TOLERANCE = 1e-6
"""Default ``atol`` and ``rtol`` of an adaptive pair solver (tighter than sampling's)."""

PAIR_SOLVER = "dopri5"
"""The pair solver when none is given: adaptive, so the pairs are the ODE's ends."""

REFLOW_TRAIN: dict[str, Any] = {"lr": 1e-3}
"""Training defaults of reflow and distill runs over ``pushforward train``'s: a
model that starts from its parent's weights is fine-tuned, at a lower peak rate
than ``fm``'s 5e-3 from scratch."""

IGNORED_TRAIN = ("n",)
"""Training options that mean nothing here (the pairs are drawn, not read)."""


def pair_training(seed: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The training options of a reflow or distill run: ``pushforward train``'s
    options for a fixed budget, with :data:`REFLOW_TRAIN` and the parent's ``seed``,
    then ``overrides``.

    Raises:
        ValueError: an override that is no training option (with a did-you-mean), or
            one that does not apply to pairs (``n``).
    """
    # A fixed budget: the pairs' regression has no convergence default (yet).
    fixed = TrainingConfig(steps=TrainingConfig.default_steps).as_dict()
    train = {
        k: v
        for k, v in fixed.items()
        if k not in ("max_steps", "default_steps") and k not in IGNORED_TRAIN
    }
    train["eval_every"] = train["eval_every"] or DEFAULT_EVAL_EVERY
    train.update(REFLOW_TRAIN)
    train["seed"] = seed
    for key, value in (overrides or {}).items():
        if key in IGNORED_TRAIN:
            raise ValueError(f"option {key!r} does not apply: the pairs are drawn with --pairs")
        if key not in train:
            raise ValueError(
                f"unknown training option {key!r}{closest(key, list(train))}; "
                f"valid: {', '.join(train)}"
            )
        train[key] = value
    return train


def pair_solver(
    solver: str | None = None,
    steps: int | None = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> dict[str, Any]:
    """The checked ODE solver of the pairs, as recorded in the lineage:
    ``{"method", "steps"}`` for a fixed-step solver (``steps`` default
    :data:`FIXED_SOLVER_STEPS`), ``{"method", "atol", "rtol"}`` for an adaptive one
    (tolerances default :data:`PAIR_TOLERANCE`)."""
    method = choice("solver", solver or PAIR_SOLVER, SOLVERS)
    if method in FIXED_STEP_METHODS:
        if atol is not None or rtol is not None:
            raise ValueError(f"--atol/--rtol apply to adaptive solvers, not {method!r}")
        steps = FIXED_SOLVER_STEPS if steps is None else steps
        if steps < 1:
            raise ValueError(f"--solver-steps must be positive, got {steps}")
        return {"method": method, "steps": int(steps)}
    if steps is not None:
        raise ValueError(f"--solver-steps applies to fixed-step solvers, not {method!r}")
    tolerances = {}
    for key, value in (("atol", atol), ("rtol", rtol)):
        value = PAIR_TOLERANCE if value is None else float(value)
        if not value > 0:
            raise ValueError(f"--{key} must be positive, got {value}")
        tolerances[key] = value
    return {"method": method, **tolerances}


def reflow_run(
    out: str | os.PathLike[str], parent: str | os.PathLike[str], **options: Any
) -> RunResult:
    """Trains the next rectified flow of the ``fm`` run ``parent`` into the run
    directory ``out`` (``pushforward reflow``), or resumes it there.

    The new ``fm`` model regresses on pairs ``(x0, x1)`` whose ends the parent's
    ODE gives, starting from the parent's weights (``init="parent"``) or afresh
    (Liu et al. 2023, Flow Straight and Fast: Learning to Generate and Transfer
    Data with Rectified Flow). ``options`` are those of :func:`pair_run`.

    Example:
        >>> import tempfile, pushforward
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as root:
        ...     fm = pushforward.train_run(
        ...         Path(root) / "fm", "builtin:moons", "fm", train={"steps": 10, "n": 300},
        ...         options={"hidden": [16], "coupling": "independent"},
        ...     )
        ...     result = reflow_run(
        ...         Path(root) / "fm-2", fm.directory, pairs=200,
        ...         train={"steps": 5, "batch_size": 64},
        ...     )
        >>> result.config["lineage"]["k"], result.history.steps_done
        (2, 5)
    """
    return pair_run("reflow", out, parent, **options)


def distill_run(
    out: str | os.PathLike[str], parent: str | os.PathLike[str], **options: Any
) -> RunResult:
    """Distils the ``fm`` run ``parent`` into a one-step ``distilled`` model in the run
    directory ``out`` (``pushforward distill``), or resumes it there.

    The student maps a source point to its ODE end in one network evaluation,
    :math:`x_1 = x_0 + v(x_0, 0)`, regressed on the parent's pairs (Liu et al. 2024,
    InstaFlow: One Step is Enough for High-Quality Diffusion-Based Text-to-Image
    Generation). ``options`` are those of :func:`pair_run`.
    """
    return pair_run("distill", out, parent, **options)


def pair_run(
    method: str,
    out: str | os.PathLike[str],
    parent: str | os.PathLike[str],
    *,
    pairs: int | None = None,
    solver: str | None = None,
    solver_steps: int | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    guidance: float | None = None,
    context: str | os.PathLike[str] | None = None,
    options: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    init: str = "parent",
    resume: bool = False,
    quiet: bool = True,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """A reflow or distill run: draw the parent's pairs, train the new model on them, save.

    Args:
        method: ``"reflow"`` or ``"distill"``.
        out: the new run directory (it must not exist, unless ``resume``).
        parent: a run directory holding an ``fm`` model.
        pairs: pairs to draw (default :data:`PAIRS_DEFAULT`).
        solver, solver_steps, atol, rtol: the pairs' ODE solver (:func:`pair_solver`).
        guidance: classifier-free guidance scale of the parent's ODE (distill only).
        context: for a conditional parent, a context file whose rows the pairs are
            drawn with (default: the parent's own context file).
        options: options of the new model (see :func:`~pushforward.recipes.rectified_model`
            and :func:`~pushforward.recipes.student_for`).
        train: training options over :func:`pair_training`'s defaults.
        init: ``"parent"`` (start from the parent's weights) or ``"fresh"``.
        resume: continue the run in ``out`` from its last checkpoint and saved pairs.
        quiet: no progress bar.
        callbacks: extra training callbacks.

    Returns:
        A :class:`~pushforward.train.run.RunResult` whose ``config`` is the run's
        ``config.json`` (with its ``lineage``).
    """
    method = choice("method", method, METHODS)
    out, parent = Path(out), Path(parent)
    previous = previous_run(out, method) if resume else None
    if previous is None:
        check_out(out)
    config, teacher = _parent(parent)
    if not teacher.context_features and context is not None:
        raise ValueError("the parent run is unconditional; do not pass --context")
    init = choice("init", init, INITIALIZATIONS)
    train = pair_training(int(config.get("train", {}).get("seed", 0)), train)
    solved_by = pair_solver(solver, solver_steps, atol, rtol)
    n = PAIRS_DEFAULT if pairs is None else int(pairs)
    batch = int(train["batch_size"])
    if batch < 1:
        raise ValueError(f"--batch-size must be positive, got {batch}")
    if n < 1:
        raise ValueError(f"--pairs must be positive, got {n}")
    held = round(float(train["validation"] or 0) * n)
    if n - held < batch:
        reason = f" ({held} held out for validation)" if held else ""
        raise ValueError(
            f"--pairs {n} leaves {n - held} training pairs{reason}, fewer than the batch "
            f"size {batch}; draw more pairs or pass a smaller --batch-size"
        )
    seed = int(train["seed"])
    # Build the new model before the expensive solve, so bad options fail at once.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if method == "reflow":
            student: Model = rectified_model(teacher, init=init, **(options or {}))
        else:
            student = student_for(teacher, init=init, **(options or {}))

    lineage = _lineage(method, parent, config, n, solved_by, init, context, guidance, teacher)
    record = {
        **run_header(student.config["model"], student.config["options"]),
        "data": config["data"],
        "standardization": config["standardization"],
        "train": train,
        "lineage": lineage,
    }
    if "source" in config:
        # A flow between two data sets: the new model keeps the parent's source.
        record["source"] = config["source"]

    pair_bytes = None
    if previous is not None:
        check_resumable(out, previous, record, seed)
        drawn = read_pairs(out, previous["lineage"], student)
        pair_seconds = float(previous["lineage"].get("pair_seconds", 0.0))
        lineage["pairs_sha256"] = previous["lineage"]["pairs_sha256"]
    else:
        generator = torch.Generator().manual_seed(seed)
        rows = _pair_context(context, config, teacher, n, generator)
        start = time.perf_counter()
        drawn = reflow_pairs(
            teacher,
            n,
            rows,
            solver=solved_by["method"],
            steps=solved_by.get("steps"),
            atol=solved_by.get("atol", PAIR_TOLERANCE),
            rtol=solved_by.get("rtol", PAIR_TOLERANCE),
            guidance=1.0 if guidance is None else float(guidance),
            generator=generator,
        )
        pair_seconds = time.perf_counter() - start
        pair_bytes = pairs_bytes(drawn)
        lineage["pairs_sha256"] = hashlib.sha256(pair_bytes).hexdigest()
    # Seeded: a resumed run holds out the same pairs as the first start.
    training_pairs, validation = _split(drawn, train["validation"], seed)
    lineage["validation_pairs"] = 0 if validation is None else int(validation.x0.shape[0])
    lineage["pair_seconds"] = round(pair_seconds, 3)

    out.mkdir(parents=True, exist_ok=previous is not None)
    write_config(out, record)
    if pair_bytes is not None:
        atomic_write_bytes(out / PAIRS_FILE, pair_bytes)
    metrics = MetricsLog(
        out / METRICS_FILE, train["log_every"], None if validation is None else train["eval_every"]
    )
    history = fit_pairs(
        student,
        training_pairs,
        validation,
        steps=train["steps"],
        batch_size=batch,
        lr=train["lr"],
        warmup=min(train["warmup"], max(train["steps"] // 10, 1)),
        clip=train["clip"],
        weight_decay=train["weight_decay"],
        ema=train["ema"],
        eval_every=train["eval_every"],
        patience=train["patience"],
        seed=seed,
        log_every=train["log_every"],
        callbacks=[metrics, *callbacks],
        quiet=quiet,
        checkpoint_dir=out / CHECKPOINTS,
        checkpoint_every=train["checkpoint_every"],
        resume=previous is not None,
    )
    # The student took the parent's preprocessing when it was made from it.
    save(student, out)
    return RunResult(student, history, out, record)


def _lineage(
    method: str,
    parent: Path,
    config: dict[str, Any],
    n: int,
    solver: dict[str, Any],
    init: str,
    context: str | os.PathLike[str] | None,
    guidance: float | None,
    teacher: FlowMatching,
) -> dict[str, Any]:
    """Where the pairs come from, for ``config.json``; the checksum, the validation
    count and the solve's time are filled in once the pairs are there."""
    parent_lineage = config.get("lineage")
    parent_k = int(parent_lineage.get("k", 1)) if isinstance(parent_lineage, dict) else 1
    lineage: dict[str, Any] = {
        "method": method,
        "parent": str(parent.resolve()),
        "parent_model": config["model"]["name"],
        "pairs": n,
        "validation_pairs": 0,
        "solver": solver,
        "pair_seconds": 0.0,
        "init": init,
        "parent_lineage": parent_lineage,
    }
    if teacher.context_features:
        # None: rows of the parent's own context file.
        lineage["context"] = None if context is None else str(context)
    if method == "reflow":
        lineage["k"] = parent_k + 1
    else:
        lineage["teacher_k"] = parent_k
        if guidance is not None:
            lineage["guidance"] = float(guidance)
    return lineage


def _parent(run: Path) -> tuple[dict[str, Any], FlowMatching]:
    config, model = open_run(run)
    name = config["model"]["name"]
    if name != "fm":
        raise ValueError(
            f"'{run}' holds a {name!r} model; reflow and distill need a flow-matching "
            "run (trained with --model fm, or made by pushforward reflow)"
        )
    if not isinstance(model, FlowMatching):
        raise ValueError(f"'{run}' does not hold a flow-matching model")
    if model.context_embedding is not None:
        raise ValueError(
            f"'{run}' summarises its context with an embedding network; reflow and distill "
            "take runs whose context the velocity network reads as it is"
        )
    return config, model


def _pair_context(
    path: str | os.PathLike[str] | None,
    config: dict[str, Any],
    teacher: Model,
    n: int,
    generator: torch.Generator,
) -> Tensor | None:
    """Standardised context rows for ``n`` pairs, drawn with replacement from the
    context file (``path``, or the parent's)."""
    if not teacher.context_features:
        return None
    given = path is not None
    path = path if given else config["data"].get("context")
    if path is None:
        raise ValueError("the parent run is conditional; pass --context FILE")
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"the parent's context file '{path}' does not exist; pass --context FILE"
        )
    values = load_array(str(path), ndim=2)
    if not given:
        values = values[: int(config["data"]["rows"])]
    if values.shape[1] != teacher.context_features:
        raise ValueError(
            f"context file '{path}' has {values.shape[1]} columns, "
            f"the parent run was trained with {teacher.context_features}"
        )
    dtype = next(iter(teacher.parameters())).dtype
    rows = torch.randint(0, values.shape[0], (n,), generator=generator)
    context = torch.from_numpy(values.copy()).to(dtype)[rows]
    return teacher.preprocessing.encode_context(context)


def _split(
    pairs: PairedBatch, fraction: float, seed: int
) -> tuple[PairedBatch, PairedBatch | None]:
    """The seeded split of ``pairs`` into training and validation pairs, the same
    permutation as :func:`~pushforward.train.config.validation_split` (the pairs keep
    their order when none are held out)."""
    if not fraction:
        return pairs, None
    train_rows, val_rows = validation_split(pairs.x0.shape[0], float(fraction), seed, 1)
    if val_rows is None:
        return pairs, None

    def take(rows: Tensor) -> PairedBatch:
        return PairedBatch(
            pairs.x0[rows], pairs.x1[rows], None if pairs.context is None else pairs.context[rows]
        )

    return take(train_rows), take(val_rows)
