"""Models built by name: ``build("nsf", features=2, context=3)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pushforward.model import Model
from pushforward.options import closest

_BUILDERS: dict[str, Callable[..., Model]] = {}
_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {}


def register(
    name: str, train: dict[str, Any] | None = None
) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Registers a model builder (a class or function taking keyword arguments) under ``name``.

    Args:
        name: the model's name in configs and on the command line.
        train: training options this model needs other than the engine's defaults
            (for instance ``{"lr": 5e-3}``); ``pushforward train`` uses them unless
            a config file or a flag sets them.
    """

    def decorator(builder: Callable[..., Model]) -> Callable[..., Model]:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"a model named {name!r} is already registered")
        _BUILDERS[name] = builder
        _TRAIN_DEFAULTS[name] = dict(train or {})
        return builder

    return decorator


def train_defaults(name: str) -> dict[str, Any]:
    """The training options model ``name`` declared at registration (may be empty)."""
    builder_for(name)
    return dict(_TRAIN_DEFAULTS.get(name, {}))


def available() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_BUILDERS)


def builder_for(name: str) -> Callable[..., Model]:
    """The builder registered under ``name``; an unknown name lists the valid ones."""
    if name not in _BUILDERS:
        names = available()
        raise ValueError(
            f"unknown model {name!r}{closest(name, names)}; valid models: {', '.join(names)}"
        )
    return _BUILDERS[name]


def keywords(name: str) -> list[str]:
    """The keyword names the builder of model ``name`` accepts."""
    signature = inspect.signature(builder_for(name))
    return [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def _json_ready(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(
        f"model options must be plain values (numbers, strings, lists); got {type(value).__name__}"
    )


def build(name: str, **kwargs: Any) -> Model:
    """Builds the model registered as ``name`` with keyword options.

    Unknown keyword names are an error that lists the valid ones. The resolved
    name and options are stored on ``model.config`` so ``save``/``load`` can
    rebuild it without pickle.
    """
    builder = builder_for(name)
    valid = keywords(name)
    for key in kwargs:
        if key not in valid:
            raise ValueError(
                f"unknown option {key!r} for model {name!r}{closest(key, valid)}; "
                f"valid options: {', '.join(valid)}"
            )
    signature = inspect.signature(builder)
    missing = [
        p.name
        for p in signature.parameters.values()
        if p.default is inspect.Parameter.empty and p.name not in kwargs
    ]
    if missing:
        raise ValueError(f"model {name!r} needs option(s) {', '.join(map(repr, missing))}")
    bound = signature.bind(**kwargs)
    bound.apply_defaults()
    # The resolved options, defaults included, so a saved model rebuilds identically
    # even if a later version changes a default.
    options = {key: _json_ready(value) for key, value in bound.arguments.items()}
    model = builder(**kwargs)
    model.config = {"model": name, "options": options}
    return model
