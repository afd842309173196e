"""``pushforward train``: parses its flags into :func:`pushforward.train_run` and prints."""

from __future__ import annotations

import argparse
from typing import Any

import tomllib

from pushforward.registry import builder_for
from pushforward.train.config import TrainingConfig
from pushforward.train.run import train_run
from pushforward.train.target_run import train_target_run

FLAG_OPTIONS = ("steps", "batch_size", "lr", "seed", "n")
"""Training options that have their own flag."""


def parse_literal(text: str) -> Any:
    """A ``--set`` value read as a TOML literal (int, float, bool, list, quoted
    string); anything that is not one is taken as a bare string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


OBJECTIVE_PREFIX = "objective."
"""``--set objective.KEY=VALUE`` sets an option of the objective against a target."""


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["hidden=[16]", "bins=4"]`` as ``{"hidden": [16], "bins": 4}`` (``model.`` dropped).

    Items starting with ``objective.`` are left out (see :func:`objective_sets`).
    """
    options: dict[str, Any] = {}
    for key, value in parse_set_items(items):
        if not key.startswith(OBJECTIVE_PREFIX):
            options[key.removeprefix("model.")] = value
    return options


def objective_sets(items: list[str]) -> dict[str, Any]:
    """The ``objective.KEY=VALUE`` items of ``--set`` as ``{KEY: value}``."""
    return {
        key[len(OBJECTIVE_PREFIX) :]: value
        for key, value in parse_set_items(items)
        if key.startswith(OBJECTIVE_PREFIX)
    }


def parse_set_items(items: list[str]) -> list[tuple[str, Any]]:
    """``--set KEY=VALUE`` items as ``(key, literal)`` pairs, in order."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        pairs.append((key, parse_literal(value.strip())))
    return pairs


def resolve(arguments: argparse.Namespace) -> tuple[str, dict[str, Any], TrainingConfig]:
    """The model name, its options (without ``features``/``context``) and the training
    configuration, from defaults < the model's registered defaults < config file < flags."""
    model_table, train_table = TrainingConfig.from_toml(arguments.config)
    name = arguments.model or model_table.get("name")
    if not name:
        raise ValueError("no model given; pass --model NAME (or name = ... in [model])")
    builder_for(name)  # an unknown name is an error listing the valid ones
    options = {k: v for k, v in model_table.items() if k != "name"}
    options.update(parse_sets(arguments.set or []))
    flags = {key: getattr(arguments, key, None) for key in FLAG_OPTIONS}
    flags["objective"] = getattr(arguments, "objective", None)
    chosen = objective_sets(arguments.set or [])
    if chosen:
        flags["objective_options"] = {**(train_table.get("objective_options") or {}), **chosen}
    return name, options, TrainingConfig.resolve(name, train_table, flags)


def run_train(arguments: argparse.Namespace) -> int:
    """Trains and writes the run directory; returns the exit status."""
    target = getattr(arguments, "target", None)
    if target is not None:
        return _run_target(arguments, target)
    if arguments.data is None:
        raise ValueError("give --data FILE|builtin:NAME (or --target to fit a log-density)")
    if getattr(arguments, "features", None) is not None:
        raise ValueError("--features gives a --target's dimension; data sets their own")
    name, options, config = resolve(arguments)
    result = train_run(
        arguments.out,
        arguments.data,
        name,
        context=arguments.context,
        source=getattr(arguments, "source", None),
        options=options,
        train=config,
        resume=arguments.resume,
        quiet=arguments.quiet,
        coordinates="latlon" if getattr(arguments, "latlon", False) else "native",
        prior=getattr(arguments, "prior", None),
        init=getattr(arguments, "init", None),
    )
    if not arguments.quiet:
        history = result.history
        last = history.loss[-1] if history.loss else float("nan")
        best = (
            ""
            if history.best_val_loss is None
            else f", best validation loss {history.best_val_loss:.4f} at step {history.best_step}"
        )
        until = result.config["train"]["budget"]["until"]
        how = (
            "until the validation loss stopped improving; best weights restored"
            if until == "convergence" and history.stopped_early
            else "the step budget"
            if until == "steps"
            else f"to the step cap of {config.max_steps} without converging"
        )
        print(
            f"trained {name} for {history.steps_done} steps ({how}; loss {last:.4f}{best}); "
            f"run in {result.directory}"
        )
    return 0


def _run_target(arguments: argparse.Namespace, target: str) -> int:
    """``train --target``: checks the flags that do not apply, fits, prints a summary."""
    given = [
        flag
        for flag, value in (
            ("--data", arguments.data),
            ("--context", arguments.context),
            ("--source", getattr(arguments, "source", None)),
            ("--n", arguments.n),
            ("--latlon", getattr(arguments, "latlon", False) or None),
            ("--prior", getattr(arguments, "prior", None)),
            ("--init", getattr(arguments, "init", None)),
        )
        if value is not None
    ]
    if given:
        raise ValueError(
            f"--target fits a log-density, not data: remove {given[0]} (one of --data and --target)"
        )
    name, options, config = resolve(arguments)
    result = train_target_run(
        arguments.out,
        target,
        name,
        features=arguments.features,
        options=options,
        train=config,
        resume=arguments.resume,
        quiet=arguments.quiet,
    )
    if not arguments.quiet:
        history = result.history
        last = history.loss[-1] if history.loss else float("nan")
        print(
            f"fitted {name} to {target} by {result.config['objective']['name']} for "
            f"{history.steps_done} steps (loss {last:.4f}); run in {result.directory}"
        )
    return 0
