"""Test log-likelihood of neural spline flows fitted to 2-D toys: pushforward vs zuko.

Both libraries get the same model, data and budget: ``--transforms`` layers
(3, zuko's default), conditioners with two hidden layers of 64 and ReLU, 8
bins, tail bound 5 (zuko's fixed bound), standard normal base; ``--steps``
Adam steps (3000) on batches of 512 at learning rate 1e-3 with cosine decay to
0; the same training set (standardised with its mean and standard deviation),
the same batch order and the same test set for a given seed. Like for like, our
splines also take zuko's parameterisation (``spline_parameterization="soft-clip"``:
soft-clipped raw values, no minimum bin size, exponential derivatives) and its
initialisation (``last_layer_init="random"``: PyTorch's default for the
conditioners' last layers, where our ``"zero"`` starts the flow at the identity).

Rows:

- coupling NSF: ``pushforward.build("nsf", ...)`` vs ``zuko.flows.NSF(passes=2)``.
  At D = 2 zuko's ``passes=2`` network is its fully autoregressive one: feature
  0 goes through a spline whose knots are network biases, feature 1 through a
  spline conditioned on feature 0. Our coupling layer leaves one feature
  unchanged per layer, so zuko gets more spline per layer here.
- autoregressive NSF: ``pushforward.build("nsf-ar", ...)`` vs zuko's default NSF.
  As zuko's two models are the same at D = 2 (the script checks that their
  initial state dicts are equal), zuko's run is shared by both rows.
- autoregressive NSF from zuko's initial weights: the same model, but its
  networks start from the weights zuko's NSF draws for that seed (the masks are
  checked to be equal), so the paired difference measures the implementations
  alone; with their own random draws, the spread of outcomes between initial
  draws (a few hundredths of a nat on 2spirals) swamps it at three seeds.
- pushforward defaults: ``pushforward.build("nsf", features=2)`` with nothing
  else set (whatever the defaults of the installed version are), trained the same way.

Test log-likelihoods are in the original data units (the standardisation's
``sum(log std)`` subtracted), mean ± standard error over seeds; differences are
paired by seed.

Cost: 60 training runs of 3000 steps (about 15-30 s each at one thread on an
idle 2-core Xeon; zuko's autoregressive run is shared at D = 2). That is 25-30
minutes at ``--jobs 1``; ``--jobs 2`` runs two single-threaded workers and
halves it on an idle machine. Lower ``--steps`` or ``--seeds`` for a faster look.

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/nsf_quality.py [--steps 3000] [--seeds 3] [--jobs 1] [--json out.json]
    python bench/nsf_quality.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from common import cell, environment, markdown_table, print_environment, setup, write_json

DATASETS = ("moons", "8gaussians", "checkerboard", "2spirals")
HIDDEN = (64, 64)
BINS = 8
TAIL_BOUND = 5.0
BATCH = 512
LEARNING_RATE = 1e-3
TRAIN_SIZE = 50_000
TEST_SIZE = 20_000
# Runs: (row label, library). "ours-defaults" is pushforward.build("nsf", features=2).
RUNS = (
    "ours-nsf",
    "zuko-nsf",
    "ours-nsf-ar",
    "zuko-nsf-ar",
    "ours-nsf-ar-zuko-init",
    "ours-defaults",
)
# Our spline options that reproduce zuko's spline parameterisation and initialisation.
LIKE_ZUKO = {"spline_parameterization": "soft-clip", "last_layer_init": "random"}


@dataclass
class RunResult:
    """One fitted model: its test log-likelihood (original units) and cost."""

    run: str
    dataset: str
    seed: int
    test_log_likelihood: float
    final_train_loss: float
    seconds: float
    shared_with: str | None = None


def build(run: str, transforms: int) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    """The model of a run and its ``log_prob`` on standardised data."""
    if run == "ours-nsf-ar-zuko-init":
        # zuko's flow is drawn first, from the same RNG state as the zuko run's.
        zuko_flow = build("zuko-nsf-ar", transforms)[0]
        model = build("ours-nsf-ar", transforms)[0]
        copy_zuko_weights(zuko_flow, model)
        return model, model.log_prob
    if run.startswith("ours"):
        import pushforward

        if run == "ours-defaults":
            model = pushforward.build("nsf", features=2)
        else:
            name = "nsf" if run == "ours-nsf" else "nsf-ar"
            model = pushforward.build(
                name,
                features=2,
                transforms=transforms,
                hidden=list(HIDDEN),
                bins=BINS,
                tail_bound=TAIL_BOUND,
                **LIKE_ZUKO,
            )
        return model, model.log_prob
    import zuko

    passes = 2 if run == "zuko-nsf" else None
    flow = zuko.flows.NSF(
        2, 0, bins=BINS, transforms=transforms, passes=passes, hidden_features=HIDDEN
    )

    def log_prob(x: Tensor) -> Tensor:
        return flow().log_prob(x)

    return flow, log_prob


def defaults_options() -> dict:
    """The architecture and spline options ``pushforward.build("nsf", features=2)`` resolves to."""
    import pushforward

    options = pushforward.build("nsf", features=2).config["options"]
    shown = ("transforms", "hidden", "bins", "tail_bound", "spline_parameterization")
    return {key: options[key] for key in (*shown, "last_layer_init")}


def copy_zuko_weights(zuko_flow: nn.Module, model: nn.Module) -> None:
    """Loads the weights of zuko's autoregressive NSF into our ``nsf-ar`` of the same shape.

    Layer by layer: transform ``i``'s masked MLP (``first``, hidden, ``last``) into our
    MADE ``i``; both lay the outputs out feature-major (widths, heights, derivatives).
    Raises if a shape or a mask differs, so the two start as the same function.
    """
    from pushforward.transforms.autoregressive import MaskedAutoregressive

    theirs = [
        [layer for layer in transform.hyper if isinstance(layer, nn.Linear)]
        for transform in zuko_flow.transform.transforms
    ]
    ours = [
        [module.made.first, *module.made.blocks, module.made.last]
        for module in model.modules()
        if isinstance(module, MaskedAutoregressive)
    ]
    if [len(layers) for layers in theirs] != [len(layers) for layers in ours]:
        raise RuntimeError("zuko's and our autoregressive NSF have different layer counts")
    with torch.no_grad():
        for their_layers, our_layers in zip(theirs, ours, strict=True):
            for source, target in zip(their_layers, our_layers, strict=True):
                if not torch.equal(source.mask.bool(), target.mask.bool()):
                    raise RuntimeError("zuko's and our masks differ: not the same model")
                target.weight.copy_(source.weight)
                target.bias.copy_(source.bias)


def zuko_models_identical(transforms: int, seed: int) -> bool:
    """Whether zuko's coupling and autoregressive NSF start out as the same model at D = 2."""
    torch.manual_seed(seed)
    coupling = build("zuko-nsf", transforms)[0].state_dict()
    torch.manual_seed(seed)
    autoregressive = build("zuko-nsf-ar", transforms)[0].state_dict()
    return coupling.keys() == autoregressive.keys() and all(
        torch.equal(coupling[key], autoregressive[key]) for key in coupling
    )


