"""Which training defaults make a conditional flow a good posterior estimator: test NLL.

For each task of ``pushforward.sbi.tasks``, budget and candidate configuration, train a
posterior estimator on the task's simulations and score it by the mean negative
log-density of fresh simulations, :math:`-\\frac1n \\sum_i \\log q(\\theta_i \\mid x_i)`
over ``--test`` draws of the joint. Its expectation is the posterior's entropy plus the
expected KL from the true posterior to the estimator, so differences between candidates
on the same test set are differences of expected KL, with no reference samples and no
classifier: cheap enough to compare defaults over tasks, budgets and seeds. C2ST
(``bench/sbi_quality.py``) is the published comparison.

Candidates (``--candidates``, comma-separated): ``default`` (``train_run`` with nothing
set), ``b200`` (batch 200, lr 5e-4: the sbi package's NPE training), ``b128``
(batch 128, lr 5e-4), ``b256`` (batch 256, lr 5e-4), ``p20`` (the default with patience
20 validations), ``e10`` / ``e20`` (validation every 10 or 20 steps instead of 100),
``e10-b200``, ``noema`` (no moving average of the weights), ``arch50`` (sbi's NSF
widths: 2 x 50 hidden units, 10 bins), ``maf``, ``nsf-ar``, ``fm`` (flow matching with
its defaults: minibatch OT coupling, uniform times), ``fm-power`` / ``fm-power1`` (times drawn as
:math:`u^{1/(1+\alpha)}`, alpha 4 or 1, as flow matching posterior estimation does),
``fm-independent`` (no OT coupling), ``zuko`` (zuko's NSF trained as sbi trains NPE,
as in bench/sbi_quality.py).

Run::

    python bench/sbi_defaults.py --tasks two_moons,slcp --budgets 10000 --seeds 2
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import pushforward
from pushforward.sbi.tasks import TASKS, make_task
from sbi_quality import train_zuko_flow

CANDIDATES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "default": ("nsf", {}, {}),
    "b200": ("nsf", {}, {"batch_size": 200, "lr": 5e-4}),
    "b128": ("nsf", {}, {"batch_size": 128, "lr": 5e-4}),
    "b256": ("nsf", {}, {"batch_size": 256, "lr": 5e-4}),
    "p20": ("nsf", {}, {"patience": 20}),
    "b200-p20": ("nsf", {}, {"batch_size": 200, "lr": 5e-4, "patience": 20}),
    "e10": ("nsf", {}, {"eval_every": 10}),
    "e20": ("nsf", {}, {"eval_every": 20}),
    "e10-b200": ("nsf", {}, {"eval_every": 10, "batch_size": 200, "lr": 5e-4}),
    "noema": ("nsf", {}, {"ema": None}),
    "arch50": ("nsf", {"hidden": [50, 50], "bins": 10}, {}),
    "maf": ("maf", {}, {}),
    "nsf-ar": ("nsf-ar", {}, {}),
    "fm": ("fm", {}, {}),
    "fm-power": ("fm", {"time_sampling": "power", "time_options": {"exponent": 4.0}}, {}),
    "fm-power1": ("fm", {"time_sampling": "power", "time_options": {"exponent": 1.0}}, {}),
    "fm-independent": ("fm", {"coupling": "independent"}, {}),
}
TEST_SEED = 7_777


def score(
    task: Any, candidate: str, budget: int, seed: int, test: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, Any]:
    theta, x = task.simulations(budget, seed)
    start = time.perf_counter()
    if candidate == "zuko":
        flow, details = train_zuko_flow(theta, x, seed)
        with torch.no_grad():
            nll = float(-flow.log_prob(test[0].float(), test[1].float()).double().mean())
    else:
        name, options, train = CANDIDATES[candidate]
        with tempfile.TemporaryDirectory() as out:
            result = pushforward.train_run(
                out, theta, name, context=x, options=options, train={"seed": seed, **train}
            )
        model = result.model
        with torch.no_grad():
            values = [
                model.log_prob(t.float(), c.float()).double()
                for t, c in zip(test[0].split(8192), test[1].split(8192), strict=True)
            ]
        nll = float(-torch.cat(values).mean())
        details = {"steps": result.history.steps_done}
    return {"nll": nll, "train_seconds": time.perf_counter() - start, **details}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--budgets", default="1000,10000")
    parser.add_argument("--candidates", default="default,b200,p20,zuko")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--test", type=int, default=20_000)
    parser.add_argument("--json", help="append one JSON line per result")
    arguments = parser.parse_args()
    common.setup()
    info = common.environment(
        {name: importlib.metadata.version(name) for name in ("zuko", "pushforward")}
    )
    common.print_environment(info)
    candidates = arguments.candidates.split(",")
    rows = []
    for task_name in arguments.tasks.split(","):
        task = make_task(task_name)
        test = task.simulations(arguments.test, TEST_SEED)
        for budget in (int(b) for b in arguments.budgets.split(",")):
            for seed in range(arguments.seeds):
                for candidate in candidates:
                    scored = score(task, candidate, budget, seed, test)
                    result = {"task": task_name, "budget": budget, "seed": seed,
                              "candidate": candidate, **scored}  # fmt: skip
                    rows.append(result)
                    print(json.dumps(result), flush=True)
                    if arguments.json:
                        with open(arguments.json, "a", encoding="utf-8") as handle:
                            handle.write(json.dumps(result) + "\n")
    table = []
    keys = sorted({(r["task"], r["budget"]) for r in rows})
    for task_name, budget in keys:
        cells: list[object] = [task_name, budget]
        base = {
            r["seed"]: r["nll"]
            for r in rows
            if (r["task"], r["budget"], r["candidate"]) == (task_name, budget, "zuko")
        }
        for candidate in candidates:
            mine = [
                r
                for r in rows
                if (r["task"], r["budget"], r["candidate"]) == (task_name, budget, candidate)
            ]
            mean = statistics.fmean(r["nll"] for r in mine)
            paired = [r["nll"] - base[r["seed"]] for r in mine if r["seed"] in base]
            diff = f" ({statistics.fmean(paired):+.3f})" if paired and candidate != "zuko" else ""
            cells.append(f"{mean:.3f}{diff}")
        table.append(cells)
    print()
    print("test NLL (nats), in brackets the paired difference from zuko (negative is better)")
    print(common.markdown_table(["task", "simulations", *candidates], table, left=1))


if __name__ == "__main__":
    main()
