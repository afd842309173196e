"""Flow matching's fit quality on 2-D toys: KL to the truth against NSF, and OT paths.

Every model goes through the command line's own path, in process:
``pushforward.cli.main.main(["train", ...])`` writes a run directory and
``main(["eval", RUN_DIR, ...])`` prints the JSON that ``pushforward eval`` prints,
so the numbers are what a user of the CLI gets. Training data are the CLI's
(20,000 points of the toy drawn with ``--seed``, 10 % held out for validation,
standardised on the rest); the budget is the CLI's defaults for both models
(``TrainingConfig`` with ``--steps 2000``: 2000 Adam steps, batch 512, warm-up then cosine decay,
EMA of the weights) unless ``--steps`` changes it for both. Each model keeps its
own defaults for everything else (learning rate included), as a user would;
``--fm-lr``, ``--fm-set KEY=VALUE`` and ``--fm-train KEY=VALUE`` (a ``[train]``
option such as ``ema=0.99``, passed in a ``--config`` file) run a candidate
setting of ``fm`` instead of its defaults.

Parts (``--parts``):

1. ``kl``: the KL divergence to the true density, ``eval``'s ``kl`` field
   (mean negative log-likelihood minus the toy's exact entropy), of ``nsf`` and
   ``fm`` on ``--datasets``. Both models are scored on the same ``--eval-n``
   fresh points (``eval --seed 1000 + seed``: never a training sample). ``fm``
   integrates the exact divergence with its default solver (dopri5, atol = rtol
   = 1e-5); the script records the evaluation time and the velocity evaluations
   of one likelihood solve (repeated on 1,000 test points, as ``eval`` does not
   report them; ``eval`` runs one solve per chunk of 4,096 points).
2. ``coupling``: ``fm`` with ``coupling="independent"`` against ``"ot"`` (exact
   minibatch optimal transport), everything else equal, on
   ``--coupling-datasets``. Straightness (Liu et al. 2023, in standardised
   units) of the learned ODE from 2,000 source points on an RK4 solve of 100
   steps; squared energy distance between 10,000 samples and 10,000 held-out
   points (original units) at 1, 2, 4 and 8 Euler steps and with the model's
   default sampler, all from the same source points; and the KL.
3. ``tolerance``: whether the likelihood solver limits the KL: one ``fm`` run
   (first coupling dataset, seed 0) scored on the same points with dopri5 at
   1e-5 (default) and 1e-7, and RK4 with 50 steps.

Values are mean ± standard error over seeds; differences are paired by seed.
When a run of part 2 has the same settings as part 1's ``fm`` run (same data and
seed), it is trained once.

Cost (2-core Xeon shared with other work, one thread per job): with residual
4x256 and OT coupling an ``fm`` run trains in 140-260 s (the exact 512 x 512
assignment of every batch is most of it; 40 s with independent coupling, 12 s for
the plain 3x256 MLP) and its dopri5 evaluation on 5,000 points takes 10-40 s;
``nsf`` trains in about 17 s; the sample metrics of part 2 add about 30 s per run.
The default run (4 + 2 data sets, 3 seeds: 30 trainings) took 25 minutes at
``--jobs 2``.

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/fm_quality.py [--seeds 3] [--jobs 2] [--eval-n 5000] [--json out.json]
    python bench/fm_quality.py --jobs 2 --fm-lr 1e-3 --fm-set residual=false \\
        --fm-set 'hidden=[256,256,256]' --fm-set 'coupling="independent"'  # the old defaults
    python bench/fm_quality.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from common import (
    cell,
    cli,
    environment,
    markdown_table,
    print_environment,
    setup,
    train_arguments,
    write_json,
)

DATASETS = ("moons", "8gaussians", "checkerboard", "2spirals")
COUPLING_DATASETS = ("8gaussians", "moons")
COUPLINGS = ("independent", "ot")
PARTS = ("kl", "coupling", "tolerance")
EVAL_POINTS = 5_000
EVAL_SEED_OFFSET = 1_000
HELD_OUT_SEED_OFFSET = 3_000
SOURCE_SEED_OFFSET = 4_000
SAMPLES = 10_000
NFE_POINTS = 1_000
STRAIGHTNESS_POINTS = 2_000
STRAIGHTNESS_STEPS = 100
EULER_STEPS = (1, 2, 4, 8)
# Likelihood settings of part 3 besides the default: (label, eval flags).
TOLERANCE_CHECKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dopri5, atol = rtol = 1e-7", ("--atol", "1e-7", "--rtol", "1e-7")),
    ("rk4, 50 steps", ("--solver", "rk4", "--steps", "50")),
)


@dataclass(frozen=True)
class RunSpec:
    """One ``pushforward train`` + ``eval`` run and what to measure on it.

    ``sets`` are ``--set KEY=VALUE`` strings, ``train`` the ``[train]`` table
    of a config file (TOML literals), ``lr`` a ``--lr`` flag (None: the default).
    """

    label: str
    model: str
    dataset: str
    seed: int
    sets: tuple[str, ...] = ()
    lr: float | None = None
    train: tuple[tuple[str, str], ...] = ()
    steps: int | None = None
    sample_metrics: bool = False
    tolerance_check: bool = False


@dataclass
class Evaluation:
    """What one ``pushforward eval`` call returned and cost."""

    setting: str
    kl: float
    nll: float
    nll_se: float
    points: int
    seconds: float
    nfe_per_solve: float | None


@dataclass
class RunResult:
    """A trained run: its evaluation, training time and (part 2) sample metrics.

    ``energy`` maps a sampler (``"euler-1"``, ..., ``"default"``) to the squared
    energy distance to held-out data; ``straightness`` is in standardised units.
    """

    spec: RunSpec
    evaluation: Evaluation
    train_seconds: float
    straightness: float | None = None
    energy: dict[str, float] = field(default_factory=dict)
    default_sampler: str | None = None
    extra_evaluations: list[Evaluation] = field(default_factory=list)


def evaluate(
    run_dir: Path, spec: RunSpec, points: int, setting: str, flags: Sequence[str] = ()
) -> Evaluation:
    """``pushforward eval`` of a run on ``points`` fresh points of its toy, timed."""
    arguments = [
        "eval",
        str(run_dir),
        "--threads",
        "1",
        "--data",
        f"builtin:{spec.dataset}",
        "--n",
        str(points),
        "--seed",
        str(EVAL_SEED_OFFSET + spec.seed),
        *flags,
    ]
    start = time.perf_counter()
    output = cli(arguments)
    seconds = time.perf_counter() - start
    metrics = json.loads(output.strip().splitlines()[-1])
    finite = metrics["nll"] is not None
    return Evaluation(
        setting=setting,
        kl=metrics.get("kl", math.nan) if finite else math.nan,
        nll=metrics["nll"] if finite else math.nan,
        nll_se=metrics["nll_se"],
        points=metrics["n"],
        seconds=seconds,
        nfe_per_solve=likelihood_nfe(run_dir, spec, flags),
    )


def likelihood_nfe(run_dir: Path, spec: RunSpec, flags: Sequence[str] = ()) -> float | None:
    """Velocity evaluations of one likelihood solve of ``NFE_POINTS`` test points.

    ``eval`` does not report its solver's work, so this repeats one solve through
    the public :func:`~pushforward.ode.likelihood.log_likelihood` with the
    model's likelihood settings (or ``flags``' ``--solver/--steps/--atol/--rtol``).
    An adaptive solver's step count hardly depends on the batch size (its error
    norm is a root mean square over the batch). ``None`` for models without an ODE.
    """
    import pushforward
    from pushforward.data import sample_toy
    from pushforward.matching.model import FlowMatching
    from pushforward.ode.likelihood import log_likelihood

    wrapper = pushforward.load(run_dir)
    inner = getattr(wrapper, "model", None)
    if not isinstance(inner, FlowMatching):
        return None
    given = dict(zip(flags[::2], flags[1::2], strict=True))
    method = given.get("--solver", inner.likelihood_solver)
    x = sample_toy(spec.dataset, NFE_POINTS, seed=EVAL_SEED_OFFSET + spec.seed)
    reference = next(inner.parameters())
    z = ((x - wrapper.mean.double()) / wrapper.std.double()).to(reference)

    def field(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return inner.velocity(state, t)

    with torch.no_grad():
        result = log_likelihood(
            field,
            z,
            inner.base.log_prob,
            method=method,
            steps=int(given["--steps"]) if "--steps" in given else None,
            atol=float(given.get("--atol", inner.atol)),
            rtol=float(given.get("--rtol", inner.rtol)),
        )
    return float(result.nfe)


def train(spec: RunSpec, run_dir: Path) -> float:
    """``pushforward train`` of one spec into ``run_dir``; returns the seconds it took."""
    arguments = train_arguments(f"builtin:{spec.dataset}", spec.model, run_dir, spec.seed)
    if spec.steps is not None:
        arguments += ["--steps", str(spec.steps)]
    if spec.lr is not None:
        arguments += ["--lr", repr(spec.lr)]
    for item in spec.sets:
        arguments += ["--set", item]
    if spec.train:
        config = run_dir.with_suffix(".toml")
        config.write_text("[train]\n" + "".join(f"{k} = {v}\n" for k, v in spec.train))
        arguments += ["--config", str(config)]
    start = time.perf_counter()
    cli(arguments)
    return time.perf_counter() - start


def sample_metrics(run_dir: Path, spec: RunSpec, samples: int) -> tuple[float, dict, str]:
    """Straightness and energy distances of a trained ``fm`` run (part 2).

    Returns:
        straightness (standardised units), ``{sampler: squared energy distance}``
        in original units, and the name of the model's default sampler.
    """
    import pushforward
    from pushforward.data import sample_toy
    from pushforward.matching.model import FlowMatching
    from pushforward.metrics import energy_distance, straightness

    wrapper = pushforward.load(run_dir)
    inner = wrapper.model
    if not isinstance(inner, FlowMatching):
        raise TypeError(f"expected a flow-matching run, got {type(inner).__name__}")
    generator = torch.Generator().manual_seed(SOURCE_SEED_OFFSET + spec.seed)
    reference = next(inner.parameters())
    source = inner.base.sample(samples, generator).to(reference)
    held_out = sample_toy(spec.dataset, samples, seed=HELD_OUT_SEED_OFFSET + spec.seed)

    def distance(z: torch.Tensor) -> float:
        # float64: the estimate is a difference of sums of 10^8 distances.
        x = z.double() * wrapper.std.double() + wrapper.mean.double()
        return energy_distance(x, held_out)

    energy: dict[str, float] = {}
    with torch.no_grad():
        for steps in EULER_STEPS:
            energy[f"euler-{steps}"] = distance(
                inner.solve(source, solver="euler", steps=steps).state
            )
        default = inner.solve(source)
        energy["default"] = distance(default.state)
        path = inner.solve(
            source[:STRAIGHTNESS_POINTS],
            solver="rk4",
            steps=STRAIGHTNESS_STEPS,
            return_path=True,
        )
    if path.path is None:
        raise RuntimeError("the solver returned no path although return_path=True")
    return (
        straightness(path.path, path.times),
        energy,
        f"{inner.solver}, {inner.steps} steps, {default.nfe} NFE",
    )


def run(spec: RunSpec, eval_points: int, samples: int, workdir: str) -> RunResult:
    """Trains and evaluates one spec (in a worker process, one thread)."""
    torch.set_num_threads(1)
    run_dir = Path(workdir) / f"{spec.label}-{spec.dataset}-{spec.seed}"
    seconds = train(spec, run_dir)
    result = RunResult(spec, evaluate(run_dir, spec, eval_points, "default"), seconds)
    if spec.sample_metrics:
        result.straightness, result.energy, result.default_sampler = sample_metrics(
            run_dir, spec, samples
        )
    if spec.tolerance_check:
        for setting, flags in TOLERANCE_CHECKS:
            result.extra_evaluations.append(evaluate(run_dir, spec, eval_points, setting, flags))
    return result


def library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("pushforward", "torchdiffeq")}


def resolved_options(model: str, sets: Sequence[str]) -> dict[str, Any]:
    """The options ``pushforward.build(model, features=2, ...)`` resolves ``--set``s to."""
    import pushforward
    from pushforward.cli.train import parse_sets

    return pushforward.build(model, features=2, **parse_sets(list(sets))).config["options"]


def fixed_budget_defaults() -> dict[str, Any]:
    """``pushforward train``'s training defaults with the fixed 2000-step budget this study uses."""
    from pushforward.train.config import TrainingConfig

    return TrainingConfig(steps=TrainingConfig.default_steps).as_dict()


