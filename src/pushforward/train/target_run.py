"""A run fitted to an unnormalized target instead of data: ``pushforward train --target``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pushforward.model import Model
from pushforward.registry import build, builder_for, data_kind
from pushforward.sampling.objectives import make_objective
from pushforward.sampling.target import Target, as_target
from pushforward.sampling.target_files import load_target, probe_target
from pushforward.serialization import save
from pushforward.train.callbacks import Callback
from pushforward.train.config import TrainingConfig
from pushforward.train.distributed import placement
from pushforward.train.fit import fit
from pushforward.train.run import RunResult
from pushforward.train.run_directory import (
    CHECKPOINTS,
    METRICS_FILE,
    MetricsLog,
    check_same_model,
    previous_run,
    run_header,
    write_config,
)
from pushforward.train.run_inputs import check_model_options
from pushforward.transforms.preprocessing import Preprocessing
from pushforward.transforms.standardize import Standardize

DTYPES = {"float32": torch.float32, "float64": torch.float64}
TARGET_SOURCE = "target:"
"""The prefix of ``data.source`` in the config of a run fitted to a target."""


def run_dtype(name: str) -> torch.dtype:
    """The torch dtype of the ``dtype`` training option."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def scale_to_target(model: Model, target: Target) -> Model:
    r"""Installs the map :math:`x = s \odot z` of the target's ``reference_scale`` :math:`s`
    as the model's preprocessing (nothing when it has none); returns the model.

    The flow then works in units of the target's spread, and the map's log-determinant is
    part of ``log_prob``, as a standardisation of data is.
    """
    scale = target.reference_scale
    if scale is None:
        return model
    reference = model._reference()
    dtype = torch.float64 if reference is None else reference.dtype
    model.set_preprocessing(Preprocessing(Standardize(torch.zeros_like(scale), scale.clone())))
    model.preprocessing.to(dtype)
    return model


def target_record(target: Target, spec: str | None) -> dict[str, Any]:
    """What ``config.json`` records of a target (``spec`` ``None``: a Python object)."""
    return {
        "spec": spec,
        "name": target.name,
        "features": target.features,
        "log_z": target.log_z,
        "has_sample": target.has_sample,
        "low": None if target.low is None else [float(v) for v in target.low],
        "high": None if target.high is None else [float(v) for v in target.high],
        "reference_scale": (
            None if target.reference_scale is None else [float(v) for v in target.reference_scale]
        ),
    }


