"""Weight fingerprints of eight small ``pushforward train`` runs, recorded before a refactor.

Each configuration trains for 300 steps from seed 0 through the command line and
is fingerprinted by the SHA-256 of every trained parameter, as a multiset (sorted
digests), so the fingerprint does not depend on where a parameter lives in the
module tree or what its state_dict key is. Moments (sum, sum of squares) of each
parameter are kept beside the digests, to compare at a tolerance on a CPU whose
kernels round differently from the one the digests were recorded on.

Run as a script to (re)record ``fingerprints.json``:

    python tests/regression/fingerprints.py
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

COMMON = ["--data", "builtin:moons", "--n", "2000", "--batch-size", "128", "--seed", "0"]
SMALL = ["--set", "hidden=[64,64]"]
CONFIGURATIONS: dict[str, list[str]] = {
    # Recorded with the base as it was: tails="adaptive" became the default of a run since.
    "nsf": ["--model", "nsf", "--set", 'tails="gaussian"'],
    "nsf-ar": ["--model", "nsf-ar", "--set", 'tails="gaussian"'],
    "maf": ["--model", "maf"],
    "realnvp": ["--model", "realnvp"],
    "fm-ot": ["--model", "fm", *SMALL, "--set", 'coupling="ot"'],
    "fm-independent": ["--model", "fm", *SMALL, "--set", 'coupling="independent"'],
    "meanflow": ["--model", "meanflow", *SMALL],
    "shortcut": ["--model", "shortcut", *SMALL],
}
STEPS = 300
FILE = Path(__file__).with_name("fingerprints.json")


def cpu_vendor() -> str | None:
    """The CPU's vendor string (``GenuineIntel``, ``AuthenticAMD``), where Linux says it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def fingerprint(module: torch.nn.Module) -> dict[str, Any]:
    """Sorted digests, shapes and moments of the module's parameters."""
    rows = []
    for parameter in module.parameters():
        value = parameter.detach().cpu().contiguous()
        rows.append(
            {
                "sha256": hashlib.sha256(value.numpy().tobytes()).hexdigest(),
                "shape": list(value.shape),
                "sum": float(value.double().sum()),
                "sum_squares": float(value.double().square().sum()),
            }
        )
    rows.sort(key=lambda row: row["sha256"])
    return {"parameters": rows}


def train_and_fingerprint(name: str, directory: Path) -> dict[str, Any]:
    """Trains configuration ``name`` with ``pushforward train`` and fingerprints the result."""
    import pushforward
    from pushforward.cli.main import main

    out = directory / name
    status = main(
        [
            "train",
            *COMMON,
            *CONFIGURATIONS[name],
            "--steps",
            str(STEPS),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    if status != 0:
        raise RuntimeError(f"pushforward train failed for {name} with status {status}")
    return fingerprint(pushforward.load(out))


def record() -> None:
    torch.set_num_threads(1)
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_vendor": cpu_vendor(),
        "steps": STEPS,
        "configurations": {},
    }
    with tempfile.TemporaryDirectory() as directory:
        for name in CONFIGURATIONS:
            result["configurations"][name] = train_and_fingerprint(name, Path(directory))
            print(name, "recorded", file=sys.stderr)
    FILE.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    record()
