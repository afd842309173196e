"""A run: a model trained into a run directory, created or resumed, alike from Python and CLI."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pushforward.data import Dataset
from pushforward.data.earth import check_coordinates
from pushforward.distributions import Empirical
from pushforward.model import Model
from pushforward.registry import build, builder_for, data_kind, keywords
from pushforward.sbi.priors import Prior, check_theta_in_prior, load_prior
from pushforward.serialization import save
from pushforward.train.batches import Rows
from pushforward.train.callbacks import Callback
from pushforward.train.config import TrainingConfig, validation_split
from pushforward.train.distributed import placement
from pushforward.train.fit import fit, preprocessed_rows
from pushforward.train.history import History
from pushforward.train.init_weights import apply_initial_weights, read_initial_weights
from pushforward.train.run_directory import (
    CHECKPOINTS,
    METRICS_FILE,
    MetricsLog,
    check_same_model,
    previous_run,
    run_header,
    write_config,
)
from pushforward.train.run_inputs import (
    DataInput,
    check_model_options,
    read_context,
    read_data,
    read_source,
    read_tokens,
)
from pushforward.transforms.box_logit import BoxLogitStandardize
from pushforward.transforms.preprocessing import Preprocessing
from pushforward.transforms.standardize import Standardize


@dataclass
class RunResult:
    """What :func:`train_run` made.

    Attributes:
        model: the trained model, in the data's units (its preprocessing fitted).
        history: the training history (including the part before a resume).
        directory: the run directory.
        config: the resolved configuration written to ``config.json``.
    """

    model: Model
    history: History
    directory: Path
    config: dict[str, Any]


def _as_list(tensor: Any) -> list:
    return tensor.tolist()


def train_run(
    out: str | os.PathLike[str],
    data: DataInput,
    model: str,
    *,
    context: DataInput | None = None,
    source: str | None = None,
    options: dict[str, Any] | None = None,
    train: TrainingConfig | dict[str, Any] | None = None,
    resume: bool = False,
    quiet: bool = True,
    callbacks: Sequence[Callback] = (),
    coordinates: str = "native",
    prior: str | os.PathLike[str] | Prior | None = None,
    init: str | os.PathLike[str] | None = None,
) -> RunResult:
    """Trains model ``model`` on ``data`` into the run directory ``out``, or resumes it there.

    The same steps as ``pushforward train``, which only parses its flags into
    these arguments (so both give bitwise the same weights): read the data (a
    file, ``builtin:NAME`` or an array), make the seeded train/validation split
    once, fit the standardisation of data, context and source on the training
    rows and install it as the model's preprocessing, build the model from the
    seed, check that a resumed run is the same run, :func:`~pushforward.fit`,
    and save the model (in the data's units) with ``config.json`` and
    ``metrics.jsonl``.

    Args:
        out: the run directory (created; with ``resume`` one that holds a run).
        data: a data file, ``builtin:NAME``, or rows ``(n, *event_shape)``.
        model: a registered model name.
        context: a context file or rows ``(n, c)``, one per data row.
        source: a data file or ``builtin:NAME`` whose rows the model transports
            onto the data (flow matching with an empirical source).
        options: model options (``features`` and ``context`` come from the data).
        train: a :class:`TrainingConfig`, or options overriding its defaults.
        resume: continue the run in ``out`` from its last checkpoint.
        quiet: no progress bar.
        callbacks: extra :class:`~pushforward.train.callbacks.Callback` objects.
        coordinates: ``"native"``, or ``"latlon"`` for data of two columns, latitude
            and longitude in degrees, modelled as unit vectors of :math:`S^2` (``rfm``
            on the sphere, ``sphere-nsf``; ``train --latlon``). The run records it, so
            that ``eval`` and ``plot`` read its data files the same way and ``sample``
            writes latitude and longitude.
        prior: the prior the data (parameters ``theta`` of a posterior estimator) were
            drawn from, a :class:`~pushforward.sbi.priors.Prior` or a JSON file
            (``train --prior``). Its dimension must be the data's and every row must lie
            in its support. A box-uniform prior makes the model learn the logit of the
            box (:class:`~pushforward.transforms.box_logit.BoxLogitStandardize`), so every
            sample lies inside the box and ``log_prob`` is the density on the box; the run
            records the prior for ``eval`` and ``diagnose``.
        init: a trained run whose weights and preprocessing the model starts from
            (``train --init RUN``), such as an ``fm`` run fine-tuned by maximum
            likelihood as ``ffjord``. Every weight of the new model must be in that
            run with the same shape (:func:`~pushforward.train.init_weights.apply_initial_weights`),
            and its data sizes must be this data's; the run records where it started.

    Returns:
        A :class:`RunResult`.

    Example:
        >>> import tempfile, pushforward
        >>> with tempfile.TemporaryDirectory() as out:
        ...     result = pushforward.train_run(
        ...         out, "builtin:moons", "nsf", train={"steps": 20, "n": 500},
        ...         options={"transforms": 2, "hidden": [16]},
        ...     )
        >>> result.history.steps_done
        20
    """
    name = model
    builder_for(name)  # an unknown name is an error listing the valid ones
    options = dict(options or {})
    if isinstance(train, TrainingConfig):
        config = train
    else:
        config = TrainingConfig.resolve(name, None, train)
    check_model_options(name, options, source)
    for option in config.target_options_set():
        raise ValueError(
            f"training option {option!r} applies to a run fitted to a target (--target), "
            "not to data"
        )
    if check_coordinates(coordinates) != "native" and data_kind(name) != "points":
        # Before any data is read.
        raise ValueError(
            f"coordinates={coordinates!r} (--latlon) gives points on the sphere; model "
            f"{name!r} models {data_kind(name)}, use rfm (manifold='sphere') or sphere-nsf"
        )
    if isinstance(prior, str | os.PathLike):
        prior = load_prior(prior)  # before any data is read
    if prior is not None and data_kind(name) != "vectors":
        raise ValueError(f"a prior applies to vector data; model {name!r} models {data_kind(name)}")
    initial = None
    if init is not None:
        if prior is not None or source is not None:
            flag = "--prior" if prior is not None else "--source"
            raise ValueError(
                f"--init starts from a run's weights and units, which {flag} cannot change "
                f"(train the initial run with {flag})"
            )
        initial = read_initial_weights(init)  # before any data is read
    out = Path(out)
    previous = previous_run(out, resume)

    tokens = data_kind(name) == "tokens"
    if tokens:
        dataset = read_tokens(data, options.get("vocab"), config.n, config.seed)
        assert dataset.vocab is not None
        options["vocab"] = list(dataset.vocab)
    else:
        dataset = read_data(data, config.n, config.seed, coordinates)
    points = data_kind(name) == "points"
    if points and dataset.domain in ("sphere", "torus", "so3") and "manifold" in keywords(name):
        # A built-in set on a manifold names it, so the model need not be told.
        options.setdefault("manifold", dataset.domain)
    box = getattr(dataset.toy, "low", None), getattr(dataset.toy, "high", None)
    if points and dataset.domain == "box" and "low" in keywords(name):
        # A built-in set in a box names its bounds.
        options.setdefault("low", [float(v) for v in torch.as_tensor(box[0]).reshape(-1)])
        options.setdefault("high", [float(v) for v in torch.as_tensor(box[1]).reshape(-1)])
    # Images (n, C, H, W) are modelled as vectors of C*H*W values by the vector flows;
    # eval and sample reshape in and out.
    values = dataset.values.reshape(dataset.values.shape[0], -1)
    context_values, layout = read_context(context, values.shape[0])
    if layout is not None and len(layout) > 1 and options.get("embedding") in ("set", "cnn"):
        # A context of rows (elements, features) says its layout to the embedding.
        options.setdefault("observation_shape", list(layout))
    train_rows, val_rows = validation_split(values.shape[0], config.validation, config.seed)
    source_set = source_values = None
    if source is not None and tokens:
        raise ValueError(f"model {name!r} models tokens; --source applies to vector data")
    if source is not None:
        # seed + 1 draws the evaluation sample of a built-in set; the source is a third draw.
        source_set = read_source(source, n=config.n, seed=config.seed + 2)
        source_values = source_set.values.reshape(len(source_set), -1)
        if source_values.shape[1] != values.shape[1]:
            raise ValueError(
                f"source '{source}' has {source_values.shape[1]} values per row but the "
                f"data has {values.shape[1]}; the source and the data must have the same "
                "number of features"
            )
        options = {**options, "base": "empirical", "source_rows": int(source_values.shape[0])}
    # Fitted in float64 on the training rows; the source has its own statistics, so
    # the flow works in standardised units at both ends.
    context_rows = None if context_values is None else context_values[train_rows]
    if points and source is not None:
        raise ValueError(f"model {name!r} models points on a domain; --source applies to vectors")
    if tokens or points:
        # Tokens and points on a manifold or in a box are never standardised (a
        # standardisation would move them off their domain); a context still is.
        preprocessing = Preprocessing(
            context=None if context_rows is None else Standardize.fitted(context_rows)
        )
    else:
        preprocessing = Preprocessing.standardizing(values[train_rows], context_rows, source_values)
    if prior is not None:
        check_theta_in_prior(values, prior, "the data")
        if prior.low is not None and prior.high is not None:
            # Trained in the logit of the box: samples cannot leave it.
            preprocessing.data = BoxLogitStandardize.fitted(
                values[train_rows], prior.low, prior.high
            )
    width = 0 if context_values is None else context_values.shape[1]
    if not (tokens or points) and context_values is None and source is None and initial is None:
        _default_tails(name, options, dataset, previous)
    # The initial weights come from the seed too, so a run is reproducible end to end.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        trained = build(name, features=values.shape[1], context=width, **options)
    if not trained.trains_from_data and getattr(trained, "has_path_weights", False):
        raise ValueError(
            f"model {name!r} samples a target and has no density of data points; fit it to "
            "a log-density instead (pushforward train --target FILE.py:NAME|builtin:NAME)"
        )
    if not trained.trains_from_data:
        raise ValueError(
            f"model {name!r} is not trained from data; make it from a trained run "
            f"(pushforward {'distill' if name == 'distilled' else 'reflow'} RUN_DIR --out ...)"
        )
    embedding = trained.context_embedding
    if embedding is not None and context_rows is not None:
        # Statistics tied the way the embedding is symmetric (shared across a set's elements).
        standardization = getattr(embedding, "context_standardization", None)
        if callable(standardization):
            preprocessing.context = Standardize(*standardization(context_rows))
    trained.set_preprocessing(preprocessing)
    if initial is not None:
        apply_initial_weights(trained, name, initial, int(values.shape[1]), width)
        preprocessing = trained.preprocessing
    if points:
        # Rows off the domain are refused naming the first one; torus angles are wrapped.
        check_points = getattr(trained, "check_points", None)
        if not callable(check_points):
            raise TypeError(f"model {name!r} models points but has no check_points method")
        reference = trained._reference()
        dtype = values.dtype if reference is None else reference.dtype
        values = check_points(values.to(dtype))
    if source_values is not None:
        base = getattr(trained, "base", None)
        if not isinstance(base, Empirical):
            raise TypeError(f"model {name!r} built with base 'empirical' has no empirical source")
        base.assign_rows(preprocessing.encode_source(source_values).float())

    _initialize_from_training_split(trained, values[train_rows], context_rows)

    has_validation = val_rows is not None
    steps, patience = config.budget(has_validation)
    resolved = _resolved_config(
        name, trained, dataset, values, context, train_rows, val_rows, preprocessing, config
    )
    if coordinates != "native":
        resolved["data"]["coordinates"] = coordinates
    if prior is not None:
        resolved["prior"] = prior.description()
    if initial is not None:
        resolved["init"] = initial.description()
    eval_every = config.validation_every(int(train_rows.numel()), context_values is not None)
    resolved["train"]["budget"] = {
        "steps": steps,
        "patience": patience,
        "eval_every": eval_every,
        "until": "convergence" if config.converges and has_validation else "steps",
    }
    if source_set is not None and source_values is not None:
        resolved["source"] = {
            "data": source_set.source,
            "rows": int(source_values.shape[0]),
            "event_shape": list(source_set.event_shape),
        }
    if previous is not None:
        _check_resumable(out, previous, resolved)
    where = placement()
    if where.distributed:
        # Under torchrun every rank checks out above before rank 0 writes into it.
        torch.distributed.barrier()
    if where.writes:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, resolved)

    validation = None
    if val_rows is not None:
        validation = (
            values[val_rows],
            None if context_values is None else context_values[val_rows],
        )
    metrics = MetricsLog(
        out / METRICS_FILE, config.log_every, None if validation is None else eval_every
    )
    history = fit(
        trained,
        values[train_rows],
        None if context_values is None else context_values[train_rows],
        steps=steps,
        batch_size=config.batch_size,
        lr=config.lr,
        warmup=min(config.warmup, max(steps // 10, 1)),
        clip=config.clip,
        weight_decay=config.weight_decay,
        ema=config.ema,
        validation=validation,
        eval_every=eval_every,
        patience=patience,
        seed=config.seed,
        log_every=config.log_every,
        callbacks=[*([metrics] if where.writes else []), *callbacks],
        quiet=quiet,
        checkpoint_dir=out / CHECKPOINTS,
        checkpoint_every=config.checkpoint_every,
        resume=resume,
        prepare_workers=config.prepare_workers,
    )
    # The statistics were fitted and applied in float64; the model keeps them in its dtype.
    reference = trained._reference()
    if reference is not None:
        trained.preprocessing.to(reference.dtype)
    resolved["train"]["result"] = {
        "steps_done": history.steps_done,
        "stopped_early": history.stopped_early,
        "best_step": history.best_step,
        "weights": history.weights,
    }
    if where.writes:
        write_config(out, resolved)
        save(trained, out)
    return RunResult(trained, history, out, resolved)


INITIALIZATION_ROWS = 100_000
"""The most training rows the initialisation of :func:`_initialize_from_training_split` sees."""


TAIL_ADAPTIVE_BY_DEFAULT = ("nsf", "nsf-ar")
"""Models whose unconditional runs on vector data default to ``tails="adaptive"``."""


def _default_tails(
    name: str, options: dict[str, Any], dataset: Dataset, previous: dict[str, Any] | None
) -> None:
    """Sets ``tails="adaptive"`` for a spline flow fitted to vector data, unless told otherwise.

    Measured by ``bench/density_quality.py`` (KL to exact densities, 3 seeds,
    through ``pushforward train``): marginal tail-adaptive bases (Laszkiewicz et al.
    2022) cut ``nsf``'s KL several-fold on curved and heavy-tailed targets and are
    level or better on mixtures in 10-D and 20-D. The default applies only where the
    option can: no ``base``, ``linear`` or ``tail_df`` given, rows of features (not
    images). A resumed run keeps the tails it was started with.
    """
    if name not in TAIL_ADAPTIVE_BY_DEFAULT or "tails" in options:
        return
    if any(key in options for key in ("base", "linear", "tail_df")):
        return
    if len(dataset.event_shape) != 1:
        return
    if previous is not None:
        model = previous.get("model", {})
        if model.get("name") == name:
            options["tails"] = model.get("options", {}).get("tails", "gaussian")
        return
    options["tails"] = "adaptive"


def _initialize_from_training_split(model: Model, data: Tensor, context: Tensor | None) -> None:
    """Initialises a model whose data-dependent layers need more rows than a batch.

    A layer says so with ``initializes_from_training_set``: the marginal tail
    indices of a tail-adaptive flow, where Hill's estimator on a first batch of 512
    rows would have 23 order statistics. The model is then initialised once
    (:meth:`~pushforward.model.Model.initialize`) from the first
    :data:`INITIALIZATION_ROWS` training rows (a seeded random subset: the split
    is a permutation), and every awaiting layer, ActNorm too, sees them; the
    engine's first-batch initialisation then finds nothing left to do, and a resumed
    run takes the values from its checkpoint. Other models are left to the engine.
    """
    if not any(
        getattr(module, "awaits_data", False)
        and getattr(module, "initializes_from_training_set", False)
        for module in model.modules()
    ):
        return
    rows = preprocessed_rows(
        model,
        Rows(
            data[:INITIALIZATION_ROWS],
            None if context is None else context[:INITIALIZATION_ROWS],
        ),
    )
    model.initialize_preprocessed(rows.x, rows.context)


def _resolved_config(
    name: str,
    model: Model,
    dataset: Dataset,
    values: Tensor,
    context: DataInput | None,
    train_rows: Tensor,
    val_rows: Tensor | None,
    preprocessing: Preprocessing,
    config: TrainingConfig,
) -> dict[str, Any]:
    mean, std = _statistics(preprocessing.data)
    context_mean, context_std = _statistics(preprocessing.context)
    data_record: dict[str, Any] = {
        "source": dataset.source,
        "context": context if context is None or isinstance(context, str) else "array",
        "rows": int(values.shape[0]),
        "event_shape": list(dataset.event_shape),
        "train_rows": int(train_rows.numel()),
        "validation_rows": 0 if val_rows is None else int(val_rows.numel()),
        "levels": dataset.levels,
    }
    if dataset.vocab is not None:
        data_record["vocab"] = list(dataset.vocab)
    resolved: dict[str, Any] = {
        **run_header(name, model.config["options"]),
        "data": data_record,
        "standardization": {
            "mean": None if mean is None else _as_list(mean),
            "std": None if std is None else _as_list(std),
            # Losses in metrics.jsonl are in standardised units; add this to get
            # the negative log-likelihood in the data's original units.
            "log_std_sum": 0.0 if std is None else float(torch.log(std).sum()),
            "context_mean": None if context_mean is None else _as_list(context_mean),
            "context_std": None if context_std is None else _as_list(context_std),
        },
        "train": config.as_dict(),
    }
    source_mean, source_std = _statistics(preprocessing.source)
    if source_mean is not None and source_std is not None:
        resolved["standardization"]["source_mean"] = _as_list(source_mean)
        resolved["standardization"]["source_std"] = _as_list(source_std)
    return resolved


def _statistics(part: object) -> tuple[Any, Any]:
    """A standardisation's mean and std (``None, None`` for the identity)."""
    if isinstance(part, Standardize):
        return part.mean, part.std
    return None, None


def _check_resumable(out: Path, previous: dict[str, Any], resolved: dict[str, Any]) -> None:
    check_same_model(out, previous, resolved)
    if previous["data"] != resolved["data"]:
        raise ValueError(f"cannot resume '{out}': it was trained on other data")
    if previous.get("source") != resolved.get("source"):
        raise ValueError(f"cannot resume '{out}': it was trained from another --source")
    if previous.get("prior") != resolved.get("prior"):
        raise ValueError(f"cannot resume '{out}': it was trained with another --prior")
