"""Few-step generation: sample quality and sampling time against function evaluations.

Every method trains on the same data with the same budget (``--steps`` Adam steps
of batch 512 with the model's own registered learning rate, warm-up then cosine
decay, EMA 0.999), in standardised units, through ``pushforward.train.fit``:

- ``fm``: flow matching with its defaults (residual 4x256, minibatch OT);
- ``fm-independent``: the same with independent coupling;
- ``reflow``: ``fm-independent`` rectified once (Liu et al. 2023): pairs from its
  ODE, then ``--steps`` more steps on them (its budget is therefore twice the
  others', plus the pairs);
- ``distilled``: ``reflow`` distilled into a one-step generator (InstaFlow), again
  ``--steps`` more steps;
- ``distilled-ot``: ``fm`` (already straight by its OT coupling) distilled into a
  one-step generator the same way, ``--steps`` more steps;
- ``meanflow`` (Geng et al. 2025), ``shortcut`` (Frans et al. 2025) and
  ``consistency-fm`` (Yang et al. 2024).

For each method and each number of function evaluations (NFE 1, 2, 4, 8, 16,
100; flow-matching models with Euler steps, few-step models with their own
steps) the script reports the squared energy distance (x 1e3) and a classifier
two-sample test accuracy between model samples and held-out data, the wall time
to draw 10,000 samples (median of 3 draws, one thread), and once per model the
straightness of its 100-step Euler trajectories of the instantaneous velocity
and the KL to the true density where the model has ``log_prob``.

Data: ``moons`` (2-D, exact density) and ``mixture10``: a 10-D mixture of 8
Gaussians with random means and covariances (seeded, exact density), generated
here.

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/fewstep.py [--steps 2000] [--jobs 2] [--json out.json] [--figure f.png]
    python bench/fewstep.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from common import environment, markdown_table, print_environment, setup, write_json

NFES = (1, 2, 4, 8, 16, 100)
SAMPLES = 10_000
C2ST_POINTS = 5_000
KL_POINTS = 2_000
STRAIGHTNESS_POINTS = 2_000
TIMING_REPEATS = 3
METHODS = (
    "fm",
    "fm-independent",
    "reflow",
    "distilled",
    "distilled-ot",
    "meanflow",
    "shortcut",
    "consistency-fm",
)
DATASETS = ("moons", "mixture10")


# -- data ---------------------------------------------------------------------------


def mixture10() -> torch.distributions.Distribution:
    """The 10-D Gaussian mixture: 8 equally weighted components, seeded."""
    generator = torch.Generator().manual_seed(10)
    dim, components = 10, 8
    means = 2.5 * torch.randn(components, dim, generator=generator, dtype=torch.float64)
    factors = 0.5 * torch.randn(components, dim, dim, generator=generator, dtype=torch.float64)
    scale = torch.tril(factors, diagonal=-1) + torch.diag_embed(
        0.3 + 0.4 * torch.rand(components, dim, generator=generator, dtype=torch.float64)
    )
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(components, dtype=torch.float64)),
        torch.distributions.MultivariateNormal(means, scale_tril=scale),
    )


@dataclass
class Data:
    """Training and held-out points in standardised units, and the true log-density there."""

    train: Tensor
    held_out: Tensor
    mean: Tensor
    std: Tensor
    true_log_prob: Callable[[Tensor], Tensor]


def load(name: str, n_train: int = 20_000) -> Data:
    """Draws the data set ``name`` (seeded) and standardises it with the training split."""
    if name == "mixture10":
        distribution = mixture10()
        torch.manual_seed(0)
        train = distribution.sample((n_train,))
        torch.manual_seed(1)
        held_out = distribution.sample((SAMPLES,))
        log_prob = distribution.log_prob
    else:
        from pushforward.data.toys import get_toy

        toy = get_toy(name)
        train, held_out = toy.sample(n_train, 0), toy.sample(SAMPLES, 1)
        if toy.log_prob is None:
            raise ValueError(f"toy {name!r} has no exact density")
        log_prob = toy.log_prob
    mean, std = train.mean(0), train.std(0)

    def standardised_log_prob(z: Tensor) -> Tensor:
        # The density of the standardised variable: p(mean + std z) prod(std).
        return log_prob(mean + std * z.double()) + std.log().sum()

    return Data(
        ((train - mean) / std).float(),
        ((held_out - mean) / std).float(),
        mean,
        std,
        standardised_log_prob,
    )


# -- methods ------------------------------------------------------------------------


@dataclass
class Trained:
    """A trained model, how to sample it with k evaluations, and its instantaneous velocity."""

    method: str
    model: Any
    sample: Callable[[int, int], Tensor]  # (n, k) -> samples
    nfes: tuple[int, ...]
    velocity: Callable[[Tensor, Tensor], Tensor] | None  # (x, t) -> v, for straightness
    train_seconds: float


def train(
    name: str, options: dict[str, Any], x: Tensor, steps: int, seed: int
) -> tuple[Any, float]:
    """Builds registered model ``name`` and fits it with its registered learning rate."""
    import pushforward
    from pushforward.registry import train_defaults
    from pushforward.train import fit

    torch.manual_seed(seed)
    model = pushforward.build(name, features=x.shape[1], **options)
    lr = train_defaults(name).get("lr", 1e-3)
    start = time.perf_counter()
    fit(model, x, steps=steps, batch_size=512, lr=lr, ema=0.999, seed=seed, quiet=True)
    return model, time.perf_counter() - start


def flow_matching(method: str, model: Any, seconds: float) -> Trained:
    return Trained(
        method,
        model,
        lambda n, k: model.sample(n, solver="euler", steps=k),
        NFES,
        lambda x, t: model.velocity(x, t),
        seconds,
    )


def few_step(
    method: str,
    model: Any,
    seconds: float,
    velocity: Callable | None,
    nfes: tuple[int, ...] = NFES,
) -> Trained:
    return Trained(method, model, lambda n, k: model.sample(n, steps=k), nfes, velocity, seconds)


def train_method(method: str, x: Tensor, steps: int, seed: int) -> list[Trained]:
    """Trains ``method`` (and, for the reflow chain, the models it starts from)."""
    if method == "fm":
        model, seconds = train("fm", {}, x, steps, seed)
        return [flow_matching(method, model, seconds)]
    if method == "fm-independent":
        model, seconds = train("fm", {"coupling": "independent"}, x, steps, seed)
        return [flow_matching(method, model, seconds)]
    if method == "chain":
        return reflow_chain(x, steps, seed)
    if method == "distilled-ot":
        return [distilled_ot(x, steps, seed)]
    if method in ("meanflow", "shortcut"):
        # Both have an instantaneous velocity: u(z, t, t) and s(x, t, 0).
        model, seconds = train(method, {}, x, steps, seed)
        return [few_step(method, model, seconds, model.velocity)]
    if method == "consistency-fm":
        # Its sampler takes a multiple of its segments (2) steps, and its network is
        # the average velocity to a segment's end, not an instantaneous one.
        model, seconds = train(method, {}, x, steps, seed)
        nfes = tuple(k for k in NFES if k % model.segments == 0)
        return [few_step(method, model, seconds, None, nfes)]
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def reflow_chain(x: Tensor, steps: int, seed: int) -> list[Trained]:
    """fm with independent coupling, its first reflow, and that distilled to one step.

    The pairs (as many as training points) come from dopri5 at tolerances 1e-6;
    reflow starts from the parent's weights, distillation from the reflowed
    model's (Liu et al. 2023; InstaFlow, Liu et al. 2024). Each stage trains
    ``steps`` steps; the times include drawing the pairs.
    """
    from pushforward.recipes.distill import distill
    from pushforward.recipes.pairs import reflow_pairs
    from pushforward.recipes.reflow import reflow

    fit_options = {"steps": steps, "batch_size": 512, "lr": 1e-3, "ema": 0.999, "quiet": True}
    parent, seconds = train("fm", {"coupling": "independent"}, x, steps, seed)
    chain = [flow_matching("fm-independent", parent, seconds)]
    start = time.perf_counter()
    torch.manual_seed(seed + 1)
    pairs = reflow_pairs(parent, x.shape[0])
    rectified = reflow(parent, pairs, seed=seed, **fit_options).model
    chain.append(flow_matching("reflow", rectified, seconds + time.perf_counter() - start))
    start_distill = time.perf_counter()
    torch.manual_seed(seed + 2)
    student_pairs = reflow_pairs(rectified, x.shape[0])
    student = distill(rectified, student_pairs, seed=seed, **fit_options).model
    total = chain[-1].train_seconds + time.perf_counter() - start_distill
    chain.append(Trained("distilled", student, lambda n, k: student.sample(n), (1,), None, total))
    return chain


def distilled_ot(x: Tensor, steps: int, seed: int) -> Trained:
    """The OT-coupled fm (the ``fm`` row's model: same seed) distilled to one step.

    Minibatch OT already makes fm's paths nearly straight (Tong et al. 2023;
    Pooladian et al. 2023), which is what reflow is for in InstaFlow's recipe, so
    the student learns the fm's own ODE map from as many dopri5 pairs as training
    points, starting from its weights. The time includes fm's training.
    """
    from pushforward.recipes.distill import distill
    from pushforward.recipes.pairs import reflow_pairs

    teacher, seconds = train("fm", {}, x, steps, seed)
    start = time.perf_counter()
    torch.manual_seed(seed + 2)
    pairs = reflow_pairs(teacher, x.shape[0])
    fit_options = {"steps": steps, "batch_size": 512, "lr": 1e-3, "ema": 0.999, "quiet": True}
    student = distill(teacher, pairs, seed=seed, **fit_options).model
    total = seconds + time.perf_counter() - start
    return Trained("distilled-ot", student, lambda n, k: student.sample(n), (1,), None, total)


# -- measurements -------------------------------------------------------------------


@dataclass
class Point:
    """Quality and cost of one method at one number of function evaluations."""

    nfe: int
    energy_distance_1e3: float
    c2st: float
    ms_per_10k: float


@dataclass
class Result:
    """Everything measured for one method on one data set."""

    dataset: str
    method: str
    train_seconds: float
    points: list[Point] = field(default_factory=list)
    straightness: float | None = None
    kl: float | None = None
    seed: int = 0


def straightness_of(trained: Trained, data: Data, seed: int) -> float | None:
    """Straightness of 100-step Euler trajectories of the model's instantaneous velocity."""
    from pushforward.metrics import straightness

    if trained.velocity is None:
        return None
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(STRAIGHTNESS_POINTS, data.train.shape[1], generator=generator)
    path, times = [x], torch.linspace(0.0, 1.0, 101)
    with torch.no_grad():
        for k in range(100):
            t = times[k].expand(x.shape[0])
            x = x + (times[k + 1] - times[k]) * trained.velocity(x, t)
            path.append(x)
    return straightness(path, times)


