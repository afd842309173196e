"""Times sbibm's C2ST: pushforward's batched torch version against scikit-learn's, one thread.

The reference is sbibm's ``c2st`` (sbibm/metrics/c2st.py, Lueckmann et al. 2021) as it
runs there: X and Y z-scored with X's mean and unbiased standard deviation (torch,
float32), ``KFold(5, shuffle=True, random_state=1)``, ``cross_val_score`` of
``MLPClassifier(activation="relu", hidden_layer_sizes=(10 d, 10 d), max_iter=10000,
solver="adam", random_state=1)`` on the float32 arrays, the mean of the fold
accuracies; called once per pair. Ours is ``sbibm_c2st`` on all pairs at once
(float32, seed 1).

Cases (10,000 against 10,000 samples each, X ~ N(0, I), Y ~ N(s, I)):

- dim 2, 10 pairs with shifts s = 0, 0.05, ..., 0.45 (a benchmark's 10 observations);
- dim 5, one pair, s = 0.2;
- dim 10, one pair, s = 0.1.

Each case runs once per implementation (scikit-learn takes minutes), so the times are
single measurements, not medians. ``--skip-sklearn 10`` leaves scikit-learn out at dim
10, the slowest case.

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/sbibm_c2st_speed.py [--skip-sklearn 10] [--json out.json]
    python bench/sbibm_c2st_speed.py --quick     # smoke test: 1,000 samples
"""

from __future__ import annotations

import argparse
import importlib.metadata
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from common import environment, markdown_table, print_environment, setup, write_json
from pushforward.metrics.sbibm_c2st import sbibm_c2st

SEED = 1


@dataclass(frozen=True)
class Case:
    dim: int
    shifts: tuple[float, ...]

    @property
    def name(self) -> str:
        return f"dim {self.dim}, {len(self.shifts)} pair{'s' * (len(self.shifts) > 1)}"


CASES = [
    Case(2, tuple(0.05 * k for k in range(10))),
    Case(5, (0.2,)),
    Case(10, (0.1,)),
]


def samples(case: Case, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pairs, n, dim)`` float32 X and Y, seeded by the dimension."""
    generator = torch.Generator().manual_seed(case.dim)
    x = torch.randn(len(case.shifts), n, case.dim, generator=generator)
    y = torch.randn(len(case.shifts), n, case.dim, generator=generator)
    return x, y + torch.tensor(case.shifts).view(-1, 1, 1)


def sklearn_c2st(x: torch.Tensor, y: torch.Tensor, seed: int = SEED) -> float:
    """sbibm's ``c2st`` (z-score, KFold, MLPClassifier), written out here."""
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    mean, std = x.mean(dim=0), x.std(dim=0)
    data = torch.cat([(x - mean) / std, (y - mean) / std]).numpy()
    target = np.concatenate([np.zeros(x.shape[0]), np.ones(y.shape[0])])
    dim = x.shape[1]
    classifier = MLPClassifier(
        activation="relu",
        hidden_layer_sizes=(10 * dim, 10 * dim),
        max_iter=10000,
        solver="adam",
        random_state=seed,
    )
    folds = KFold(n_splits=5, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(classifier, data, target, cv=folds, scoring="accuracy")))


def main() -> None:
    setup(threads=1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10000, help="rows of X and of Y")
    parser.add_argument(
        "--skip-sklearn", type=int, nargs="*", default=[], help="dimensions without sklearn"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 1,000 samples")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.samples = 1000

    versions = {
        name: importlib.metadata.version(name)
        for name in ("scikit-learn", "numpy", "threadpoolctl")
    }
    info = environment(versions)
    print("# sbibm's C2ST: pushforward (batched torch) vs scikit-learn\n")
    print_environment(info)
    print(
        f"{args.samples:,} vs {args.samples:,} samples per pair, 5 folds, seed {SEED}, "
        "float32, one thread (torch and the BLAS under NumPy); one run per case.\n",
        flush=True,
    )
    rows, details, results = [], [], []
    for case in CASES:
        x, y = samples(case, args.samples)
        start = time.perf_counter()
        ours = sbibm_c2st(x, y, seed=SEED)
        ours_seconds = time.perf_counter() - start
        accuracy = ours.accuracy.tolist()
        record: dict[str, Any] = {
            "case": case.name,
            "dim": case.dim,
            "shifts": list(case.shifts),
            "ours_seconds": ours_seconds,
            "ours_accuracy": accuracy,
            "ours_epochs_mean": ours.epochs.double().mean().item(),
        }
        theirs: list[float] = []
        theirs_seconds = float("nan")
        if case.dim not in args.skip_sklearn:
            start = time.perf_counter()
            with threadpool_limits(limits=1), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = [sklearn_c2st(x[k], y[k]) for k in range(len(case.shifts))]
            theirs_seconds = time.perf_counter() - start
        record |= {"sklearn_seconds": theirs_seconds, "sklearn_accuracy": theirs}
        results.append(record)
        rows.append(
            [
                case.name,
                f"{ours_seconds:.1f}",
                f"{theirs_seconds:.1f}" if theirs else "skipped",
                f"{theirs_seconds / ours_seconds:.1f}" if theirs else "-",
                f"{np.mean(accuracy):.4f}",
                f"{np.mean(theirs):.4f}" if theirs else "-",
                f"{np.mean(np.abs(np.subtract(accuracy, theirs))):.4f}" if theirs else "-",
            ]
        )
        for k, shift in enumerate(case.shifts):
            details.append(
                [
                    case.name,
                    f"{shift:.2f}",
                    f"{accuracy[k]:.4f}",
                    f"{theirs[k]:.4f}" if theirs else "-",
                ]
            )
        print(f"done: {case.name} (ours {ours_seconds:.1f} s, sklearn {theirs_seconds:.1f} s)")
        print(flush=True)

    headers = [
        "case",
        "ours s",
        "sklearn s",
        "sklearn/ours",
        "ours acc (mean)",
        "sklearn acc (mean)",
        "mean |diff|",
    ]
    print(markdown_table(headers, rows))
    print()
    print(markdown_table(["case", "shift", "ours acc", "sklearn acc"], details, left=2))
    write_json(args.json, {"environment": info, "samples": args.samples, "cases": results})


if __name__ == "__main__":
    main()
