"""KL divergence of the discrete manifold flows to the exact built-in densities.

Each row trains one registered model on its built-in set through the Run
(``pushforward.train_run``: the set drawn with the seed, 10% held out, points never
standardised) with the model's defaults, ``--steps`` steps (3000) of batch 512 on 20,000
points, then measures on 20,000 fresh points of the set:

- ``KL``: :math:`\\mathbb E_p[\\log p - \\log q]` with the set's exact ``log_prob``, mean ±
  standard error (the paired estimator: far less noisy than the next one);
- ``NLL - H``: the test NLL minus the set's exact entropy, what ``pushforward eval``
  reports as ``kl``; it has the standard error of :math:`\\log q` itself;
- the KL of the uniform distribution, for scale, and the training time.

Rows: ``circular-nsf`` with coupling and with autoregressive layers on
``von-mises-torus`` (T^2), ``sphere-nsf`` on ``vmf-mixture`` (S^2).

Run (the script re-executes itself with the allocator settings of bench/common.py)::

    python bench/manifold_flows.py [--steps 3000] [--seeds 1] [--json out.json]
    python bench/manifold_flows.py --quick    # smoke test: 100 steps
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

import pushforward
from common import environment, markdown_table, print_environment, setup, write_json
from pushforward.data.dataset import load_dataset

BATCH = 512
TRAIN_SIZE = 20_000
TEST_SIZE = 20_000
# (row label, data, model, options)
RUNS = (
    ("circular-nsf (coupling)", "builtin:von-mises-torus", "circular-nsf", {}),
    (
        "circular-nsf (autoregressive)",
        "builtin:von-mises-torus",
        "circular-nsf",
        {"layers": "autoregressive"},
    ),
    ("sphere-nsf", "builtin:vmf-mixture", "sphere-nsf", {}),
)
UNIFORM = {
    "builtin:von-mises-torus": 2 * math.log(2 * math.pi),
    "builtin:vmf-mixture": math.log(4 * math.pi),
}


def measure(data: str, model: str, options: dict, steps: int, seed: int) -> dict[str, float]:
    """Trains one run and returns its KL estimates and training time."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        pushforward.train_run(
            Path(folder) / "run",
            data,
            model,
            train={"steps": steps, "batch_size": BATCH, "n": TRAIN_SIZE, "seed": seed},
            options=options,
            quiet=True,
        )
        seconds = time.perf_counter() - start
        fitted = pushforward.load(Path(folder) / "run")
    toy = load_dataset(data, n=1).toy
    assert toy is not None
    x = toy.sample(TEST_SIZE, seed=1000 + seed)
    with torch.no_grad():
        log_q = fitted.log_prob(x.float()).double()
    ratio = toy.log_prob(x) - log_q
    return {
        "kl": float(ratio.mean()),
        "kl_se": float(ratio.std() / math.sqrt(TEST_SIZE)),
        "nll_minus_entropy": float(-log_q.mean()) - toy.entropy,
        "nll_se": float(log_q.std() / math.sqrt(TEST_SIZE)),
        "uniform_kl": UNIFORM[data] - toy.entropy,
        "seconds": seconds,
    }


def main() -> None:
    setup(threads=1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke test: 100 steps")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.steps = 100
    info = environment({"pushforward": pushforward.__version__})
    print("# Discrete manifold flows against the exact built-in densities\n")
    print_environment(info)
    print(f"{args.steps} steps, batch {BATCH}, {TRAIN_SIZE} training points, model defaults\n")
    rows, results = [], []
    for label, data, model, options in RUNS:
        for seed in range(args.seeds):
            result = measure(data, model, options, args.steps, seed)
            results.append({"run": label, "data": data, "seed": seed, **result})
            rows.append(
                [
                    label,
                    data.removeprefix("builtin:"),
                    seed,
                    f"{result['kl']:.4f} ± {result['kl_se']:.4f}",
                    f"{result['nll_minus_entropy']:.4f} ± {result['nll_se']:.4f}",
                    f"{result['uniform_kl']:.3f}",
                    f"{result['seconds']:.0f}",
                ]
            )
    headers = ["model", "data", "seed", "KL (nats)", "NLL - H", "uniform KL", "train s"]
    print(markdown_table(headers, rows, left=2))
    write_json(args.json, {"environment": info, "steps": args.steps, "results": results})


if __name__ == "__main__":
    main()
