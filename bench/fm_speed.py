"""Times pushforward's flow matching against torchcfm and Meta's flow_matching, same network.

Every candidate uses one velocity network: ``[x, t] -> 256 -> 256 -> 256 -> D``
with SiLU, the time fed as one input column (the MLP of torchcfm's examples).
It is our ``VelocityMLP(D, hidden=(256, 256, 256), time_embedding=0)``; our
``FlowMatching`` model calls it as is, and the competitors get a thin module
that concatenates ``[x, t]`` and calls its inner ``nn.Sequential`` (the same
weights), as a user of those libraries would write it. Batch 512, float32,
Adam (lr 1e-3), one thread, standard normal source, the linear (cond-OT) path
with sigma = 0. The data are a mixture of 8 Gaussians in D dimensions (centres
at radius 4, standard deviation 0.5).

Figures, at D = 2 and 16:

1. training step (loss, backward, Adam step) with the independent coupling:
   ours ``model.loss(x)``; torchcfm ``ConditionalFlowMatcher(sigma=0)``
   ``.sample_location_and_conditional_flow`` + MSE; flow_matching
   ``AffineProbPath(CondOTScheduler()).sample`` + MSE; and the floor: the bare
   ``nn.Sequential`` on a ready ``(512, D + 1)`` input, MSE, backward, Adam.
2. training step with exact minibatch OT: ours as ``pushforward.fit`` runs it
   (``PrepareAhead`` solves the next batch's assignment in a background thread
   while this step trains; each timed call is one steady-state step: take the
   prepared coupling, start the next one, train, wait for it), ours
   synchronous (``coupling="ot"``, ``model.loss(x)``), and torchcfm
   ``ExactOptimalTransportConditionalFlowMatcher``. flow_matching has no OT
   coupling. Figure 2's rounds also time ours and torchcfm with the
   independent coupling, so the ratios OT step / independent step are paired.
   Then the coupling alone: our ``minibatch_ot_coupling`` (``ot_assignment``:
   scipy's ``linear_sum_assignment``) against torchcfm's ``OTPlanSampler.sample_plan``
   (POT's ``emd``, then 512 pairs drawn from the plan with replacement); we
   count how many distinct source and data points those draws keep and check
   that both solve the same transport problem (equal total cost).
3. 10,000 samples: Euler with 100 steps (ours ``sample(..., solver="euler",
   steps=100)``, flow_matching ``ODESolver.sample(step_size=0.01,
   method="euler")``, torchcfm's way with torchdiffeq, as torchdyn is not
   installed: ``odeint(wrapper, x0, linspace(0, 1, 101), method="euler")``,
   the whole trajectory returned as torchcfm's examples do) and dopri5 with
   atol = rtol = 1e-5 (grid ``[0, 1]``), network evaluations counted.
4. exact log-likelihood of 1,000 points, dopri5, atol = rtol = 1e-5: ours
   ``log_prob(x)`` (under ``torch.no_grad``; the network's own Jacobian trace,
   ``VelocityMLP.velocity_and_divergence``, and, as a second candidate, the
   generic vmapped forward-mode trace ``exact_divergence`` that a network
   without it gets) against flow_matching
   ``ODESolver.compute_likelihood(exact_divergence=True)`` (D reverse-mode
   passes per evaluation). torchcfm has no likelihood API.

Figures 3 and 4 use the network after a brief training (300 steps of ours,
independent coupling) so that the field is not trivial; every candidate
starts from the same source points where it matters, and the script reports
the largest difference between their samples and log-likelihoods.

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/fm_speed.py [--rounds 12] [--slow-rounds 4] [--json out.json]
    python bench/fm_speed.py --quick     # smoke test, a few minutes
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.metadata
import math
import statistics
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torchdiffeq
from flow_matching.path import AffineProbPath
from flow_matching.path.scheduler import CondOTScheduler
from flow_matching.solver import ODESolver
from torch import Tensor, nn
from torchcfm.conditional_flow_matching import (
    ConditionalFlowMatcher,
    ExactOptimalTransportConditionalFlowMatcher,
)
from torchcfm.optimal_transport import OTPlanSampler

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
from pushforward.matching.couplings import minibatch_ot_coupling
from pushforward.matching.model import FlowMatching
from pushforward.matching.schedulers import make_scheduler
from pushforward.nn.velocity import VelocityMLP
from pushforward.train.prepare import PrepareAhead

BATCH = 512
HIDDEN = (256, 256, 256)
LR = 1e-3
SAMPLES = 10_000
EULER_STEPS = 100
TOLERANCE = 1e-5
LIKELIHOOD_POINTS = 1_000
PRETRAIN_STEPS = 300
POOL = 8  # distinct data batches cycled through by the training steps
LIBRARIES = ("pushforward", "torchcfm", "flow_matching", "torchdiffeq", "POT", "scipy")


# -- the shared network and the competitors' wrappers -------------------------


def velocity_network(features: int) -> VelocityMLP:
    """Our velocity MLP with the raw time as one input column: ``[x, t] -> 256^3 -> D``."""
    return VelocityMLP(features, hidden=HIDDEN, time_embedding=0, activation="silu")


class ConcatTime(nn.Module):
    """``mlp(cat([x, t]))`` with ``t`` 0-dim or ``(batch,)``: how torchcfm's and
    flow_matching's users feed time to a plain MLP."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.mlp(torch.cat([x, t.reshape(-1).expand(x.shape[0])[:, None]], dim=1))


