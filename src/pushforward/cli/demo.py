"""``pushforward demo``: train models on built-in 2-D data side by side, report them."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from pushforward.cli.report import write_evaluation, write_report
from pushforward.serialization import atomic_write_bytes
from pushforward.train.run_directory import CONFIG_FILE, read_config

DEMO_MODELS = ("nsf", "fm", "meanflow")
"""What ``pushforward demo`` trains by default: a discrete flow, flow matching (20 RK4
steps a sample) and MeanFlow (one network evaluation a sample)."""

DEMO_FILE = "demo.json"
"""Marks a directory as written by the demo (so a later demo may replace it)."""

DEMO_OPTIONS: dict[str, list[str]] = {"fm": ['coupling="independent"']}
"""Model options (``--set`` items) the demo changes from the defaults, to keep it short:
fm's minibatch-OT assignment would make its training about 4x longer on a CPU, for
the same KL on two moons (0.005 against 0.007 nats, ``bench/fm_quality.py``)."""

DEMO_LEARNING_RATES = {"nsf": 2e-3}
"""Peak learning rates of the demo's models where they differ from what the model
declares for ``pushforward train`` (``pushforward.registry.train_defaults``)."""


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

    The run goes through the same path as ``pushforward train`` (standardisation
    fitted on the training split and folded into the saved model), and is
    evaluated like ``pushforward eval`` on a fresh sample (seed ``seed + 1``), so
    the log-likelihood is in the data's original units and ``kl`` is the
    negative log-likelihood minus the toy's exact entropy. The test metrics and
    the training time are stored in ``out/evaluation.json`` for the report.
    """
    from pushforward.cli.evaluate import evaluate_run
    from pushforward.cli.train import run_train

    out = Path(out)
    arguments = argparse.Namespace(
        data=f"builtin:{dataset}",
        context=None,
        model=model_name,
        out=str(out),
        config=None,
        steps=steps,
        batch_size=512,
        lr=DEMO_LEARNING_RATES.get(model_name),
        seed=seed,
        n=None,
        resume=False,
        set=list(DEMO_OPTIONS.get(model_name, [])),
        quiet=True,
    )
    started = time.perf_counter()
    run_train(arguments)
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


def _figures(run: Path) -> None:
    from pushforward.cli.plot import run_plot

    run_plot(argparse.Namespace(run=str(run)))


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
    from pushforward.registry import builder_for

    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError("--model needs at least one model name")
    for name in names:
        builder_for(name)  # an unknown name lists the valid ones
    if len(set(names)) != len(names):
        raise ValueError(f"--model names a model twice: {text!r}")
    return names


def main_demo(
    steps: int, dataset: str, models: str, seed: int, out: str, eval_n: int = 10_000
) -> int:
    """Trains each model of the comma-separated ``models`` into ``out/<model>``,
    prints one JSON line per model, then where the runs and the ``report.html``
    (metrics, options and figures of all runs side by side) are."""
    try:
        import matplotlib  # noqa: F401

        figures = True
    except ImportError:
        figures = False
        print("(install matplotlib for figures: pip install 'pushforward[plot]')")
    names = model_names(models)
    root = Path(out)
    _clear(root)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        root / DEMO_FILE,
        json.dumps({"dataset": dataset, "models": names, "steps": steps, "seed": seed}).encode(),
    )
    runs = []
    for name in names:
        print(f"training {name} on builtin:{dataset} for {steps} steps ...", flush=True)
        run = root / name
        result = run_demo(dataset, name, steps, seed, run, eval_n)
        if figures:
            _figures(run)
        print(json.dumps(result), flush=True)
        runs.append(run)
    # Written after the figures so that it embeds them; without matplotlib it
    # still shows the metrics.
    report = write_report(root, runs, title=f"pushforward demo: {', '.join(names)} on {dataset}")
    print(f"runs: {', '.join(str(run) for run in runs)} (pushforward eval/sample/plot RUN ...)")
    print(f"report: {report}")
    return 0