def train_target_run(
    out: str | os.PathLike[str],
    target: str | Any,
    model: str,
    *,
    features: int | None = None,
    options: dict[str, Any] | None = None,
    train: TrainingConfig | dict[str, Any] | None = None,
    resume: bool = False,
    quiet: bool = True,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Fits model ``model`` to ``target`` into the run directory ``out``, or resumes it there.

    The same steps as ``pushforward train --target``: load the target (``builtin:NAME``,
    ``FILE.py:NAME`` or a Python object) and probe it on a few points, build the model
    from the seed in the run's ``dtype``, check that the objective can run on it, write
    ``config.json`` (the target, the objective, the training options), fit (see
    :func:`~pushforward.fit` with ``target=``: the model draws its own batches), and save
    the model with ``metrics.jsonl`` (training loss, and at evaluations ``ess`` and
    ``log_z``). Nothing is written when any check fails.

    Args:
        out: the run directory (created; with ``resume`` one that holds a run).
        target: ``builtin:NAME``, ``FILE.py:NAME``, or a target object / callable.
        model: a registered model name (a flow with reparameterised samples).
        features: the target's dimension where it does not say it.
        options: model options (``features`` comes from the target).
        train: a :class:`TrainingConfig`, or options overriding its defaults
            (``objective``, ``objective_options``, ``beta``, ``anneal``, ``dtype``, ...).
        resume: continue the run in ``out`` from its last checkpoint.
        quiet: no progress bar.
        callbacks: extra :class:`~pushforward.train.callbacks.Callback` objects.

    Example:
        >>> import tempfile, pushforward
        >>> with tempfile.TemporaryDirectory() as out:
        ...     result = pushforward.train_target_run(
        ...         out, "builtin:grid-9", "nsf", train={"steps": 20, "eval_samples": 0},
        ...         options={"transforms": 2, "hidden": [16]},
        ...     )
        >>> result.history.steps_done
        20
    """
    name = model
    builder_for(name)
    options = dict(options or {})
    config = (
        train if isinstance(train, TrainingConfig) else TrainingConfig.resolve(name, None, train)
    )
    check_model_options(name, options, None)
    if data_kind(name) != "vectors":
        raise ValueError(
            f"model {name!r} models {data_kind(name)}; a target on R^d needs a flow on "
            "vectors (nsf, realnvp, maf, ...)"
        )
    dtype = run_dtype(config.dtype)
    spec = target if isinstance(target, str) else None
    loaded = load_target(target, features) if spec is not None else as_target(target, features)
    probe_target(loaded, dtype)
    objective = make_objective(config.objective or "reverse-kl", **(config.objective_options or {}))
    out = Path(out)
    previous = previous_run(out, resume)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        trained = build(name, features=loaded.features, context=0, **options).to(dtype)
    scale_to_target(trained, loaded)
    scale = loaded.reference_scale
    objective.check(trained, loaded)
    steps = config.default_steps if config.steps is None else config.steps
    resolved: dict[str, Any] = {
        **run_header(name, trained.config["options"]),
        "data": {
            "source": TARGET_SOURCE + (spec or "python"),
            "context": None,
            "rows": 0,
            "event_shape": [loaded.features],
            "train_rows": 0,
            "validation_rows": 0,
            "levels": None,
        },
        "target": target_record(loaded, spec),
        "objective": {"name": objective.name, "options": objective.options()},
        "standardization": {
            "mean": None if scale is None else [0.0] * loaded.features,
            "std": None if scale is None else [float(v) for v in scale],
            "log_std_sum": 0.0 if scale is None else float(torch.log(scale).sum()),
            "context_mean": None,
            "context_std": None,
        },
        "train": config.as_dict(),
    }
    resolved["train"]["budget"] = {"steps": steps, "patience": None, "until": "steps"}
    if previous is not None:
        _check_resumable(out, previous, resolved)
    where = placement()
    if where.distributed:
        torch.distributed.barrier()
    if where.writes:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, resolved)
    evaluates = config.eval_samples > 0
    metrics = MetricsLog(
        out / METRICS_FILE,
        config.log_every,
        config.validation_every(0, False) if evaluates else None,
    )
    history = fit(
        trained,
        target=loaded,
        objective=objective,
        steps=steps,
        batch_size=config.batch_size,
        lr=config.lr,
        warmup=min(config.warmup, max(steps // 10, 1)),
        clip=config.clip,
        weight_decay=config.weight_decay,
        ema=config.ema,
        beta=config.beta,
        anneal=config.anneal,
        eval_every=config.validation_every(0, False),
        eval_samples=config.eval_samples,
        seed=config.seed,
        log_every=config.log_every,
        callbacks=[*([metrics] if where.writes else []), *callbacks],
        quiet=quiet,
        checkpoint_dir=out / CHECKPOINTS,
        checkpoint_every=config.checkpoint_every,
        resume=resume,
    )
    resolved["train"]["result"] = {
        "steps_done": history.steps_done,
        "stopped_early": False,
        "best_step": None,
        "weights": history.weights,
    }
    if where.writes:
        write_config(out, resolved)
        save(trained, out)
    return RunResult(trained, history, out, resolved)


def _check_resumable(out: Path, previous: dict[str, Any], resolved: dict[str, Any]) -> None:
    check_same_model(out, previous, resolved)
    if previous.get("target") != resolved["target"]:
        raise ValueError(f"cannot resume '{out}': it was fitted to another target")
    if previous.get("objective") != resolved["objective"]:
        raise ValueError(f"cannot resume '{out}': it was trained with another objective")
