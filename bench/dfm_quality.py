"""Discrete flow matching against the exact distributions of the built-in token sets.

Two studies, one thread, float32 networks (float64 for the exact denoiser):

1. **The sampler alone**: the exact denoiser of Campbell et al.'s first-k-ones toy
   (``ExactDenoiser``, no training), masked and uniform paths, 200,000 samples per
   step count from 1 to 1,000: total variation of the samples' joint frequencies to
   the exact distribution, and the fraction of valid sequences. One step draws the
   product of the marginals (P(valid) = 0.143264 exactly).
2. **Trained models**: ``dfm`` (masked and uniform paths, cross-entropy, one-hot MLP
   2x256, 3,000 steps of batch 1,024 at lr 2e-3 with EMA 0.999, on a million
   fresh rows of each set) on ``8gaussians-grid`` (V = 64, L = 2), ``first-k-ones``
   (V = 2, L = 10) and ``markov-chain`` (V = 4, L = 6): the exact NLL (the
   sampler's master equation over enumerated states, averaged under the true
   distribution, or on 400 test rows where enumerating every sequence would take
   too long: flagged), the NLL bound on 20,000 test rows (8 draws each) with its
   standard error, the entropy, and the samples' joint total variation against
   the number of sampling steps (20,000 samples: its noise floor is printed).
3. **simplex-fm's sampler alone**: the exact posterior of the geodesic path on the
   sphere's orthant (``ExactSimplexDenoiser``, float64, orthant source) driving the
   Euler steps on the sphere, on first-k-ones (20,000 samples) and 8gaussians-grid
   (2,000 samples: its support of 4,096 sequences makes every step cost a
   ``(batch, 4096, 2)`` Bayes sum): the joint TV against the steps.
4. **Trained simplex-fm**: the same sets, rows, network and budget as study 2, with
   the ``denoiser`` and ``velocity`` objectives (lr 1e-3, the model's training
   default): the joint TV against the steps. It has no likelihood, so no NLL columns.

Run::

    python bench/dfm_quality.py [--json out.json] [--quick] [--models dfm,simplex-fm]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pushforward
from common import environment, markdown_table, print_environment, setup, write_json
from pushforward.data.discrete_toys import get_discrete_toy
from pushforward.matching.discrete import (
    ExactDenoiser,
    LinearKappa,
    MaskedSource,
    UniformSource,
    ctmc_sample,
)
from pushforward.matching.simplex import posterior_velocity, sample_source
from pushforward.matching.simplex.oracle import ExactSimplexDenoiser
from pushforward.matching.simplex.path import sphere_euler
from pushforward.metrics.discrete import joint_tv, tv_noise_floor

SETS = ("8gaussians-grid", "first-k-ones", "markov-chain")
PATHS = ("masked", "uniform")
OBJECTIVES = ("denoiser", "velocity")
MODELS = ("dfm", "simplex-fm")


def sampler_study(samples: int, steps_list: list[int]) -> list[list[object]]:
    toy = get_discrete_toy("first-k-ones")
    table = toy.log_probs()
    rows = []
    for name, source in (("masked", MaskedSource()), ("uniform", UniformSource())):
        oracle = ExactDenoiser(table, LinearKappa(), source)
        for steps in steps_list:
            generator = torch.Generator().manual_seed(steps)
            x0 = source.sample((samples, toy.length), 2, generator=generator)
            start = time.perf_counter()
            x = ctmc_sample(oracle, x0, LinearKappa(), source, 2, steps=steps,
                            generator=generator, dtype=torch.float64)  # fmt: skip
            seconds = time.perf_counter() - start
            valid = float(toy.log_prob(x).isfinite().double().mean())
            distance = joint_tv(x, table.exp())
            rows.append([name, steps, f"{distance:.4f}", f"{valid:.4f}", f"{seconds:.1f}"])
            print(rows[-1], flush=True)
    return rows


def exact_nll(model: Any, toy: Any, limit: int) -> tuple[float, float, bool]:
    """The exact NLL under the true distribution, with its standard error and whether it
    is the full expectation (True) or a mean over ``limit`` test rows (False)."""
    log_q = toy.log_probs().reshape(-1)
    support = torch.tensor(list(itertools.product(*(range(v) for v in toy.vocab))))
    support = support[log_q.isfinite()]
    weights = log_q[log_q.isfinite()].exp()
    masked = model.config["options"]["path"] == "masked"
    enumerated = support.shape[0] * (2**toy.length if masked else 1)
    with torch.no_grad():
        if enumerated <= 20_000 or not masked:
            exact = model.log_prob(support, exact=True)
            return -float((weights * exact.double()).sum()), 0.0, True
        test = toy.sample(limit, seed=11)
        exact = model.log_prob(test, exact=True).double()
        return -float(exact.mean()), float(exact.std() / math.sqrt(limit)), False


def trained_study(rows_n: int, steps: int, samples: int, steps_list: list[int]) -> list[Any]:
    table_rows = []
    for set_name, path in itertools.product(SETS, PATHS):
        toy = get_discrete_toy(set_name)
        data = toy.sample(rows_n, seed=0)
        torch.manual_seed(0)
        model = pushforward.build("dfm", features=toy.length, vocab=list(toy.vocab), path=path,
                                  network="mlp", hidden=[256, 256])  # fmt: skip
        start = time.perf_counter()
        pushforward.fit(model, data, steps=steps, batch_size=1024, lr=2e-3, ema=0.999,
                        quiet=True, seed=0)  # fmt: skip
        training = time.perf_counter() - start
        model.eval()
        nll, nll_se, full = exact_nll(model, toy, 400)
        test = toy.sample(20_000, seed=5)
        with torch.no_grad():
            bound = -model.log_prob(test, draws=8, generator=torch.Generator().manual_seed(2))
        bound = bound.double()
        distances = []
        probabilities = toy.log_probs().exp()
        for sampling_steps in steps_list:
            with torch.no_grad():
                generator = torch.Generator().manual_seed(sampling_steps)
                x = model.sample(samples, steps=sampling_steps, generator=generator)
            distances.append(f"{joint_tv(x, probabilities):.3f}")
        row = [
            set_name,
            path,
            f"{toy.entropy():.4f}",
            f"{nll:.4f}" + ("" if full else f" ± {nll_se:.4f}*"),
            f"{float(bound.mean()):.4f} ± {float(bound.std() / math.sqrt(bound.numel())):.4f}",
            *distances,
            f"{tv_noise_floor(probabilities, samples, draws=5):.3f}",
            f"{training:.0f}",
        ]
        table_rows.append(row)
        print(row, flush=True)
    return table_rows


def oracle_velocity(oracle: ExactSimplexDenoiser) -> Any:
    """The exact marginal velocity of the geodesic path under ``oracle``'s posterior."""
    return lambda s, t: posterior_velocity(s, oracle(s, t), t)


