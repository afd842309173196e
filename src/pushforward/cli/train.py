"""``pushforward train``: fit a registered model to data and write a run directory."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import tomllib
import torch
from torch import Tensor

from pushforward.cli.run_directory import (
    CHECKPOINTS,
    CONFIG_FILE,
    METRICS_FILE,
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    MetricsLog,
    package_version,
    read_config,
    write_config,
)
from pushforward.data import (
    BUILTIN_PREFIX,
    Dataset,
    fit_standardization,
    load_array,
    load_dataset,
)
from pushforward.distributions import Empirical
from pushforward.model import Model
from pushforward.options import closest
from pushforward.registry import build, builder_for, train_defaults
from pushforward.serialization import save
from pushforward.standardized import standardize_model
from pushforward.train.distributed import placement
from pushforward.train.history import History

TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 2000,
    "batch_size": 512,
    "lr": 1e-3,
    "seed": 0,
    "n": None,
    "validation": 0.1,
    "ema": 0.999,
    "warmup": 100,
    "clip": 5.0,
    "weight_decay": 0.0,
    "log_every": 100,
    "eval_every": 100,
    "checkpoint_every": 500,
    "patience": None,
    "prepare_workers": None,
}
"""Training options: the ``[train]`` table of a config file, overridden by flags.

A model may declare its own defaults for some of them at registration
(``register("fm", train={"lr": 5e-3})``); those come between these and the config."""

SET_FROM_DATA = ("features", "context")


def parse_literal(text: str) -> Any:
    """A ``--set`` value read as a TOML literal (int, float, bool, list, quoted
    string); anything that is not one is taken as a bare string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["hidden=[16]", "bins=4"]`` as ``{"hidden": [16], "bins": 4}``."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        options[key.removeprefix("model.")] = parse_literal(value.strip())
    return options


def read_toml(path: str | None) -> dict[str, Any]:
    """The ``[model]`` and ``[train]`` tables of a config file (empty without one)."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file '{file}' does not exist")
    try:
        config = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file '{file}' is not valid TOML ({error})") from None
    unknown = sorted(set(config) - {"model", "train"})
    if unknown:
        raise ValueError(
            f"config file '{file}' has unknown table(s) {', '.join(map(repr, unknown))}; "
            "use [model] and [train]"
        )
    for table in ("model", "train"):
        if not isinstance(config.get(table, {}), dict):
            raise ValueError(f"config file '{file}': {table!r} must be a table")
    valid = list(TRAIN_DEFAULTS)
    for key in config.get("train", {}):
        if key not in valid:
            raise ValueError(
                f"config file '{file}': unknown [train] option {key!r}{closest(key, valid)}; "
                f"valid: {', '.join(valid)}"
            )
    return config


def resolve(arguments: argparse.Namespace) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The model name, its options (without ``features``/``context``) and the training
    options, from defaults < config file < flags."""
    config = read_toml(arguments.config)
    name = arguments.model or config.get("model", {}).get("name")
    if not name:
        raise ValueError("no model given; pass --model NAME (or name = ... in [model])")
    builder_for(name)  # an unknown name is an error listing the valid ones
    options = {k: v for k, v in config.get("model", {}).items() if k != "name"}
    options.update(parse_sets(arguments.set or []))
    given = [key for key in SET_FROM_DATA if key in options]
    if given:
        raise ValueError(f"option {given[0]!r} is set from the data and cannot be given; remove it")
    train = dict(TRAIN_DEFAULTS)
    train.update(train_defaults(name))
    train.update(config.get("train", {}))
    for key in ("steps", "batch_size", "lr", "seed", "n"):
        value = getattr(arguments, key, None)
        if value is not None:
            train[key] = value
    return name, options, train


def load_context(path: str | None, rows: int) -> Tensor | None:
    """The context file as float64 ``(rows, c)``, checked to have ``rows`` rows."""
    if path is None:
        return None
    values = load_array(path, ndim=2)
    if values.shape[0] != rows:
        raise ValueError(
            f"context file '{path}' has {values.shape[0]} rows but the data has {rows}; "
            "they must match row for row"
        )
    return torch.from_numpy(values.copy())


