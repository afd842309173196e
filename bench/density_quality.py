"""KL to exact densities of every density estimator, against zuko, at one budget.

Targets with exact log-densities, each of one kind the fit-quality goals name:

- ``rings`` (thin modes): the built-in toy, four circles of radius 0.75 to 3
  with Gaussian noise of sd 0.08 (closed-form density).
- ``banana`` (curved): x1 ~ N(0, 1), x2 | x1 ~ N(x1^2 - 1, 0.3^2).
- ``heavy5`` (heavy tails): the 5-D Gaussian copula of bench/tail_adaptive.py,
  Student-t marginals with 1.5, 3 and 6 degrees of freedom and two normals.
- ``gmm10`` and ``gmm20`` (mixtures): eight Gaussian components in 10-D and 20-D
  with seeded means (uniform in [-3, 3]^d), per-axis scales in [0.3, 1] and
  weights from a Dirichlet(5) draw; the density is an exact logsumexp.

Every pushforward model goes through the command line's own path, in process:
``pushforward train --data train.npy --model M --steps 3000 --batch-size 512``
(20,000 training rows drawn with the run's seed; the CLI holds 10 % out for
validation and standardises on the rest) and ``pushforward eval RUN --data
test.npy`` on 5,000 fresh points (the same points for every model and seed), so
the numbers are what a user of the CLI gets with each model's defaults. The KL
is ``E_p[log p - log q]`` on the test points: the mean exact log-density minus
``eval``'s mean log-likelihood. zuko's ``NSF`` and ``MAF`` (their defaults: 3
transforms, hidden (64, 64)) get the same 18,000 training rows (standardised the
same way), 3,000 Adam steps on batches of 512 at learning rate 1e-3 with cosine
decay, and the same test points; their log-densities are moved back to data
units by ``- sum(log std)``.

Rows (``--models``): ``nsf``, ``nsf-ar``, ``maf``, ``nsf-tails`` (``nsf`` with
``tails="adaptive"``), ``ffjord``, ``resflow``, ``fm``, ``zuko-nsf``,
``zuko-maf``; a candidate setting is a row ``LABEL=MODEL:KEY=VALUE,...``
(``--candidate``), e.g. ``nsf-t8=nsf:transforms=8``. Values are mean ± standard
error over seeds; the table of ratios pairs runs by seed.

Cost (one thread a job, 2-core Xeon): nsf/maf runs take 20-60 s, ``fm`` with
its OT coupling 150-250 s, ``ffjord`` and ``resflow`` several minutes at 3,000
steps; ``resflow``'s and ``ffjord``'s evaluations are the slowest part at 20-D.

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/density_quality.py [--seeds 3] [--jobs 2] [--targets rings banana ...]
        [--models nsf fm zuko-nsf ...] [--candidate LABEL=MODEL:KEY=VALUE,...] [--json out.json]
    python bench/density_quality.py --quick    # smoke test
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
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
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

TRAIN_ROWS = 20_000
TEST_ROWS = 5_000
TEST_SEED = 99_999
STEPS = 3_000
BATCH = 512
ZUKO_LR = 1e-3
MODELS = (
    "nsf",
    "nsf-ar",
    "maf",
    "nsf-tails",
    "ffjord",
    "resflow",
    "fm",
    "zuko-nsf",
    "zuko-maf",
)
TARGETS = ("rings", "banana", "heavy5", "gmm10", "gmm20")
KIND = {
    "rings": "thin modes",
    "banana": "curved",
    "heavy5": "heavy tails",
    "gmm10": "10-D mixture",
    "gmm20": "20-D mixture",
}
# Built-in rows that are a model with options set: label -> (model, {key: TOML literal}).
PRESETS: dict[str, tuple[str, dict[str, str]]] = {"nsf-tails": ("nsf", {"tails": '"adaptive"'})}


# ---------------------------------------------------------------- targets


class Target:
    """A density with exact samples and an exact log-density (numpy, float64)."""

    features: int

    def sample(self, n: int, seed: int) -> np.ndarray:
        raise NotImplementedError

    def log_density(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Rings(Target):
    features = 2

    def __init__(self) -> None:
        from pushforward.data.toys import get_toy

        self.toy = get_toy("rings")

    def sample(self, n: int, seed: int) -> np.ndarray:
        return self.toy.sample(n, seed).numpy()

    def log_density(self, x: np.ndarray) -> np.ndarray:
        return self.toy.log_prob(torch.from_numpy(x)).numpy()


class Banana(Target):
    """x1 ~ N(0, 1), x2 | x1 ~ N(x1^2 - 1, SIGMA^2)."""

    features = 2
    SIGMA = 0.3

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x1 = rng.standard_normal(n)
        x2 = x1**2 - 1 + self.SIGMA * rng.standard_normal(n)
        return np.stack([x1, x2], axis=1)

    def log_density(self, x: np.ndarray) -> np.ndarray:
        log_normal = -0.5 * math.log(2 * math.pi)
        residual = (x[:, 1] - x[:, 0] ** 2 + 1) / self.SIGMA
        return (
            log_normal - 0.5 * x[:, 0] ** 2 + log_normal - 0.5 * residual**2 - math.log(self.SIGMA)
        )


class HeavyTailed(Target):
    """bench/tail_adaptive.py's Gaussian copula with Student-t marginals."""

    features = 5

    def sample(self, n: int, seed: int) -> np.ndarray:
        from tail_adaptive import sample

        return sample(n, seed)

    def log_density(self, x: np.ndarray) -> np.ndarray:
        from tail_adaptive import log_density

        return log_density(x)


