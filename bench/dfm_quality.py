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

Run::

    python bench/dfm_quality.py [--json out.json] [--quick]
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
from pushforward.metrics.discrete import joint_tv, tv_noise_floor

SETS = ("8gaussians-grid", "first-k-ones", "markov-chain")
PATHS = ("masked", "uniform")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    arguments = parser.parse_args()
    setup()
    info = environment({"pushforward": pushforward.__version__})
    print_environment(info)
    if arguments.quick:
        oracle_steps, sampler_samples = [1, 10], 5_000
        rows_n, steps, samples, steps_list = 20_000, 100, 2_000, [1, 10]
    else:
        oracle_steps, sampler_samples = [1, 2, 5, 10, 100, 1000], 200_000
        rows_n, steps, samples, steps_list = 1_000_000, 3000, 20_000, [1, 4, 16, 64, 256, 1000]
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
    write_json(arguments.json, {"environment": info, "sampler": sampler, "trained": trained})


if __name__ == "__main__":
    main()
