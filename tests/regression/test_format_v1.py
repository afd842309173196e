"""Models saved by pushforward 0.1's first model format (``format_version`` 1) still load.

The directories in ``v1/`` were written by ``pushforward train`` before the core
reshaping (30 steps each, on a fixed 2-D set with context and source), with the
log-densities (or transported points) the saved models gave then. Loading them
now must give the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pushforward

ROOT = Path(__file__).with_name("v1")
EXPECTED = json.loads((ROOT / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED["expected"]))
def test_a_version_1_model_loads_with_its_recorded_outputs(name):
    model = pushforward.load(ROOT / name)
    points = torch.tensor(EXPECTED["points"])
    context = torch.tensor(EXPECTED["context"]) if "context" in name else None
    expected = EXPECTED["expected"][name]
    if "transport" in expected:
        source = torch.tensor(EXPECTED["source"], dtype=torch.float32)
        got = model.transport(source, solver="euler", steps=8)
        torch.testing.assert_close(got, torch.tensor(expected["transport"]), rtol=1e-5, atol=1e-5)
        return
    options = {"solver": "rk4", "steps": 8} if name.startswith(("fm", "meanflow")) else {}
    got = model.log_prob(points, context, **options)
    torch.testing.assert_close(got, torch.tensor(expected["log_prob"]), rtol=1e-5, atol=1e-5)
