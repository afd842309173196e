"""Test NLL of the kernelised flow against nsf and realnvp on little data.

English, Kirchler & Lippert (2024) report that coupling flows whose conditioners are
kernel expansions over a few learned inducing points ("Ferumal flows") beat neural
conditioners when data are scarce. This script checks that claim for
``pushforward.build("kernel-flow")`` against ``nsf`` and ``realnvp``, each with its
default options, and ``kernel-flow`` with ``map="affine"`` (the paper's kernelised
affine coupling) beside them.

Data: ``--n`` rows (500) drawn from a distribution with an exact density: the 2-D
toys ``moons``, ``8gaussians`` and ``pinwheel`` (``pushforward.data.toys``) and a 5-D
mixture of 6 isotropic Gaussians (sd 0.5, means drawn from N(0, 1.5^2), fixed seed).
A fifth of the rows validate, the rest train; rows are standardised with the training
rows' mean and standard deviation. Every model gets the same budget: Adam(W) at
learning rate 1e-3 with a 100-step warm-up and cosine decay over ``--max-steps``
(5000), batches of 128, validation every 25 steps, early stopping after 20
validations without improvement, the best validation weights kept. Test NLL on
20,000 fresh rows, in the data's own units (nats; the standardisation's
``sum(log std)`` added back), minus the true entropy estimated on the same rows
(so the figure is a KL divergence up to Monte Carlo error), mean ± standard error
over seeds.

``--sweep`` instead trains candidate option sets of ``kernel-flow`` (the grid behind
its defaults) on the same data.

Run::

    python bench/kernel_flow.py [--n 500] [--seeds 3] [--json out.json]
    python bench/kernel_flow.py --sweep [--seeds 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

import pushforward
import pushforward.flows.kernel  # registers "kernel-flow"
from common import setup, write_json
from pushforward.data.toys import get_toy
from pushforward.sampling.targets.gaussian_mixture import GaussianMixtureTarget
from pushforward.train import fit

DATASETS = ("moons", "8gaussians", "pinwheel", "gmm5")
TEST_SIZE = 20_000
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "kernel-flow": ("kernel-flow", {}),
    "kernel-flow-affine": ("kernel-flow", {"map": "affine"}),
    "nsf": ("nsf", {}),
    "realnvp": ("realnvp", {}),
}
SWEEP: dict[str, dict[str, Any]] = {
    "affine-8-M32-rbf-lu": {"map": "affine"},
    "affine-8-M16": {"map": "affine", "inducing": 16},
    "affine-8-M64": {"map": "affine", "inducing": 64},
    "affine-4": {"map": "affine", "transforms": 4},
    "affine-16": {"map": "affine", "transforms": 16},
    "affine-matern52": {"map": "affine", "kernel": "matern52"},
    "affine-matern32": {"map": "affine", "kernel": "matern32"},
    "affine-no-lu": {"map": "affine", "linear": "none"},
    "affine-actnorm": {"map": "affine", "normalization": "actnorm"},
    "affine-ls0.5": {"map": "affine", "length_scale": 0.5},
    "affine-data-init": {"map": "affine", "inducing_init": "data"},
    "spline-4": {"transforms": 4},
    "spline-8": {},
    "spline-8-M64": {"inducing": 64},
    "spline-8-lr3e-3": {"lr": 3e-3},
    "affine-8-lr3e-3": {"map": "affine", "lr": 3e-3},
}
"""Candidate options of ``kernel-flow`` (``lr`` is the training option, 1e-3 otherwise)."""


def gaussian_mixture_5d() -> GaussianMixtureTarget:
    generator = torch.Generator().manual_seed(1234)
    means = 1.5 * torch.randn(6, 5, generator=generator, dtype=torch.float64)
    return GaussianMixtureTarget(means, 0.5, name="gmm5")


def draw(dataset: str, n: int, seed: int) -> tuple[Tensor, Any]:
    """``n`` float64 rows of ``dataset`` and its exact log-density."""
    if dataset == "gmm5":
        target = gaussian_mixture_5d()
        return target.sample(n, torch.Generator().manual_seed(seed)), target.log_prob
    toy = get_toy(dataset)
    return toy.sample(n, seed=seed), toy.log_prob


@dataclass
class Result:
    model: str
    dataset: str
    seed: int
    kl: float
    test_nll: float
    parameters: int
    best_step: int | None
    seconds: float


def train_one(
    label: str, name: str, options: dict[str, Any], dataset: str, n: int, seed: int, max_steps: int
) -> Result:
    rows, log_prob = draw(dataset, n, seed)
    test, _ = draw(dataset, TEST_SIZE, 10_000 + seed)
    entropy = -log_prob(test).mean().item()
    validation_rows = n // 5
    train, validation = rows[validation_rows:], rows[:validation_rows]
    mean, std = train.mean(0), train.std(0)
    features = rows.shape[1]
    options = dict(options)
    lr = options.pop("lr", 1e-3)
    torch.manual_seed(seed)
    model = pushforward.build(name, features=features, **options)
    start = time.perf_counter()
    history = fit(
        model,
        ((train - mean) / std).float(),
        validation=((validation - mean) / std).float(),
        steps=max_steps,
        batch_size=128,
        lr=lr,
        warmup=100,
        eval_every=25,
        patience=20,
        seed=seed,
        quiet=True,
        handle_signals=False,
    )
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        nll = -model.log_prob(((test - mean) / std).float()).double().mean().item()
    nll += std.log().sum().item()
    parameters = sum(p.numel() for p in model.parameters())
    return Result(label, dataset, seed, nll - entropy, nll, parameters, history.best_step, seconds)


def mean_and_error(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return (
        f"{statistics.mean(values):.3f} ± {statistics.stdev(values) / math.sqrt(len(values)):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=5000)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--configs", nargs="+", default=None, help="sweep entries to run")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    setup(threads=1)
    if args.sweep:
        chosen = args.configs or list(SWEEP)
        runs = {label: ("kernel-flow", SWEEP[label]) for label in chosen}
    else:
        runs = MODELS
    results: list[Result] = []
    for dataset in args.datasets:
        for label, (name, options) in runs.items():
            for seed in range(args.seeds):
                result = train_one(label, name, options, dataset, args.n, seed, args.max_steps)
                results.append(result)
                print(
                    f"{dataset:10s} {label:22s} seed {seed}: KL {result.kl:.3f} "
                    f"(NLL {result.test_nll:.3f}), {result.parameters} parameters, "
                    f"best step {result.best_step}, {result.seconds:.1f} s",
                    flush=True,
                )
    print()
    print(f"KL to the truth (test NLL - entropy, nats), n = {args.n}, {args.seeds} seed(s)")
    print("| model | params | " + " | ".join(args.datasets) + " | mean | seconds |")
    print("|---" * (len(args.datasets) + 4) + "|")
    for label in runs:
        mine = [r for r in results if r.model == label]
        cells = [mean_and_error([r.kl for r in mine if r.dataset == d]) for d in args.datasets]
        overall = statistics.mean(r.kl for r in mine)
        seconds = statistics.median(r.seconds for r in mine)
        params = "/".join(sorted({str(r.parameters) for r in mine}, key=int))
        print(
            f"| {label} | {params} | " + " | ".join(cells) + f" | {overall:.3f} | {seconds:.1f} |"
        )
    if args.json:
        write_json(args.json, {"n": args.n, "results": [asdict(r) for r in results]})


if __name__ == "__main__":
    main()
