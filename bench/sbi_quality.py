"""Neural posterior estimation on the sbibm tasks: C2ST against reference posteriors.

For each task of ``pushforward.sbi.tasks`` (our reimplementations of two moons, SLCP,
Gaussian linear, Gaussian mixture and Bernoulli GLM from Lueckmann et al. 2021), each
simulation budget and each estimator: simulate the training set (seeded), train, draw
10,000 posterior samples for each of 10 observations and compare them with 10,000
reference posterior samples by the sbibm C2ST (z-scored by the reference, 5-fold, an
MLP of two hidden layers of 10 * dim ReLU units trained as scikit-learn's
MLPClassifier is; ``pushforward.metrics.sbibm_c2st``). 0.5 is perfect.

Estimators:

- ``nsf``, ``maf``, ``fm``: ``pushforward.train_run(out, theta, NAME, context=x)`` with
  nothing else set: what ``pushforward train --data theta.npy --context x.npy --model
  NAME`` does with its defaults (train to convergence on a 10% validation split).
- ``nsf+prior`` (and ``maf+prior``, ``fm+prior``): the same with the task's prior
  (``--prior``): a box prior is learnt in the logit of the box.
- ``fm-power``, ``fm-power1``: ``fm`` with training times drawn as ``u^(1/(1+alpha))``,
  alpha 4 or 1 (the time prior of flow matching posterior estimation); ``fm-p50``,
  ``fm-power-p50``: the same with a patience of 50 validations.
- ``zuko-nsf``: zuko 1.6's ``NSF`` trained the way the sbi package trains NPE, which
  the issue calls a well-tuned zuko NSF: sbi's NSF shape (5 transforms, 2 hidden layers
  of 50, 10 bins), theta and x z-scored on the training set, Adam at 5e-4, batches of
  200, a 10% validation split, gradient norms clipped at 5, stopping after 20 epochs
  without a better validation loss and keeping the best weights.

Reference posteriors are drawn once per task and observation and cached under
``bench/results/cache/`` (the SLCP and Bernoulli GLM references take MCMC).

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/sbi_quality.py --tasks two_moons,slcp --budgets 10000 --models nsf,zuko-nsf
    python bench/sbi_quality.py --quick        # smoke test: one task, 1,000 simulations
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import pushforward
from pushforward.metrics.sbibm_c2st import sbibm_c2st
from pushforward.sbi.posterior import sample_batched
from pushforward.sbi.tasks import TASKS, make_task

PUBLISHED_NPE_10K = {
    "two_moons": 0.606,
    "gaussian_mixture": 0.661,
    "slcp": 0.901,
    "gaussian_linear": 0.552,
    "bernoulli_glm": 0.678,
}
"""sbibm's NPE (NSF) C2ST at 10,000 simulations, mean over its 10 observations
(Lueckmann et al. 2021), as the issue quotes them."""

VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "fm-power": ("fm", {"time_sampling": "power", "time_options": {"exponent": 4.0}}, {}),
    "fm-power1": ("fm", {"time_sampling": "power", "time_options": {"exponent": 1.0}}, {}),
    "fm-p50": ("fm", {}, {"patience": 50}),
    "fm-power-p50": (
        "fm",
        {"time_sampling": "power", "time_options": {"exponent": 4.0}},
        {"patience": 50},
    ),
}
"""Estimators that are a registered model with options: flow matching posterior estimation's
time prior (Wildberger et al. 2023), weights ``(1 + alpha) t^alpha`` towards the data."""

OBSERVATION_SEED = 2021
REFERENCE_SAMPLES = 10_000
POSTERIOR_SAMPLES = 10_000
CACHE = Path(__file__).resolve().parent / "results" / "cache"


def references(task: Any, observations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The task's observations and their reference posterior samples ``(M, n, d)``, cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"sbi_reference_{task.name}_{observations}_{OBSERVATION_SEED}.pt"
    theta_o, x_o = task.observations(observations, OBSERVATION_SEED)
    if path.is_file():
        stored = torch.load(path, weights_only=True)
        if torch.equal(stored["x_o"], x_o):
            return theta_o, x_o, stored["samples"]
    start = time.perf_counter()
    samples = torch.stack(
        [
            task.reference_posterior(x_o[i], REFERENCE_SAMPLES, torch.Generator().manual_seed(i))
            for i in range(observations)
        ]
    )
    print(f"  reference posteriors of {task.name}: {time.perf_counter() - start:.0f} s")
    torch.save({"x_o": x_o, "samples": samples}, path)
    return theta_o, x_o, samples


def train_pushforward(
    name: str, task: Any, theta: torch.Tensor, x: torch.Tensor, seed: int
) -> tuple[Any, dict[str, Any]]:
    """``train_run`` with its defaults (and the task's prior for ``NAME+prior``)."""
    model, _, with_prior = name.partition("+")
    model, options, train = VARIANTS.get(model, (model, {}, {}))
    with tempfile.TemporaryDirectory() as out:
        result = pushforward.train_run(
            out,
            theta,
            model,
            context=x,
            options=options,
            train={"seed": seed, **train},
            prior=task.prior if with_prior else None,
        )
    history = result.history
    return result.model, {"steps": history.steps_done, "stopped_early": history.stopped_early}


def train_zuko_flow(theta: torch.Tensor, x: torch.Tensor, seed: int) -> tuple[Any, dict[str, Any]]:
    """zuko's NSF trained as sbi trains NPE (see the module docstring), as a model of
    theta given x in the original units: ``log_prob(theta, x)`` and ``sample(n, x)``."""
    import zuko

    torch.manual_seed(seed)
    theta32, x32 = theta.float(), x.float()
    n = theta32.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    held = max(1, round(0.1 * n))
    val, train = order[:held], order[held:]
    mean_t, std_t = theta32[train].mean(0), theta32[train].std(0)
    mean_x, std_x = x32[train].mean(0), x32[train].std(0).clamp_min(1e-8)
    flow = zuko.flows.NSF(
        theta.shape[1], x.shape[1], transforms=5, hidden_features=(50, 50), bins=10
    )
    optimizer = torch.optim.Adam(flow.parameters(), lr=5e-4)
    zt = (theta32 - mean_t) / std_t
    zx = (x32 - mean_x) / std_x
    best, best_state, since, epochs = math.inf, None, 0, 0
    generator = torch.Generator().manual_seed(seed + 2)
    while since < 20:
        flow.train()
        for batch in torch.randperm(train.numel(), generator=generator).split(200):
            rows = train[batch]
            loss = -flow(zx[rows]).log_prob(zt[rows]).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), 5.0)
            optimizer.step()
        epochs += 1
        flow.eval()
        with torch.no_grad():
            value = float(-flow(zx[val]).log_prob(zt[val]).mean())
        if value < best:
            best, best_state, since = value, copy.deepcopy(flow.state_dict()), 0
        else:
            since += 1
    flow.load_state_dict(best_state)
    return ZukoPosterior(flow, mean_t, std_t, mean_x, std_x), {"epochs": epochs}


