"""The files of a reflow or distill run beyond a plain run's: its pairs on disk, and
the checks that a new run starts in a free directory and that a resumed one is the
same run, on the same pairs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from pushforward.model import Model
from pushforward.paired import PairedBatch
from pushforward.train.run_directory import CONFIG_FILE, read_config

PAIRS_FILE = "pairs.safetensors"
"""The pairs a run trains on, standardised, as drawn: tensors ``x0``, ``x1`` and
``context`` (conditional runs); a resumed run reads them instead of drawing again."""

PAIR_SETTINGS = {
    "pairs": "--pairs",
    "solver": "--solver, --solver-steps, --atol and --rtol",
    "init": "--set init",
    "guidance": "--guidance",
    "context": "--context",
}
"""Lineage entries that fix the pairs or the starting weights, and the options that set
them: a resumed run must repeat them."""

METHODS = ("reflow", "distill")
"""The procedures that make such runs."""


def made_by(config: dict[str, Any]) -> str | None:
    """The method (``reflow`` or ``distill``) that made a run, or ``None`` for another run."""
    lineage = config.get("lineage")
    return lineage.get("method") if isinstance(lineage, dict) else None


def check_out(out: Path) -> None:
    """Refuses an ``out`` that exists, saying whether ``--resume`` would continue it."""
    if not out.exists():
        return
    made = None
    if (out / CONFIG_FILE).is_file():
        try:
            made = made_by(read_config(out))
        except (ValueError, OSError):
            made = None
    if made in METHODS:
        raise ValueError(
            f"--out '{out}' already exists and holds a {made} run; pass --resume to "
            "continue it, or choose a new run directory"
        )
    raise ValueError(
        f"--out '{out}' already exists; choose a new run directory "
        "(reflow and distill start a new run unless --resume continues one)"
    )


def previous_run(out: Path, method: str) -> dict[str, Any]:
    """The configuration of the run a resume continues, checked to be one of ``method``."""
    if not (out / CONFIG_FILE).is_file():
        where = "does not exist" if not out.exists() else f"holds no run (no {CONFIG_FILE})"
        raise ValueError(
            f"nothing to resume in '{out}': it {where}; run without --resume to start a new run"
        )
    previous = read_config(out)
    made = made_by(previous)
    if made != method:
        what = "pushforward train" if made is None else f"pushforward {made}"
        raise ValueError(
            f"cannot resume '{out}': it holds a run made by {what}, not by pushforward {method}"
        )
    return previous


def check_resumable(out: Path, previous: dict[str, Any], record: dict[str, Any], seed: int) -> None:
    """Refuses to resume a run whose parent, model or pairs differ from this call's."""
    before, now = previous["lineage"], record["lineage"]
    if before.get("parent") != now["parent"]:
        raise ValueError(
            f"cannot resume '{out}': it was made from the run '{before.get('parent')}', "
            f"not '{now['parent']}'"
        )
    for key in ("data", "standardization", "source"):
        if previous.get(key) != record.get(key):
            raise ValueError(
                f"cannot resume '{out}': its parent run '{now['parent']}' has changed since "
                f"(its {key} differs); start a new run"
            )
    model = _as_json(record["model"])
    if previous["model"] != model:
        raise ValueError(
            f"cannot resume '{out}': it holds model {previous['model']['name']!r} with "
            f"options {previous['model']['options']}, not {model['name']!r} with "
            f"{model['options']}"
        )
    for key, flags in PAIR_SETTINGS.items():
        if before.get(key) != _as_json(now.get(key)):
            raise ValueError(
                f"cannot resume '{out}': its pairs were made with {key} {before.get(key)!r}, "
                f"not {now.get(key)!r} (repeat its {flags})"
            )
    if int(previous["train"]["seed"]) != seed:
        raise ValueError(
            f"cannot resume '{out}': its pairs were drawn with --seed "
            f"{previous['train']['seed']}, not {seed}"
        )


def _as_json(value: Any) -> Any:
    # What config.json gives back: tuples become lists.
    return json.loads(json.dumps(value))


def pairs_bytes(pairs: PairedBatch) -> bytes:
    """The pairs as the bytes of :data:`PAIRS_FILE`."""
    tensors = {"x0": pairs.x0.contiguous(), "x1": pairs.x1.contiguous()}
    if pairs.context is not None:
        tensors["context"] = pairs.context.contiguous()
    return safetensors_save(tensors)


def read_pairs(out: Path, lineage: dict[str, Any], student: Model) -> PairedBatch:
    """The pairs saved in ``out``, checked against the run's record and the model."""
    path = out / PAIRS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"cannot resume '{out}': {PAIRS_FILE} is missing (the run stopped before its "
            "pairs were saved); start a new run without --resume"
        )
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != lineage.get("pairs_sha256"):
        raise ValueError(
            f"cannot resume '{out}': {path} is damaged (its SHA-256 differs from the one "
            f"in {CONFIG_FILE}); start a new run without --resume"
        )
    try:
        tensors = safetensors_load(data)
    except SafetensorError as error:
        raise ValueError(f"{path} is not a valid safetensors file ({error})") from None
    conditional = bool(student.context_features)
    names = {"x0", "x1", "context"} if conditional else {"x0", "x1"}
    if set(tensors) != names:
        raise ValueError(f"{path} holds tensors {sorted(tensors)}, expected {sorted(names)}")
    n = int(lineage["pairs"])
    expected = {"x0": (n, *student.event_shape), "x1": (n, *student.event_shape)}
    if conditional:
        expected["context"] = (n, int(student.context_features))
    dtype = next(iter(student.parameters())).dtype
    for name, shape in expected.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise ValueError(
                f"{path}: {name} is {tensor.dtype} of shape {tuple(tensor.shape)}, expected "
                f"{dtype} of shape {shape} ({n} pairs of the model's events)"
            )
    return PairedBatch(tensors["x0"], tensors["x1"], tensors.get("context"))
