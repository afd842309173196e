"""How well flows fitted to unnormalized targets sample them: log Z, modes, ESS, MCMC.

Every run fits a flow to a built-in target (``pushforward.sampling.targets``) with one
objective under a fixed budget of target evaluations (a gradient evaluation counts as
one; FAB's AIS evaluations count as they happen), then measures, on fresh samples:

- ``|log Z err|``: the mean over 10 batches of 2,000 flow samples of
  :math:`|\\log \\hat Z - \\log Z|` (importance sampling, :func:`log_z_estimate`);
- ``ESS``: the reverse ESS of 20,000 flow samples (a fraction), and ``fwd ESS`` the forward
  ESS of 20,000 exact target samples (:func:`forward_ess`: it sees missed modes);
- GMM-40: modes covered (a fifth of a mode's equal share of 20,000 samples) and the
  normalised entropy of the mode frequencies;
- Many Well 32: the self-normalised importance estimate of the per-pair mass in the left
  well, against the exact 0.155693;
- Funnel 10: the self-normalised estimate of the neck's mass :math:`P(x_0 < -3)`, against
  :math:`\\Phi(-1) = 0.1587`, and the same from IMH and NeuTra chains on the fitted flow;
- phi^4 (64 sites, a = 0.1, b = 0, beta = 20): the weight of the positive mode (the sign of
  the mean field) from IMH, i-SIR and NeuTra chains, against 0.5 (symmetry).

Objectives: ``reverse-kl`` (reparameterised), ``path-gradient`` (the fast path gradient of
Vaitl et al. 2024) and ``fab`` (Midgley et al. 2023, AIS towards p^2/q, HMC moves, no
buffer). The flow is a RealNVP (affine couplings, alternating halves), in float32, in units
of the target's ``reference_scale`` where it has one (the mixtures); Adam with the
engine's warm-up and cosine decay. Medians are not needed here: the spread over seeds is
reported as mean ± standard error.

Run::

    python bench/sampling_quality.py --targets gmm-40 --seeds 0 1 [--budget 1.0] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pushforward
from common import markdown_table, write_json
from pushforward.sampling import (
    builtin_target,
    forward_ess,
    importance_log_weights,
    log_z_estimate,
    make_objective,
    mode_coverage,
    reverse_ess,
    run_mcmc,
)
from pushforward.sampling.importance import forward_log_weights
from pushforward.train.target_run import scale_to_target

# Target evaluations per run (scaled by --budget), the batch, the flow and the learning rate.
SETTINGS: dict[str, dict[str, Any]] = {
    "gmm-40": {"evaluations": 2_000_000, "batch": 512, "layers": 10, "hidden": [128, 128],
               "lr": 1e-3},
    "many-well-32": {"evaluations": 4_000_000, "batch": 512, "layers": 10, "hidden": [128, 128],
                     "lr": 5e-4},
    "funnel-10": {"evaluations": 2_000_000, "batch": 512, "layers": 10, "hidden": [128, 128],
                  "lr": 5e-4},
    "phi4-64": {"evaluations": 4_000_000, "batch": 512, "layers": 10, "hidden": [256, 256],
                "lr": 3e-4},
}  # fmt: skip
OBJECTIVES = {
    "reverse-kl": ("reverse-kl", {}),
    "path-gradient": ("path-gradient", {}),
    "fab": ("fab", {"n_intermediate": 4, "transition": "hmc"}),
}
MANY_WELL_LEFT = 0.155693
FUNNEL_NECK = 0.5 * math.erfc(1 / math.sqrt(2))  # Phi(-1)


def evaluations_per_step(target: Any, objective: str, options: dict, batch: int) -> float:
    """Target evaluations one step of ``objective`` costs (FAB: measured on one step)."""
    if objective != "fab":
        return float(batch)
    probe = pushforward.build("realnvp", features=target.features, transforms=2, hidden=[16])
    scale_to_target(probe, target)
    chosen = make_objective("fab", **options)
    chosen.loss(probe, target, batch)
    return float(chosen.target_evaluations)  # type: ignore[attr-defined]


def fit(name: str, objective: str, seed: int, budget: float) -> tuple[Any, Any, dict]:
    settings = SETTINGS[name]
    target = builtin_target(name)
    chosen, options = OBJECTIVES[objective]
    batch = settings["batch"]
    per_step = evaluations_per_step(target, chosen, options, batch)
    steps = max(1, int(settings["evaluations"] * budget / per_step))
    torch.manual_seed(seed)
    model = pushforward.build(
        "realnvp", features=target.features, transforms=settings["layers"],
        hidden=settings["hidden"], normalization="none",
    )  # fmt: skip
    scale_to_target(model, target)
    start = time.perf_counter()
    pushforward.fit(
        model, target=target, objective=chosen, objective_options=options, steps=steps,
        batch_size=batch, lr=settings["lr"], seed=seed, quiet=True, ema=None,
    )  # fmt: skip
    info = {"steps": steps, "evaluations": int(steps * per_step),
            "seconds": time.perf_counter() - start}  # fmt: skip
    return model, target, info


def self_normalised(log_w: torch.Tensor, values: torch.Tensor) -> float:
    finite = torch.isfinite(log_w)
    weights = torch.softmax(log_w[finite], 0)
    return float((weights * values[finite].double()).sum())


def measure(name: str, model: Any, target: Any, seed: int) -> dict[str, float]:
    torch.manual_seed(10_000 + seed)
    errors = []
    for _ in range(10):
        _, log_w = importance_log_weights(model, target, 2000)
        errors.append(abs(log_z_estimate(log_w)[0] - (target.log_z or 0.0)))
    x, log_w = importance_log_weights(model, target, 20_000)
    result: dict[str, float] = {"log_z_error": statistics.fmean(errors), "ess": reverse_ess(log_w)}
    if target.log_z is None:
        result.pop("log_z_error")
    if target.has_sample:
        exact = target.sample(20_000, torch.Generator().manual_seed(seed))
        result["forward_ess"] = forward_ess(forward_log_weights(model, target, exact))
    if name == "gmm-40":
        covered, entropy = mode_coverage(target, x)
        result.update(modes=covered, mode_entropy=entropy)
    if name == "many-well-32":
        left = target.left_well(x).double().mean(dim=1)
        result["left_well"] = self_normalised(log_w, left)
    if name == "funnel-10":
        result["neck"] = self_normalised(log_w, (x[:, 0] < -3).double())
        for kernel in ("imh", "neutra"):
            chains = run_mcmc(target, model, kernel, chains=16, steps=1000, warmup=200, seed=seed)
            result[f"neck_{kernel}"] = float((chains.chains[..., 0] < -3).double().mean())
    if name == "phi4-64":
        for kernel in ("imh", "isir", "neutra"):
            chains = run_mcmc(target, model, kernel, chains=16, steps=1000, warmup=200, seed=seed)
            states = chains.chains.reshape(-1, target.features)
            result[f"mode_{kernel}"] = float((target.mode_sign(states) > 0).double().mean())
            result[f"r_hat_{kernel}"] = float(chains.r_hat.max())
    return result


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    mean = statistics.fmean(values)
    error = statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:.4g} ± {error:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES)
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--budget", type=float, default=1.0, help="scales every budget")
    parser.add_argument("--json", default=None)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    payload: dict[str, Any] = {"budget": arguments.budget, "runs": []}
    for name in arguments.targets:
        rows = []
        for objective in arguments.objectives:
            results = []
            for seed in arguments.seeds:
                model, target, info = fit(name, objective, seed, arguments.budget)
                measured = measure(name, model, target, seed)
                record = {"target": name, "objective": objective, "seed": seed, **info, **measured}
                payload["runs"].append(record)
                results.append(record)
                print(record, flush=True)
            keys = [k for k in results[0] if k not in ("target", "objective", "seed")]
            rows.append([objective, *(summary([float(r[k]) for r in results]) for k in keys)])
        print()
        print(f"### {name}: seeds {arguments.seeds}, budget x{arguments.budget}")
        print()
        print(markdown_table(["objective", *keys], rows))
        print(flush=True)
    write_json(arguments.json, payload)


if __name__ == "__main__":
    main()