def parse_train_items(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``["ema=0.99"]`` -> ``(("ema", "0.99"),)``, checked against the ``[train]`` options."""
    from pushforward.cli.train import parse_literal

    TRAIN_DEFAULTS = fixed_budget_defaults()

    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in TRAIN_DEFAULTS:
            raise ValueError(
                f"--fm-train expects KEY=VALUE with KEY one of {', '.join(TRAIN_DEFAULTS)}, "
                f"got {item!r}"
            )
        parse_literal(value.strip())
        pairs.append((key, value.strip()))
    return tuple(pairs)


def plan(args: argparse.Namespace) -> tuple[list[RunSpec], dict[str, str]]:
    """The runs to do, and which label holds each coupling arm of part 2."""
    fm = RunSpec(
        "fm",
        "fm",
        "",
        0,
        sets=tuple(args.fm_set),
        lr=args.fm_lr,
        train=parse_train_items(args.fm_train),
        steps=args.steps,
    )
    own_coupling = resolved_options("fm", fm.sets)["coupling"]
    specs: dict[tuple[str, str, int], RunSpec] = {}
    if "kl" in args.parts:
        for dataset in args.datasets:
            for seed in range(args.seeds):
                specs["nsf", dataset, seed] = RunSpec("nsf", "nsf", dataset, seed, steps=args.steps)
                specs["fm", dataset, seed] = replace(fm, dataset=dataset, seed=seed)
    arms: dict[str, str] = {}
    coupling_datasets = args.coupling_datasets if "coupling" in args.parts else []
    for coupling in COUPLINGS:
        label = "fm" if coupling == own_coupling else f"fm-{coupling}"
        arms[coupling] = label
        sets = fm.sets if label == "fm" else (*fm.sets, f'coupling="{coupling}"')
        for dataset in coupling_datasets:
            for seed in range(args.seeds):
                key = (label, dataset, seed)
                base = specs.get(key, replace(fm, label=label, sets=sets))
                specs[key] = replace(base, dataset=dataset, seed=seed, sample_metrics=True)
    if "tolerance" in args.parts:
        dataset = (coupling_datasets or args.datasets)[0]
        key = ("fm", dataset, 0)
        specs[key] = replace(specs.get(key, replace(fm, dataset=dataset)), tolerance_check=True)
    # Longest runs first, so that the last worker does not run alone for long.
    order = sorted(
        specs.values(),
        key=lambda s: (not s.tolerance_check, not s.sample_metrics, s.model != "fm"),
    )
    return order, arms


def report_progress(result: RunResult) -> None:
    spec, evaluation = result.spec, result.evaluation
    extra = "" if result.straightness is None else f", straightness {result.straightness:.3f}"
    print(
        f"  {spec.dataset} seed {spec.seed} {spec.label}: KL {evaluation.kl:.4f}, train "
        f"{result.train_seconds:.1f} s, eval {evaluation.seconds:.1f} s{extra}",
        file=sys.stderr,
        flush=True,
    )


def print_kl_table(results: list[RunResult], datasets: Sequence[str]) -> None:
    def values(label: str, dataset: str) -> dict[int, float]:
        return {
            r.spec.seed: r.evaluation.kl
            for r in results
            if (r.spec.label, r.spec.dataset) == (label, dataset)
        }

    rows = []
    for dataset in datasets:
        nsf, fm = values("nsf", dataset), values("fm", dataset)
        seeds = sorted(set(nsf) & set(fm))
        difference = [fm[s] - nsf[s] for s in seeds]
        rows.append(
            [
                dataset,
                cell(list(nsf.values())),
                cell(list(fm.values())),
                cell(difference),
                f"{sum(d <= 0 for d in difference)}/{len(seeds)}",
            ]
        )
    print(markdown_table(["dataset", "nsf KL", "fm KL", "fm − nsf", "fm ≤ nsf"], rows))

    cost_rows = []
    for label in ("nsf", "fm"):
        runs = [r for r in results if r.spec.label == label and r.spec.dataset in datasets]
        if not runs:
            continue
        nfe = [r.evaluation.nfe_per_solve for r in runs if r.evaluation.nfe_per_solve]
        cost_rows.append(
            [
                label,
                f"{statistics.fmean(r.train_seconds for r in runs):.1f}",
                f"{statistics.fmean(r.evaluation.seconds for r in runs):.2f}",
                f"{statistics.fmean(nfe):.0f} ({min(nfe):.0f}-{max(nfe):.0f})" if nfe else "-",
            ]
        )
    print("\nCost per run (one thread, mean over data sets and seeds):\n")
    print(
        markdown_table(
            ["model", "train (s)", "eval (s)", "likelihood NFE per solve (range)"], cost_rows
        )
    )


def print_coupling_table(
    results: list[RunResult], datasets: Sequence[str], arms: dict[str, str], samples: int
) -> None:
    samplers = [f"euler-{k}" for k in EULER_STEPS] + ["default"]

    def runs(label: str, dataset: str) -> dict[int, RunResult]:
        return {
            r.spec.seed: r
            for r in results
            if (r.spec.label, r.spec.dataset) == (label, dataset) and r.straightness is not None
        }

    rows = []
    for dataset in datasets:
        by_arm = {coupling: runs(label, dataset) for coupling, label in arms.items()}
        for coupling, found in by_arm.items():
            ordered = [found[s] for s in sorted(found)]
            rows.append(
                [
                    dataset,
                    coupling,
                    cell([r.straightness or 0.0 for r in ordered]),
                    *(cell([r.energy[s] for r in ordered], 2, 1e3) for s in samplers),
                    cell([r.evaluation.kl for r in ordered]),
                ]
            )
        first, second = (by_arm[c] for c in COUPLINGS)
        seeds = sorted(set(first) & set(second))
        rows.append(
            [
                dataset,
                f"{COUPLINGS[1]} − {COUPLINGS[0]}",
                cell(
                    [
                        (second[s].straightness or 0.0) - (first[s].straightness or 0.0)
                        for s in seeds
                    ]
                ),
                *(
                    cell([second[s].energy[k] - first[s].energy[k] for s in seeds], 2, 1e3)
                    for k in samplers
                ),
                cell([second[s].evaluation.kl - first[s].evaluation.kl for s in seeds]),
            ]
        )
    headers = ["dataset", "coupling", "straightness", *(f"ED {s}" for s in samplers), "KL"]
    print(markdown_table(headers, rows, left=2))
    default = next((r.default_sampler for r in results if r.default_sampler), None)
    print(
        f"\nED = squared energy distance x 1e3 between {samples} samples and {samples} held-out "
        f"points (original units); 'default' is the model's sampler ({default}). Straightness "
        f"from {min(STRAIGHTNESS_POINTS, samples)} trajectories of RK4 with "
        f"{STRAIGHTNESS_STEPS} steps "
        "(standardised units, 0 = straight lines at constant speed)."
    )


def print_tolerance_table(results: list[RunResult]) -> None:
    checked = [r for r in results if r.extra_evaluations]
    if not checked:
        return
    result = checked[0]
    rows = [
        [
            e.setting,
            f"{e.kl:.5f}",
            f"{e.kl - result.evaluation.kl:+.5f}",
            "-" if e.nfe_per_solve is None else f"{e.nfe_per_solve:.0f}",
            f"{e.seconds:.1f}",
        ]
        for e in [
            replace(result.evaluation, setting="dopri5, atol = rtol = 1e-5 (default)"),
            *result.extra_evaluations,
        ]
    ]
    print(
        f"\nLikelihood solver check: fm on {result.spec.dataset}, seed {result.spec.seed}, "
        f"the same {result.evaluation.points} points:\n"
    )
    print(markdown_table(["likelihood solver", "KL", "Δ vs default", "NFE per solve", "s"], rows))


def main() -> None:
    setup(threads=1)
    TRAIN_DEFAULTS = fixed_budget_defaults()
    from pushforward.registry import train_defaults

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="training steps of both models (CLI default)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--coupling-datasets", nargs="+", default=list(COUPLING_DATASETS))
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--eval-n", type=int, default=EVAL_POINTS, help="test points per run")
    parser.add_argument("--fm-lr", type=float, help="fm's --lr (default: the CLI's)")
    parser.add_argument(
        "--fm-set", action="append", default=[], metavar="KEY=VALUE", help="an fm option"
    )
    parser.add_argument(
        "--fm-train", action="append", default=[], metavar="KEY=VALUE", help="a [train] option"
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (1 thread each)")
    parser.add_argument("--keep-runs", help="write the run directories here (default: temporary)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 100 steps, 1 seed")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    samples = SAMPLES
    if args.quick:
        args.steps, args.seeds, args.eval_n, samples = 100, 1, 500, 1000
        args.datasets, args.coupling_datasets = ["moons"], ["moons"]

    specs, arms = plan(args)
    info = environment(library_versions())
    budget = {
        key: TRAIN_DEFAULTS[key] for key in ("steps", "batch_size", "lr", "ema", "warmup", "clip")
    }
    if args.steps is not None:
        budget["steps"] = args.steps
    fm_options = resolved_options("fm", args.fm_set)
    shown = ("hidden", "residual", "time_embedding", "path", "coupling", "time_sampling")
    print("# Flow matching on 2-D toys: KL to the truth, and OT coupling\n")
    print_environment(info)
    overrides = dict(parse_train_items(args.fm_train))
    fm_lr = args.fm_lr or train_defaults("fm").get("lr", TRAIN_DEFAULTS["lr"])
    print(
        f"Training: `pushforward train` defaults {budget}; fm lr "
        f"{fm_lr}, fm [train] overrides {overrides}, "
        f"fm options { {k: fm_options[k] for k in shown} } (--set {list(args.fm_set)}); nsf "
        f"defaults. Evaluation: `pushforward eval --n {args.eval_n} --seed 1000+seed`, "
        f"seeds 0..{args.seeds - 1}; mean ± standard error over seeds.\n"
    )

    start = time.perf_counter()
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="fm_quality-") as scratch:
        workdir = args.keep_runs or scratch
        Path(workdir).mkdir(parents=True, exist_ok=True)
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs) as pool:
                futures = [pool.submit(run, spec, args.eval_n, samples, workdir) for spec in specs]
                for future in futures:
                    results.append(future.result())
                    report_progress(results[-1])
        else:
            for spec in specs:
                results.append(run(spec, args.eval_n, samples, workdir))
                report_progress(results[-1])
    total = time.perf_counter() - start

    if "kl" in args.parts:
        print("## KL to the true density (nats; lower is better)\n")
        print_kl_table(results, args.datasets)
    if "coupling" in args.parts:
        print("\n## Independent vs minibatch-OT coupling\n")
        print_coupling_table(results, args.coupling_datasets, arms, samples)
    if "tolerance" in args.parts:
        print_tolerance_table(results)
    bad = [r for r in results if not math.isfinite(r.evaluation.kl)]
    if bad:
        print(f"\n{len(bad)} run(s) ended with a non-finite KL:")
        for r in bad:
            print(f"- {r.spec.label} {r.spec.dataset} seed {r.spec.seed}")
    print(f"\nTotal wall time {total / 60:.1f} min with {args.jobs} job(s).")
    write_json(
        args.json,
        {
            "environment": info,
            "options": vars(args),
            "budget": budget,
            "fm_options": fm_options,
            "results": [asdict(r) for r in results],
        },
    )


if __name__ == "__main__":
    main()