class ZukoPosterior:
    """A trained zuko flow of standardised theta given standardised x, in original units."""

    def __init__(
        self,
        flow: Any,
        mean_t: torch.Tensor,
        std_t: torch.Tensor,
        mean_x: torch.Tensor,
        std_x: torch.Tensor,
    ) -> None:
        self.flow, self.mean_t, self.std_t, self.mean_x, self.std_x = (
            flow,
            mean_t,
            std_t,
            mean_x,
            std_x,
        )

    def log_prob(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        context = (x - self.mean_x) / self.std_x
        z = (theta - self.mean_t) / self.std_t
        return self.flow(context).log_prob(z) - torch.log(self.std_t).sum()

    def sample(self, n: int, observations: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            context = (observations.float() - self.mean_x) / self.std_x
            draws = self.flow(context).sample((n,))  # (n, M, d)
        return (draws * self.std_t + self.mean_t).transpose(0, 1).double()


def evaluate(
    task_name: str, budget: int, estimator: str, seed: int, observations: int
) -> dict[str, Any]:
    task = make_task(task_name)
    _, x_o, reference = references(task, observations)
    start = time.perf_counter()
    theta, x = task.simulations(budget, seed)
    simulate_seconds = time.perf_counter() - start
    start = time.perf_counter()
    if estimator == "zuko-nsf":
        posterior, details = train_zuko_flow(theta, x, seed)
        sampler = posterior.sample
    else:
        model, details = train_pushforward(estimator, task, theta, x, seed)

        def sampler(n: int, observations: torch.Tensor) -> torch.Tensor:
            dtype = next(model.parameters()).dtype
            return sample_batched(model, n, observations.to(dtype)).double()

    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    torch.manual_seed(seed)
    samples = sampler(POSTERIOR_SAMPLES, x_o)
    sample_seconds = time.perf_counter() - start
    start = time.perf_counter()
    accuracies = sbibm_c2st(reference, samples, seed=seed).accuracy
    c2st_seconds = time.perf_counter() - start
    values = [float(a) for a in accuracies]
    outside = 1.0 - float(
        task.prior.contains(samples.reshape(-1, samples.shape[-1])).double().mean()
    )
    return {
        "task": task_name,
        "budget": budget,
        "estimator": estimator,
        "seed": seed,
        "c2st": values,
        "c2st_mean": statistics.fmean(values),
        "outside_prior": outside,
        "simulate_seconds": simulate_seconds,
        "train_seconds": train_seconds,
        "sample_seconds": sample_seconds,
        "c2st_seconds": c2st_seconds,
        **details,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--budgets", default="1000,10000,100000")
    parser.add_argument("--models", default="nsf,nsf+prior,maf,fm,zuko-nsf")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--observations", type=int, default=10)
    parser.add_argument("--json", help="append one JSON line per result to this file")
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    common.setup()
    info = common.environment(
        {name: importlib.metadata.version(name) for name in ("zuko", "pushforward")}
    )
    common.print_environment(info)
    tasks = arguments.tasks.split(",")
    budgets = [int(b) for b in arguments.budgets.split(",")]
    models = arguments.models.split(",")
    observations = arguments.observations
    if arguments.quick:
        tasks, budgets, observations = tasks[:1], [1000], 2
    rows = []
    for task_name in tasks:
        for budget in budgets:
            for seed in range(arguments.seeds):
                for estimator in models:
                    result = evaluate(task_name, budget, estimator, seed, observations)
                    rows.append(result)
                    print(
                        f"{task_name:17s} {budget:>7d} {estimator:12s} seed {seed}: C2ST "
                        f"{result['c2st_mean']:.3f}  train {result['train_seconds']:.0f} s  "
                        f"outside prior {result['outside_prior']:.4f}",
                        flush=True,
                    )
                    if arguments.json:
                        with open(arguments.json, "a", encoding="utf-8") as handle:
                            handle.write(json.dumps({**result, "environment": info}) + "\n")
    table = []
    for task_name in tasks:
        for budget in budgets:
            cells: list[object] = [task_name, budget]
            for estimator in models:
                means = [
                    r["c2st_mean"]
                    for r in rows
                    if (r["task"], r["budget"], r["estimator"]) == (task_name, budget, estimator)
                ]
                cells.append(f"{statistics.fmean(means):.3f}")
            cells.append(PUBLISHED_NPE_10K.get(task_name, "") if budget == 10_000 else "")
            table.append(cells)
    print()
    print(common.markdown_table(["task", "simulations", *models, "published NPE"], table, left=1))


if __name__ == "__main__":
    main()
