"""``pushforward demo``: train models on built-in 2-D data side by side, report them."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from pushforward.cli.evaluate import evaluate_run
from pushforward.cli.plot import plot_run
from pushforward.cli.report import write_evaluation, write_report
from pushforward.registry import builder_for
from pushforward.serialization import atomic_write_bytes
from pushforward.train.run import train_run
from pushforward.train.run_directory import CONFIG_FILE, read_config

DEMO_MODELS = ("nsf", "fm", "meanflow")
"""What ``pushforward demo`` trains by default: a discrete flow, flow matching (20 RK4
steps a sample) and MeanFlow (one network evaluation a sample)."""

DEMO_FILE = "demo.json"
"""Marks a directory as written by the demo (so a later demo may replace it)."""

DEMO_OPTIONS: dict[str, dict[str, Any]] = {
    "fm": {"coupling": "independent", "hidden": [128, 128, 128, 128]},
    "meanflow": {"hidden": [128, 128, 128]},
}
"""Model options the demo changes from the defaults, to fit in about a minute and a half
on 2 cores (``bench/demo_settings.py`` measures what they cost and give): ``fm`` with
independent pairs (minibatch OT would make its training about 4x longer on a CPU) and
both ODE models with narrower networks than their 4x256 defaults, which also shortens
their likelihood solves."""

DEMO_TRAIN: dict[str, dict[str, Any]] = {
    "nsf": {"lr": 2e-3},
    "fm": {"lr": 1e-2},
    "meanflow": {"batch_size": 256},
}
"""Training options the demo changes from ``steps``, batch 512 and the model's
registered learning rate: MeanFlow's batches of 256 make its exact minibatch-OT
assignment about 8x cheaper (it dominated the step at 512)."""

DEMO_ORDER = ("meanflow", "fm")
"""Models started first when the demo trains several at once: the longest runs, so
that the workers finish at about the same time."""


def run_demo(
    dataset: str = "moons",
    model_name: str = "nsf",
    steps: int = 2000,
    seed: int = 0,
    out: str | Path = "pushforward-demo/nsf",
    eval_n: int = 10_000,
) -> dict[str, Any]:
    """Trains ``model_name`` on ``builtin:dataset`` into the run directory ``out``
    and returns test metrics.

    The run goes through :func:`~pushforward.train_run`, as ``pushforward train``
    does (preprocessing fitted on the training split and saved with the model),
    and is evaluated like ``pushforward eval`` on a fresh sample (seed ``seed + 1``),
    so the log-likelihood is in the data's original units and ``kl`` is the
    negative log-likelihood minus the toy's exact entropy. The test metrics and
    the training time are stored in ``out/evaluation.json`` for the report.
    """
    out = Path(out)
    train = {"steps": steps, "batch_size": 512, "seed": seed, **DEMO_TRAIN.get(model_name, {})}
    started = time.perf_counter()
    train_run(
        out,
        f"builtin:{dataset}",
        model_name,
        options=dict(DEMO_OPTIONS.get(model_name, {})),
        train=train,
        quiet=True,
    )
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    metrics = evaluate_run(str(out), f"builtin:{dataset}", n=eval_n, seed=seed + 1)
    evaluation_seconds = time.perf_counter() - started
    write_evaluation(
        out,
        {**metrics, "seed": seed + 1, "train_seconds": seconds, "eval_seconds": evaluation_seconds},
    )
    result = {
        "dataset": dataset,
        "model": model_name,
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "test_log_likelihood": round(-metrics["nll"], 4),
        "test_log_likelihood_se": round(metrics["nll_se"], 4),
    }
    if "kl" in metrics:
        result["kl"] = round(metrics["kl"], 4)
    result["run"] = str(out)
    return result


def demo_run(
    dataset: str, model_name: str, steps: int, seed: int, out: str, eval_n: int, figures: bool
) -> dict[str, Any]:
    """:func:`run_demo`, then the run's figures and page when ``figures``."""
    result = run_demo(dataset, model_name, steps, seed, out, eval_n)
    if figures:
        plot_run(Path(out))
    return result


def _worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _clear(out: Path) -> None:
    """Removes a previous demo (or a single run) in ``out``; refuses anything else."""
    if (out / DEMO_FILE).exists() or (out / CONFIG_FILE).exists():
        if (out / CONFIG_FILE).exists():
            read_config(out)  # replace only something that is a pushforward run
        shutil.rmtree(out)
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(
            f"--out '{out}' exists and is not a pushforward demo; choose another directory"
        )


def model_names(text: str) -> list[str]:
    """``"nsf,fm"`` as ``["nsf", "fm"]``, each a registered model, without repeats."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError("--model needs at least one model name")
    for name in names:
        builder_for(name)  # an unknown name lists the valid ones
    if len(set(names)) != len(names):
        raise ValueError(f"--model names a model twice: {text!r}")
    return names


def default_jobs(models: int) -> int:
    """One run at a time per CPU core (as far as this process may use them), at most
    one per model."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(models, cores or 1))


def main_demo(
    steps: int,
    dataset: str,
    models: str,
    seed: int,
    out: str,
    eval_n: int = 10_000,
    jobs: int | None = None,
) -> int:
    """Trains each model of the comma-separated ``models`` into ``out/<model>``,
    prints one JSON line per model, then where the runs and the ``report.html``
    (metrics, options and figures of all runs side by side) are.

    ``jobs`` runs train at once, each in its own process with this process's number
    of torch threads (default :func:`default_jobs`); the longest runs
    (``DEMO_ORDER``) start first. The lines come in the order of ``models``.
    """
    try:
        import matplotlib  # noqa: F401

        figures = True
    except ImportError:
        figures = False
        print("(install matplotlib for figures: pip install 'pushforward[plot]')")
    names = model_names(models)
    jobs = default_jobs(len(names)) if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    root = Path(out)
    _clear(root)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        root / DEMO_FILE,
        json.dumps({"dataset": dataset, "models": names, "steps": steps, "seed": seed}).encode(),
    )
    runs = [root / name for name in names]
    arguments = {
        name: (dataset, name, steps, seed, str(root / name), eval_n, figures) for name in names
    }
    if jobs == 1:
        for name in names:
            print(f"training {name} on builtin:{dataset} for {steps} steps ...", flush=True)
            print(json.dumps(demo_run(*arguments[name])), flush=True)
    else:
        first = [name for name in DEMO_ORDER if name in names]
        order = first + [name for name in names if name not in first]
        print(
            f"training {', '.join(names)} on builtin:{dataset} for {steps} steps, "
            f"{jobs} at a time ...",
            flush=True,
        )
        with ProcessPoolExecutor(
            jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker,
            initargs=(torch.get_num_threads(),),
        ) as pool:
            futures: dict[str, Future[dict[str, Any]]] = {
                name: pool.submit(demo_run, *arguments[name]) for name in order
            }
            for name in names:
                print(json.dumps(futures[name].result()), flush=True)
    # Written after the figures so that it embeds them; without matplotlib it
    # still shows the metrics.
    report = write_report(root, runs, title=f"pushforward demo: {', '.join(names)} on {dataset}")
    print(f"runs: {', '.join(str(run) for run in runs)} (pushforward eval/sample/plot RUN ...)")
    print(f"report: {report}")
    return 0
