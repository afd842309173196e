"""Times pushforward's discrete flow matching against Meta's flow_matching, same network.

Both sides use one denoiser module: the ``OneHotMLP`` that
``pushforward.build("dfm", ..., network="mlp", hidden=[256, 256])`` makes (one-hot
tokens and 32 sinusoidal time features in, SiLU, logits over the V data tokens
out). Our ``DiscreteFlowMatching`` calls it as is; flow_matching gets a thin
``ModelWrapper`` that calls the same module as ``model(x=x_t, t=t)``, counts the
calls, and adds a column for the mask token, as flow_matching's masked examples
work over V + 1 tokens: a very negative logit where its loss wants logits, a zero
probability where its solver wants probabilities. Masked (absorbing) path,
polynomial scheduler with exponent 1 (``kappa_t = t``), float32, one thread, Adam
(lr 1e-3). Shapes: the grid toy (L = 2, V = 64, ``8gaussians-grid``) and
first-k-ones (L = 10, V = 2).

Figures:

1. training step (loss, backward, Adam step) on one fixed batch of 512:
   ours ``model.loss(x)`` with ``loss="generalized-kl"``; flow_matching as its
   examples train: ``t ~ U[0, 1 - 1e-3]``, ``x_0`` all masks,
   ``MixtureDiscreteProbPath(PolynomialConvexScheduler(1.0)).sample``, the
   wrapper's logits and ``MixturePathGeneralizedKL(path)``. Then the same with
   the cross-entropy of the logits at ``x_1`` (ours ``loss="cross-entropy"``,
   flow_matching's ``torch.nn.CrossEntropyLoss``; no mask column needed there).
2. 2,000 samples with 100 Euler steps, ``eta = 0``: ours ``model.sample(2000,
   steps=100, eta=0.0)`` (``ctmc_sample``) against
   ``MixtureDiscreteEulerSolver(wrapper, path, vocabulary_size=V + 1)
   .sample(x_init=masks, step_size=0.01)``; the network calls of both are
   counted (and must agree) before the timed rounds. The network is first
   trained briefly (ours, generalized KL) so that its posteriors are not flat.

The script also checks that both sides hold the same parameters and that, on the
same ``(x_t, t)`` with every position masked, the two generalized-KL losses (and,
on any logits, the two cross-entropies) agree: the rows time one objective.

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/dfm_speed.py [--rounds 15] [--json out.json]
    python bench/dfm_speed.py --quick     # smoke test, well under a minute
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import sys
from collections.abc import Callable
from typing import Any

import torch
from flow_matching.loss import MixturePathGeneralizedKL
from flow_matching.path import MixtureDiscreteProbPath
from flow_matching.path.scheduler import PolynomialConvexScheduler
from flow_matching.solver import MixtureDiscreteEulerSolver
from flow_matching.utils import ModelWrapper
from torch import Tensor, nn
from torch.nn import functional

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
from pushforward.data.discrete_toys import get_discrete_toy
from pushforward.matching.discrete.bound import generalized_kl
from pushforward.matching.discrete.model import DiscreteFlowMatching

BATCH = 512
HIDDEN = (256, 256)
LR = 1e-3
SAMPLES = 2_000
STEPS = 100
LAST_TIME = 1.0 - 1e-3  # flow_matching's training times stop here (its examples' epsilon)
PRETRAIN_STEPS = 200
SHAPES = (("8gaussians-grid", 2, 64), ("first-k-ones", 10, 2))  # toy, L, V
LIBRARIES = ("pushforward", "flow_matching")


# -- the shared network as flow_matching's model ---------------------------------


class MaskColumnDenoiser(ModelWrapper):
    """Our denoiser as flow_matching's model: ``model(x=x_t, t=t)`` over V + 1 tokens.

    ``probabilities=False``: logits with the mask's logit at the dtype's minimum
    (for ``MixturePathGeneralizedKL``, which gathers at ``x_t``, the mask included);
    ``probabilities=True``: the softmax with a zero column for the mask (for
    ``MixtureDiscreteEulerSolver``). ``mask_column=False`` returns the V logits as
    they are (for the cross-entropy). ``calls`` counts the network evaluations.
    """

    def __init__(
        self, network: nn.Module, probabilities: bool = False, mask_column: bool = True
    ) -> None:
        super().__init__(network)
        self.probabilities = probabilities
        self.mask_column = mask_column
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor, **extras: Any) -> Tensor:
        self.calls += 1
        logits = self.model(x, t, None)
        if self.probabilities:
            p = torch.softmax(logits, dim=-1)
            return torch.cat([p, p.new_zeros((*p.shape[:-1], 1))], dim=-1)
        if not self.mask_column:
            return logits
        pad = logits.new_full((*logits.shape[:-1], 1), torch.finfo(logits.dtype).min)
        return torch.cat([logits, pad], dim=-1)


class Counted(nn.Module):
    """Counts the calls of our network inside our model (outside timed calls only)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.module(*args, **kwargs)