def datasets(name: str, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training and test sets (float64, original units) and the training mean and std."""
    from pushforward.data import sample_toy

    train = sample_toy(name, TRAIN_SIZE, seed=10_000 + seed)
    test = sample_toy(name, TEST_SIZE, seed=20_000 + seed)
    return train, test, train.mean(0), train.std(0)


def fit(run: str, dataset: str, seed: int, steps: int, transforms: int) -> RunResult:
    """Trains one model and scores it on the test set."""
    torch.set_num_threads(1)
    train, test, mean, std = datasets(dataset, seed)
    train_z = ((train - mean) / std).float()
    test_z = ((test - mean) / std).float()
    torch.manual_seed(seed)
    model, log_prob = build(run, transforms)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    # The batch order depends on the seed only: both libraries see the same batches.
    batches = torch.Generator().manual_seed(30_000 + seed)
    start = time.perf_counter()
    loss = torch.tensor(math.nan)
    for _ in range(steps):
        index = torch.randint(TRAIN_SIZE, (BATCH,), generator=batches)
        optimizer.zero_grad(set_to_none=True)
        loss = -log_prob(train_z[index]).mean()
        loss.backward()
        optimizer.step()
        schedule.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        scores = torch.cat([log_prob(chunk) for chunk in test_z.split(4096)]).double()
    # Change of variables for x = mean + std * z: log p_x = log p_z - sum(log std).
    test_ll = scores.mean().item() - std.log().sum().item()
    return RunResult(run, dataset, seed, test_ll, loss.item(), seconds)


def library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("pushforward", "zuko")}


def main() -> None:
    setup(threads=1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--transforms", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (1 thread each)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 100 steps, 1 seed")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds = 100, 1

    info = environment(library_versions())
    print("# NSF fit quality on 2-D toys: pushforward vs zuko\n")
    print_environment(info)
    print(
        f"{args.transforms} transforms, hidden {list(HIDDEN)}, ReLU, {BINS} bins, tail bound "
        f"{TAIL_BOUND}; {args.steps} Adam steps, batch {BATCH}, lr {LEARNING_RATE} with cosine "
        f"decay; {TRAIN_SIZE} training / {TEST_SIZE} test points per seed; seeds "
        f"0..{args.seeds - 1}. Like-for-like rows build ours with {LIKE_ZUKO}; defaults: "
        f"{defaults_options()}. Test log-likelihood per point in original units "
        f"(nats, higher is better), mean ± standard error over seeds.\n"
    )

    shared = zuko_models_identical(args.transforms, seed=0)
    tasks = [
        (run, dataset, seed)
        for dataset in args.datasets
        for seed in range(args.seeds)
        for run in RUNS
        if not (shared and run == "zuko-nsf-ar")
    ]
    start = time.perf_counter()
    results: list[RunResult] = []
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(fit, *task, args.steps, args.transforms) for task in tasks]
            for future in futures:
                results.append(future.result())
                report_progress(results[-1])
    else:
        for task in tasks:
            results.append(fit(*task, args.steps, args.transforms))
            report_progress(results[-1])
    if shared:
        for result in [r for r in results if r.run == "zuko-nsf"]:
            results.append(
                RunResult(**{**asdict(result), "run": "zuko-nsf-ar", "shared_with": "zuko-nsf"})
            )
    total = time.perf_counter() - start

    def values(run: str, dataset: str) -> list[float]:
        found = {
            r.seed: r.test_log_likelihood for r in results if (r.run, r.dataset) == (run, dataset)
        }
        return [found[seed] for seed in sorted(found)]

    def seconds(run: str) -> float:
        return statistics.fmean(
            r.seconds for r in results if r.run == run and r.shared_with is None
        )

    rows = []
    for dataset in args.datasets:
        for label, ours, theirs in (
            ("coupling NSF", "ours-nsf", "zuko-nsf"),
            ("autoregressive NSF", "ours-nsf-ar", "zuko-nsf-ar"),
            ("autoregressive NSF, zuko's initial weights", "ours-nsf-ar-zuko-init", "zuko-nsf-ar"),
            ("pushforward defaults vs zuko coupling", "ours-defaults", "zuko-nsf"),
        ):
            a, b = values(ours, dataset), values(theirs, dataset)
            difference = [x - y for x, y in zip(a, b, strict=True)]
            rows.append([dataset, label, cell(a), cell(b), cell(difference)])
    print(
        markdown_table(
            ["dataset", "model", "pushforward", "zuko", "pushforward − zuko"], rows, left=2
        )
    )

    print("\nMean training time per run (s, one thread):\n")
    timing_rows = [
        [run, f"{seconds(run):.1f}"] for run in RUNS if not (shared and run == "zuko-nsf-ar")
    ]
    print(markdown_table(["run", "seconds"], timing_rows))
    if shared:
        print("\nzuko's passes=2 and autoregressive NSF are the same model at D = 2; run once.")
    bad = [r for r in results if not math.isfinite(r.test_log_likelihood)]
    if bad:
        print(f"\n{len(bad)} run(s) ended with a non-finite test log-likelihood:")
        for r in bad:
            print(f"- {r.run} {r.dataset} seed {r.seed}")
    print(f"\nTotal wall time {total / 60:.1f} min with {args.jobs} job(s).")
    write_json(
        args.json,
        {
            "environment": info,
            "options": vars(args),
            "like_zuko": LIKE_ZUKO,
            "defaults": defaults_options(),
            "zuko_coupling_is_autoregressive_at_d2": shared,
            "results": [asdict(r) for r in results],
        },
    )


def report_progress(result: RunResult) -> None:
    print(
        f"  {result.dataset} seed {result.seed} {result.run}: test LL "
        f"{result.test_log_likelihood:.3f}, {result.seconds:.1f} s",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    main()
