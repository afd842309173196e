"""A run that starts from another run's weights (``pushforward train --init RUN``)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from pushforward.model import Model
from pushforward.serialization import load
from pushforward.transforms.preprocessing import Preprocessing

_PREPROCESSING = "preprocessing."


def _weights(model: Model) -> dict[str, Tensor]:
    """The state of ``model`` without its preprocessing (which is installed separately)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(_PREPROCESSING)}


@dataclass
class InitialWeights:
    """Weights read from a trained run for a new run's model (see :func:`read_initial_weights`).

    Attributes:
        directory: the run they come from.
        model: the registered name of that run's model.
        weights: its state, preprocessing left out.
        preprocessing: its preprocessing: the new model works in the same units.
        features: values per event of that run's data.
        context: its context size.
    """

    directory: Path
    model: str
    weights: dict[str, Tensor]
    preprocessing: Preprocessing
    features: int
    context: int

    def description(self) -> dict[str, Any]:
        """What a run's config records of its initialisation."""
        return {"run": str(self.directory), "model": self.model}


def read_initial_weights(directory: str | os.PathLike[str]) -> InitialWeights:
    """Reads the trained model of the run in ``directory`` (checksums verified)."""
    path = Path(directory)
    if not (path / "model.json").is_file():
        raise ValueError(f"--init {path}: not a trained run (no model.json there)")
    model = load(path)
    name = str(model.config["model"])
    features = int(math.prod(model.event_shape))
    context = int(model.config["options"].get("context", 0) or 0)
    return InitialWeights(path, name, _weights(model), model.preprocessing, features, context)


def apply_initial_weights(
    model: Model, name: str, initial: InitialWeights, features: int, context: int
) -> None:
    """Loads ``initial`` into ``model`` (fresh from ``build(name, ...)``) and installs its
    preprocessing, or refuses with one line naming what does not fit.

    Every weight of ``model`` must be in the run, with the same shape, except those the
    model names in ``fresh_on_init`` (an ``ffjord``'s learnable end time, which an
    ``fm`` run lacks), and the run must hold no weight the model lacks. The run's
    features and context size must be the data's.
    """
    source = initial.model
    where = f"--init {initial.directory}"
    if (initial.features, initial.context) != (features, context):
        raise ValueError(
            f"{where}: that run was trained on {initial.features} features with context "
            f"{initial.context}; this data has {features} features with context {context}"
        )
    ours = _weights(model)
    theirs = initial.weights
    fresh = set(getattr(model, "fresh_on_init", ()))
    missing = [k for k in ours if k not in theirs and k not in fresh]
    extra = [k for k in theirs if k not in ours]
    if missing or extra:
        detail = (
            f"it lacks {missing[0]!r}" if missing else f"it holds {extra[0]!r}, which {name} lacks"
        )
        raise ValueError(
            f"{where}: that run's model ({source}) does not fit model {name!r} ({detail}); "
            "initialise from a run of the same family with the same network options"
        )
    shapes = [(k, tuple(theirs[k].shape), tuple(v.shape)) for k, v in ours.items() if k in theirs]
    wrong = [(k, a, b) for k, a, b in shapes if a != b]
    if wrong:
        key, got, want = wrong[0]
        raise ValueError(
            f"{where}: weight {key!r} has shape {list(got)} there and {list(want)} here; the "
            f"run was trained on other sizes (this data: {features} features, context {context})"
            " or with other network options"
        )
    state = {k: theirs[k].to(v) for k, v in ours.items() if k in theirs}
    model.load_state_dict(state, strict=False)
    model.set_preprocessing(initial.preprocessing)


__all__ = ["InitialWeights", "apply_initial_weights", "read_initial_weights"]
