"""``pushforward demo``: train a flow on built-in 2-D data, write a run directory, report."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from pushforward.cli.run_directory import CONFIG_FILE, read_config


def run_demo(
    dataset: str = "moons",
    model_name: str = "nsf",
    steps: int = 2000,
    seed: int = 0,
    out: str | Path = "pushforward-demo",
) -> dict[str, Any]:
    """Trains ``model_name`` on ``builtin:dataset`` into ``out`` and returns test metrics.

    The run goes through the same path as ``pushforward train`` (standardisation
    fitted on the training split and folded into the saved model), and is
    evaluated like ``pushforward eval`` on a fresh sample (seed ``seed + 1``), so
    the log-likelihood is in the data's original units and ``kl`` is the
    negative log-likelihood minus the toy's exact entropy. A previous demo run
    in ``out`` is replaced. With matplotlib, the figures of ``pushforward plot``
    are written too.
    """
    from pushforward.cli.evaluate import evaluate_run
    from pushforward.cli.train import run_train

    out = Path(out)
    if (out / CONFIG_FILE).exists():
        read_config(out)  # replace only something that is a pushforward run
        shutil.rmtree(out)
    arguments = argparse.Namespace(
        data=f"builtin:{dataset}",
        context=None,
        model=model_name,
        out=str(out),
        config=None,
        steps=steps,
        batch_size=512,
        lr=2e-3,
        seed=seed,
        n=None,
        resume=False,
        set=[],
        quiet=True,
    )
    started = time.perf_counter()
    run_train(arguments)
    seconds = time.perf_counter() - started
    metrics = evaluate_run(str(out), f"builtin:{dataset}", n=10_000, seed=seed + 1)
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


def _figures(out: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("(install matplotlib for figures: pip install 'pushforward[plot]')")
        return
    from pushforward.cli.plot import run_plot

    run_plot(argparse.Namespace(run=str(out)))


def main_demo(steps: int, dataset: str, model_name: str, seed: int, out: str) -> int:
    """Runs the demo and prints its result as one JSON line, then where the run is."""
    print(f"training {model_name} on builtin:{dataset} for {steps} steps ...", flush=True)
    result = run_demo(dataset, model_name, steps, seed, out)
    _figures(Path(out))
    print(json.dumps(result))
    print(f"run directory: {out} (pushforward eval/sample/plot {out} ...)")
    return 0