class Mixture(Target):
    """Eight axis-aligned Gaussians in ``features`` dimensions, drawn from a fixed seed."""

    COMPONENTS = 8

    def __init__(self, features: int) -> None:
        self.features = features
        rng = np.random.default_rng(1_000 + features)
        self.means = rng.uniform(-3, 3, size=(self.COMPONENTS, features))
        self.scales = rng.uniform(0.3, 1.0, size=(self.COMPONENTS, features))
        self.weights = rng.dirichlet(np.full(self.COMPONENTS, 5.0))

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        component = rng.choice(self.COMPONENTS, size=n, p=self.weights)
        noise = rng.standard_normal((n, self.features))
        return self.means[component] + self.scales[component] * noise

    def log_density(self, x: np.ndarray) -> np.ndarray:
        z = (x[:, None, :] - self.means[None]) / self.scales[None]
        log_components = (
            -0.5 * (z**2).sum(-1)
            - np.log(self.scales).sum(-1)[None]
            - 0.5 * self.features * math.log(2 * math.pi)
            + np.log(self.weights)[None]
        )
        top = log_components.max(axis=1, keepdims=True)
        return (top + np.log(np.exp(log_components - top).sum(axis=1, keepdims=True)))[:, 0]


def get_target(name: str) -> Target:
    builders: dict[str, Callable[[], Target]] = {
        "rings": Rings,
        "banana": Banana,
        "heavy5": HeavyTailed,
        "gmm10": lambda: Mixture(10),
        "gmm20": lambda: Mixture(20),
    }
    return builders[name]()


# ---------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunSpec:
    """One row's run on one target and seed: ``model`` with ``options`` (TOML literals)."""

    label: str
    model: str
    target: str
    seed: int
    options: tuple[tuple[str, str], ...] = ()
    steps: int = STEPS
    init: str | None = None


@dataclass
class RunResult:
    """One run's KL (nats), the standard error of its test NLL, and its costs."""

    label: str
    target: str
    seed: int
    kl: float
    nll_se: float
    train_seconds: float
    eval_seconds: float


def data_files(target: Target, name: str, seed: int, workdir: Path) -> tuple[Path, Path]:
    """``train.npy`` of this seed and the shared ``test.npy`` of ``name``."""
    train = workdir / f"{name}-train-{seed}.npy"
    test = workdir / f"{name}-test.npy"
    if not train.exists():
        np.save(train, target.sample(TRAIN_ROWS, seed=seed))
    if not test.exists():
        np.save(test, target.sample(TEST_ROWS, seed=TEST_SEED))
    return train, test


def kl_of(log_p: np.ndarray, log_q: np.ndarray) -> float:
    """``E_p[log p - log q]`` on the test points; nan where a log-density is not finite."""
    gap = log_p - log_q
    return float(gap.mean()) if np.all(np.isfinite(gap)) else math.nan


def run_dir_of(label: str, target: str, seed: int, workdir: Path) -> Path:
    return workdir / f"{label}-{target}-{seed}"


