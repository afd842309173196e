"""Times pushforward's discrete flows against zuko, nflows and normflows, same architecture.

Models: MAF, coupling NSF and autoregressive NSF, at D = 2 and 16, batch 512,
float32, one thread. Every library gets the same network: ``--transforms``
layers (3), conditioners with two hidden layers of 64 and ReLU, 8 spline bins,
tail bound 5 with linear (identity) tails, no batch norm, no residual blocks, a
standard normal base, alternating orders or masks.

Figures per (model, D, library):

- ``train``: ``log_prob`` of a batch, mean, backward, Adam step;
- ``log_prob``: ``log_prob`` of a batch without gradients;
- ``sample``: 512 samples without gradients.

The floor is the bare conditioner: a plain (unmasked) MLP of our conditioner's
shape, run once per layer (``transforms x passes`` times for sampling, where an
autoregressive inverse takes ``D`` passes), without gradients or with backward
and Adam. ``ours/floor`` says how much a flow costs over its networks.

How each library is matched (read from their sources, versions printed below):

- zuko: ``zuko.flows.MAF`` / ``zuko.flows.NSF`` with ``hidden_features=(64, 64)``
  (ReLU is zuko's default), spline bound 5 (zuko's fixed default); coupling is
  ``passes=2``, which in zuko is a masked MLP over all D inputs that also maps
  the first half through a spline whose knots are its biases, and whose inverse
  takes two passes; zuko's coupling halves are contiguous, ours alternate (same
  cost). zuko's affine scale is soft-clipped, nflows' is a shifted sigmoid.
- nflows: ``MaskedAffineAutoregressiveTransform`` /
  ``MaskedPiecewiseRationalQuadraticAutoregressiveTransform`` with
  ``num_blocks=1, use_residual_blocks=False`` (MADE: input layer + one block +
  output layer = two hidden layers of 64) and ``ReversePermutation`` between
  layers; ``PiecewiseRationalQuadraticCouplingTransform`` with alternating masks
  and the plain MLP below (not nflows' ResidualNet).
- normflows: its public NSF layers hard-wire residual conditioners (and, for
  coupling, an extra unconditional spline on the identity half), so we build
  all three models from the layer classes those wrappers use
  (``MaskedAffineAutoregressive``, ``MaskedPiecewiseRationalQuadraticAutoregressive``,
  ``PiecewiseRationalQuadraticCoupling``) wrapped in ``normflows.flows.Reverse``
  so that ``log_prob`` takes one pass as in a MAF (normflows'
  ``MaskedAffineAutoregressive`` used as is makes ``log_prob`` take D passes,
  i.e. an IAF), with ``Permute(mode="swap")`` between layers.

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/flows_speed.py [--rounds 15] [--transforms 3] [--json out.json]
    python bench/flows_speed.py --quick     # smoke test, under a minute
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from common import (
    environment,
    interleaved,
    markdown_table,
    paired_ratio,
    print_environment,
    setup,
    write_json,
)

BATCH = 512
HIDDEN = (64, 64)
BINS = 8
TAIL_BOUND = 5.0
MODELS = ("maf", "nsf", "nsf-ar")
LIBRARIES = ("pushforward", "zuko", "nflows", "normflows")
FIGURES = ("train", "log_prob", "sample")


class PlainMLP(nn.Module):
    """``in -> 64 -> ReLU -> 64 -> ReLU -> out``; accepts and ignores ``context`` (nflows' call)."""

    def __init__(
        self, in_features: int, out_features: int, hidden: tuple[int, ...] = HIDDEN
    ) -> None:
        super().__init__()
        widths = (in_features, *hidden)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], out_features))
        self.net = nn.Sequential(*layers)
        # nflows and normflows divide spline logits by sqrt(hidden_features) when
        # their conditioner has this attribute (their ResidualNet does).
        self.hidden_features = hidden[-1]

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


@dataclass
class Candidate:
    """One library's model behind two calls: ``log_prob(x) -> (B,)`` and ``sample(n) -> (n, D)``."""

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]


# -- the libraries ------------------------------------------------------------


def build_pushforward(model: str, features: int, transforms: int) -> Candidate:
    import pushforward

    options: dict = {
        "features": features,
        "context": 0,
        "transforms": transforms,
        "hidden": list(HIDDEN),
    }
    if model != "maf":
        options |= {"bins": BINS, "tail_bound": TAIL_BOUND}
    flow = pushforward.build(model, **options)
    return Candidate(flow, flow.log_prob, flow.sample)


