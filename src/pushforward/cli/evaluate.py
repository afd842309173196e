"""``pushforward eval`` and ``pushforward sample``: use a trained run in the data's units."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pushforward.cli.evaluate_target import evaluate_target, run_target
from pushforward.cli.evaluate_tokens import evaluate_tokens
from pushforward.cli.sample_mcmc import run_sample_mcmc
from pushforward.data import (
    BUILTIN_PREFIX,
    bits_per_dim,
    load_context_rows,
    load_dataset,
    unit_to_latlon_rows,
)
from pushforward.geometry import Sphere
from pushforward.inference import declared_fields
from pushforward.metrics import energy_distance, sliced_wasserstein
from pushforward.model import Model
from pushforward.serialization import atomic_write_bytes, npy_bytes
from pushforward.token_model import TokenModel
from pushforward.train.run_directory import open_run, read_config
from pushforward.train.run_inputs import read_source

SAMPLE_OPTIONS = tuple(declared_fields("SampleOptions"))
"""The flags of ``sample``: every option a model's ``sample_options`` declares."""
EVAL_OPTIONS = tuple(declared_fields("LogProbOptions"))
"""The flags of ``eval``: every option a model's ``log_prob_options`` declares."""

EVAL_BATCH = 4096

SAMPLE_METRIC_POINTS = 10_000
"""Rows (a seeded random subset of samples and of data) the energy distance compares:
its cost grows as the square of the rows, about 2 s for 10,000 2-D rows on one core."""

SLICED_PROJECTIONS = 128


def default_eval_seed(config: dict[str, Any]) -> int:
    """The seed built-in toys are drawn with by default: the run's training seed plus one,
    so the evaluation sample is never the one the run was trained on (a fixed default
    would be exactly the training sample of a run trained with that seed)."""
    return int(config.get("train", {}).get("seed", 0)) + 1


def _dtype(model: Model) -> torch.dtype:
    reference = next(iter(model.parameters()), None)
    return torch.float32 if reference is None else reference.dtype


def context_rows(path: str | None, model: Model) -> Tensor | None:
    """The context file of a run's command as rows in the model's dtype, checked against
    the model (``None`` for an unconditional run without one)."""
    if path is None:
        if model.context_features:
            raise ValueError(
                f"this run is conditional on {model.context_features} context features; "
                "pass --context FILE"
            )
        return None
    if not model.context_features:
        raise ValueError("this run is unconditional; do not pass --context")
    values = torch.from_numpy(load_context_rows(path)[0]).to(_dtype(model))
    if values.shape[1] != model.context_features:
        raise ValueError(
            f"context file '{path}' has {values.shape[1]} columns, "
            f"the run was trained with {model.context_features}"
        )
    return values


def method_options(
    model: Model, method: str, arguments: argparse.Namespace | None, names: tuple[str, ...]
) -> dict[str, Any]:
    """The flags among ``names`` given on the command line, checked against the options
    the model declares for ``method`` (a flow takes no ``--solver``, say)."""
    given = {
        key: getattr(arguments, key)
        for key in names
        if arguments is not None and getattr(arguments, key, None) is not None
    }
    if not given:
        return {}
    declared = model.log_prob_options if method == "log_prob" else model.sample_options
    valid = declared.names()
    for key in given:
        if key not in valid:
            name = getattr(model, "config", {}).get("model", type(model).__name__)
            accepted = ", ".join("--" + v for v in valid if v in names) or "none"
            raise ValueError(
                f"model {name!r} takes no --{key} for {method} (options it takes: {accepted})"
            )
    return given


def log_likelihoods(
    model: Model, x: Tensor, context: Tensor | None, options: dict[str, Any] | None = None
) -> Tensor:
    """``model.log_prob`` of every row, in chunks, without gradients."""
    pieces = []
    with torch.no_grad():
        for start in range(0, x.shape[0], EVAL_BATCH):
            chunk = None if context is None else context[start : start + EVAL_BATCH]
            pieces.append(model.log_prob(x[start : start + EVAL_BATCH], chunk, **(options or {})))
    return torch.cat(pieces)


ESTIMATOR_DRAWS = 10
"""Independent draws of an estimated log-likelihood ``eval`` averages by default."""