def run_pushforward(spec: RunSpec, workdir: Path) -> RunResult:
    """``pushforward train`` then ``eval`` of one spec; the KL from eval's mean NLL."""
    target = get_target(spec.target)
    train, test = data_files(target, spec.target, spec.seed, workdir)
    run_dir = run_dir_of(spec.label, spec.target, spec.seed, workdir)
    arguments = train_arguments(str(train), spec.model, run_dir, spec.seed)
    arguments += ["--steps", str(spec.steps), "--batch-size", str(BATCH)]
    for key, value in spec.options:
        arguments += ["--set", f"{key}={value}"]
    if spec.init is not None:
        arguments += ["--init", str(run_dir_of(spec.init, spec.target, spec.seed, workdir))]
    start = time.perf_counter()
    cli(arguments)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    output = cli(["eval", str(run_dir), "--threads", "1", "--data", str(test)])
    eval_seconds = time.perf_counter() - start
    metrics = json.loads(output.strip().splitlines()[-1])
    x = np.load(test)
    log_p = target.log_density(x)
    if metrics["nll"] is None:
        kl, error = math.nan, math.nan
    else:
        # eval reports the mean NLL and its standard error over the points; the
        # exact log-density's mean is added to the same points' NLL.
        kl = float(log_p.mean() + metrics["nll"])
        error = float(metrics["nll_se"])
    return RunResult(spec.label, spec.target, spec.seed, kl, error, train_seconds, eval_seconds)


