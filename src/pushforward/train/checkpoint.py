"""Training checkpoints: atomic, checksummed, pickle-free, enough for an exact resume.

A checkpoint is a directory ``checkpoint-<step>`` inside the run's checkpoint
directory holding

* ``model.safetensors``: the raw (trained) weights;
* ``ema.safetensors``: the EMA weights as a full state dict (if EMA is on);
* ``best.safetensors``: the weights with the best validation loss (if any);
* ``training_state.safetensors``: optimizer tensors (``optimizer/state/<param>/<name>``)
  and random-generator states (``rng/<name>``);
* ``training_state.json``: everything else (step, optimizer hyper-parameters and
  scalar state, early-stopping counters, history, options);
* ``manifest.json``: the SHA-256 and size of every file above.

Writing is crash-safe: the files go into a hidden temporary directory (each one
written with temporary file, fsync, rename), the manifest last, then the
directory is renamed into place and the parent directory fsynced; older
checkpoints are removed only after that. A ``kill -9`` at any moment thus
leaves the previous complete checkpoint or the new one, and reading verifies
every checksum before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor

from pushforward.serialization import atomic_write_bytes, fsync_directory

FORMAT = "pushforward-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_TUPLE = "__tuple__"


@dataclass
class Checkpoint:
    """The contents of one training checkpoint.

    Attributes:
        step: optimisation steps done when it was written.
        model: the raw model state dict.
        optimizer: the optimizer's ``state_dict()``.
        rng: random-generator states by name (``uint8`` tensors).
        state: JSON-ready training state (history, counters, options).
        ema: the EMA state dict, or ``None``.
        best: the best-validation state dict, or ``None``.
    """

    step: int
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Tensor]
    state: dict[str, Any]
    ema: dict[str, Tensor] | None = None
    best: dict[str, Tensor] | None = None
    path: Path | None = field(default=None, compare=False)


# -- optimizer state without pickle ------------------------------------------


def flatten_optimizer_state(
    state_dict: dict[str, Any],
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Splits ``optimizer.state_dict()`` into safetensors-ready tensors and JSON.

    Tensors of the per-parameter state become ``optimizer/state/<param>/<name>``;
    every other value (hyper-parameters, scalar state) goes to the JSON part,
    with tuples tagged so they come back as tuples.

    Returns:
        ``(tensors, json_part)``; :func:`unflatten_optimizer_state` inverts it.
    """
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        scalars[str(index)] = {}
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer/state/{index}/{name}"] = _storable(value)
            else:
                scalars[str(index)][name] = _encode(value)
    groups = [_encode(group) for group in state_dict["param_groups"]]
    return tensors, {"state": scalars, "param_groups": groups}


def unflatten_optimizer_state(
    tensors: dict[str, Tensor], json_part: dict[str, Any]
) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {
        int(index): {name: _decode(value) for name, value in entries.items()}
        for index, entries in json_part["state"].items()
    }
    prefix = "optimizer/state/"
    for key, value in tensors.items():
        if not key.startswith(prefix):
            continue
        index, name = key[len(prefix) :].split("/", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": [_decode(g) for g in json_part["param_groups"]]}


def _encode(value: Any) -> Any:
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(item) for item in value]}
    if isinstance(value, list):
        return [_encode(item) for item in value]
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, Tensor):
        raise TypeError("tensors must go to the safetensors part")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint without pickle")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TUPLE}:
            return tuple(_decode(item) for item in value[_TUPLE])
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def _storable(tensor: Tensor) -> Tensor:
    return tensor.detach().cpu().contiguous().clone()


def _state_bytes(state: dict[str, Tensor]) -> bytes:
    return safetensors_save({key: _storable(value) for key, value in state.items()})


# -- writing ------------------------------------------------------------------


