"""Times ``ffjord`` against zuko 1.6's FFJORD transform with one network, and measures memory.

Both candidates integrate one velocity network, our
``VelocityMLP(D, hidden=(64, 64, 64), time_embedding=0, residual=False, activation="elu")``
(time fed as a raw input column, as zuko's ``CNF`` feeds its MLP), from the data at
t = 1 to a standard normal base at t = 0 with dopri5 at atol = rtol = 1e-5. Ours is
``FFJORD`` (``likelihood_terms`` in training, ``log_prob`` at evaluation); zuko's is
``zuko.transforms.FreeFormJacobianTransform(f, t0=1, t1=0, phi=network.parameters())``
with ``f(t, x) = network(x, t)``, its ``call_and_ladj`` plus the base's log-density:
the whole of zuko's ``CNF`` but its own MLP. zuko integrates with its own adaptive
Dormand-Prince solver and always back-propagates by its adjoint; it computes the exact
trace by D batched reverse-mode passes and scales the trace's error tolerance by 1e-2
(its ``trace_scale``), so its solves take fewer steps than ours at the same tolerance:
the number of function evaluations (NFE) is reported beside each time.

Figures, at D = 2 and D = 8, batch 256, float32, one thread, Adam (lr 1e-3):

1. a training step (negative log-likelihood, backward, Adam step), exact trace and
   Hutchinson (one Rademacher probe for ours, zuko's Gaussian probe), ours by
   back-propagation through the solver (the default) and by the adjoint;
2. the log-likelihood of 1,000 points under ``torch.no_grad``, exact and Hutchinson.

The network is first trained by flow matching for 300 steps on a mixture of 8
Gaussians in D dimensions, so that the field is not trivial; both candidates see the
same weights and the same points, and the script reports how far their exact
log-likelihoods differ.

3. Memory of a training step: the bytes autograd saves for the backward pass
   (:func:`pushforward.metrics.memory.saved_tensor_bytes`, exact on any device) for a
   fixed-step RK4 solve of N = 2 ... 64 steps (NFE = 4N), by back-propagation
   through the solver and by the adjoint, with zuko's (adaptive, adjoint) beside
   them; the figure ``bench/ffjord_memory.png``.

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/ffjord_speed.py [--rounds 8] [--json out.json]
    python bench/ffjord_speed.py --quick
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pushforward
from common import (
    Timing,
    environment,
    interleaved,
    markdown_table,
    paired_ratio,
    print_environment,
    setup,
    write_json,
)
from pushforward.distributions import make_base
from pushforward.matching import FlowMatching, make_scheduler
from pushforward.matching.ffjord import FFJORD
from pushforward.metrics.memory import saved_tensor_bytes
from pushforward.nn.velocity import VelocityMLP

HIDDEN = (64, 64, 64)
TOLERANCE = 1e-5
BATCH = 256


def network(features: int) -> VelocityMLP:
    return VelocityMLP(features, hidden=HIDDEN, time_embedding=0, activation="elu", residual=False)


def mixture(n: int, features: int, generator: torch.Generator) -> Tensor:
    """Eight Gaussians at radius 4 in the first two coordinates, unit noise elsewhere."""
    angles = torch.randint(0, 8, (n,), generator=generator).float() * (torch.pi / 4)
    x = torch.randn(n, features, generator=generator)
    x[:, 0] = 4 * torch.cos(angles) + 0.5 * x[:, 0]
    x[:, 1] = 4 * torch.sin(angles) + 0.5 * x[:, 1]
    return x / 2.5


def pretrain(net: VelocityMLP, features: int, generator: torch.Generator) -> None:
    model = FlowMatching(net, make_base("normal", (features,)), make_scheduler("cond-ot"))
    data = mixture(4096, features, generator)
    pushforward.fit(model, data, steps=300, batch_size=256, lr=3e-3, quiet=True, seed=0)


class Counted(nn.Module):
    """Counts the evaluations of a velocity network (outside the timed calls)."""

    def __init__(self, module: VelocityMLP) -> None:
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, *args: Any) -> Tensor:
        self.calls += 1
        return self.module(*args)

    def velocity_and_divergence(self, *args: Any) -> tuple[Tensor, Tensor]:
        self.calls += 1
        return self.module.velocity_and_divergence(*args)

    def velocity_and_jvp(self, *args: Any) -> tuple[Tensor, Tensor]:
        self.calls += 1
        return self.module.velocity_and_jvp(*args)


def ours(net: nn.Module, features: int, **options: Any) -> FFJORD:
    return FFJORD(
        net,
        make_base("normal", (features,)),
        training_atol=TOLERANCE,
        training_rtol=TOLERANCE,
        likelihood_solver="dopri5",
        atol=TOLERANCE,
        rtol=TOLERANCE,
        **options,
    )


class Zuko:
    """zuko's FFJORD transform around ``net``, with a standard normal base."""

    def __init__(self, net: nn.Module, features: int, exact: bool) -> None:
        import zuko

        self.net = net
        self.features = features
        self.transform = zuko.transforms.FreeFormJacobianTransform(
            self.field,
            1.0,
            0.0,
            phi=tuple(net.parameters()),
            atol=TOLERANCE,
            rtol=TOLERANCE,
            exact=exact,
        )

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        return self.net(x, t.reshape(()).expand(x.shape[0]))

    def log_prob(self, x: Tensor) -> Tensor:
        z, ladj = self.transform.call_and_ladj(x)
        base = -0.5 * z.square().sum(-1) - 0.5 * self.features * torch.log(
            torch.tensor(2 * torch.pi)
        )
        return base + ladj