def load_source(path: str, n: int | None = None, seed: int = 0) -> Dataset:
    """The source data set of a transport run (``--source``), errors naming it as the source.

    Args:
        path: a data file or ``builtin:NAME``.
        n: a built-in set draws ``n`` examples; a file gives its first ``n`` rows
            (all of them when it has fewer: the source need not match the data's rows).
        seed: seed of a built-in set.

    Returns:
        The :class:`~pushforward.data.Dataset` of source rows (float64).
    """
    try:
        if path.startswith(BUILTIN_PREFIX):
            return load_dataset(path, n=n, seed=seed)
        dataset = load_dataset(path, seed=seed)
    except (ValueError, FileNotFoundError) as error:
        message = str(error)
        renamed = message.replace("data file '", "source file '", 1)
        if renamed == message:
            renamed = f"--source {path!r}: {message}"
        raise type(error)(renamed) from None
    if n is not None and n < len(dataset):
        dataset = dataclasses.replace(dataset, values=dataset.values[:n])
    return dataset


def check_source_options(name: str, options: dict[str, Any], source: str | None) -> None:
    """Refuses model options that contradict ``--source`` (or its absence)."""
    if "source_rows" in options:
        raise ValueError("option 'source_rows' is set from --source FILE and cannot be given")
    if source is None:
        if options.get("base") == "empirical":
            raise ValueError("base 'empirical' needs --source FILE, the data set to transport")
        return
    if "source_rows" not in inspect.signature(builder_for(name)).parameters:
        raise ValueError(
            f"model {name!r} cannot transport a source data set; "
            "--source needs a flow-matching model (fm)"
        )
    if options.get("base", "empirical") != "empirical":
        raise ValueError(
            f"--source makes the rows of '{source}' the source; remove option "
            f"base={options['base']!r}"
        )