def simplex_sampler_study(samples: dict[str, int], steps_list: list[int]) -> list[list[object]]:
    rows = []
    for set_name, n in samples.items():
        toy = get_discrete_toy(set_name)
        table = toy.log_probs()
        oracle = ExactSimplexDenoiser(table, "orthant")
        for steps in steps_list:
            generator = torch.Generator().manual_seed(steps)
            s0 = sample_source("orthant", (n, toy.length), oracle.valid, dtype=torch.float64,
                               generator=generator)  # fmt: skip
            start = time.perf_counter()
            x = sphere_euler(oracle_velocity(oracle), s0, oracle.valid, steps)
            seconds = time.perf_counter() - start
            floor = tv_noise_floor(table.exp(), n, draws=5)
            distance = joint_tv(x, table.exp())
            rows.append([set_name, n, steps, f"{distance:.3f}", f"{floor:.3f}", f"{seconds:.1f}"])
            print(rows[-1], flush=True)
    return rows


def simplex_trained_study(
    rows_n: int, steps: int, samples: int, steps_list: list[int]
) -> list[list[object]]:
    table_rows = []
    for set_name, objective in itertools.product(SETS, OBJECTIVES):
        toy = get_discrete_toy(set_name)
        data = toy.sample(rows_n, seed=0)
        torch.manual_seed(0)
        model = pushforward.build("simplex-fm", features=toy.length, vocab=list(toy.vocab),
                                  objective=objective, network="mlp",
                                  hidden=[256, 256])  # fmt: skip
        start = time.perf_counter()
        pushforward.fit(model, data, steps=steps, batch_size=1024, lr=1e-3, ema=0.999,
                        quiet=True, seed=0)  # fmt: skip
        training = time.perf_counter() - start
        model.eval()
        probabilities = toy.log_probs().exp()
        distances = []
        for sampling_steps in steps_list:
            with torch.no_grad():
                generator = torch.Generator().manual_seed(sampling_steps)
                x = model.sample(samples, steps=sampling_steps, generator=generator)
            distances.append(f"{joint_tv(x, probabilities):.3f}")
        row = [
            set_name,
            objective,
            *distances,
            f"{tv_noise_floor(probabilities, samples, draws=5):.3f}",
            f"{training:.0f}",
        ]
        table_rows.append(row)
        print(row, flush=True)
    return table_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated: dfm, simplex-fm"
    )
    arguments = parser.parse_args()
    models = [name.strip() for name in arguments.models.split(",") if name.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}: choose from {list(MODELS)}")
    setup()
    info = environment({"pushforward": pushforward.__version__})
    print_environment(info)
    if arguments.quick:
        oracle_steps, sampler_samples = [1, 10], 5_000
        rows_n, steps, samples, steps_list = 20_000, 100, 2_000, [1, 10]
        simplex_samples, simplex_steps = {"first-k-ones": 2_000, "8gaussians-grid": 200}, [1, 10]
    else:
        oracle_steps, sampler_samples = [1, 2, 5, 10, 100, 1000], 200_000
        rows_n, steps, samples, steps_list = 1_000_000, 3000, 20_000, [1, 4, 16, 64, 256, 1000]
        simplex_samples = {"first-k-ones": 20_000, "8gaussians-grid": 2_000}
        simplex_steps = [1, 4, 16, 64, 256]
    results: dict[str, Any] = {"environment": info}
    if "dfm" in models:
        results.update(dfm_studies(sampler_samples, oracle_steps, rows_n, steps, samples,
                                   steps_list))  # fmt: skip
    if "simplex-fm" in models:
        simplex = simplex_sampler_study(simplex_samples, simplex_steps)
        print()
        print("### simplex-fm's sampler with the exact posterior (orthant source)")
        print()
        headers = ["set", "samples", "steps", "joint TV", "TV floor", "seconds"]
        print(markdown_table(headers, simplex, left=1))
        trained = simplex_trained_study(rows_n, steps, samples, steps_list)
        print()
        print(f"### Trained simplex-fm ({samples:,} samples per step count)")
        print()
        headers = ["set", "objective", *(f"TV {k} steps" for k in steps_list), "TV floor",
                   "train s"]  # fmt: skip
        print(markdown_table(headers, trained, left=2))
        results.update({"simplex_sampler": simplex, "simplex_trained": trained})
    write_json(arguments.json, results)


def dfm_studies(
    sampler_samples: int,
    oracle_steps: list[int],
    rows_n: int,
    steps: int,
    samples: int,
    steps_list: list[int],
) -> dict[str, Any]:
    sampler = sampler_study(sampler_samples, oracle_steps)
    print()
    title = f"first-k-ones, {sampler_samples:,} samples"
    print(f"### The CTMC sampler with the exact denoiser ({title})")
    print()
    print(markdown_table(["path", "steps", "joint TV", "P(valid)", "seconds"], sampler, left=1))
    trained = trained_study(rows_n, steps, samples, steps_list)
    print()
    print(f"### Trained dfm against the exact distributions ({samples:,} samples per step count)")
    print()
    headers = ["set", "path", "entropy", "exact NLL", "NLL bound",
               *(f"TV {k} steps" for k in steps_list), "TV floor", "train s"]  # fmt: skip
    print(markdown_table(headers, trained, left=2))
    return {"sampler": sampler, "trained": trained}


if __name__ == "__main__":
    main()
