"""``pushforward reflow`` and ``pushforward distill``: new runs from a trained ``fm`` run.

Both read a flow-matching run, draw source points and solve its ODE for their ends
(the coupling the model induces), and train a new model on those pairs through the
training engine: ``reflow`` an ``fm`` model (the next rectified flow), ``distill``
a one-step ``distilled`` model. The new run directory is a normal one: the parent's
data and standardisation records (so the model is in the data's original units),
``metrics.jsonl``, checkpoints, the model, and a ``lineage`` entry in
``config.json`` saying where the pairs came from.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pushforward.cli.evaluate import open_run
from pushforward.cli.run_directory import (
    CHECKPOINTS,
    METRICS_FILE,
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    MetricsLog,
    package_version,
    write_config,
)
from pushforward.cli.train import TRAIN_DEFAULTS, parse_literal
from pushforward.data import load_array
from pushforward.flows.options import choice
from pushforward.matching.couplings import Coupling
from pushforward.matching.distill import student_for
from pushforward.matching.model import SOLVERS, FlowMatching
from pushforward.matching.reflow import INITIALIZATIONS, fit_pairs, rectified_model, reflow_pairs
from pushforward.model import Model
from pushforward.ode import FIXED_STEP_METHODS
from pushforward.registry import closest
from pushforward.serialization import save
from pushforward.standardized import StandardizedModel, standardize_model

PAIRS_DEFAULT = 20_000
"""Pairs drawn by default: 2000 steps of 512 see each about 50 times."""

FIXED_SOLVER_STEPS = 100
"""Steps of a fixed-step pair solver when ``--solver-steps`` is not given."""

PAIR_TOLERANCE = 1e-6
"""Default ``atol`` and ``rtol`` of an adaptive pair solver (tighter than sampling's)."""

REFLOW_TRAIN: dict[str, Any] = {"lr": 1e-3}
"""Training defaults of ``reflow`` and ``distill`` over ``pushforward train``'s: a
model that starts from its parent's weights is fine-tuned, at a lower peak rate
than ``fm``'s 5e-3 from scratch."""

IGNORED_TRAIN = ("n",)
"""``pushforward train`` options that mean nothing here (the pairs are drawn, not read)."""


def run_reflow(arguments: argparse.Namespace) -> int:
    """``pushforward reflow RUN_DIR --out NEW_RUN``: the next rectified flow."""
    return _run(arguments, "reflow")


def run_distill(arguments: argparse.Namespace) -> int:
    """``pushforward distill RUN_DIR --out NEW_RUN``: a one-step model."""
    return _run(arguments, "distill")


def resolve_options(
    arguments: argparse.Namespace, parent_seed: int
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The new model's options, the training options and ``init``, from defaults <
    ``--set`` < flags.

    ``--set`` keys that are training options (``ema``, ``warmup``, ``validation``,
    ...) go to training, ``init`` chooses the initial weights (``parent`` or
    ``fresh``), and any other key is a model option; ``model.KEY`` forces a model
    option where the name is also a training one (``model.steps``).
    """
    train = dict(TRAIN_DEFAULTS)
    for key in IGNORED_TRAIN:
        train.pop(key, None)
    train.update(REFLOW_TRAIN)
    train["seed"] = parent_seed
    model_options: dict[str, Any] = {}
    init = "parent"
    for item in arguments.set or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        value = parse_literal(text.strip())
        if key.startswith("model."):
            model_options[key.removeprefix("model.")] = value
        elif key.startswith("train.") or key in train:
            name = key.removeprefix("train.")
            if name not in train:
                raise ValueError(
                    f"unknown training option {name!r}{closest(name, list(train))}; "
                    f"valid: {', '.join(train)}"
                )
            train[name] = value
        elif key == "init":
            init = choice("init", value, INITIALIZATIONS)
        elif key in IGNORED_TRAIN:
            raise ValueError(f"option {key!r} does not apply: the pairs are drawn with --pairs")
        else:
            model_options[key] = value
    for key in ("steps", "batch_size", "lr", "seed"):
        value = getattr(arguments, key, None)
        if value is not None:
            train[key] = value
    return model_options, train, init


def _parent(run: str) -> tuple[dict[str, Any], FlowMatching, StandardizedModel]:
    config, model = open_run(run)
    name = config["model"]["name"]
    if name != "fm":
        raise ValueError(
            f"'{run}' holds a {name!r} model; reflow and distill need a flow-matching "
            "run (trained with --model fm, or made by pushforward reflow)"
        )
    if not isinstance(model, StandardizedModel) or not isinstance(model.model, FlowMatching):
        raise ValueError(f"'{run}' does not hold a flow-matching model in original units")
    return config, model.model, model


def _check_out(out: Path) -> None:
    if out.exists():
        raise ValueError(
            f"--out '{out}' already exists; choose a new run directory "
            "(reflow and distill always start a new run)"
        )


def _pair_context(
    arguments: argparse.Namespace,
    config: dict[str, Any],
    wrapper: StandardizedModel,
    n: int,
    generator: torch.Generator,
) -> Tensor | None:
    """Standardised context rows for ``n`` pairs, drawn with replacement from the
    context file (``--context``, or the parent's)."""
    if not wrapper.context_features:
        if arguments.context is not None:
            raise ValueError("the parent run is unconditional; do not pass --context")
        return None
    path = arguments.context or config["data"].get("context")
    if path is None:
        raise ValueError("the parent run is conditional; pass --context FILE")
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"the parent's context file '{path}' does not exist; pass --context FILE"
        )
    values = load_array(path, ndim=2)
    if arguments.context is None:
        values = values[: int(config["data"]["rows"])]
    if values.shape[1] != wrapper.context_features:
        raise ValueError(
            f"context file '{path}' has {values.shape[1]} columns, "
            f"the parent run was trained with {wrapper.context_features}"
        )
    dtype = next(iter(wrapper.parameters())).dtype
    rows = torch.randint(0, values.shape[0], (n,), generator=generator)
    context = torch.from_numpy(values.copy()).to(dtype)[rows]
    if wrapper.context_mean is None or wrapper.context_std is None:
        return context
    return (context - wrapper.context_mean.to(context)) / wrapper.context_std.to(context)


def _split(pairs: Coupling, fraction: float, seed: int) -> tuple[Coupling, Coupling | None]:
    if not fraction:
        return pairs, None
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"validation must be a fraction in (0, 1), got {fraction}")
    n = pairs.x0.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    held = max(1, round(float(fraction) * n))

    def take(rows: Tensor) -> Coupling:
        return Coupling(
            pairs.x0[rows], pairs.x1[rows], None if pairs.context is None else pairs.context[rows]
        )

    return take(order[held:]), take(order[:held])


def _solver(arguments: argparse.Namespace) -> dict[str, Any]:
    method = choice("solver", arguments.solver or "dopri5", SOLVERS)
    if method in FIXED_STEP_METHODS:
        if arguments.atol is not None or arguments.rtol is not None:
            raise ValueError(f"--atol/--rtol apply to adaptive solvers, not {method!r}")
        steps = FIXED_SOLVER_STEPS if arguments.solver_steps is None else arguments.solver_steps
        if steps < 1:
            raise ValueError(f"--solver-steps must be positive, got {steps}")
        return {"method": method, "steps": int(steps)}
    if arguments.solver_steps is not None:
        raise ValueError(f"--solver-steps applies to fixed-step solvers, not {method!r}")
    tolerances = {}
    for key in ("atol", "rtol"):
        value = getattr(arguments, key)
        value = PAIR_TOLERANCE if value is None else float(value)
        if not value > 0:
            raise ValueError(f"--{key} must be positive, got {value}")
        tolerances[key] = value
    return {"method": method, **tolerances}


def _run(arguments: argparse.Namespace, method: str) -> int:
    out = Path(arguments.out)
    _check_out(out)
    config, teacher, wrapper = _parent(arguments.run)
    model_options, train, init = resolve_options(
        arguments, int(config.get("train", {}).get("seed", 0))
    )
    solver = _solver(arguments)
    guidance = getattr(arguments, "guidance", None)
    n = PAIRS_DEFAULT if arguments.pairs is None else int(arguments.pairs)
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
            student: Model = rectified_model(teacher, init=init, **model_options)
        else:
            student = student_for(teacher, init=init, **model_options)

    generator = torch.Generator().manual_seed(seed)
    context = _pair_context(arguments, config, wrapper, n, generator)
    start = time.perf_counter()
    pairs = reflow_pairs(
        teacher,
        n,
        context,
        solver=solver["method"],
        steps=solver.get("steps"),
        atol=solver.get("atol", PAIR_TOLERANCE),
        rtol=solver.get("rtol", PAIR_TOLERANCE),
        guidance=1.0 if guidance is None else float(guidance),
        generator=generator,
    )
    pair_seconds = time.perf_counter() - start
    training_pairs, validation = _split(pairs, train["validation"], seed)

    parent_lineage = config.get("lineage")
    parent_k = int(parent_lineage.get("k", 1)) if isinstance(parent_lineage, dict) else 1
    lineage: dict[str, Any] = {
        "method": method,
        "parent": str(Path(arguments.run).resolve()),
        "parent_model": config["model"]["name"],
        "pairs": n,
        "validation_pairs": 0 if validation is None else int(validation.x0.shape[0]),
        "solver": solver,
        "pair_seconds": round(pair_seconds, 3),
        "init": init,
        "parent_lineage": parent_lineage,
    }
    if method == "reflow":
        lineage["k"] = parent_k + 1
    else:
        lineage["teacher_k"] = parent_k
        if guidance is not None:
            lineage["guidance"] = float(guidance)
    record = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "pushforward_version": package_version(),
        "model": {"name": student.config["model"], "options": student.config["options"]},
        "data": config["data"],
        "standardization": config["standardization"],
        "train": train,
        "lineage": lineage,
    }
    if "source" in config:
        # A flow between two data sets: the new model keeps the parent's source.
        record["source"] = config["source"]
    out.mkdir(parents=True)
    write_config(out, record)
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
        callbacks=[metrics],
        quiet=arguments.quiet,
        checkpoint_dir=out / CHECKPOINTS,
        checkpoint_every=train["checkpoint_every"],
    )
    folded = standardize_model(
        student,
        wrapper.mean,
        wrapper.std,
        wrapper.context_mean,
        wrapper.context_std,
        source_mean=getattr(wrapper, "source_mean", None),
        source_std=getattr(wrapper, "source_std", None),
    )
    save(folded, out)
    if not arguments.quiet:
        last = history.loss[-1] if history.loss else float("nan")
        what = f"{lineage['k']}-rectified fm" if method == "reflow" else "one-step distilled"
        print(
            f"trained a {what} model on {n} pairs ({pair_seconds:.1f} s to draw) for "
            f"{history.steps_done} steps (loss {last:.4f}); run in {out}"
        )
    return 0