def split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor | None]:
    """Seeded training and validation row indices (no validation below 10 rows)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    if not fraction or n < 10:
        return order, None
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation must be a fraction in (0, 1), got {fraction}")
    held = max(1, round(fraction * n))
    return order[held:], order[:held]


def _as_list(tensor: Tensor) -> list:
    return tensor.tolist()


def run_train(arguments: argparse.Namespace) -> int:
    """Trains and writes the run directory; returns the exit status."""
    name, options, train = resolve(arguments)
    source_file = getattr(arguments, "source", None)
    check_source_options(name, options, source_file)
    out = Path(arguments.out)
    previous = None
    if (out / CONFIG_FILE).exists():
        if not arguments.resume:
            raise ValueError(
                f"'{out}' already holds a run; pass --resume to continue it or choose another --out"
            )
        previous = read_config(out)
    elif out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' exists and is not a directory")

    dataset = load_dataset(arguments.data, n=train["n"], seed=train["seed"])
    # Images (n, C, H, W) are modelled as vectors of C*H*W values by the vector flows;
    # eval and sample reshape in and out.
    values = dataset.values.reshape(dataset.values.shape[0], -1)
    context = load_context(arguments.context, values.shape[0])
    train_rows, val_rows = split(values.shape[0], train["validation"], train["seed"])
    mean, std = fit_standardization(values[train_rows])
    x = ((values - mean) / std).float()
    c_mean = c_std = None
    c = None
    if context is not None:
        c_mean, c_std = fit_standardization(context[train_rows])
        c = ((context - c_mean) / c_std).float()
    source = s_mean = s_std = None
    if source_file is not None:
        # seed + 1 draws the evaluation sample of a built-in set; the source is a third draw.
        source_set = load_source(source_file, n=train["n"], seed=train["seed"] + 2)
        source_values = source_set.values.reshape(len(source_set), -1)
        if source_values.shape[1] != values.shape[1]:
            raise ValueError(
                f"source '{source_file}' has {source_values.shape[1]} values per row but the "
                f"data has {values.shape[1]}; the source and the data must have the same "
                "number of features"
            )
        # The source's own statistics: the flow works in standardised units at both ends.
        s_mean, s_std = fit_standardization(source_values)
        source = ((source_values - s_mean) / s_std).float()
        options = {**options, "base": "empirical", "source_rows": int(source.shape[0])}

    features = values.shape[1]
    # The initial weights come from --seed too, so a run is reproducible end to end.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train["seed"])
        model = build(name, features=features, context=0 if c is None else c.shape[1], **options)
    if source is not None:
        base = getattr(model, "base", None)
        if not isinstance(base, Empirical):
            raise TypeError(f"model {name!r} built with base 'empirical' has no empirical source")
        base.assign_rows(source)
    if not model.trains_from_data:
        raise ValueError(
            f"model {name!r} is not trained from data; make it from a trained run "
            f"(pushforward {'distill' if name == 'distilled' else 'reflow'} RUN_DIR --out ...)"
        )
    resolved: dict[str, Any] = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "pushforward_version": package_version(),
        "model": {"name": name, "options": model.config["options"]},
        "data": {
            "source": dataset.source,
            "context": arguments.context,
            "rows": int(values.shape[0]),
            "event_shape": list(dataset.event_shape),
            "train_rows": int(train_rows.numel()),
            "validation_rows": 0 if val_rows is None else int(val_rows.numel()),
            "levels": dataset.levels,
        },
        "standardization": {
            "mean": _as_list(mean),
            "std": _as_list(std),
            # Losses in metrics.jsonl are in standardised units; add this to get
            # the negative log-likelihood in the data's original units.
            "log_std_sum": float(torch.log(std).sum()),
            "context_mean": None if c_mean is None else _as_list(c_mean),
            "context_std": None if c_std is None else _as_list(c_std),
        },
        "train": train,
    }
    if source_file is not None and s_mean is not None and s_std is not None:
        resolved["source"] = {
            "data": source_set.source,
            "rows": int(source_values.shape[0]),
            "event_shape": list(source_set.event_shape),
        }
        resolved["standardization"]["source_mean"] = _as_list(s_mean)
        resolved["standardization"]["source_std"] = _as_list(s_std)
    if previous is not None:
        if previous["model"] != resolved["model"]:
            raise ValueError(
                f"cannot resume '{out}': it holds model {previous['model']['name']!r} with "
                f"options {previous['model']['options']}, not {name!r} with "
                f"{model.config['options']}"
            )
        if previous["data"] != resolved["data"]:
            raise ValueError(f"cannot resume '{out}': it was trained on other data")
        if previous.get("source") != resolved.get("source"):
            raise ValueError(f"cannot resume '{out}': it was trained from another --source")
    where = placement()
    if where.distributed:
        # Under torchrun every rank checks --out above before rank 0 writes into it.
        torch.distributed.barrier()
    if where.writes:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, resolved)

    validation = None
    if val_rows is not None:
        validation = (x[val_rows], None if c is None else c[val_rows])
    metrics = MetricsLog(
        out / METRICS_FILE, train["log_every"], None if validation is None else train["eval_every"]
    )
    history = _fit(model, x, c, train_rows, validation, train, out, arguments, metrics)
    folded = standardize_model(
        model,
        mean.float(),
        std.float(),
        None if c_mean is None else c_mean.float(),
        None if c_std is None else c_std.float(),
        source_mean=None if s_mean is None else s_mean.float(),
        source_std=None if s_std is None else s_std.float(),
    )
    if not where.writes:
        return 0
    save(folded, out)
    if not arguments.quiet:
        last = history.loss[-1] if history.loss else float("nan")
        best = (
            ""
            if history.best_val_loss is None
            else f", best validation loss {history.best_val_loss:.4f}"
        )
        print(
            f"trained {name} for {history.steps_done} steps (loss {last:.4f}{best}); run in {out}"
        )
    return 0


def _fit(
    model: Model,
    x: Tensor,
    c: Tensor | None,
    rows: Tensor,
    validation: tuple[Tensor, Tensor | None] | None,
    train: dict[str, Any],
    out: Path,
    arguments: argparse.Namespace,
    metrics: MetricsLog,
) -> History:
    from pushforward.train import fit

    return fit(
        model,
        x[rows],
        None if c is None else c[rows],
        steps=train["steps"],
        batch_size=train["batch_size"],
        lr=train["lr"],
        warmup=min(train["warmup"], max(train["steps"] // 10, 1)),
        clip=train["clip"],
        weight_decay=train["weight_decay"],
        ema=train["ema"],
        validation=validation,
        eval_every=train["eval_every"],
        patience=train["patience"],
        seed=train["seed"],
        log_every=train["log_every"],
        callbacks=[metrics] if placement().writes else [],
        quiet=arguments.quiet,
        checkpoint_dir=out / CHECKPOINTS,
        checkpoint_every=train["checkpoint_every"],
        resume=arguments.resume,
        prepare_workers=train["prepare_workers"],
    )
