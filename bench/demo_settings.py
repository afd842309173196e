"""The demo's settings against the models' own: KL, one-step sample quality and time.

``pushforward demo`` trains ``nsf``, ``fm`` and ``meanflow`` on two moons and must
finish in about a minute and a half on a 2-core machine. This script measures what
its settings (``pushforward.cli.demo.DEMO_OPTIONS`` and ``DEMO_TRAIN``) cost and
give, against the settings the demo used before them (the models' defaults for the
network and coupling, ``fm`` with independent pairs, ``nsf`` at lr 2e-3), seed by
seed:

- every run goes through :func:`pushforward.cli.demo.run_demo` (``train_run``,
  then ``pushforward eval``'s metrics on 10,000 fresh points, seed ``seed + 1``);
- ``kl`` is the test negative log-likelihood minus the exact entropy of moons
  (the density of ``fm`` and ``meanflow`` by dopri5 at 1e-5, their default);
- ``energy`` is the squared energy distance between 5,000 samples of the model's
  default sampler (one network evaluation for ``meanflow``, 20 RK4 steps for
  ``fm``) and 5,000 fresh points, ``pushforward eval --sample-metrics``;
- ``train s``, ``eval s`` and ``plot s`` are wall times of a run's training, test
  metrics and figures, with ``--jobs`` runs at a time in their own processes, one
  torch thread each (what the demo does on 2 cores), so they include the
  contention of the runs beside them.

Usage::

    python bench/demo_settings.py --seeds 0 1 2            # about 15 minutes
    python bench/demo_settings.py --seeds 0 --settings demo
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, setup

BEFORE: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "nsf": ({}, {"lr": 2e-3}),
    "fm": ({"coupling": "independent"}, {}),
    "meanflow": ({}, {}),
}
"""The demo's settings before it had to fit in 90 s: (model options, training options)."""


Task = tuple[str, str, int, int, dict[str, Any], dict[str, Any]]


def _one(task: Task) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from pushforward.cli import demo
    from pushforward.cli.evaluate import open_run, sample_metrics
    from pushforward.cli.plot import plot_run
    from pushforward.data import load_dataset

    settings, name, seed, steps, options, train = task
    # Set for every task: a worker process runs several, and the settings of one
    # must not leak into the next.
    demo.DEMO_OPTIONS[name], demo.DEMO_TRAIN[name] = options, train
    out = Path(tempfile.mkdtemp()) / name
    started = time.perf_counter()
    result = demo.run_demo("moons", name, steps, seed, out, 10_000)
    evaluated = time.perf_counter()
    plot_run(out)
    plotted = time.perf_counter()
    _, model = open_run(str(out))
    data = load_dataset("builtin:moons", n=5000, seed=seed + 1).values.float()
    metrics = sample_metrics(model, data, None, seed + 1, {})
    return {
        "settings": settings,
        "model": name,
        "seed": seed,
        "kl": result["kl"],
        "energy": metrics["energy_distance"],
        "train": result["train_seconds"],
        "eval": evaluated - started - result["train_seconds"],
        "plot": plotted - evaluated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["nsf", "fm", "meanflow"])
    parser.add_argument("--settings", nargs="+", default=["before", "demo"])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    setup()
    from pushforward.cli import demo

    chosen = {
        "before": BEFORE,
        "demo": {
            name: (demo.DEMO_OPTIONS.get(name, {}), demo.DEMO_TRAIN.get(name, {}))
            for name in args.models
        },
    }
    tasks: list[Task] = [
        (settings, name, seed, args.steps, *chosen[settings][name])
        for seed in args.seeds
        for name in args.models
        for settings in args.settings
        # nsf's settings are the same before and now: train it once
        if not (settings == "before" and name == "nsf" and "demo" in args.settings)
    ]
    # The longest first, so that the workers finish together.
    tasks.sort(key=lambda task: (task[1] != "meanflow", task[0] != "before"))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        rows = list(pool.map(_one, tasks))
    print(f"demo settings: {demo.DEMO_OPTIONS} / {demo.DEMO_TRAIN}; before: {BEFORE}")
    table = []
    for name in args.models:
        for settings in args.settings:
            mine = [r for r in rows if r["model"] == name and r["settings"] == settings]
            if name == "nsf" and settings == "before" and "demo" in args.settings:
                continue
            by_seed = sorted(mine, key=lambda r: r["seed"])
            table.append(
                [
                    name,
                    settings,
                    " / ".join(f"{r['kl']:.4f}" for r in by_seed),
                    f"{statistics.mean(r['kl'] for r in by_seed):.4f}",
                    " / ".join(f"{1e4 * r['energy']:.1f}" for r in by_seed),
                    f"{statistics.median(r['train'] for r in by_seed):.1f}",
                    f"{statistics.median(r['eval'] for r in by_seed):.1f}",
                    f"{statistics.median(r['plot'] for r in by_seed):.1f}",
                ]
            )
    seeds = " / ".join(str(seed) for seed in args.seeds)
    print(
        markdown_table(
            [
                "model",
                "settings",
                f"KL (seeds {seeds})",
                "mean KL",
                "energy x1e4",
                "train s",
                "eval s",
                "plot s",
            ],
            table,
        )
    )


if __name__ == "__main__":
    main()