def kl_of(trained: Trained, data: Data) -> float | None:
    """KL(p || q) on held-out points: the mean of log p - log q (nats)."""
    if not getattr(trained.model, "has_log_prob", False):
        return None
    points = data.held_out[:KL_POINTS]
    with torch.no_grad():
        log_q = trained.model.log_prob(points).double()
    return float((data.true_log_prob(points) - log_q).mean())


def measure(trained: Trained, data: Data, dataset: str, seed: int) -> Result:
    """Quality at every NFE, sampling time, straightness and KL of one trained model."""
    from pushforward.metrics import c2st, energy_distance

    result = Result(dataset, trained.method, round(trained.train_seconds, 1), seed=seed)
    trained.model.eval()
    for k in trained.nfes:
        times = []
        with torch.no_grad():
            for repeat in range(TIMING_REPEATS):
                torch.manual_seed(seed + 7 + repeat)
                start = time.perf_counter()
                drawn = trained.sample(SAMPLES, k)
                times.append(time.perf_counter() - start)
                if repeat == 0:
                    samples = drawn
        ed = energy_distance(samples.double(), data.held_out.double())
        accuracy = c2st(samples[:C2ST_POINTS], data.held_out[:C2ST_POINTS], seed=seed).accuracy
        result.points.append(Point(k, 1e3 * ed, accuracy, 1e3 * statistics.median(times)))
    result.straightness = straightness_of(trained, data, seed)
    result.kl = kl_of(trained, data)
    return result


