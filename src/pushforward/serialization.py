"""Saving and loading models: a JSON config and safetensors weights, never pickle."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from pushforward.model import Model
from pushforward.registry import build

FORMAT = "pushforward-model"
FORMAT_VERSION = 1
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"


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
    if config.get("standardization"):
        # A flow fitted to standardised data, saved in the data's original units:
        # the shapes of the folded standardisation (its values are in the weights).
        description["standardization"] = config["standardization"]
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
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version}; this pushforward reads version {FORMAT_VERSION}"
        )
    return description


def _fold_placeholder(model: Model, standardization: Any, directory: Path) -> Model:
    from pushforward.standardized import placeholder_standardization

    if not isinstance(standardization, dict) or "event_shape" not in standardization:
        raise ValueError(
            f"{directory / CONFIG_FILE} describes a standardisation this model cannot hold"
        )
    return placeholder_standardization(model, standardization)


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
    model = build(description["model"], **description["options"])
    if description.get("standardization"):
        model = _fold_placeholder(model, description["standardization"], directory)
    dtype = getattr(torch, description.get("dtype", "float32"))
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
