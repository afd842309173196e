"""Times our rational-quadratic spline kernel against zuko's MonotonicRQSTransform.

Both sides start from the same raw conditioner outputs of shape ``(B, D, 3K - 1)``
and do the whole job a flow layer does: turn raw parameters into knots, locate
the bin, evaluate the spline and its log-derivative. Ours is called the way
``RationalQuadraticSplineMap`` calls it; zuko's transform is built from the raw
parameters on every call, as zuko's flows do.

Cases: forward, forward+backward (a training step's share) and inverse, float32,
one thread. Rounds are interleaved (ours, zuko, ours, zuko, ...) so drifting
machine load hits both sides alike; the table reports medians over rounds.

Run::

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 \
        python bench/spline_kernel.py [--batch 512] [--features 2 16] [--bins 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import zuko
from zuko.transforms import MonotonicRQSTransform

from pushforward.transforms.maps import RationalQuadraticSplineMap

TAIL_BOUND = 5.0


def ours_cases(spline: RationalQuadraticSplineMap, x: torch.Tensor, params: torch.Tensor):
    """The three timed closures for our kernel."""

    def forward() -> None:
        with torch.no_grad():
            spline(x, params)

    def forward_backward() -> None:
        y, logabsdet = spline(x_grad, params_grad)
        (y.sum() + logabsdet.sum()).backward()

    def inverse() -> None:
        with torch.no_grad():
            spline.inverse(x, params)

    x_grad = x.clone().requires_grad_(True)
    params_grad = params.clone().requires_grad_(True)
    return {"forward": forward, "forward+backward": forward_backward, "inverse": inverse}


def zuko_cases(x: torch.Tensor, params: torch.Tensor, bins: int):
    """The same closures for zuko: build the transform from raw parameters, then call it."""

    def build(p: torch.Tensor) -> MonotonicRQSTransform:
        # zuko's NSF slices its conditioner output the same way (widths, heights, derivatives).
        w, h, d = p[..., :bins], p[..., bins : 2 * bins], p[..., 2 * bins :]
        return MonotonicRQSTransform(w, h, d, bound=TAIL_BOUND)

    def forward() -> None:
        with torch.no_grad():
            build(params).call_and_ladj(x)

    def forward_backward() -> None:
        y, ladj = build(params_grad).call_and_ladj(x_grad)
        (y.sum() + ladj.sum()).backward()

    def inverse() -> None:
        with torch.no_grad():
            build(params).inv.call_and_ladj(x)

    x_grad = x.clone().requires_grad_(True)
    params_grad = params.clone().requires_grad_(True)
    return {"forward": forward, "forward+backward": forward_backward, "inverse": inverse}


def time_per_call(function: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--features", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=50, help="calls per round and case")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, zuko {zuko.__version__}, float32, "
        f"{args.threads} thread(s), batch {args.batch}, bins {args.bins}, "
        f"median of {args.rounds} rounds x {args.calls} calls"
    )
    print(f"{'D':>3} {'case':<17} {'ours (us)':>10} {'zuko (us)':>10} {'ours/zuko':>10}")
    for features in args.features:
        spline = RationalQuadraticSplineMap(bins=args.bins, tail_bound=TAIL_BOUND)
        # Inputs mostly inside the bounds, a few outside, as a trained flow sees them.
        x = 2.0 * torch.randn(args.batch, features)
        params = torch.randn(args.batch, features, 3 * args.bins - 1)
        ours = ours_cases(spline, x, params)
        theirs = zuko_cases(x, params, args.bins)
        for name in ours:
            for function in (ours[name], theirs[name]):  # warm-up
                time_per_call(function, 5)
            ours_times, zuko_times = [], []
            for _ in range(args.rounds):
                ours_times.append(time_per_call(ours[name], args.calls))
                zuko_times.append(time_per_call(theirs[name], args.calls))
            ours_median = statistics.median(ours_times) * 1e6
            zuko_median = statistics.median(zuko_times) * 1e6
            print(
                f"{features:>3} {name:<17} {ours_median:>10.1f} {zuko_median:>10.1f} "
                f"{ours_median / zuko_median:>10.2f}"
            )


if __name__ == "__main__":
    main()
