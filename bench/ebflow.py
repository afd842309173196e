"""EBFlow: the cost of a training step by score matching against maximum likelihood, and NLL.

The point of Chao et al. (2023): a flow of full (unconstrained) linear layers pays
``O(D^3)`` a layer for ``slogdet`` and its gradient when trained by maximum
likelihood, while score matching needs only the energy's derivatives in ``x``,
``O(B D^2)`` a layer. Same architecture for every objective: ``ebflow`` with
``--transforms`` blocks (full linear + smooth leaky ReLU, and a last linear
layer), float32, one thread, batch ``--batch``.

Part 1, seconds per training step (loss, backward, Adam step), for D in ``--dims``:
``ml`` (negative log-likelihood, through every ``slogdet``), ``ssm`` (sliced score
matching, one projection), ``dsm`` (denoising, sigma 0.1), ``fdssm`` (finite
differences); ``ml/ssm`` is the median of the paired per-round ratios.

Part 2, held-out NLL after the same number of steps (``--steps``) on a small
target: a mixture of four Gaussians in ``--quality-dim`` dimensions, standardised
by the model's preprocessing (so score matching matches after preprocessing, as
the paper does), with the target's own NLL (its entropy estimate) as the floor.

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/ebflow.py [--dims 16 64 256 512] [--steps 2000] [--json out.json]
    python bench/ebflow.py --quick     # smoke test, under a minute
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from common import environment, interleaved, markdown_table, print_environment, setup, write_json
from pushforward.flows.energy import EnergyFlow, ebflow
from pushforward.transforms.preprocessing import Preprocessing
from pushforward.transforms.standardize import Standardize, fit_standardization

OBJECTIVES = ("ml", "ssm", "dsm", "fdssm")


@dataclass(frozen=True)
class Mixture:
    """Gaussian mixture: weights ``(K,)``, means ``(K, D)``, Cholesky factors ``(K, D, D)``."""

    weights: Tensor
    means: Tensor
    scales: Tensor

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        # One component a row, then its factor times noise: torch's MixtureSameFamily
        # draws from every component for every row, K D^2 memory a row.
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.means.shape[1], generator=generator)
        return self.means[component] + torch.einsum("nij,nj->ni", self.scales[component], noise)

    def log_prob(self, x: Tensor) -> Tensor:
        components = torch.distributions.MultivariateNormal(self.means, scale_tril=self.scales)
        per_component = components.log_prob(x.unsqueeze(1))  # (n, K)
        return torch.logsumexp(per_component + self.weights.log(), dim=1)


def mixture(dimension: int, seed: int = 0) -> Mixture:
    """Four Gaussians with random means (scale 3) and random correlated covariances."""
    generator = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(4, dimension, generator=generator)
    factors = torch.randn(4, dimension, dimension, generator=generator) / math.sqrt(dimension)
    covariances = 0.3 * factors @ factors.transpose(1, 2) + 0.2 * torch.eye(dimension)
    weights = torch.tensor([0.4, 0.3, 0.2, 0.1])
    return Mixture(weights, means, torch.linalg.cholesky(covariances))


def build(dimension: int, objective: str, transforms: int, data: Tensor) -> EnergyFlow:
    torch.manual_seed(0)
    flow = ebflow(features=dimension, transforms=transforms, objective=objective, sigma=0.1)
    mean, std = fit_standardization(data)
    flow.set_preprocessing(Preprocessing(Standardize(mean, std)))
    return flow


def training_step(flow: EnergyFlow, data: Tensor, batch: int, lr: float):
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(1)

    def step() -> float:
        rows = data[torch.randint(0, data.shape[0], (batch,), generator=generator)]
        optimizer.zero_grad()
        loss = flow.loss(rows)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def step_times(dims: list[int], transforms: int, batch: int, rounds: int) -> list[dict]:
    results = []
    for dimension in dims:
        data = mixture(dimension).sample(4096, torch.Generator().manual_seed(0))
        candidates = {
            name: training_step(build(dimension, name, transforms, data), data, batch, 1e-4)
            for name in OBJECTIVES
        }
        timings = interleaved(candidates, rounds=rounds, warmup=1, target=0.2)
        ratios = {
            name: torch.tensor(
                [m / s for m, s in zip(timings["ml"].rounds, timings[name].rounds, strict=True)]
            )
            .median()
            .item()
            for name in OBJECTIVES
        }
        results.append(
            {
                "D": dimension,
                **{f"{name}_ms": 1e3 * timings[name].median for name in OBJECTIVES},
                **{f"ml/{name}": ratios[name] for name in OBJECTIVES if name != "ml"},
            }
        )
    return results


def quality(dimension: int, transforms: int, batch: int, steps: int) -> list[dict]:
    target = mixture(dimension, seed=1)
    generator = torch.Generator().manual_seed(2)
    train, test = target.sample(20_000, generator), target.sample(10_000, generator)
    floor = -target.log_prob(test).mean().item()
    results = []
    for name in OBJECTIVES:
        flow = build(dimension, name, transforms, train)
        step = training_step(flow, train, batch, 3e-3)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            nll = -flow.log_prob(test).mean().item()
        results.append({"objective": name, "nll": nll, "gap": nll - floor, "seconds": seconds})
    return [*results, {"objective": "target", "nll": floor, "gap": 0.0, "seconds": 0.0}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 64, 256, 512])
    parser.add_argument("--transforms", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quality-dim", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.dims, args.rounds, args.steps = [16, 64], 3, 200
    setup(threads=1)
    info = environment({})
    print_environment(info)

    speed = step_times(args.dims, args.transforms, args.batch, args.rounds)
    print(
        f"Seconds per training step, ms (batch {args.batch}, {args.transforms} blocks, "
        f"{args.transforms + 1} full linear layers); ml/x: how many times slower ML is\n"
    )
    headers = ["D", *(f"{n} ms" for n in OBJECTIVES), "ml/ssm", "ml/dsm", "ml/fdssm"]
    rows = [
        [
            r["D"],
            *(f"{r[f'{n}_ms']:.2f}" for n in OBJECTIVES),
            *(f"{r[f'ml/{n}']:.2f}" for n in OBJECTIVES[1:]),
        ]
        for r in speed
    ]
    print(markdown_table(headers, rows))

    fitted = quality(args.quality_dim, args.transforms, 256, args.steps)
    print(
        f"\nHeld-out NLL (nats) after {args.steps} steps, batch 256, Adam 3e-3, "
        f"4-component Gaussian mixture in D = {args.quality_dim}\n"
    )
    rows = [
        [r["objective"], f"{r['nll']:.3f}", f"{r['gap']:.3f}", f"{r['seconds']:.1f}"]
        for r in fitted
    ]
    print(markdown_table(["objective", "NLL", "NLL - target's", "train s"], rows))
    write_json(args.json, {"environment": info, "speed": speed, "quality": fitted})


if __name__ == "__main__":
    main()