def build_zuko(model: str, features: int, transforms: int) -> Candidate:
    import zuko

    if model == "maf":
        flow = zuko.flows.MAF(features, 0, transforms=transforms, hidden_features=HIDDEN)
    else:
        passes = 2 if model == "nsf" else None
        flow = zuko.flows.NSF(
            features, 0, bins=BINS, transforms=transforms, passes=passes, hidden_features=HIDDEN
        )
    return Candidate(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


def build_nflows(model: str, features: int, transforms: int) -> Candidate:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import (
        CompositeTransform,
        MaskedAffineAutoregressiveTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        PiecewiseRationalQuadraticCouplingTransform,
        ReversePermutation,
    )
    from nflows.utils.torchutils import create_alternating_binary_mask

    made = {
        "features": features,
        "hidden_features": HIDDEN[0],
        "num_blocks": 1,
        "use_residual_blocks": False,
    }
    spline = {"num_bins": BINS, "tails": "linear", "tail_bound": TAIL_BOUND}
    layers = []
    for index in range(transforms):
        if model == "maf":
            layers.append(MaskedAffineAutoregressiveTransform(**made))
        elif model == "nsf-ar":
            layers.append(MaskedPiecewiseRationalQuadraticAutoregressiveTransform(**made, **spline))
        else:
            mask = create_alternating_binary_mask(features, even=index % 2 == 0)
            layers.append(PiecewiseRationalQuadraticCouplingTransform(mask, PlainMLP, **spline))
        if model != "nsf" and index < transforms - 1:
            layers.append(ReversePermutation(features))
    flow = Flow(CompositeTransform(layers), StandardNormal([features]))
    return Candidate(flow, flow.log_prob, flow.sample)


def build_normflows(model: str, features: int, transforms: int) -> Candidate:
    import normflows
    from normflows.flows import MaskedAffineAutoregressive, Permute, Reverse
    from normflows.flows.neural_spline.autoregressive import (
        MaskedPiecewiseRationalQuadraticAutoregressive,
    )
    from normflows.flows.neural_spline.coupling import PiecewiseRationalQuadraticCoupling
    from normflows.utils.masks import create_alternating_binary_mask

    made = {
        "features": features,
        "hidden_features": HIDDEN[0],
        "num_blocks": 1,
        "use_residual_blocks": False,
    }
    spline = {"num_bins": BINS, "tails": "linear", "tail_bound": TAIL_BOUND}
    layers: list[nn.Module] = []
    for index in range(transforms):
        if model == "maf":
            layer = MaskedAffineAutoregressive(**made)
        elif model == "nsf-ar":
            layer = MaskedPiecewiseRationalQuadraticAutoregressive(
                **made, **spline, init_identity=False
            )
        else:
            mask = create_alternating_binary_mask(features, even=index % 2 == 0)
            layer = PiecewiseRationalQuadraticCoupling(mask, PlainMLP, **spline)
        # normflows' layers map base -> data in ``forward``; these layer classes
        # compute one pass in ``forward``, so Reverse puts that pass on log_prob.
        layers.append(Reverse(layer))
        if model != "nsf" and index < transforms - 1:
            layers.append(Permute(features, mode="swap"))
    base = normflows.distributions.DiagGaussian(features, trainable=False)
    flow = normflows.NormalizingFlow(base, layers)
    return Candidate(flow, flow.log_prob, lambda n: flow.sample(n)[0])


BUILDERS = {
    "pushforward": build_pushforward,
    "zuko": build_zuko,
    "nflows": build_nflows,
    "normflows": build_normflows,
}


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# -- what is timed ------------------------------------------------------------


def train_step(candidate: Candidate, x: Tensor) -> Callable[[], None]:
    optimizer = torch.optim.Adam(candidate.module.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = -candidate.log_prob(x).mean()
        loss.backward()
        optimizer.step()

    return step


def log_prob_call(candidate: Candidate, x: Tensor) -> Callable[[], None]:
    def call() -> None:
        with torch.no_grad():
            candidate.log_prob(x)

    return call


def sample_call(candidate: Candidate, n: int) -> Callable[[], None]:
    def call() -> None:
        with torch.no_grad():
            candidate.sample(n)

    return call


def conditioner_shape(model: str, features: int) -> tuple[int, int]:
    """(inputs, outputs) of our conditioner for one layer."""
    if model == "maf":
        return features, 2 * features
    if model == "nsf-ar":
        return features, features * (3 * BINS - 1)
    transformed = math.ceil(features / 2)
    return features - transformed, transformed * (3 * BINS - 1)


def floor_calls(model: str, features: int, transforms: int) -> dict[str, Callable[[], None]]:
    """The bare conditioner nets: forward, forward+backward+Adam, and the sampling passes."""
    inputs, outputs = conditioner_shape(model, features)
    nets = nn.ModuleList(PlainMLP(inputs, outputs) for _ in range(transforms))
    x = torch.randn(BATCH, inputs)
    optimizer = torch.optim.Adam(nets.parameters(), lr=1e-3)
    passes = 1 if model == "nsf" else features

    def forward() -> None:
        with torch.no_grad():
            for net in nets:
                net(x)

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = sum(net(x).mean() for net in nets)
        loss.backward()
        optimizer.step()

    def sample() -> None:
        with torch.no_grad():
            for net in nets:
                for _ in range(passes):
                    net(x)

    return {"train": train, "log_prob": forward, "sample": sample}


def check(name: str, candidate: Candidate, x: Tensor) -> None:
    """Fails loudly if a candidate's outputs have the wrong shape or are not finite."""
    with torch.no_grad():
        log_prob = candidate.log_prob(x)
        samples = candidate.sample(16)
    if log_prob.shape != (x.shape[0],) or not torch.isfinite(log_prob).all():
        raise RuntimeError(f"{name}: log_prob has shape {tuple(log_prob.shape)} or is not finite")
    if samples.shape != (16, x.shape[1]):
        raise RuntimeError(f"{name}: sample has shape {tuple(samples.shape)}")


def main() -> None:
    setup(threads=1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="kept rounds per figure")
    parser.add_argument("--warmup", type=int, default=2, help="discarded rounds per figure")
    parser.add_argument(
        "--target", type=float, default=0.04, help="seconds per candidate and round"
    )
    parser.add_argument("--transforms", type=int, default=3)
    parser.add_argument("--features", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--quick", action="store_true", help="smoke test: few short rounds")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.target = 3, 1, 0.005

    others = [name for name in args.libraries if name != "pushforward"]
    info = environment(library_versions())
    print(f"# Discrete flows: pushforward vs {', '.join(others)}\n")
    print_environment(info)
    print(
        f"batch {BATCH}, float32, {args.transforms} transforms, hidden {list(HIDDEN)}, ReLU, "
        f"{BINS} bins, tail bound {TAIL_BOUND}; median ms per call over {args.rounds} "
        f"interleaved rounds ({args.warmup} warm-up rounds discarded); ratios are medians "
        f"of per-round paired ratios.\n"
    )

    torch.manual_seed(0)
    rows, counts, results = [], [], []
    for model in args.models:
        for features in args.features:
            x = torch.randn(BATCH, features)
            built = {
                name: BUILDERS[name](model, features, args.transforms) for name in args.libraries
            }
            for name, candidate in built.items():
                check(name, candidate, x)
            counts.append(
                [f"{model} D={features}"]
                + [
                    sum(p.numel() for p in built[name].module.parameters())
                    for name in args.libraries
                ]
            )
            floor = floor_calls(model, features, args.transforms)
            for figure in FIGURES:
                if figure == "train":
                    calls = {name: train_step(c, x) for name, c in built.items()}
                elif figure == "log_prob":
                    calls = {name: log_prob_call(c, x) for name, c in built.items()}
                else:
                    calls = {name: sample_call(c, BATCH) for name, c in built.items()}
                calls["floor"] = floor[figure]
                timings = interleaved(calls, args.rounds, args.warmup, args.target)
                medians = {name: timing.median * 1e3 for name, timing in timings.items()}
                fastest = min(others, key=medians.__getitem__) if others else None
                ours = "pushforward" in timings
                vs_zuko = (
                    paired_ratio(timings, "pushforward", "zuko")
                    if ours and "zuko" in timings
                    else math.nan
                )
                vs_fastest = (
                    paired_ratio(timings, "pushforward", fastest) if ours and fastest else math.nan
                )
                vs_floor = paired_ratio(timings, "pushforward", "floor") if ours else math.nan
                rows.append(
                    [f"{model} D={features} {figure}"]
                    + [f"{medians[name]:.2f}" for name in (*args.libraries, "floor")]
                    + [f"{vs_zuko:.2f}", f"{vs_fastest:.2f} ({fastest})", f"{vs_floor:.1f}"]
                )
                results.append(
                    {
                        "model": model,
                        "features": features,
                        "figure": figure,
                        "median_ms": medians,
                        "rounds_ms": {n: [s * 1e3 for s in t.rounds] for n, t in timings.items()},
                        "calls_per_round": {n: t.calls for n, t in timings.items()},
                        "ours_over_zuko": vs_zuko,
                        "ours_over_fastest_other": vs_fastest,
                        "fastest_other": fastest,
                        "ours_over_floor": vs_floor,
                    }
                )
                print(f"  done: {model} D={features} {figure}", flush=True, file=sys.stderr)

    headers = ["model / figure", *(f"{name} (ms)" for name in args.libraries), "floor (ms)"]
    headers += ["ours/zuko", "ours/fastest other", "ours/floor"]
    print(markdown_table(headers, rows))
    print("\nParameters per model (architecture check):\n")
    print(markdown_table(["model", *args.libraries], counts))
    write_json(args.json, {"environment": info, "transforms": args.transforms, "results": results})


if __name__ == "__main__":
    main()