def ours(length: int, vocab: int, loss: str) -> DiscreteFlowMatching:
    model = pushforward.build(
        "dfm",
        features=length,
        vocab=vocab,
        path="masked",
        scheduler="polynomial",
        exponent=1.0,
        loss=loss,
        network="mlp",
        hidden=list(HIDDEN),
    )
    if not isinstance(model, DiscreteFlowMatching):
        raise RuntimeError(f"build('dfm') returned a {type(model).__name__}")
    return model


def fm_path() -> MixtureDiscreteProbPath:
    return MixtureDiscreteProbPath(scheduler=PolynomialConvexScheduler(n=1.0))


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- figure 1: training steps ------------------------------------------------------


def adam(module: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=LR)


def ours_step(model: DiscreteFlowMatching, x: Tensor) -> Callable[[], None]:
    optimizer = adam(model)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.loss(x).backward()
        optimizer.step()

    return step


def flow_matching_step(
    wrapper: MaskColumnDenoiser, x: Tensor, vocab: int, loss: str
) -> Callable[[], None]:
    """The training step of flow_matching's discrete examples on the masked path."""
    optimizer = adam(wrapper)
    path = fm_path()
    generalized = MixturePathGeneralizedKL(path)
    cross_entropy = nn.CrossEntropyLoss()
    x_0 = torch.full_like(x, vocab)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        t = torch.rand(x.shape[0]) * LAST_TIME
        sample = path.sample(t=t, x_0=x_0, x_1=x)
        logits = wrapper(x=sample.x_t, t=sample.t)
        if loss == "generalized-kl":
            value = generalized(logits, x, sample.x_t, sample.t)
        else:
            value = cross_entropy(logits.flatten(0, 1), x.flatten(0, 1))
        value.backward()
        optimizer.step()

    return step


def training_candidates(
    length: int, vocab: int, loss: str, x: Tensor
) -> tuple[dict[str, Callable[[], None]], list[int]]:
    """Both training steps, each on its own copy of one network; and their parameter counts."""
    model = ours(length, vocab, loss)
    wrapper = MaskColumnDenoiser(copy.deepcopy(model.network), mask_column=loss == "generalized-kl")
    candidates = {
        "ours": ours_step(model, x),
        "flow_matching": flow_matching_step(wrapper, x, vocab, loss),
    }
    return candidates, [parameters(model), parameters(wrapper), parameters(model.network)]


def objective_gap(length: int, vocab: int, x: Tensor) -> dict[str, float]:
    """Largest differences between the two sides' losses on the same inputs.

    The generalized KL at every position masked (where ours and flow_matching's
    formulas meet; on an unmasked position ours counts 0, the posterior being the
    token itself, flow_matching the network's own); the cross-entropy on any logits.
    """
    model = ours(length, vocab, "generalized-kl")
    wrapper = MaskColumnDenoiser(model.network)
    generator = torch.Generator().manual_seed(3)
    t = torch.rand(x.shape[0], generator=generator) * LAST_TIME
    x_t = torch.full_like(x, vocab)
    with torch.no_grad():
        logits = model.network(x_t, t, None)
        mine = generalized_kl(logits, x, x_t, t, model.scheduler, model.source).mean() / length
        theirs = MixturePathGeneralizedKL(fm_path())(wrapper(x=x_t, t=t), x, x_t, t)
        ce_mine = functional.cross_entropy(logits.reshape(-1, vocab), x.reshape(-1))
        ce_theirs = nn.CrossEntropyLoss()(logits.flatten(0, 1), x.flatten(0, 1))
    return {
        "generalized_kl": abs(float(mine - theirs)),
        "cross_entropy": abs(float(ce_mine - ce_theirs)),
    }


# -- figure 2: sampling -----------------------------------------------------------


def pretrained(length: int, vocab: int, x: Tensor) -> DiscreteFlowMatching:
    model = ours(length, vocab, "generalized-kl")
    step = ours_step(model, x)
    for _ in range(PRETRAIN_STEPS):
        step()
    return model


def sampling_candidates(
    model: DiscreteFlowMatching, vocab: int
) -> tuple[dict[str, Callable[[], Tensor]], MaskColumnDenoiser]:
    length = len(model.vocab)
    wrapper = MaskColumnDenoiser(model.network, probabilities=True)
    solver = MixtureDiscreteEulerSolver(model=wrapper, path=fm_path(), vocabulary_size=vocab + 1)
    x_init = torch.full((SAMPLES, length), vocab, dtype=torch.int64)

    def pushforward_call() -> Tensor:
        return model.sample(SAMPLES, steps=STEPS, eta=0.0)

    def flow_matching_call() -> Tensor:
        return solver.sample(x_init=x_init, step_size=1.0 / STEPS)

    return {"ours": pushforward_call, "flow_matching": flow_matching_call}, wrapper