def job(dataset: str, method: str, steps: int, seed: int) -> list[Result]:
    """One worker's job: train a method (chain) on a data set and measure every model."""
    torch.set_num_threads(1)
    data = load(dataset)
    trained = train_method(method, data.train, steps, seed)
    return [measure(t, data, dataset, seed) for t in trained]


# -- report -------------------------------------------------------------------------


def append_result(path: str | None, result: Result) -> None:
    if path is not None:
        with open(path, "a") as handle:
            handle.write(json.dumps(asdict(result)) + "\n")


def read_results(paths: list[str] | None) -> list[Result]:
    if not paths:
        raise ValueError("--report-only needs --results FILE [FILE ...]")
    results = []
    for path in paths:
        with open(path) as handle:
            for line in handle:
                record = json.loads(line)
                record["points"] = [Point(**p) for p in record["points"]]
                results.append(Result(**record))
    return results


def print_seed_summary(
    results: list[Result], references: tuple[str, ...] = ("fm", "fm-independent"), nfe: int = 100
) -> None:
    """Energy distance over seeds, and each model's excess over each reference at ``nfe``.

    Differences are paired by seed (the same training seed and held-out data): to
    ``fm`` (the OT-coupled model every one-step model competes with) and to
    ``fm-independent`` (where the reflow chain starts). Differences, not ratios:
    where both distances are at the estimator's noise floor (its values scatter
    around zero, negative ones included), a ratio of them means nothing.
    """
    for dataset in dict.fromkeys(r.dataset for r in results):
        rows = [r for r in results if r.dataset == dataset]
        seeds = sorted({r.seed for r in rows})
        if len(seeds) < 2:
            continue
        bases = {
            name: {
                r.seed: p.energy_distance_1e3
                for r in rows
                if r.method == name
                for p in r.points
                if p.nfe == nfe
            }
            for name in references
        }
        print(f"\n### {dataset}: seeds {', '.join(map(str, seeds))}\n")
        table = []
        for method in dict.fromkeys(r.method for r in rows):
            runs = [r for r in rows if r.method == method]
            for k in (1, nfe):
                values = {r.seed: p for r in runs for p in r.points if p.nfe == k}
                if not values:
                    continue
                row = [
                    method,
                    str(k),
                    _mean_se([v.energy_distance_1e3 for v in values.values()], 3),
                    _mean_se([v.c2st for v in values.values()], 3),
                ]
                for name in references:
                    base = bases[name]
                    gaps = [values[s].energy_distance_1e3 - base[s] for s in values if s in base]
                    row.append(f"{_mean_se(gaps, 3)} (max {max(gaps):.3f})" if gaps else "-")
                table.append([*row, str(len(values))])
        header = [
            "method",
            "NFE",
            "ED x 1e3",
            "C2ST",
            *[f"ED - {name} NFE {nfe}" for name in references],
            "seeds",
        ]
        print(markdown_table(header, table))


