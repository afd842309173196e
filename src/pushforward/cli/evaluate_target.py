"""``pushforward eval RUN --target``: importance-sampling diagnostics of a flow against a target."""

from __future__ import annotations

from typing import Any

import torch

from pushforward.data import load_array
from pushforward.model import Model
from pushforward.sampling.importance import evaluate_sampler, json_float
from pushforward.sampling.target import Target
from pushforward.sampling.target_files import load_target

DEFAULT_SAMPLES = 20_000


def run_target(config: dict[str, Any], spec: str | None, features: int | None) -> Target:
    """The target to evaluate against: ``spec`` if given, else the one the run recorded."""
    recorded = config.get("target") or {}
    if spec is not None:
        return load_target(spec, features)
    if spec is None:
        spec = recorded.get("spec")
        if spec is None:
            if recorded:
                raise ValueError(
                    "this run was fitted to a target given as a Python object; pass "
                    "--target FILE.py:NAME or builtin:NAME"
                )
            raise ValueError("this run was trained on data; --target needs a run of train --target")
    features = features if features is not None else recorded.get("features")
    return load_target(spec, features)


def evaluate_target(
    config: dict[str, Any],
    model: Model,
    spec: str | None,
    n: int | None,
    data: str | None,
    seed: int,
    features: int | None = None,
) -> dict[str, Any]:
    """The metrics ``eval --target`` prints (see :func:`~pushforward.sampling.evaluate_sampler`).

    ``log_z``, ``log_z_se``, ``elbo``, ``ess`` (reverse, a fraction), ``n``, ``masked``
    and ``zero_weights`` from ``n`` samples of the flow; with exact target samples
    (``data``, a file, or the target's own sampler when it has one: ``samples`` says which)
    also ``eubo``, ``forward_ess``, ``nll`` and ``forward_log_z``; with a known
    :math:`\\log Z`, ``log_z_true`` and ``log_z_error``; for a mixture, ``modes``,
    ``modes_covered`` and ``mode_entropy``.
    """
    target = run_target(config, spec, features)
    if target.features != model.features:
        raise ValueError(f"target has {target.features} features, the run models {model.features}")
    n = DEFAULT_SAMPLES if n is None else n
    if n < 2:
        raise ValueError(f"--n must be at least 2 samples of the flow, got {n}")
    samples = None
    where = None
    density = model.has_log_prob
    if data is not None and not density:
        raise ValueError(
            "this run's model has no density of a point (its samples carry path weights), so "
            "--data (exact samples for the EUBO and forward ESS) does not apply"
        )
    if data is not None:
        values = torch.from_numpy(load_array(data, ndim=2).copy())
        if values.shape[1] != target.features:
            raise ValueError(
                f"--data '{data}' has {values.shape[1]} columns, the target has {target.features}"
            )
        samples, where = values.to(torch.float64), data
    elif target.has_sample and density:
        samples = target.sample(n, torch.Generator().manual_seed(seed))
        where = f"exact samples of {target.name} (seed {seed})"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        result = evaluate_sampler(model, target, n=n, samples=samples)
    measured = result.as_dict()
    measured = {key: value for key, value in measured.items() if value is not None}
    if target.log_z is not None:
        measured["log_z_error"] = result.log_z - target.log_z
    if where is not None:
        measured["samples_from"] = where
    measured["target"] = target.name
    return {key: json_float(value) for key, value in measured.items()}