def save_checkpoint(directory: str | os.PathLike[str], checkpoint: Checkpoint) -> Path:
    """Writes ``checkpoint`` as ``directory/checkpoint-<step>``, atomically.

    Every other checkpoint in ``directory`` (and any half-written one left by a
    crash) is removed once the new one is in place.

    Returns:
        The checkpoint's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"checkpoint-{checkpoint.step:09d}"
    temporary = directory / f".{name}.{os.getpid()}.tmp"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()
    optimizer_tensors, optimizer_json = flatten_optimizer_state(checkpoint.optimizer)
    tensors = dict(optimizer_tensors)
    tensors.update({f"rng/{key}": value for key, value in checkpoint.rng.items()})
    payload = dict(checkpoint.state)
    payload["step"] = checkpoint.step
    payload["optimizer"] = optimizer_json
    files: dict[str, bytes] = {
        "model.safetensors": _state_bytes(checkpoint.model),
        "training_state.safetensors": _state_bytes(tensors),
        "training_state.json": json.dumps(payload, indent=1).encode(),
    }
    if checkpoint.ema is not None:
        files["ema.safetensors"] = _state_bytes(checkpoint.ema)
    if checkpoint.best is not None:
        files["best.safetensors"] = _state_bytes(checkpoint.best)
    for filename, data in files.items():
        atomic_write_bytes(temporary / filename, data)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "step": checkpoint.step,
        "files": {
            filename: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for filename, data in files.items()
        },
    }
    # The manifest goes last: a directory without one was never finished.
    atomic_write_bytes(temporary / MANIFEST, json.dumps(manifest, indent=1).encode())
    final = directory / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    fsync_directory(directory)
    for entry in directory.iterdir():
        if entry != final and entry.is_dir() and _is_checkpoint_or_leftover(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
    return final


def _is_checkpoint_or_leftover(name: str) -> bool:
    return bool(_NAME.match(name)) or (name.startswith(".checkpoint-") and name.endswith(".tmp"))


# -- reading ------------------------------------------------------------------


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step in ``directory``, or ``None``."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [
        (int(match.group(1)), entry)
        for entry in directory.iterdir()
        if entry.is_dir() and (match := _NAME.match(entry.name))
    ]
    return max(found)[1] if found else None


def verify_checkpoint(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Reads every file of a checkpoint and checks it against the manifest.

    Returns:
        The files' bytes by name.

    Raises:
        ValueError: a file is missing, truncated or altered, or the manifest is
            not a pushforward checkpoint manifest.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"{path} has no {MANIFEST}: it is not a complete checkpoint")
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{manifest_path} is corrupt ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_path} is not a pushforward checkpoint manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{manifest_path} has format version {manifest.get('format_version')}; "
            f"this pushforward reads version {FORMAT_VERSION}"
        )
    contents: dict[str, bytes] = {}
    for filename, expected in manifest["files"].items():
        file = path / filename
        if not file.is_file():
            raise ValueError(f"{file} is missing: the checkpoint is incomplete")
        data = file.read_bytes()
        if len(data) != expected["bytes"] or hashlib.sha256(data).hexdigest() != expected["sha256"]:
            raise ValueError(
                f"{file} does not match its checksum in {MANIFEST} "
                f"({len(data)} bytes, {expected['bytes']} expected): the checkpoint is "
                "corrupt or altered and was not loaded"
            )
        contents[filename] = data
    return contents


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Verifies and reads a checkpoint written by :func:`save_checkpoint` (tensors on CPU)."""
    path = Path(path)
    contents = verify_checkpoint(path)

    def tensors(filename: str) -> dict[str, Tensor] | None:
        if filename not in contents:
            return None
        try:
            return dict(safetensors_load(contents[filename]))
        except SafetensorError as error:
            raise ValueError(f"{path / filename} is not valid safetensors ({error})") from None

    try:
        payload = json.loads(contents["training_state.json"])
    except (KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} has no readable training_state.json ({error})") from None
    state_tensors = tensors("training_state.safetensors") or {}
    model = tensors("model.safetensors")
    if model is None:
        raise ValueError(f"{path} has no model.safetensors")
    optimizer = unflatten_optimizer_state(state_tensors, payload.pop("optimizer"))
    rng = {key[4:]: value for key, value in state_tensors.items() if key.startswith("rng/")}
    step = int(payload.pop("step"))
    return Checkpoint(
        step=step,
        model=model,
        optimizer=optimizer,
        rng=rng,
        state=payload,
        ema=tensors("ema.safetensors"),
        best=tensors("best.safetensors"),
        path=path,
    )


def global_rng_state() -> dict[str, Tensor]:
    """The states of torch's global generators (CPU, and CUDA devices in use)."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda/{index}"] = state
    return states


def restore_global_rng_state(states: dict[str, Tensor]) -> None:
    """Inverse of :func:`global_rng_state`; other entries of ``states`` are ignored."""
    torch.set_rng_state(states["torch"])
    cuda = sorted((int(key[5:]), value) for key, value in states.items() if key.startswith("cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([value for _, value in cuda][: torch.cuda.device_count()])
