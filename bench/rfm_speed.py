"""Times pushforward's Riemannian flow matching against Meta's flow_matching, same network.

Both sides use one velocity module: the ``ManifoldVelocity`` that
``pushforward.build("rfm", ...)`` makes (the residual 4x256 MLP of the defaults; on the
sphere it sees the unit vector, on the torus the cosines and sines of the angles, and
its output is a tangent vector). Float32, one thread, Adam (lr 1e-3), on S^2 (the
built-in ``vmf-mixture``) and T^2 (``von-mises-torus``).

Figures:

1. training step (loss, backward, Adam step) on one fixed batch of 512: ours
   ``model.loss(x)`` (source draw, closed-form geodesic point and velocity, MSE);
   flow_matching as its examples train: uniform source points drawn the same way,
   ``t ~ U[0, 1]``, ``GeodesicProbPath(CondOTScheduler(), manifold).sample`` (the
   geodesic's velocity by ``torch.func.jvp`` under ``vmap``) and the MSE.
2. 2,000 samples with 20 midpoint steps: ours ``model.sample(2000, solver="midpoint",
   steps=20)`` (projected steps) against ``RiemannianODESolver(manifold, wrapper)
   .sample(x_init, step_size=0.05, method="midpoint", projx=True, proju=True)``.
3. the exact log-likelihood of 512 points with 20 RK4 steps: ours ``rfm`` against our
   Euclidean ``fm`` with the same 4x256 network on the same 3 (or 2) coordinates
   (whose network traces its own Jacobian; the manifold network goes through the
   generic forward-mode trace of its projection, features and tangent map).

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/rfm_speed.py [--rounds 15] [--json out.json]
    python bench/rfm_speed.py --quick
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import sys
from pathlib import Path
from typing import Any

import torch
from flow_matching.path import GeodesicProbPath
from flow_matching.path.scheduler import CondOTScheduler
from flow_matching.solver import RiemannianODESolver
from flow_matching.utils import ModelWrapper
from flow_matching.utils.manifolds import FlatTorus as TheirTorus
from flow_matching.utils.manifolds import Sphere as TheirSphere

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
from pushforward.data.dataset import load_dataset

CASES = {"sphere": ("vmf-mixture", TheirSphere), "torus": ("von-mises-torus", TheirTorus)}


class Wrapped(ModelWrapper):
    """flow_matching's view of our network: ``model(x=x_t, t=t)``."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras: Any) -> torch.Tensor:
        return self.model(x, t.expand(x.shape[0]))


def case_candidates(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    toy, their_manifold = CASES[name]
    data = load_dataset(f"builtin:{toy}", n=512, seed=0).values.float()
    features = data.shape[1]
    torch.manual_seed(0)
    ours = pushforward.build("rfm", features=features, manifold=name)
    network = copy.deepcopy(ours.network)
    our_optimizer = torch.optim.Adam(ours.parameters(), lr=1e-3)
    their_optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    path = GeodesicProbPath(CondOTScheduler(), their_manifold())
    manifold = ours.manifold

    def our_step() -> None:
        our_optimizer.zero_grad(set_to_none=True)
        ours.loss(data).backward()
        our_optimizer.step()

    def their_step() -> None:
        their_optimizer.zero_grad(set_to_none=True)
        x0 = manifold.random(data.shape[0], dtype=data.dtype)
        t = torch.rand(data.shape[0])
        sample = path.sample(x_0=x0, x_1=data, t=t)
        loss = (network(sample.x_t, sample.t) - sample.dx_t).square().mean()
        loss.backward()
        their_optimizer.step()

    solver = RiemannianODESolver(their_manifold(), Wrapped(network))

    def our_sample() -> None:
        with torch.no_grad():
            ours.sample(2000, solver="midpoint", steps=20)

    def their_sample() -> None:
        x_init = manifold.random(2000, dtype=torch.float32)
        with torch.no_grad():
            solver.sample(x_init, step_size=0.05, method="midpoint", projx=True, proju=True)

    euclidean = pushforward.build("fm", features=features, likelihood_solver="rk4", steps=20)
    points = data

    def rfm_likelihood() -> None:
        with torch.no_grad():
            ours.log_prob(points, solver="rk4", steps=20)

    def fm_likelihood() -> None:
        with torch.no_grad():
            euclidean.log_prob(points, solver="rk4", steps=20)

    return (
        {"ours": our_step, "flow_matching": their_step},
        {"sample ours": our_sample, "sample flow_matching": their_sample,
         "rfm log_prob": rfm_likelihood, "fm log_prob": fm_likelihood},
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    setup()
    info = environment({
        "pushforward": pushforward.__version__,
        "flow_matching": importlib.metadata.version("flow_matching"),
    })  # fmt: skip
    print_environment(info)
    rounds = 3 if arguments.quick else arguments.rounds
    rows = []
    for name in CASES:
        training, inference = case_candidates(name)
        train_times = interleaved(training, rounds, target=0.2)
        rows.append([name, "training step (batch 512)",
                     f"{train_times['ours'].median * 1e3:.2f}",
                     f"{train_times['flow_matching'].median * 1e3:.2f}",
                     f"{paired_ratio(train_times, 'ours', 'flow_matching'):.2f}"])  # fmt: skip
        times = interleaved(inference, rounds, warmup=1, target=0.5)
        rows.append(
                    [name, "2,000 samples, 20 midpoint steps",
                     f"{times['sample ours'].median * 1e3:.1f}",
                     f"{times['sample flow_matching'].median * 1e3:.1f}",
                     f"{paired_ratio(times, 'sample ours', 'sample flow_matching'):.2f}"],
                    )  # fmt: skip
        rows.append([name, "log_prob of 512, 20 RK4 steps: rfm vs our Euclidean fm",
                     f"{times['rfm log_prob'].median * 1e3:.1f}",
                     f"{times['fm log_prob'].median * 1e3:.1f}",
                     f"{paired_ratio(times, 'rfm log_prob', 'fm log_prob'):.2f}"])  # fmt: skip
        print(rows[-3:], flush=True)
    print()
    print(f"### rfm against flow_matching (medians of {rounds} rounds, ms; paired ratios)")
    print()
    headers = ["manifold", "what", "ours ms", "theirs ms", "ratio"]
    print(markdown_table(headers, rows, left=2))
    write_json(
        arguments.json,
        {
            "environment": info,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
