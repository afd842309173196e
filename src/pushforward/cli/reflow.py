"""``pushforward reflow`` and ``pushforward distill``: new runs from a trained ``fm`` run.

The run logic is :func:`pushforward.recipes.run.reflow_run` and
:func:`~pushforward.recipes.run.distill_run`; this module parses the flags into
their arguments and prints what was made.
"""

from __future__ import annotations

import argparse
from typing import Any

from pushforward.cli.train import parse_set_items
from pushforward.options import choice
from pushforward.recipes.pairs import INITIALIZATIONS
from pushforward.recipes.run import IGNORED_TRAIN, RunResult, pair_run, pair_training


def run_reflow(arguments: argparse.Namespace) -> int:
    """``pushforward reflow RUN_DIR --out NEW_RUN``: the next rectified flow."""
    return _run(arguments, "reflow")


def run_distill(arguments: argparse.Namespace) -> int:
    """``pushforward distill RUN_DIR --out NEW_RUN``: a one-step model."""
    return _run(arguments, "distill")


def resolve_options(arguments: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The new model's options, the training options and ``init`` from ``--set`` and flags.

    ``--set`` keys that are training options (``ema``, ``warmup``, ``validation``,
    ...) go to training, ``init`` chooses the initial weights (``parent`` or
    ``fresh``), and any other key is a model option; ``model.KEY`` forces a model
    option where the name is also a training one (``model.steps``), ``train.KEY`` a
    training one. Flags (``--steps``, ``--batch-size``, ``--lr``, ``--seed``) win over
    ``--set``; the defaults are the run's (:func:`~pushforward.recipes.run.pair_training`).
    """
    training = set(pair_training(0))
    model_options: dict[str, Any] = {}
    train: dict[str, Any] = {}
    init = "parent"
    for key, value in parse_set_items(arguments.set or []):
        if key.startswith("model."):
            model_options[key.removeprefix("model.")] = value
        elif key.startswith("train.") or key in training or key in IGNORED_TRAIN:
            train[key.removeprefix("train.")] = value
        elif key == "init":
            init = choice("init", value, INITIALIZATIONS)
        else:
            model_options[key] = value
    for key in ("steps", "batch_size", "lr", "seed"):
        value = getattr(arguments, key, None)
        if value is not None:
            train[key] = value
    return model_options, train, init


def _run(arguments: argparse.Namespace, method: str) -> int:
    model_options, train, init = resolve_options(arguments)
    result: RunResult = pair_run(
        method,
        arguments.out,
        arguments.run,
        pairs=arguments.pairs,
        solver=arguments.solver,
        solver_steps=arguments.solver_steps,
        atol=arguments.atol,
        rtol=arguments.rtol,
        guidance=getattr(arguments, "guidance", None),
        context=arguments.context,
        options=model_options,
        train=train,
        init=init,
        resume=bool(getattr(arguments, "resume", False)),
        quiet=arguments.quiet,
    )
    if not arguments.quiet:
        lineage, history = result.config["lineage"], result.history
        last = history.loss[-1] if history.loss else float("nan")
        what = f"{lineage['k']}-rectified fm" if method == "reflow" else "one-step distilled"
        drawn = (
            "saved"
            if getattr(arguments, "resume", False)
            else f"{lineage['pair_seconds']:.1f} s to draw"
        )
        print(
            f"trained a {what} model on {lineage['pairs']} pairs ({drawn}) for "
            f"{history.steps_done} steps (loss {last:.4f}); run in {result.directory}"
        )
    return 0
