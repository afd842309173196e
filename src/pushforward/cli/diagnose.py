"""``pushforward diagnose``: calibration of a posterior run on held-out simulations."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from pushforward.cli.evaluate import context_rows
from pushforward.cli.plot_diagnostics import plot_coverage, plot_rank_histograms, plot_tarp
from pushforward.cli.report import DIAGNOSTICS_FILE, write_report, write_run_json
from pushforward.data import load_array
from pushforward.sbi.calibration import DEFAULT_SAMPLES, Calibration, calibrate
from pushforward.sbi.priors import Prior, load_prior, prior_from_description
from pushforward.train.run_directory import open_run

FIGURES = ("sbc_ranks.png", "coverage.png", "tarp.png")


def run_diagnose(arguments: argparse.Namespace) -> int:
    """Reads the run and the test pairs, calibrates, writes figures and prints one JSON object."""
    run = Path(arguments.run)
    config, model = open_run(run)
    if not model.context_features:
        raise ValueError(
            f"run '{run}' is unconditional; diagnose checks a posterior q(theta | x), a run "
            "trained with --context"
        )
    reference = next(iter(model.parameters()), None)
    dtype = torch.float32 if reference is None else reference.dtype
    theta = torch.from_numpy(load_array(arguments.data, ndim=2).copy()).to(dtype)
    x = context_rows(arguments.context, model)
    assert x is not None  # a conditional run
    if theta.shape[1] != model.features:
        raise ValueError(
            f"data file '{arguments.data}' has {theta.shape[1]} columns, the run models "
            f"{model.features}"
        )
    if x.shape[0] != theta.shape[0]:
        raise ValueError(
            f"context file '{arguments.context}' has {x.shape[0]} rows but the data has "
            f"{theta.shape[0]}; they must match row for row"
        )
    prior = _prior(arguments.prior, config)
    samples = DEFAULT_SAMPLES if arguments.n is None else arguments.n
    result = calibrate(
        model, theta, x, samples=samples, seed=arguments.seed,
        coverage=not arguments.no_coverage, prior=prior,
    )  # fmt: skip
    summary = result.summary()
    write_run_json(run, DIAGNOSTICS_FILE, summary)
    if importlib.util.find_spec("matplotlib") is not None:
        _figures(result, run)
        write_report(run, [run], title=f"pushforward: {config['model']['name']} run {run.name}")
    print(json.dumps(summary))
    return 0


def _prior(path: str | None, config: dict[str, Any]) -> Prior | None:
    if path is not None:
        return load_prior(path)
    saved = config.get("prior")
    return None if saved is None else prior_from_description(saved, "the run's prior")


def _figures(result: Calibration, run: Path) -> None:
    for name in FIGURES:
        (run / name).unlink(missing_ok=True)
    plot_rank_histograms(result.sbc, run / "sbc_ranks.png")
    if result.coverage is not None:
        plot_coverage(result.coverage, run / "coverage.png")
    plot_tarp(result.tarp, run / "tarp.png")