def training_step(loss: Callable[[Tensor], Tensor], module: nn.Module, x: Tensor):
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    state = {name: p.detach().clone() for name, p in module.named_parameters()}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(x).backward()
        optimizer.step()
        # Back to the same weights, so every call solves the same field.
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(state[name])

    return step


def nfe_of(counted: Counted, call: Callable[[], object]) -> int:
    counted.calls = 0
    call()
    return counted.calls


def speed(features: int, rounds: int, warmup: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(features)
    net = network(features)
    pretrain(net, features, generator)
    counted = Counted(net)
    x = mixture(BATCH, features, generator)
    points = mixture(1000, features, generator)
    exact = ours(counted, features)
    hutchinson = ours(counted, features, training_divergence="hutchinson")
    adjoint = ours(counted, features, adjoint=True)
    zuko_exact = Zuko(counted, features, exact=True)
    zuko_hutchinson = Zuko(counted, features, exact=False)

    def nll(model: Any) -> Callable[[Tensor], Tensor]:
        if isinstance(model, FFJORD):
            return lambda batch: -model.likelihood_terms(batch).log_prob.mean()
        return lambda batch: -model.log_prob(batch).mean()

    train = {
        "ours exact": training_step(nll(exact), net, x),
        "ours exact adjoint": training_step(nll(adjoint), net, x),
        "zuko exact": training_step(nll(zuko_exact), net, x),
        "ours hutchinson": training_step(nll(hutchinson), net, x),
        "zuko hutchinson": training_step(nll(zuko_hutchinson), net, x),
    }

    def no_grad(call: Callable[[], Tensor]) -> Callable[[], Tensor]:
        def run() -> Tensor:
            with torch.no_grad():
                return call()

        return run

    likelihood = {
        "ours exact": no_grad(lambda: exact.log_prob(points)),
        "zuko exact": no_grad(lambda: zuko_exact.log_prob(points)),
        "ours hutchinson": no_grad(lambda: exact.log_prob(points, divergence="hutchinson")),
        "zuko hutchinson": no_grad(lambda: zuko_hutchinson.log_prob(points)),
    }
    with torch.no_grad():
        difference = float((exact.log_prob(points) - zuko_exact.log_prob(points)).abs().max())
    nfe = {
        "train": {name: nfe_of(counted, call) for name, call in train.items()},
        "log_prob": {name: nfe_of(counted, call) for name, call in likelihood.items()},
    }
    train_times = interleaved(train, rounds, warmup, target=0.3)
    likelihood_times = interleaved(likelihood, rounds, warmup, target=0.3)
    return {
        "features": features,
        "train": train_times,
        "log_prob": likelihood_times,
        "nfe": nfe,
        "max_log_prob_difference": difference,
    }


def memory(features: int, steps: list[int]) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(features)
    net = network(features)
    x = mixture(BATCH, features, generator)
    rows: dict[str, Any] = {"steps": steps, "direct": [], "adjoint": []}
    for n in steps:
        for kind in ("direct", "adjoint"):
            model = ours(
                net, features, training_solver="rk4", training_steps=n, adjoint=kind == "adjoint"
            )
            with saved_tensor_bytes() as saved:
                loss = -model.likelihood_terms(x).log_prob.mean()
            loss.backward()
            rows[kind].append(saved.total)
    counted = Counted(net)
    zuko = Zuko(counted, features, exact=True)
    with saved_tensor_bytes() as saved:
        loss = -zuko.log_prob(x).mean()
    loss.backward()
    rows["zuko"] = saved.total
    rows["zuko_nfe"] = counted.calls
    return rows


def plot_memory(rows: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nfe = [4 * n for n in rows["steps"]]
    figure, axis = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    axis.plot(nfe, [b / 2**20 for b in rows["direct"]], "o-", label="ours, through the solver")
    axis.plot(nfe, [b / 2**20 for b in rows["adjoint"]], "s-", label="ours, adjoint")
    axis.axhline(
        rows["zuko"] / 2**20,
        color="grey",
        ls="--",
        label=f"zuko (adjoint, adaptive, NFE {rows['zuko_nfe']})",
    )
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("function evaluations of the training solve (RK4)")
    axis.set_ylabel("saved for backward (MiB)")
    axis.set_title("ffjord training step, D = 2, batch 256")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    setup(threads=1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke test")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    versions = {"zuko": importlib.metadata.version("zuko")}
    print_environment(environment(versions))
    results = []
    for features in (2,) if args.quick else (2, 8):
        result = speed(features, rounds, 0 if args.quick else args.warmup)
        results.append(result)
        print(
            f"\n### D = {features}  (max |log p ours - log p zuko| = "
            f"{result['max_log_prob_difference']:.1e})\n"
        )
        for figure, label in (("train", "training step"), ("log_prob", "log_prob of 1,000")):
            timings: dict[str, Timing] = result[figure]
            nfe = result["nfe"][figure]
            table = []
            for name in timings:
                zuko_name = "zuko hutchinson" if "hutchinson" in name else "zuko exact"
                ratio = (
                    ""
                    if name.startswith("zuko")
                    else f"{paired_ratio(timings, name, zuko_name):.2f}"
                )
                table.append([name, f"{timings[name].median * 1e3:.1f}", nfe[name], ratio])
            print(f"{label}:\n")
            print(markdown_table(["candidate", "ms", "NFE", "ours / zuko"], table))
            print()
    steps = [2, 4, 8] if args.quick else [2, 4, 8, 16, 32, 64]
    rows = memory(2, steps)
    print("\nmemory of a training step (bytes saved for backward, D = 2, batch 256):\n")
    table = [
        [4 * n, f"{d / 2**20:.2f}", f"{a / 2**20:.3f}"]
        for n, d, a in zip(rows["steps"], rows["direct"], rows["adjoint"], strict=True)
    ]
    print(markdown_table(["NFE", "through the solver (MiB)", "adjoint (MiB)"], table))
    print(f"\nzuko (adjoint, adaptive, NFE {rows['zuko_nfe']}): {rows['zuko'] / 2**20:.3f} MiB")
    figure = Path(__file__).resolve().parent / "ffjord_memory.png"
    plot_memory(rows, figure)
    print(f"\nfigure: {figure.name}")
    write_json(
        args.json,
        {
            "speed": [
                {
                    "features": r["features"],
                    "nfe": r["nfe"],
                    "max_log_prob_difference": r["max_log_prob_difference"],
                    **{
                        figure: {name: t.rounds for name, t in r[figure].items()}
                        for figure in ("train", "log_prob")
                    },
                }
                for r in results
            ],
            "memory": rows,
        },
    )


if __name__ == "__main__":
    main()