def sampling_check(
    model: DiscreteFlowMatching,
    calls: dict[str, Callable[[], Tensor]],
    wrapper: MaskColumnDenoiser,
    vocab: int,
) -> dict[str, Any]:
    """Network calls of one draw on each side (asserted equal) and the tokens' range."""
    network = model.network
    counted = Counted(network)
    model.network = counted
    try:
        mine = calls["ours"]()
    finally:
        model.network = network
    wrapper.calls = 0
    theirs = calls["flow_matching"]()
    nfe = {"ours": counted.calls, "flow_matching": wrapper.calls}
    if nfe["ours"] != nfe["flow_matching"] or nfe["ours"] != STEPS:
        raise RuntimeError(f"network calls differ: {nfe}, expected {STEPS} each")
    for name, tokens in (("ours", mine), ("flow_matching", theirs)):
        if tokens.shape != (SAMPLES, len(model.vocab)) or not bool((tokens < vocab).all()):
            raise RuntimeError(f"{name}: samples of shape {tuple(tokens.shape)} hold masks")
    return {"nfe": nfe}


# -- main ---------------------------------------------------------------------------


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


def ratio(timings: dict[str, Timing]) -> str:
    return f"{paired_ratio(timings, 'ours', 'flow_matching'):.2f}"


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
    parser.add_argument("--rounds", type=int, default=15, help="kept rounds")
    parser.add_argument("--warmup", type=int, default=2, help="discarded rounds")
    parser.add_argument("--target", type=float, default=0.1, help="seconds per candidate/round")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 short rounds")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.target = 3, 1, 0.01

    info = environment(library_versions())
    print("# Discrete flow matching: pushforward vs flow_matching\n")
    print_environment(info)
    print(
        f"masked path, kappa_t = t, float32, Adam lr {LR}, OneHotMLP hidden {list(HIDDEN)} "
        f"(SiLU); training on one fixed batch of {BATCH}; sampling {SAMPLES:,} sequences "
        f"with {STEPS} Euler steps, eta 0; median ms per call over {args.rounds} interleaved "
        f"rounds ({args.warmup} warm-up rounds discarded); ratios are medians of per-round "
        "paired ratios (<= 1: pushforward at least as fast).\n",
        flush=True,
    )

    results: dict[str, Any] = {"environment": info, "shapes": {}}
    train_rows, sample_rows, count_rows, check_rows = [], [], [], []
    for toy_name, length, vocab in SHAPES:
        torch.manual_seed(0)
        toy = get_discrete_toy(toy_name)
        if toy.vocab != (vocab,) * length:
            raise RuntimeError(f"{toy_name} has vocab {toy.vocab}, expected {vocab} x {length}")
        label = f"L={length}, V={vocab}"
        record: dict[str, Any] = {}
        results["shapes"][label] = record
        x = toy.sample(BATCH, seed=0)

        for loss in ("generalized-kl", "cross-entropy"):
            candidates, counts = training_candidates(length, vocab, loss, x)
            if counts[0] != counts[1]:
                raise RuntimeError(f"{label}: parameters differ, {counts[0]} vs {counts[1]}")
            timings = interleaved(candidates, args.rounds, args.warmup, args.target)
            record[f"training_{loss}"] = rounds_ms(timings)
            train_rows.append(
                [
                    f"{label}, {loss}",
                    ms(timings, "ours"),
                    ms(timings, "flow_matching"),
                    ratio(timings),
                ]
            )
            if loss == "generalized-kl":
                count_rows.append([label, *counts])
            print(f"  done: {label} training, {loss}", flush=True, file=sys.stderr)

        gap = objective_gap(length, vocab, x)
        record["objective_gap"] = gap
        check_rows.append([label, f"{gap['generalized_kl']:.1e}", f"{gap['cross_entropy']:.1e}"])

        model = pretrained(length, vocab, x)
        calls, wrapper = sampling_candidates(model, vocab)
        check = sampling_check(model, calls, wrapper, vocab)
        timings = interleaved(calls, args.rounds, args.warmup, target=0.0)
        record["sample"] = {**rounds_ms(timings), **check}
        nfe = check["nfe"]
        sample_rows.append(
            [
                label,
                ms(timings, "ours"),
                ms(timings, "flow_matching"),
                ratio(timings),
                f"{nfe['ours']} / {nfe['flow_matching']}",
            ]
        )
        print(f"  done: {label} sampling", flush=True, file=sys.stderr)

    print(f"## 1. Training step, batch {BATCH} (ms per step)\n")
    print(
        markdown_table(
            ["shape, loss", "pushforward", "flow_matching", "ours/flow_matching"], train_rows
        )
    )
    print(f"\n## 2. Drawing {SAMPLES:,} samples, {STEPS} Euler steps (ms)\n")
    print(
        markdown_table(
            [
                "shape",
                "pushforward",
                "flow_matching",
                "ours/flow_matching",
                "network calls ours / fm",
            ],
            sample_rows,
        )
    )
    print("\nParameters (architecture check):\n")
    print(
        markdown_table(
            ["shape", "ours DiscreteFlowMatching", "flow_matching wrapper", "bare network"],
            count_rows,
        )
    )
    print("\nSame objective (|ours - flow_matching| on the same inputs):\n")
    print(markdown_table(["shape", "generalized KL, all masked", "cross-entropy"], check_rows))
    write_json(args.json, results)


if __name__ == "__main__":
    main()