def _mean_se(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    se = statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def print_tables(results: list[Result]) -> None:
    for dataset in dict.fromkeys(r.dataset for r in results):
        rows = [r for r in results if r.dataset == dataset]
        print(f"\n### {dataset}\n")
        header = ["method", *[f"NFE {k}" for k in NFES]]
        for title, key, digits in (
            ("squared energy distance x 1e3 (lower is better)", "energy_distance_1e3", 2),
            ("C2ST accuracy (0.5 = indistinguishable)", "c2st", 3),
            ("ms per 10,000 samples (one thread)", "ms_per_10k", 1),
        ):
            print(f"{title}:\n")
            table = []
            for r in rows:
                values = {p.nfe: getattr(p, key) for p in r.points}
                table.append(
                    [r.method, *[f"{values[k]:.{digits}f}" if k in values else "-" for k in NFES]]
                )
            print(markdown_table(header, table))
            print()
        summary = [
            [
                r.method,
                f"{r.train_seconds:.0f}",
                "-" if r.straightness is None else f"{r.straightness:.4f}",
                "-" if r.kl is None else f"{r.kl:.3f}",
            ]
            for r in rows
        ]
        print("training time, straightness (100 Euler steps), KL to the truth:\n")
        print(markdown_table(["method", "train (s)", "straightness", "KL (nats)"], summary))


def plot(results: list[Result], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r.dataset for r in results))
    figure, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        for r in (r for r in results if r.dataset == dataset):
            nfe = [p.nfe for p in r.points]
            ed = [max(p.energy_distance_1e3, 1e-3) for p in r.points]
            axis.plot(nfe, ed, marker="o", label=r.method)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("function evaluations")
        axis.set_ylabel("squared energy distance x 1e3")
        axis.set_title(dataset)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    setup()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument(
        "--results",
        nargs="+",
        help="append each result as a JSON line here (--report-only: read these files)",
    )
    parser.add_argument("--report-only", action="store_true", help="tables from --results")
    parser.add_argument("--figure")
    parser.add_argument("--quick", action="store_true", help="smoke test: 50 steps, moons")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.datasets = 50, ["moons"]
    # fm-independent, reflow and distilled come from one chain of trainings.
    chained = ("fm-independent", "reflow", "distilled")
    methods = [m for m in args.methods if m not in chained]
    if any(m in chained for m in args.methods):
        methods.append("chain")
    import pushforward

    info = environment({"pushforward": pushforward.__version__})
    print("# Few-step generation: quality and time against function evaluations\n")
    print_environment(info)
    print(
        f"Budget: {args.steps} steps, batch 512, each model's registered lr, EMA 0.999; "
        f"{SAMPLES} samples against {SAMPLES} held-out points (standardised units); "
        f"C2ST on {C2ST_POINTS} + {C2ST_POINTS}; seed {args.seed}.",
        flush=True,
    )
    started = time.perf_counter()
    # The longest job (the reflow chain) first; results are appended to --results as
    # each job ends, so an interrupted run keeps them (--report-only prints them).
    methods.sort(key=lambda m: m != "chain")
    jobs = [(d, m, args.steps, args.seed) for m in methods for d in args.datasets]
    results: list[Result] = []
    if args.report_only:
        results = read_results(args.results)
    else:
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(job, *spec) for spec in jobs]
            for future in as_completed(futures):
                for r in future.result():
                    results.append(r)
                    append_result(args.results[0] if args.results else None, r)
                    print(f"done {r.dataset} {r.method} ({r.train_seconds:.0f} s)", file=sys.stderr)
    order = {m: i for i, m in enumerate(METHODS)}
    results.sort(
        key=lambda r: (
            args.datasets.index(r.dataset) if r.dataset in args.datasets else 99,
            order.get(r.method, 99),
        )
    )
    # The per-NFE tables and the figure show one seed (the lowest); the summary all.
    shown = [r for r in results if r.seed == min(r.seed for r in results)]
    print_tables(shown)
    print_seed_summary(results)
    print(f"\n(total {math.ceil((time.perf_counter() - started) / 60)} min)")
    if args.json:
        write_json(args.json, {"environment": info, "results": [asdict(r) for r in results]})
    if args.figure:
        plot(shown, args.figure)


if __name__ == "__main__":
    main()