def estimated_log_likelihoods(
    model: Model, x: Tensor, context: Tensor | None, options: dict[str, Any], seed: int
) -> tuple[Tensor, dict[str, Any]]:
    r"""The log-likelihood of every row where the model may only estimate it (a residual
    flow's ``log_prob_estimate``), and what ``eval`` reports of the estimator.

    In estimate mode each row's value is the mean of ``--draws`` (default
    :data:`ESTIMATOR_DRAWS`) unbiased draws, seeded by ``seed``; the keys are
    ``logdet: "estimate"``, ``estimator_draws`` and ``nll_estimator_se``, the standard
    error of ``nll`` over the draws (of the per-draw means of all rows). In exact mode
    the values are exact and the key is ``logdet: "exact"``.

    Returns:
        ``(n,)`` float64 log-likelihoods and the keys to add to the result.
    """
    draws = options.get("draws") or ESTIMATOR_DRAWS
    generator = torch.Generator().manual_seed(seed)
    pieces, exact = [], True
    with torch.no_grad():
        for start in range(0, x.shape[0], EVAL_BATCH):
            chunk = None if context is None else context[start : start + EVAL_BATCH]
            estimate = model.log_prob_estimate(  # type: ignore[operator]
                x[start : start + EVAL_BATCH],
                chunk,
                draws=draws,
                logdet=options.get("logdet"),
                probes=options.get("probes"),
                generator=generator,
            )
            pieces.append(estimate.draws.double())
            exact = bool(estimate.exact)
    values = torch.cat(pieces, dim=1)
    if exact:
        return values.mean(dim=0), {"logdet": "exact"}
    per_draw = -values.mean(dim=1)
    keys = {
        "logdet": "estimate",
        "estimator_draws": int(values.shape[0]),
        "nll_estimator_se": float(per_draw.std() / math.sqrt(values.shape[0])),
    }
    return values.mean(dim=0), keys


def data_coordinates(config: dict[str, Any], data: str, latlon: bool = False) -> str:
    """How to read the data file ``data`` for a run: ``"latlon"`` when asked, or for a file
    (not a built-in set) given to a run trained with ``--latlon``; else ``"native"``."""
    if latlon:
        return "latlon"
    trained = config["data"].get("coordinates", "native")
    return "native" if str(data).startswith(BUILTIN_PREFIX) else trained


def as_latlon(model: Model, samples: Tensor) -> Tensor:
    """Samples of a run on the sphere S^2 as rows of latitude and longitude in degrees."""
    manifold = getattr(model, "manifold", None)
    if not isinstance(manifold, Sphere) or manifold.ambient != 3:
        raise ValueError(
            "--latlon writes points of the sphere S^2 as latitude and longitude; this run "
            f"models {manifold if manifold is not None else 'vectors'}"
        )
    return unit_to_latlon_rows(samples.double())


def run_eval(arguments: argparse.Namespace) -> int:
    """Prints one JSON object of metrics on standard output."""
    spec = getattr(arguments, "target", None)
    fitted = "target" in read_config(arguments.run)
    if spec is not None or fitted:
        config, model = open_run(arguments.run)
        seed = default_eval_seed(config) if arguments.seed is None else arguments.seed
        result = evaluate_target(config, model, spec, arguments.n, arguments.data, seed)
        print(json.dumps(result))
        return 0
    if arguments.data is None:
        raise ValueError("give --data FILE|builtin:NAME to evaluate a run trained on data")
    result = evaluate_run(
        arguments.run, arguments.data, arguments.context, arguments.n, arguments.seed, arguments
    )
    print(json.dumps(result))
    return 0