def run_zuko(spec: RunSpec, workdir: Path) -> RunResult:
    """zuko's NSF or MAF with its defaults, trained on the CLI's training rows."""
    import zuko

    target = get_target(spec.target)
    train_file, test_file = data_files(target, spec.target, spec.seed, workdir)
    data = torch.from_numpy(np.load(train_file))
    # The CLI's split: a seeded 10 % held out; zuko trains on the same count.
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(spec.seed))
    train = data[order[: len(data) - len(data) // 10]]
    mean, std = train.mean(0), train.std(0)
    train_z = ((train - mean) / std).float()
    test = torch.from_numpy(np.load(test_file))
    test_z = ((test - mean) / std).float()
    torch.manual_seed(spec.seed)
    builder = {"zuko-nsf": zuko.flows.NSF, "zuko-maf": zuko.flows.MAF}[spec.model]
    flow = builder(target.features)
    optimizer = torch.optim.Adam(flow.parameters(), lr=ZUKO_LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.steps)
    batches = torch.Generator().manual_seed(30_000 + spec.seed)
    start = time.perf_counter()
    for _ in range(spec.steps):
        index = torch.randint(len(train_z), (BATCH,), generator=batches)
        optimizer.zero_grad(set_to_none=True)
        loss = -flow().log_prob(train_z[index]).mean()
        loss.backward()
        optimizer.step()
        schedule.step()
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        log_q = torch.cat([flow().log_prob(chunk) for chunk in test_z.split(4096)]).double()
    log_q = (log_q - std.log().sum()).numpy()
    eval_seconds = time.perf_counter() - start
    kl = kl_of(target.log_density(test.numpy()), log_q)
    error = float(log_q.std(ddof=1) / math.sqrt(log_q.size))
    return RunResult(spec.label, spec.target, spec.seed, kl, error, train_seconds, eval_seconds)


def run(specs: Sequence[RunSpec], workdir: str) -> list[RunResult]:
    """Runs ``specs`` in order in one worker (a fine-tuning run after the run it starts from)."""
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    return [
        run_zuko(spec, Path(workdir))
        if spec.model.startswith("zuko-")
        else run_pushforward(spec, Path(workdir))
        for spec in specs
    ]


# ---------------------------------------------------------------- tables


def parse_candidate(text: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """``"LABEL=MODEL:K=V,K=V"`` -> (label, model, options)."""
    label, sep, rest = text.partition("=")
    model, _, items = rest.partition(":")
    if not sep or not model:
        raise SystemExit(f"--candidate expects LABEL=MODEL:KEY=VALUE,..., got {text!r}")
    options = []
    for item in filter(None, items.split(";" if ";" in items else ",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--candidate option {item!r} is not KEY=VALUE")
        options.append((key.strip(), value.strip()))
    return label, model, tuple(options)


def main() -> None:
    setup()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--candidate", action="append", default=[])
    parser.add_argument(
        "--finetune",
        type=int,
        default=0,
        help="add a row 'fm+ffjord': each fm run fine-tuned by maximum likelihood "
        "(train --init RUN --model ffjord) for this many steps",
    )
    parser.add_argument("--json")
    parser.add_argument(
        "--jsonl",
        help="append each result to this file as it comes, and skip runs already in it",
    )
    parser.add_argument(
        "--report",
        nargs="+",
        metavar="JSONL",
        help="print the tables of saved results; run nothing",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 60 steps, 1 seed")
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    if args.quick:
        args.seeds, args.steps = 1, 60
    rows: list[tuple[str, str, tuple[tuple[str, str], ...]]] = []
    for label in args.models:
        model, options = PRESETS.get(label, (label, {}))
        rows.append((label, model, tuple(options.items())))
    rows += [parse_candidate(text) for text in args.candidate]
    if args.finetune and "fm" not in [label for label, _, _ in rows]:
        rows.append(("fm", "fm", ()))
    # One job a list of specs: a fine-tuning run goes with the fm run it starts from.
    jobs: list[list[RunSpec]] = []
    for target in args.targets:
        for seed in range(args.seeds):
            for label, model, options in rows:
                job = [RunSpec(label, model, target, seed, options, args.steps)]
                if label == "fm" and args.finetune:
                    job.append(
                        RunSpec("fm+ffjord", "ffjord", target, seed, (), args.finetune, "fm")
                    )
                jobs.append(job)
    if args.finetune:
        rows.append(("fm+ffjord", "ffjord", ()))
    if args.jsonl and Path(args.jsonl).exists():
        done = {
            (r["label"], r["target"], r["seed"])
            for r in map(json.loads, Path(args.jsonl).read_text().splitlines())
        }
        jobs = [job for job in jobs if (job[-1].label, job[-1].target, job[-1].seed) not in done]
    # The slowest models first, so that the last worker does not run alone for long.
    slow = {"ffjord": 0, "resflow": 1, "fm": 2}
    jobs.sort(key=lambda job: (slow.get(job[0].model, 3), job[0].target))
    info = environment(
        {name: importlib.metadata.version(name) for name in ("pushforward", "zuko", "torchdiffeq")}
    )
    print_environment(info)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory() as workdir, ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run, job, workdir) for job in jobs]
        for future in futures:
            for result in future.result():
                results.append(result)
                if args.jsonl:
                    with open(args.jsonl, "a") as stream:
                        stream.write(json.dumps(asdict(result)) + "\n")
                print(
                    f"  {result.target} seed {result.seed} {result.label}: KL {result.kl:.4f} "
                    f"(NLL s.e. {result.nll_se:.4f}), train {result.train_seconds:.0f} s, "
                    f"eval {result.eval_seconds:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )

    print_tables(results, [label for label, _, _ in rows], args.targets, args.steps)
    write_json(
        args.json,
        {"environment": info, "steps": args.steps, "results": [asdict(r) for r in results]},
    )


def print_tables(
    results: Sequence[RunResult], labels: Sequence[str], targets: Sequence[str], steps: int
) -> None:
    """The KL table, and paired ratios to zuko's NSF and to ``fm`` where they ran."""

    def values(label: str, target: str) -> dict[int, float]:
        return {r.seed: r.kl for r in results if r.label == label and r.target == target}

    print(f"\n## KL to the true density (nats), {steps} steps, batch {BATCH}\n")
    headers = ["model", *[f"{t} ({KIND[t]})" for t in targets], "train s (median)"]
    table = []
    for label in labels:
        seconds = [r.train_seconds for r in results if r.label == label]
        table.append(
            [
                label,
                *[cell(list(values(label, t).values())) for t in targets],
                f"{statistics.median(seconds):.0f}" if seconds else "",
            ]
        )
    print(markdown_table(headers, table))
    for reference in ("zuko-nsf", "fm"):
        if reference not in labels:
            continue
        print(f"\n## Paired ratios KL(row) / KL({reference}), mean ± s.e. over seeds\n")
        table = []
        for label in labels:
            cells = []
            for t in targets:
                ours, theirs = values(label, t), values(reference, t)
                ratios = [ours[s] / theirs[s] for s in ours if s in theirs and theirs[s] > 0]
                cells.append(cell(ratios, 2) if ratios else "")
            table.append([label, *cells])
        print(markdown_table(["model", *targets], table))


def report(paths: Sequence[str]) -> None:
    """Prints the tables of results saved by ``--jsonl`` (several runs of the script)."""
    results = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                results.append(RunResult(**json.loads(line)))
    labels = [m for m in MODELS if any(r.label == m for r in results)]
    labels += sorted({r.label for r in results} - set(labels))
    targets = [t for t in TARGETS if any(r.target == t for r in results)]
    print_tables(results, labels, targets, STEPS)


if __name__ == "__main__":
    main()
