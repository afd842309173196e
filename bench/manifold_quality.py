"""Riemannian flow matching against exact densities on manifolds, and on the earth data.

Two studies, one thread, float32 networks, every model trained through
``pushforward.train_run`` (the CLI's path) for a fixed budget:

1. **Built-in densities with exact log-densities**: ``rfm`` (the registered defaults:
   residual 4x256 MLP, uniform source, RK4 sampling, exact likelihood by dopri5) on
   ``vmf-mixture`` (S^2), ``von-mises-torus`` (T^2) and ``rotation-mixture`` (SO(3));
   and a Euclidean ``nsf`` fitted to the same torus angles as if they were plain
   vectors (it ignores the seam). KL(p || q) in nats on 5,000 fresh test points: the
   mean of log p - log q, with the standard error of that paired difference (the
   cross-entropy is shown beside the exact entropy).
2. **The earth sets** (volcano, earthquake, flood, fire; seeded 80/10/10 splits of the
   rows as unit vectors): test NLL (nats, with respect to the surface area of the unit
   sphere), mean ± sd over seeds, beside the published figures.

Run::

    python bench/manifold_quality.py [--json out.json] [--quick] [--studies toys,earth]
        [--seeds 5] [--steps 3000]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pushforward
from common import environment, markdown_table, print_environment, setup, write_json
from pushforward.data.dataset import load_dataset
from pushforward.data.earth import EARTH_SETS

TOYS = ("vmf-mixture", "von-mises-torus", "rotation-mixture")
STUDIES = ("toys", "earth")
PUBLISHED = {
    # Test NLL, mean ± sd: Chen & Lipman (2024) Riemannian FM; De Bortoli et al. (2022)
    # Riemannian score-based models; Rozen et al. (2021) Moser flow.
    "Riemannian FM": {"volcano": (-7.93, 1.67), "earthquake": (-0.28, 0.08),
                      "flood": (0.42, 0.05), "fire": (-1.86, 0.11)},
    "Riemannian score-based": {"volcano": (-4.92, 0.25), "earthquake": (-0.19, 0.07),
                               "flood": (0.48, 0.09), "fire": (-1.33, 0.06)},
    "Moser flow": {"volcano": (-4.21, 0.17), "earthquake": (-0.16, 0.06),
                   "flood": (0.57, 0.10), "fire": (-1.28, 0.05)},
}  # fmt: skip


def nll(model: Any, x: torch.Tensor, chunk: int = 2048) -> tuple[float, float]:
    """Mean negative log-density of ``x`` under ``model`` and its standard error."""
    values = []
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            values.append(-model.log_prob(x[start : start + chunk].float()).double())
    losses = torch.cat(values)
    return float(losses.mean()), float(losses.std() / math.sqrt(losses.numel()))


def train(data: str, name: str, steps: int, seed: int, options: dict[str, Any]) -> Any:
    with tempfile.TemporaryDirectory() as out:
        result = pushforward.train_run(
            Path(out) / "run", data, name, options=options,
            train={"steps": steps, "batch_size": 512, "seed": seed}, quiet=True,
        )  # fmt: skip
    return result.model.eval()


def toy_study(steps: int, test_rows: int) -> list[list[object]]:
    rows: list[list[object]] = []
    cases = [(toy, "rfm", {}) for toy in TOYS]
    cases.append(("von-mises-torus", "nsf", {}))
    for toy_name, model_name, options in cases:
        test = load_dataset(f"builtin:{toy_name}", n=test_rows, seed=11)
        assert test.toy is not None
        entropy = float(test.toy.entropy)
        start = time.perf_counter()
        model = train(f"builtin:{toy_name}", model_name, steps, 0, options)
        seconds = time.perf_counter() - start
        cross, _ = nll(model, test.values)
        # KL by paired differences log p - log q on the same points: its standard error
        # is that of the difference, far below the cross-entropy's own.
        with torch.no_grad():
            log_q = torch.cat([model.log_prob(chunk.float()).double()
                               for chunk in test.values.split(2048)])  # fmt: skip
        difference = test.toy.log_prob(test.values) - log_q
        kl = float(difference.mean())
        error = float(difference.std() / math.sqrt(difference.numel()))
        rows.append([toy_name, model_name, f"{entropy:.4f}", f"{cross:.4f}",
                     f"{kl:.4f} ± {error:.4f}", f"{seconds:.0f}"])  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def earth_study(steps: int, seeds: int) -> list[list[object]]:
    rows: list[list[object]] = []
    for set_name in EARTH_SETS:
        test = load_dataset(f"builtin:{set_name}:test")
        results = []
        start = time.perf_counter()
        for seed in range(seeds):
            model = train(f"builtin:{set_name}", "rfm", steps, seed, {})
            results.append(nll(model, test.values)[0])
            print(set_name, seed, f"{results[-1]:.4f}", flush=True)
        seconds = (time.perf_counter() - start) / seeds
        spread = statistics.stdev(results) if len(results) > 1 else 0.0
        published = [f"{PUBLISHED[k][set_name][0]:.2f} ± {PUBLISHED[k][set_name][1]:.2f}"
                     for k in PUBLISHED]  # fmt: skip
        rows.append([set_name, len(test), f"{statistics.mean(results):.2f} ± {spread:.2f}",
                     *published, f"{seconds:.0f}"])  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    parser.add_argument("--studies", default=",".join(STUDIES), help="toys, earth")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3000)
    arguments = parser.parse_args()
    studies = [name.strip() for name in arguments.studies.split(",") if name.strip()]
    unknown = sorted(set(studies) - set(STUDIES))
    if unknown:
        parser.error(f"unknown studies {unknown}: choose from {list(STUDIES)}")
    setup()
    info = environment({"pushforward": pushforward.__version__})
    print_environment(info)
    steps, seeds, test_rows = arguments.steps, arguments.seeds, 5000
    if arguments.quick:
        steps, seeds, test_rows = 30, 2, 500
    results: dict[str, Any] = {"environment": info, "steps": steps}
    if "toys" in studies:
        toys = toy_study(steps, test_rows)
        print()
        print(f"### KL to the exact densities ({steps} steps of batch 512, {test_rows:,} test "
              "points)")  # fmt: skip
        print()
        headers = ["set", "model", "entropy", "cross-entropy", "KL", "train s"]
        print(markdown_table(headers, toys, left=2))
        results["toys"] = toys
    if "earth" in studies:
        earth = earth_study(steps, seeds)
        print()
        print(f"### Earth test NLL ({steps} steps of batch 512, {seeds} seeds)")
        print()
        headers = ["set", "test rows", "rfm (ours)", *PUBLISHED, "train s"]
        print(markdown_table(headers, earth, left=1))
        results["earth"] = earth
    write_json(arguments.json, results)


if __name__ == "__main__":
    main()