def evaluate_run(
    run: str,
    data: str,
    context_file: str | None = None,
    n: int | None = None,
    seed: int | None = None,
    solver_arguments: argparse.Namespace | None = None,
) -> dict[str, Any]:
    r"""The metrics ``pushforward eval`` prints: ``nll``, ``nll_se``, ``n``, and ``kl``
    (built-in toys with an exact entropy) or ``bpd`` (image data); a model whose
    log-likelihood may be an estimate adds what :func:`estimated_log_likelihoods` says
    of it (``logdet``, and ``nll_estimator_se`` when estimated).

    ``nll`` is :math:`-\frac1n \sum_j \log p(x_j \mid c_j)` in nats per example,
    in the data's original units; ``nll_se`` its standard error.

    A model without ``log_prob`` (a one-step distilled model, a flow from an
    empirical source) gets sample metrics instead (:func:`sample_metrics`:
    ``energy_distance``, ``sliced_wasserstein``, ``metric_rows``, with ``n`` and
    ``data``); a model with one gets them as well when ``solver_arguments``
    has ``sample_metrics`` set (``eval --sample-metrics``).
    """
    config, model = open_run(run)
    with_samples = bool(getattr(solver_arguments, "sample_metrics", False))
    if isinstance(model, TokenModel):
        # --steps sets the CTMC sampler of the sample statistics; the rest the bound.
        names = tuple(name for name in EVAL_OPTIONS if name != "steps")
        options = method_options(model, "log_prob", solver_arguments, names)
        token_sampling = method_options(model, "sample", solver_arguments, ("steps",))
        seed = default_eval_seed(config) if seed is None else seed
        context = context_rows(context_file, model)
        return evaluate_tokens(config, model, data, context, n, seed, options, token_sampling)
    if model.has_log_prob:
        options = method_options(model, "log_prob", solver_arguments, EVAL_OPTIONS)
        # The fixed-step flags set the sampling solve too; tolerances are log_prob's.
        sampling: dict[str, Any] = {k: options[k] for k in ("solver", "steps") if k in options}
    else:
        options = {}
        sampling = method_options(model, "sample", solver_arguments, EVAL_OPTIONS)
    seed = default_eval_seed(config) if seed is None else seed
    coordinates = data_coordinates(config, data, getattr(solver_arguments, "latlon", False))
    dataset = load_dataset(data, n=n, seed=seed, coordinates=coordinates)
    expected = tuple(config["data"]["event_shape"])
    if dataset.event_shape != expected:
        raise ValueError(
            f"data has {math.prod(dataset.event_shape)} values per row (shape "
            f"{dataset.event_shape}) but the run was trained on {expected}"
        )
    x = dataset.values.to(_dtype(model)).reshape(len(dataset), *model.event_shape)
    context = context_rows(context_file, model)
    if context is not None and context.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"context file '{context_file}' has {context.shape[0]} rows "
            f"but the data has {x.shape[0]}; pass one row per data row, or a single row"
        )
    if not model.has_log_prob:
        measured: dict[str, Any] = {"n": int(x.shape[0]), "data": dataset.source}
        measured.update(sample_metrics(model, x, context, seed, sampling))
        return measured
    estimator: dict[str, Any] = {}
    if callable(getattr(model, "log_prob_estimate", None)):
        log_prob, estimator = estimated_log_likelihoods(model, x, context, options, seed)
    else:
        log_prob = log_likelihoods(model, x, context, options).double()
    nll = -log_prob
    n = int(nll.numel())
    result: dict[str, Any] = {
        "nll": float(nll.mean()),
        "nll_se": float(nll.std() / math.sqrt(n)) if n > 1 else 0.0,
        "n": n,
        "data": dataset.source,
        **estimator,
    }
    if dataset.toy is not None and dataset.toy.entropy is not None:
        result["entropy"] = float(dataset.toy.entropy)
        result["kl"] = result["nll"] - result["entropy"]
    levels = dataset.levels or config["data"].get("levels")
    if levels:
        result["bpd"] = float(bits_per_dim(result["nll"], math.prod(expected), levels))
    if not math.isfinite(result["nll"]):
        result["nll"] = None
    if with_samples:
        result.update(sample_metrics(model, x, context, seed, sampling))
    return result


def sample_metrics(
    model: Model,
    x: Tensor,
    context: Tensor | None,
    seed: int,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    r"""Two-sample distances between the model's samples and data ``x``.

    One sample is drawn per data row (with that row's context, so a conditional
    model is compared on the data's mix of contexts), under ``seed``. Returns
    ``energy_distance`` (the unbiased energy distance,
    :math:`2E\lVert X - Y\rVert - E\lVert X - X'\rVert - E\lVert Y - Y'\rVert`,
    on a seeded subset of at most :data:`SAMPLE_METRIC_POINTS` rows of each),
    ``sliced_wasserstein`` (the sliced squared 2-Wasserstein distance over
    :data:`SLICED_PROJECTIONS` seeded directions, on all rows) and
    ``metric_rows`` (the rows the energy distance used). Both are in the data's
    original units and 0 for a perfect model, up to sampling noise.

    References: Szekely & Rizzo (2013), Energy statistics; Bonneel et al. (2015),
    Sliced and Radon Wasserstein Barycenters of Measures.

    Args:
        model: a model that samples.
        x: ``(n, *event)`` data.
        context: ``(n, context)``, one row, or ``None``.
        seed: seeds the samples, the subset and the directions.
        options: keyword options of ``model.sample`` (``solver``, ``steps``).

    Returns:
        The metrics as a JSON-ready dict.
    """
    n = x.shape[0]
    if n < 2:
        raise ValueError("sample metrics need at least 2 data rows")
    pieces = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, n, EVAL_BATCH):
            rows = min(EVAL_BATCH, n - start)
            chunk = context
            if context is not None and context.shape[0] != 1:
                chunk = context[start : start + rows]
            pieces.append(model.sample(rows, chunk, **(options or {})))
    samples = torch.cat(pieces).double().reshape(n, -1)
    data = x.double().reshape(n, -1)
    generator = torch.Generator().manual_seed(seed)
    used = min(n, SAMPLE_METRIC_POINTS)
    subset = torch.randperm(n, generator=generator)[:used]
    return {
        "energy_distance": energy_distance(samples[subset], data[subset]),
        "sliced_wasserstein": sliced_wasserstein(
            samples, data, projections=SLICED_PROJECTIONS, generator=generator
        ),
        "metric_rows": used,
    }


