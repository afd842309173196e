"""Times reverse-KL training steps of one RealNVP: reparameterised, fast and drop-in path
gradients in pushforward, against normflows' ``reverse_kld``.

The flow: ``K`` affine coupling layers (halves alternating), conditioners MLPs of two
hidden layers of 64 (ReLU in ours, normflows' ``MLP`` with LeakyReLU 0), no ActNorm, a
fixed standard-normal base; normflows is built from ``AffineCouplingBlock`` and
``Permute(mode="swap")``, exp scale. The target is a sum of FAB's double wells (Midgley et
al. 2023), ``log p(x) = sum_i 0.5 x_{2i} + 6 x_{2i}^2 - x_{2i}^4 - 0.5 x_{2i+1}^2``, the
same tensor function for both libraries. One step is ``zero_grad``, the loss of a batch
of 256 samples, ``backward`` and an Adam step (lr 1e-5, so the flows barely move).

Candidates, per dimension:

- ``reverse-kl``: ours, ``ReverseKL`` (reparameterised gradient, score term included);
- ``path (fast)``: ours, ``PathGradient(estimator="fast")``: the score of q is carried
  through the coupling layers while sampling (Vaitl et al. 2024), no inverse pass;
- ``path (drop-in)``: ours, ``PathGradient(estimator="drop-in")``: log q re-evaluated at
  the samples with the parameters held, a pass through the inverse;
- ``normflows``: ``NormalizingFlow.reverse_kld(score_fn=True)``;
- ``normflows drop-in``: ``reverse_kld(score_fn=False)``, its path gradient (the inverse
  pass with ``requires_grad`` switched off, as ours).

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/sampling_speed.py [--rounds 15] [--json out.json]
    python bench/sampling_speed.py --quick
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Callable
from pathlib import Path

import normflows
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pushforward
from common import (
    environment,
    interleaved,
    markdown_table,
    paired_ratio,
    print_environment,
    setup,
    write_json,
)
from pushforward.sampling import CallableTarget, make_objective

BATCH = 256
LAYERS = 8
HIDDEN = 64


def double_wells(x: Tensor) -> Tensor:
    """FAB's double well on every pair of coordinates (the many-well energy), summed."""
    first, second = x[:, 0::2], x[:, 1::2]
    return (0.5 * first + 6 * first**2 - first**4).sum(-1) - 0.5 * second.square().sum(-1)


class Wells:
    """The target as normflows wants it: an object with ``log_prob``."""

    def __init__(self, features: int) -> None:
        self.features = features

    def log_prob(self, x: Tensor) -> Tensor:
        return double_wells(x)


def ours(features: int, estimator: str | None) -> Callable[[], None]:
    torch.manual_seed(0)
    model = pushforward.build(
        "realnvp", features=features, transforms=LAYERS, hidden=[HIDDEN, HIDDEN],
        normalization="none",
    )  # fmt: skip
    objective = (
        make_objective("reverse-kl")
        if estimator is None
        else make_objective("path-gradient", estimator=estimator)
    )
    target = CallableTarget(Wells(features))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        objective.loss(model, target, BATCH).backward()
        optimizer.step()

    return step


def theirs(features: int, score_fn: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    half = features // 2
    layers = []
    for _ in range(LAYERS):
        conditioner = normflows.nets.MLP(
            [features - half, HIDDEN, HIDDEN, 2 * half], init_zeros=True
        )
        layers.append(normflows.flows.AffineCouplingBlock(conditioner, scale_map="exp"))
        layers.append(normflows.flows.Permute(features, mode="swap"))
    base = normflows.distributions.DiagGaussian(features, trainable=False)
    flow = normflows.NormalizingFlow(base, layers, p=Wells(features))
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-5)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        flow.reverse_kld(BATCH, score_fn=score_fn).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    setup()
    rounds = 3 if arguments.quick else arguments.rounds
    info = environment({
        "pushforward": pushforward.__version__,
        "normflows": importlib.metadata.version("normflows"),
        "torch": torch.__version__,
    })  # fmt: skip
    print_environment(info)
    rows, payload = [], {"environment": info, "results": []}
    for features in (2, 16, 64):
        candidates = {
            "reverse-kl": ours(features, None),
            "path (fast)": ours(features, "fast"),
            "path (drop-in)": ours(features, "drop-in"),
            "normflows": theirs(features, True),
            "normflows drop-in": theirs(features, False),
        }
        times = interleaved(candidates, rounds, target=0.2)
        medians = {name: times[name].median * 1e3 for name in candidates}
        ratios = {
            "fast / reverse-kl": paired_ratio(times, "path (fast)", "reverse-kl"),
            "normflows drop-in / fast": paired_ratio(times, "normflows drop-in", "path (fast)"),
            "drop-in / fast": paired_ratio(times, "path (drop-in)", "path (fast)"),
            "reverse-kl / normflows": paired_ratio(times, "reverse-kl", "normflows"),
        }
        rows.append([f"D={features}", *(f"{medians[n]:.2f}" for n in candidates),
                     *(f"{value:.2f}" for value in ratios.values())])  # fmt: skip
        payload["results"].append({"features": features, "ms": medians, "ratios": ratios})
        print(rows[-1], flush=True)
    print()
    print(f"### reverse-KL steps, RealNVP {LAYERS} layers, batch {BATCH} "
          f"(medians of {rounds} rounds, ms; paired ratios)")  # fmt: skip
    print()
    headers = ["D", "reverse-kl", "path (fast)", "path (drop-in)", "normflows",
               "normflows drop-in", "fast / reverse-kl", "normflows drop-in / fast",
               "drop-in / fast", "reverse-kl / normflows"]  # fmt: skip
    print(markdown_table(headers, rows))
    write_json(arguments.json, payload)


if __name__ == "__main__":
    main()
