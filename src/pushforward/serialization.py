"""Saving and loading models: a JSON config and safetensors weights, never pickle."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from pushforward.model import Model
from pushforward.registry import build
from pushforward.transforms.preprocessing import Preprocessing

FORMAT = "pushforward-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 folded the standardisation into a flow's transform or a wrapper model;
version 2 stores it as the model's preprocessing. Both load."""
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (no pickle), for :func:`atomic_write_bytes`."""
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically: a temporary file, fsync, then rename.

    A crash at any moment leaves either the old file or the new one, never a
    truncated mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    # The rename is durable only once the directory entry is flushed too.
    fsync_directory(path.parent)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Flushes a directory's entries to disk, so renames into it survive a crash."""
    if hasattr(os, "O_DIRECTORY"):
        handle = os.open(directory, os.O_DIRECTORY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def state_to_bytes(model: torch.nn.Module) -> bytes:
    """The module's state dict as safetensors bytes (tensors made contiguous and unshared)."""
    state = {
        key: value.detach().cpu().contiguous().clone() for key, value in model.state_dict().items()
    }
    return safetensors_save(state)


def _floating_dtype(model: torch.nn.Module) -> str:
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            return str(tensor.dtype).replace("torch.", "")
    return "float32"


def save(model: Model, directory: str | os.PathLike[str]) -> Path:
    """Saves a registered model into ``directory`` (created if needed).

    Writes ``model.safetensors`` (the weights) and ``model.json`` (format
    version, registered name, options and the weights' SHA-256), each atomically.

    Returns:
        The directory.
    """
    config = getattr(model, "config", None)
    if not config:
        raise ValueError(
            "this model was not made by pushforward.build, so it cannot be rebuilt on load; "
            "build it with pushforward.build(name, **options)"
        )
    directory = Path(directory)
    weights = state_to_bytes(model)
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config["model"],
        "options": config["options"],
        "dtype": _floating_dtype(model),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }
    preprocessing = model.preprocessing.description()
    if preprocessing:
        # What the fitted preprocessing is (its statistics are in the weights).
        description["preprocessing"] = preprocessing
    atomic_write_bytes(directory / WEIGHTS_FILE, weights)
    atomic_write_bytes(directory / CONFIG_FILE, json.dumps(description, indent=2).encode())
    return directory


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads and checks ``model.json`` in ``directory``."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a saved pushforward model")
    try:
        description = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error.msg})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pushforward model description")
    version = description.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{path} has format version {version}; this pushforward reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    return description


def _upgrade_version_1(
    description: dict[str, Any], state: dict[str, torch.Tensor], path: Path
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A version-1 description and state dict in version 2's terms.

    Version 1 kept the standardisation inside the model: a flow's transform was
    ``Compose([Standardize, T])`` (``T`` inside a context-standardising wrapper
    for conditional flows), any other model sat in a wrapper with ``mean``,
    ``std``, ``context_mean``, ... buffers around ``model.*``.
    """
    folded = description.get("standardization")
    if not folded:
        return description, state
    if not isinstance(folded, dict) or "event_shape" not in folded:
        raise ValueError(f"{path} describes a standardisation this model cannot hold")
    shape = [int(d) for d in folded["event_shape"]]
    width = int(folded.get("context", 0))
    preprocessing: dict[str, Any] = {"data": {"kind": "standardize", "shape": shape}}
    if width:
        preprocessing["context"] = {"kind": "standardize", "shape": [width]}
    upgraded: dict[str, torch.Tensor] = {}
    if "mean" in state:  # the wrapper of a model that is not a flow
        if folded.get("source"):
            preprocessing["source"] = {"kind": "standardize", "shape": shape}
        renames = {
            "mean": "preprocessing.data.mean",
            "std": "preprocessing.data.std",
            "context_mean": "preprocessing.context.mean",
            "context_std": "preprocessing.context.std",
            "source_mean": "preprocessing.source.mean",
            "source_std": "preprocessing.source.std",
        }
        for key, value in state.items():
            upgraded[renames.get(key, key.removeprefix("model."))] = value
    else:  # a flow with the standardisation folded into its transform
        first, second = "transform.transforms.0.", "transform.transforms.1."
        for key, value in state.items():
            if key.startswith(first):
                upgraded["preprocessing.data." + key.removeprefix(first)] = value
            elif width and key in (second + "mean", second + "std"):
                upgraded["preprocessing.context." + key.removeprefix(second)] = value
            elif width and key.startswith(second + "transform."):
                upgraded["transform." + key.removeprefix(second + "transform.")] = value
            elif key.startswith(second):
                upgraded["transform." + key.removeprefix(second)] = value
            else:
                upgraded[key] = value
    description = {**description, "preprocessing": preprocessing}
    description.pop("standardization")
    return description, upgraded


def load(
    directory: str | os.PathLike[str], map_location: str | torch.device | None = None
) -> Model:
    """Rebuilds a model saved by :func:`save` and loads its weights.

    The weights' checksum is verified first: a truncated or altered file is
    refused, never loaded.
    """
    directory = Path(directory)
    description = read_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} not found")
    weights = weights_path.read_bytes()
    if hashlib.sha256(weights).hexdigest() != description.get("weights_sha256"):
        raise ValueError(
            f"{weights_path} does not match its checksum: the file is corrupt or altered"
        )
    try:
        state = safetensors_load(weights)
    except SafetensorError as error:
        raise ValueError(f"{weights_path} is not a valid safetensors file ({error})") from None
    if description["format_version"] == 1:
        description, state = _upgrade_version_1(description, state, directory / CONFIG_FILE)
    model = build(description["model"], **description["options"])
    dtype = getattr(torch, description.get("dtype", "float32"))
    if description.get("preprocessing"):
        model.set_preprocessing(Preprocessing.placeholder(description["preprocessing"], dtype))
    model.to(dtype=dtype)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"{weights_path} does not fit a {description['model']!r} model "
            f"with these options: {error}"
        ) from None
    if map_location is not None:
        model.to(map_location)
    model.eval()
    return model