class TimeFirst(nn.Module):
    """torchcfm's ``torch_wrapper`` (``forward(t, x)`` for torchdyn / torchdiffeq);
    torchcfm.utils imports torchdyn, which is not installed, so it is rewritten here."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.mlp(torch.cat([x, t.repeat(x.shape[0])[:, None]], dim=1))


class Counted(nn.Module):
    """Counts the calls of a module (network evaluations); only used outside timed calls."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.module(*args, **kwargs)


class CountedTrace(Counted):
    """:class:`Counted` that also passes on (and counts) the network's own
    ``velocity_and_divergence``, so that our model keeps its fast exact divergence."""

    def velocity_and_divergence(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.module.velocity_and_divergence(*args, **kwargs)


def ours(network: nn.Module, features: int, coupling: str = "independent") -> FlowMatching:
    """Our flow-matching model around ``network``, with the benchmark's solver settings."""
    return FlowMatching(
        network,
        make_base("normal", (features,)),
        make_scheduler("cond-ot"),
        coupling=coupling,
        likelihood_solver="dopri5",
        atol=TOLERANCE,
        rtol=TOLERANCE,
        divergence="exact",
    )


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` summed over features: ``(n, D) -> (n,)``."""
    return -0.5 * z.square().sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def mixture(n: int, features: int, generator: torch.Generator) -> Tensor:
    """``n`` points of 8 Gaussians (std 0.5) centred at radius 4 in random directions."""
    centres = torch.randn(8, features, generator=torch.Generator().manual_seed(features))
    centres = 4.0 * centres / centres.norm(dim=1, keepdim=True)
    which = torch.randint(0, 8, (n,), generator=generator)
    return centres[which] + 0.5 * torch.randn(n, features, generator=generator)


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- figures 1 and 2: training steps ------------------------------------------


class Steps:
    """Cycles through a pool of data batches; ``next()`` returns the next one."""

    def __init__(self, pool: list[Tensor]) -> None:
        self.pool = pool
        self.index = 0

    def next(self) -> Tensor:
        batch = self.pool[self.index % len(self.pool)]
        self.index += 1
        return batch


def adam(module: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=LR)


def ours_step(model: FlowMatching, pool: list[Tensor]) -> Callable[[], None]:
    optimizer, data = adam(model), Steps(pool)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.loss(data.next()).backward()
        optimizer.step()

    return step


class OverlappedStep:
    """One steady-state step of ``fit`` with an OT coupling prepared one step ahead.

    Takes this step's prepared coupling (made during the previous call), starts
    the next batch's preparation in ``PrepareAhead``'s thread, trains, and waits
    for that preparation before returning, so no background work runs while
    another candidate is timed and each call costs what a step costs in a long
    run: about max(train, prepare) plus the hand-over.
    """

    def __init__(self, model: FlowMatching, pool: list[Tensor]) -> None:
        self.model = model
        self.pool = pool
        self.optimizer = adam(model)
        self.preparer = PrepareAhead(model, seed=0)
        self.step = 0

    def batch(self, step: int) -> Tensor:
        return self.pool[step % len(self.pool)]

    def __call__(self) -> None:
        k = self.step
        x = self.batch(k)
        prepared = self.preparer.current(k, x, None)
        self.preparer.ahead(k + 1, self.batch(k + 1), None)
        self.optimizer.zero_grad(set_to_none=True)
        self.model.loss(x, prepared=prepared).backward()
        self.optimizer.step()
        for future in self.preparer.pending.values():
            future.result()
        self.step += 1


def torchcfm_step(
    network: nn.Module, matcher: ConditionalFlowMatcher, pool: list[Tensor]
) -> Callable[[], None]:
    """The training step of torchcfm's examples: draw x0, sample the path, MSE."""
    optimizer, data = adam(network), Steps(pool)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        x1 = data.next()
        x0 = torch.randn_like(x1)
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        torch.mean((network(xt, t) - ut) ** 2).backward()
        optimizer.step()

    return step


def flow_matching_step(network: nn.Module, pool: list[Tensor]) -> Callable[[], None]:
    """The training step of flow_matching's examples: AffineProbPath.sample, MSE."""
    optimizer, data = adam(network), Steps(pool)
    path = AffineProbPath(scheduler=CondOTScheduler())

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        x1 = data.next()
        x0 = torch.randn_like(x1)
        t = torch.rand(x1.shape[0], dtype=x1.dtype)
        sample = path.sample(x_0=x0, x_1=x1, t=t)
        torch.pow(network(sample.x_t, sample.t) - sample.dx_t, 2).mean().backward()
        optimizer.step()

    return step


def floor_step(mlp: nn.Module, features: int) -> Callable[[], None]:
    """The bare network on a ready ``[x, t]`` batch: forward, MSE, backward, Adam."""
    optimizer = adam(mlp)
    inputs = torch.randn(BATCH, features + 1)
    target = torch.randn(BATCH, features)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        (mlp(inputs) - target).square().mean().backward()
        optimizer.step()

    return step


def training_candidates(
    features: int, pool: list[Tensor], coupled: bool
) -> dict[str, Callable[[], None]]:
    """The training steps of figure 1, or of figure 2 (``coupled``), each on its own copy
    of one network.

    Figure 2's set repeats ours and torchcfm with the independent coupling, so
    that its OT / independent ratios are paired round by round. The two
    figures are timed apart because the round order rotates but keeps the
    cyclic order of the candidates: in one set, the candidate after an OT
    step (which sweeps 512 x 512 cost matrices through the caches) would
    always start its round cold, a bias of several percent on a 9 ms step.
    """
    template = velocity_network(features)

    def fresh() -> VelocityMLP:
        return copy.deepcopy(template)

    independent = {
        "ours": ours_step(ours(fresh(), features), pool),
        "torchcfm": torchcfm_step(ConcatTime(fresh().network), ConditionalFlowMatcher(0.0), pool),
    }
    if not coupled:
        return {
            **independent,
            "flow_matching": flow_matching_step(ConcatTime(fresh().network), pool),
            "floor": floor_step(fresh().network, features),
        }
    return {
        **independent,
        "ours OT ahead": OverlappedStep(ours(fresh(), features, "ot"), pool),
        "ours OT sync": ours_step(ours(fresh(), features, "ot"), pool),
        "torchcfm OT": torchcfm_step(
            ConcatTime(fresh().network), ExactOptimalTransportConditionalFlowMatcher(0.0), pool
        ),
    }


# -- figure 2b: the coupling alone ---------------------------------------------


def coupling_candidates(x0: Tensor, x1: Tensor) -> dict[str, Callable[[], object]]:
    """Our exact OT pairing and torchcfm's plan-and-resample, on the same batch."""
    sampler = OTPlanSampler(method="exact")
    return {
        "ours": functools.partial(minibatch_ot_coupling, x0, x1),
        "torchcfm": functools.partial(sampler.sample_plan, x0, x1),
    }


def coupling_study(features: int, generator: torch.Generator, batches: int) -> dict[str, float]:
    """Distinct points kept by torchcfm's resampling, and the OT costs of both solvers."""
    sampler = OTPlanSampler(method="exact")
    distinct_x0, distinct_x1, cost_gap = [], [], []
    for _ in range(batches):
        x0 = torch.randn(BATCH, features, generator=generator)
        x1 = mixture(BATCH, features, generator)
        plan = sampler.get_map(x0, x1)
        i, j = sampler.sample_map(plan, BATCH)
        distinct_x0.append(len(np.unique(i)))
        distinct_x1.append(len(np.unique(j)))
        ours_pairs = minibatch_ot_coupling(x0.double(), x1.double())
        ours_cost = (ours_pairs.x0 - ours_pairs.x1).square().sum().item()
        pot_cost = float((plan * torch.cdist(x0, x1).square().double().numpy()).sum()) * BATCH
        cost_gap.append(abs(ours_cost - pot_cost) / pot_cost)
    return {
        "distinct_x0_mean": statistics.mean(distinct_x0),
        "distinct_x1_mean": statistics.mean(distinct_x1),
        "max_relative_cost_gap": max(cost_gap),
    }


# -- figures 3 and 4: sampling and likelihood ----------------------------------


def pretrain(network: VelocityMLP, features: int, generator: torch.Generator) -> None:
    """A few hundred steps of ours so that the field the solvers follow is not trivial."""
    model = ours(network, features)
    optimizer = adam(model)
    with torch.random.fork_rng():
        torch.manual_seed(features)
        for _ in range(PRETRAIN_STEPS):
            optimizer.zero_grad(set_to_none=True)
            model.loss(mixture(BATCH, features, generator)).backward()
            optimizer.step()


def sampling_candidates(
    network: VelocityMLP, features: int, method: str
) -> dict[str, Callable[[], Tensor]]:
    """Draw ``SAMPLES`` points with ``method`` (``euler`` 100 steps or ``dopri5``)."""
    model = ours(network, features)
    solver = ODESolver(velocity_model=ConcatTime(network.network))
    wrapper = TimeFirst(network.network)
    if method == "euler":
        grid = torch.linspace(0.0, 1.0, EULER_STEPS + 1)

        def pushforward_call() -> Tensor:
            return model.sample(SAMPLES, solver="euler", steps=EULER_STEPS)

        def flow_matching_call() -> Tensor:
            x0 = torch.randn(SAMPLES, features)
            return solver.sample(
                x_init=x0,
                step_size=1.0 / EULER_STEPS,
                method="euler",
                time_grid=torch.tensor([0.0, 1.0]),
            )
    else:
        grid = torch.tensor([0.0, 1.0])

        def pushforward_call() -> Tensor:
            return model.sample(SAMPLES, solver="dopri5")

        def flow_matching_call() -> Tensor:
            x0 = torch.randn(SAMPLES, features)
            return solver.sample(
                x_init=x0,
                step_size=None,
                method="dopri5",
                atol=TOLERANCE,
                rtol=TOLERANCE,
                time_grid=torch.tensor([0.0, 1.0]),
            )

    def torchcfm_call() -> Tensor:
        x0 = torch.randn(SAMPLES, features)
        with torch.no_grad():
            return torchdiffeq.odeint(
                wrapper, x0, grid, method=method, atol=TOLERANCE, rtol=TOLERANCE
            )[-1]

    return {
        "ours": pushforward_call,
        "flow_matching": flow_matching_call,
        "torchcfm": torchcfm_call,
    }


def sampling_check(network: VelocityMLP, features: int, method: str) -> dict[str, Any]:
    """Network evaluations of each candidate and the largest gap between their samples."""
    x0 = torch.randn(SAMPLES, features, generator=torch.Generator().manual_seed(1))
    counted = Counted(network)
    model = ours(counted, features)  # type: ignore[arg-type]
    fm_net = Counted(ConcatTime(network.network))
    cfm_net = Counted(TimeFirst(network.network))
    with torch.no_grad():
        if method == "euler":
            grid = torch.linspace(0.0, 1.0, EULER_STEPS + 1)
            mine = model.solve(x0, solver="euler", steps=EULER_STEPS)
            theirs = ODESolver(velocity_model=fm_net).sample(
                x_init=x0, step_size=1.0 / EULER_STEPS, method="euler"
            )
        else:
            grid = torch.tensor([0.0, 1.0])
            mine = model.solve(x0, solver="dopri5", atol=TOLERANCE, rtol=TOLERANCE)
            theirs = ODESolver(velocity_model=fm_net).sample(
                x_init=x0, step_size=None, method="dopri5", atol=TOLERANCE, rtol=TOLERANCE
            )
        cfm = torchdiffeq.odeint(cfm_net, x0, grid, method=method, atol=TOLERANCE, rtol=TOLERANCE)
    state = mine.state
    if not isinstance(state, Tensor):
        raise RuntimeError(f"ours: solve returned a {type(state).__name__}, not a tensor")
    return {
        "nfe": {"ours": counted.calls, "flow_matching": fm_net.calls, "torchcfm": cfm_net.calls},
        "ours_reported_nfe": mine.nfe,
        "max_abs_diff_flow_matching": (state - theirs).abs().max().item(),
        "max_abs_diff_torchcfm": (state - cfm[-1]).abs().max().item(),
    }


def likelihood_candidates(
    network: VelocityMLP, features: int, x: Tensor
) -> tuple[dict[str, Callable[[], Tensor]], Counted, Counted]:
    """Exact log-likelihood of ``x`` by ours (the network's own trace, and the generic
    forward-mode trace) and by flow_matching; with call counters."""
    counted = CountedTrace(network)
    model = ours(counted, features)  # type: ignore[arg-type]
    # Counted hides velocity_and_divergence, so this model takes exact_divergence.
    generic = ours(Counted(network), features)  # type: ignore[arg-type]
    fm_net = Counted(ConcatTime(network.network))
    solver = ODESolver(velocity_model=fm_net)

    def pushforward_call() -> Tensor:
        with torch.no_grad():
            return model.log_prob(
                x, solver="dopri5", atol=TOLERANCE, rtol=TOLERANCE, divergence="exact"
            )

    def generic_call() -> Tensor:
        with torch.no_grad():
            return generic.log_prob(
                x, solver="dopri5", atol=TOLERANCE, rtol=TOLERANCE, divergence="exact"
            )

    def flow_matching_call() -> Tensor:
        return solver.compute_likelihood(
            x_1=x,
            log_p0=standard_normal_log_prob,
            step_size=None,
            method="dopri5",
            atol=TOLERANCE,
            rtol=TOLERANCE,
            exact_divergence=True,
            time_grid=torch.tensor([1.0, 0.0]),
        )[1]

    calls = {
        "ours": pushforward_call,
        "ours generic": generic_call,
        "flow_matching": flow_matching_call,
    }
    return calls, counted, fm_net


# -- main -----------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def ms(timings: dict[str, Timing], name: str) -> str:
    return f"{timings[name].median * 1e3:.2f}"


def ratio(timings: dict[str, Timing], a: str, b: str) -> str:
    return f"{paired_ratio(timings, a, b):.2f}"


def rounds_ms(timings: dict[str, Timing]) -> dict[str, Any]:
    return {
        name: {
            "calls": t.calls,
            "median_ms": t.median * 1e3,
            "rounds_ms": [s * 1e3 for s in t.rounds],
        }
        for name, t in timings.items()
    }


def main() -> None:
    setup(threads=1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="kept rounds, training figures")
    parser.add_argument("--warmup", type=int, default=2, help="discarded rounds, training")
    parser.add_argument("--target", type=float, default=0.1, help="seconds per candidate/round")
    parser.add_argument(
        "--slow-rounds", type=int, default=4, help="kept rounds, sampling and likelihood"
    )
    parser.add_argument(
        "--slow-warmup",
        type=int,
        default=0,
        help="discarded rounds, sampling and likelihood (each candidate already runs twice "
        "before the rounds, to set its call count)",
    )
    parser.add_argument("--features", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--coupling-batches", type=int, default=50)
    parser.add_argument("--skip-slow", action="store_true", help="only figures 1 and 2")
    parser.add_argument("--quick", action="store_true", help="smoke test: few short rounds")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.target = 3, 1, 0.01
        args.slow_rounds, args.slow_warmup, args.coupling_batches = 1, 0, 5

    info = environment(library_versions())
    print("# Flow matching: pushforward vs torchcfm and flow_matching\n")
    print_environment(info)
    print(
        f"batch {BATCH}, float32, Adam lr {LR}, velocity MLP [x, t] -> {list(HIDDEN)} -> D, "
        f"SiLU; median ms per call over {args.rounds} interleaved rounds ({args.warmup} "
        f"warm-up rounds discarded) for training and coupling, {args.slow_rounds} rounds for "
        "sampling and likelihood; ratios are medians of per-round paired ratios.\n",
        flush=True,
    )

    results: dict[str, Any] = {"environment": info, "features": {}}
    train_rows, ot_rows, coupling_rows, sample_rows, likelihood_rows, count_rows = (
        [],
        [],
        [],
        [],
        [],
        [],
    )
    for features in args.features:
        torch.manual_seed(0)
        # torchcfm draws its pairs from the plan with numpy's global generator.
        np.random.seed(0)  # noqa: NPY002
        generator = torch.Generator().manual_seed(0)
        record: dict[str, Any] = {}
        results["features"][str(features)] = record
        pool = [mixture(BATCH, features, generator) for _ in range(POOL)]

        network = velocity_network(features)
        count_rows.append(
            [
                f"D={features}",
                parameters(ours(network, features)),
                parameters(ConcatTime(network.network)),
                parameters(network.network),
            ]
        )

        timings = interleaved(
            training_candidates(features, pool, coupled=False),
            args.rounds,
            args.warmup,
            args.target,
        )
        record["training"] = rounds_ms(timings)
        train_rows.append(
            [
                f"D={features}",
                ms(timings, "ours"),
                ms(timings, "torchcfm"),
                ms(timings, "flow_matching"),
                ms(timings, "floor"),
                ratio(timings, "ours", "torchcfm"),
                ratio(timings, "ours", "flow_matching"),
                ratio(timings, "ours", "floor"),
            ]
        )
        print(f"  done: D={features} training, independent", flush=True, file=sys.stderr)

        candidates = training_candidates(features, pool, coupled=True)
        timings = interleaved(candidates, args.rounds, args.warmup, args.target)
        overlapped = candidates["ours OT ahead"]
        if isinstance(overlapped, OverlappedStep):
            overlapped.preparer.close()
        record["training_ot"] = rounds_ms(timings)
        ot_rows.append(
            [
                f"D={features}",
                ms(timings, "ours OT ahead"),
                ms(timings, "ours OT sync"),
                ms(timings, "torchcfm OT"),
                ratio(timings, "ours OT ahead", "ours"),
                ratio(timings, "ours OT sync", "ours"),
                ratio(timings, "torchcfm OT", "torchcfm"),
                ratio(timings, "ours OT ahead", "torchcfm OT"),
                ratio(timings, "ours OT sync", "torchcfm OT"),
            ]
        )
        print(f"  done: D={features} training, OT", flush=True, file=sys.stderr)

        # Figure 2b: the coupling alone.
        x0 = torch.randn(BATCH, features, generator=generator)
        x1 = pool[0]
        coupling_timings = interleaved(
            coupling_candidates(x0, x1), args.rounds, args.warmup, args.target
        )
        study = coupling_study(features, generator, args.coupling_batches)
        record["coupling"] = {**rounds_ms(coupling_timings), **study}
        coupling_rows.append(
            [
                f"D={features}",
                ms(coupling_timings, "ours"),
                ms(coupling_timings, "torchcfm"),
                ratio(coupling_timings, "ours", "torchcfm"),
                f"{study['distinct_x0_mean']:.1f} / {BATCH}",
                f"{study['distinct_x1_mean']:.1f} / {BATCH}",
                f"{study['max_relative_cost_gap']:.1e}",
            ]
        )
        print(f"  done: D={features} coupling", flush=True, file=sys.stderr)
        if args.skip_slow:
            continue

        # Figures 3 and 4 on a briefly trained network shared by every candidate.
        pretrain(network, features, generator)
        for method in ("euler", "dopri5"):
            check = sampling_check(network, features, method)
            timings = interleaved(
                sampling_candidates(network, features, method),
                args.slow_rounds,
                args.slow_warmup,
                target=0.0,
            )
            record[f"sample_{method}"] = {**rounds_ms(timings), **check}
            nfe = check["nfe"]
            gap = max(check["max_abs_diff_flow_matching"], check["max_abs_diff_torchcfm"])
            label = f"euler {EULER_STEPS} steps" if method == "euler" else "dopri5 1e-5"
            sample_rows.append(
                [
                    f"D={features} {label}",
                    ms(timings, "ours"),
                    ms(timings, "flow_matching"),
                    ms(timings, "torchcfm"),
                    ratio(timings, "ours", "flow_matching"),
                    ratio(timings, "ours", "torchcfm"),
                    f"{nfe['ours']} / {nfe['flow_matching']} / {nfe['torchcfm']}",
                    f"{gap:.1e}",
                ]
            )
            print(f"  done: D={features} sample {method}", flush=True, file=sys.stderr)

        x = mixture(LIKELIHOOD_POINTS, features, generator)
        calls, counted_ours, counted_fm = likelihood_candidates(network, features, x)
        mine = calls["ours"]()
        difference = (mine - calls["flow_matching"]()).abs().max().item()
        nfe_ours, nfe_fm = counted_ours.calls, counted_fm.calls
        difference_generic = (mine - calls["ours generic"]()).abs().max().item()
        timings = interleaved(calls, args.slow_rounds, args.slow_warmup, target=0.0)
        record["likelihood"] = {
            **rounds_ms(timings),
            "nfe": {"ours": nfe_ours, "flow_matching": nfe_fm},
            "max_abs_diff": difference,
            "max_abs_diff_generic": difference_generic,
        }
        likelihood_rows.append(
            [
                f"D={features}",
                ms(timings, "ours"),
                ms(timings, "ours generic"),
                ms(timings, "flow_matching"),
                ratio(timings, "ours", "flow_matching"),
                f"{1 / paired_ratio(timings, 'ours', 'flow_matching'):.2f}",
                ratio(timings, "ours", "ours generic"),
                f"{nfe_ours} / {nfe_fm}",
                f"{difference:.1e}",
                f"{difference_generic:.1e}",
            ]
        )
        print(f"  done: D={features} likelihood", flush=True, file=sys.stderr)

    print("## 1. Training step, independent coupling (ms per step)\n")
    print(
        markdown_table(
            [
                "D",
                "pushforward",
                "torchcfm",
                "flow_matching",
                "floor",
                "ours/torchcfm",
                "ours/flow_matching",
                "ours/floor",
            ],
            train_rows,
        )
    )
    print("\n## 2. Training step, exact minibatch OT coupling (ms per step)\n")
    print(
        markdown_table(
            [
                "D",
                "ours, prepared ahead",
                "ours, synchronous",
                "torchcfm OT",
                "ours ahead / ours indep.",
                "ours sync / ours indep.",
                "torchcfm OT / torchcfm indep.",
                "ours ahead / torchcfm OT",
                "ours sync / torchcfm OT",
            ],
            ot_rows,
        )
    )
    print("\nThe coupling alone (ms per batch of 512):\n")
    print(
        markdown_table(
            [
                "D",
                "ours minibatch_ot_coupling",
                "torchcfm sample_plan",
                "ours/torchcfm",
                "torchcfm distinct x0",
                "torchcfm distinct x1",
                "max rel. cost gap",
            ],
            coupling_rows,
        )
    )
    if sample_rows:
        print(f"\n## 3. Drawing {SAMPLES:,} samples (ms)\n")
        print(
            markdown_table(
                [
                    "D / solver",
                    "pushforward",
                    "flow_matching",
                    "torchcfm (torchdiffeq)",
                    "ours/flow_matching",
                    "ours/torchcfm",
                    "NFE ours / fm / cfm",
                    "max abs diff",
                ],
                sample_rows,
            )
        )
        print(f"\n## 4. Exact log-likelihood of {LIKELIHOOD_POINTS:,} points, dopri5 1e-5 (ms)\n")
        print(
            markdown_table(
                [
                    "D",
                    "pushforward",
                    "ours, generic trace",
                    "flow_matching",
                    "ours/flow_matching",
                    "speed-up",
                    "ours/generic",
                    "NFE ours / fm",
                    "max abs diff log p",
                    "max abs diff ours/generic",
                ],
                likelihood_rows,
            )
        )
    print("\nParameters (architecture check):\n")
    print(
        markdown_table(
            ["D", "ours FlowMatching", "competitors' wrapper", "bare network"], count_rows
        )
    )
    write_json(args.json, results)


if __name__ == "__main__":
    main()