def run_sample(arguments: argparse.Namespace) -> int:
    """Writes samples in the data's original units to a ``.npy`` file."""
    if getattr(arguments, "mcmc", None) is not None:
        return run_sample_mcmc(arguments)
    if getattr(arguments, "target", None) is not None or getattr(arguments, "chains", None):
        raise ValueError("--target, --chains and --warmup apply to --mcmc KERNEL")
    if getattr(arguments, "observation", None) is not None or getattr(arguments, "prior", None):
        raise ValueError("--observation and --prior sample a likelihood run with --mcmc mala|hmc")
    source_file = getattr(arguments, "source", None)
    if source_file is not None:
        return run_transport(arguments, source_file)
    if arguments.n is None:
        raise ValueError("give -n N samples (or --source FILE, or --mcmc KERNEL)")
    config, model = open_run(arguments.run)
    options = method_options(model, "sample", arguments, SAMPLE_OPTIONS)
    if getattr(model, "has_path_weights", False):
        # A stochastic flow samples through the target it was fitted to.
        options["target"] = run_target(config, None, None)
    if arguments.n < 1:
        raise ValueError(f"-n must be a positive number of samples, got {arguments.n}")
    out = Path(arguments.out)
    if out.suffix.lower() != ".npy":
        raise ValueError(f"--out '{out}' must end in .npy")
    context = context_rows(arguments.context, model)
    n = arguments.n
    if context is not None:
        # Row m of the context file conditions output rows m*n ... (m+1)*n - 1.
        context = context.repeat_interleave(n, dim=0)
        n = context.shape[0]
    with torch.random.fork_rng():
        torch.manual_seed(arguments.seed)
        samples = model.sample(n, context, **options)
    # Tokens stay integers (int64); values are written in float64.
    values = samples if not samples.is_floating_point() else samples.double()
    if arguments.latlon or config["data"].get("coordinates") == "latlon":
        array = as_latlon(model, values).numpy()
    else:
        array = values.reshape(n, *config["data"]["event_shape"]).numpy()
    buffer = npy_bytes(array)
    atomic_write_bytes(out, buffer)
    print(f"wrote {array.shape[0]} samples of shape {tuple(array.shape[1:])} to {out}")
    return 0


def run_transport(arguments: argparse.Namespace, source_file: str) -> int:
    """``sample --source FILE``: maps every row of ``FILE`` (the source's original units)
    through a run trained with ``--source`` and writes the mapped rows, in order, to ``.npy``."""
    config, model = open_run(arguments.run)
    if model.preprocessing.source is None or not callable(getattr(model, "transport", None)):
        raise ValueError(
            f"run '{arguments.run}' was not trained from a source data set (train --source), "
            "so it has no source to map from; draw samples with -n N"
        )
    options = method_options(model, "transport", arguments, SAMPLE_OPTIONS)
    out = Path(arguments.out)
    if out.suffix.lower() != ".npy":
        raise ValueError(f"--out '{out}' must end in .npy")
    dataset = read_source(source_file, seed=arguments.seed)
    n = len(dataset)
    x0 = dataset.values.reshape(n, -1)
    if x0.shape[1] != model.features:
        raise ValueError(
            f"source '{source_file}' has {x0.shape[1]} values per row, "
            f"the run maps rows of {model.features}"
        )
    x0 = x0.to(_dtype(model)).reshape(n, *model.event_shape)
    context = context_rows(arguments.context, model)
    if context is not None and context.shape[0] not in (1, n):
        raise ValueError(
            f"context file '{arguments.context}' has {context.shape[0]} rows but source "
            f"'{source_file}' has {n}; pass one row per source row, or a single row"
        )
    with torch.no_grad():
        mapped = model.transport(x0, context, **options)  # type: ignore[operator]
    array = mapped.double().reshape(n, *config["data"]["event_shape"]).numpy()
    atomic_write_bytes(out, npy_bytes(array))
    print(f"mapped {n} rows of '{source_file}' to {out}")
    return 0
