"""``pushforward eval`` and ``pushforward sample``: use a trained run in the data's units."""

from __future__ import annotations

import argparse
import inspect
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pushforward.cli.run_directory import read_config
from pushforward.data import bits_per_dim, load_array, load_dataset
from pushforward.model import Model
from pushforward.serialization import atomic_write_bytes, load
from pushforward.standardized import StandardizedModel

SAMPLE_OPTIONS = ("solver", "steps", "guidance")
EVAL_OPTIONS = ("solver", "steps", "atol", "rtol", "divergence")

EVAL_BATCH = 4096


def default_eval_seed(config: dict[str, Any]) -> int:
    """The seed built-in toys are drawn with by default: the run's training seed plus one,
    so the evaluation sample is never the one the run was trained on (a fixed default
    would be exactly the training sample of a run trained with that seed)."""
    return int(config.get("train", {}).get("seed", 0)) + 1


def open_run(directory: str) -> tuple[dict[str, Any], Model]:
    """The run's config and its model (original units), checked against each other."""
    config = read_config(directory)
    if not (Path(directory) / "model.json").is_file():
        raise FileNotFoundError(
            f"run directory '{directory}' has no trained model yet (training did not finish); "
            "continue it with pushforward train ... --resume"
        )
    model = load(directory)
    saved = getattr(model, "config", {})
    if saved.get("model") != config["model"]["name"]:
        raise ValueError(
            f"run directory '{directory}' is inconsistent: config.json names model "
            f"{config['model']['name']!r} but model.json holds {saved.get('model')!r}"
        )
    return config, model


def _dtype(model: Model) -> torch.dtype:
    reference = next(iter(model.parameters()), None)
    return torch.float32 if reference is None else reference.dtype


def _context(path: str | None, model: Model) -> Tensor | None:
    if path is None:
        if model.context_features:
            raise ValueError(
                f"this run is conditional on {model.context_features} context features; "
                "pass --context FILE"
            )
        return None
    if not model.context_features:
        raise ValueError("this run is unconditional; do not pass --context")
    values = torch.from_numpy(load_array(path, ndim=2).copy()).to(_dtype(model))
    if values.shape[1] != model.context_features:
        raise ValueError(
            f"context file '{path}' has {values.shape[1]} columns, "
            f"the run was trained with {model.context_features}"
        )
    return values


def method_options(
    model: Model, method: str, arguments: argparse.Namespace | None, names: tuple[str, ...]
) -> dict[str, Any]:
    """The flags among ``names`` given on the command line, checked against the keyword
    options ``model.<method>`` takes (a flow takes no ``--solver``, say)."""
    given = {
        key: getattr(arguments, key)
        for key in names
        if arguments is not None and getattr(arguments, key, None) is not None
    }
    if not given:
        return {}
    inner = model.model if isinstance(model, StandardizedModel) else model
    parameters = inspect.signature(getattr(inner, method)).parameters.values()
    valid = [p.name for p in parameters if p.kind == p.KEYWORD_ONLY]
    for key in given:
        if key not in valid:
            name = getattr(model, "config", {}).get("model", type(inner).__name__)
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


def run_eval(arguments: argparse.Namespace) -> int:
    """Prints one JSON object of metrics on standard output."""
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
    (built-in toys with an exact entropy) or ``bpd`` (image data).

    ``nll`` is :math:`-\frac1n \sum_j \log p(x_j \mid c_j)` in nats per example,
    in the data's original units; ``nll_se`` its standard error.
    """
    config, model = open_run(run)
    options = method_options(model, "log_prob", solver_arguments, EVAL_OPTIONS)
    seed = default_eval_seed(config) if seed is None else seed
    dataset = load_dataset(data, n=n, seed=seed)
    expected = tuple(config["data"]["event_shape"])
    if dataset.event_shape != expected:
        raise ValueError(
            f"data has {math.prod(dataset.event_shape)} values per row (shape "
            f"{dataset.event_shape}) but the run was trained on {expected}"
        )
    x = dataset.values.to(_dtype(model)).reshape(len(dataset), *model.event_shape)
    context = _context(context_file, model)
    if context is not None and context.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"context file '{context_file}' has {context.shape[0]} rows "
            f"but the data has {x.shape[0]}; pass one row per data row, or a single row"
        )
    log_prob = log_likelihoods(model, x, context, options).double()
    nll = -log_prob
    n = int(nll.numel())
    result: dict[str, Any] = {
        "nll": float(nll.mean()),
        "nll_se": float(nll.std() / math.sqrt(n)) if n > 1 else 0.0,
        "n": n,
        "data": dataset.source,
    }
    if dataset.toy is not None and dataset.toy.entropy is not None:
        result["entropy"] = float(dataset.toy.entropy)
        result["kl"] = result["nll"] - result["entropy"]
    levels = dataset.levels or config["data"].get("levels")
    if levels:
        result["bpd"] = float(bits_per_dim(result["nll"], math.prod(expected), levels))
    if not math.isfinite(result["nll"]):
        result["nll"] = None
    return result


def run_sample(arguments: argparse.Namespace) -> int:
    """Writes samples in the data's original units to a ``.npy`` file."""
    config, model = open_run(arguments.run)
    options = method_options(model, "sample", arguments, SAMPLE_OPTIONS)
    if arguments.n < 1:
        raise ValueError(f"-n must be a positive number of samples, got {arguments.n}")
    out = Path(arguments.out)
    if out.suffix.lower() != ".npy":
        raise ValueError(f"--out '{out}' must end in .npy")
    context = _context(arguments.context, model)
    n = arguments.n
    if context is not None:
        # Row m of the context file conditions output rows m*n ... (m+1)*n - 1.
        context = context.repeat_interleave(n, dim=0)
        n = context.shape[0]
    with torch.random.fork_rng():
        torch.manual_seed(arguments.seed)
        samples = model.sample(n, context, **options)
    array = samples.double().reshape(n, *config["data"]["event_shape"]).numpy()
    buffer = _npy_bytes(array)
    atomic_write_bytes(out, buffer)
    print(f"wrote {array.shape[0]} samples of shape {tuple(array.shape[1:])} to {out}")
    return 0


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()
