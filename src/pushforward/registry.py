"""Models built by name: ``build("nsf", features=2, context=3)``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from pushforward.model import Model
from pushforward.nn.embedding import make_embedding
from pushforward.options import closest, hidden_widths, positive_int

B = TypeVar("B", bound=Callable[..., Model])

_BUILDERS: dict[str, Callable[..., Model]] = {}
_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {}
_DATA_KINDS: dict[str, str] = {}
_CLASS_NAMES: dict[type, str] = {}


def register(
    name: str, train: dict[str, Any] | None = None, data: str = "vectors"
) -> Callable[[B], B]:
    """Registers a model builder (a class or function taking keyword arguments) under ``name``.

    The registered builder sets ``model.config`` (the name and the resolved
    options, defaults included, as :func:`build` stores them) however it is
    called, so ``pushforward.flows.nsf(features=2)`` can be saved like
    ``build("nsf", features=2)``. A function is wrapped (same name, docstring and
    signature); a class keeps its identity, its ``__init__`` wrapped in place, and
    an instance of a subclass registered under no name of its own gets no config.

    Args:
        name: the model's name in configs and on the command line.
        train: training options this model needs other than the engine's defaults
            (for instance ``{"lr": 5e-3}``); ``pushforward train`` uses them unless
            a config file or a flag sets them.
        data: what the model is trained on: ``"vectors"`` (float rows, which a Run
            standardises) or ``"tokens"`` (integer tokens, read with their
            vocabulary and never standardised).
    """

    def decorator(builder: B) -> B:
        registered = _BUILDERS.get(name)
        if registered is not None and registered is not builder:
            raise ValueError(f"a model named {name!r} is already registered")
        if registered is None:
            builder = _recording_config(name, builder)
        _BUILDERS[name] = builder
        _TRAIN_DEFAULTS[name] = dict(train or {})
        _DATA_KINDS[name] = data
        return builder

    return decorator


def _recording_config(name: str, builder: B) -> B:
    """``builder`` made to set ``config`` on the model it returns (see :func:`register`)."""
    signature = inspect.signature(builder)
    if isinstance(builder, type):
        if builder in _CLASS_NAMES:
            # One __init__ cannot tell which of two names it was built under.
            raise ValueError(
                f"class {builder.__name__} is already registered as {_CLASS_NAMES[builder]!r}; "
                f"register a function that builds it under {name!r}"
            )
        _CLASS_NAMES[builder] = name
        initialize = builder.__init__  # type: ignore[misc]

        @functools.wraps(initialize)
        def init(self: Model, *args: Any, **kwargs: Any) -> None:
            config = _config(name, signature, args, kwargs) if type(self) is builder else None
            initialize(self, *args, **kwargs)
            if config is not None:
                self.config = config

        builder.__init__ = init  # type: ignore[misc]
        return builder

    @functools.wraps(builder)
    def build_and_record(*args: Any, **kwargs: Any) -> Model:
        config = _config(name, signature, args, kwargs)
        model = builder(*args, **kwargs)
        model.config = config
        return model

    return cast(B, build_and_record)


def _config(
    name: str, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The registered name and the resolved options of one call, JSON-ready."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    # The resolved options, defaults included, so a saved model rebuilds identically
    # even if a later version changes a default.
    options = {key: _json_ready(value) for key, value in bound.arguments.items()}
    return {"model": name, "options": options}


def train_defaults(name: str) -> dict[str, Any]:
    """The training options model ``name`` declared at registration (may be empty)."""
    builder_for(name)
    return dict(_TRAIN_DEFAULTS.get(name, {}))


def data_kind(name: str) -> str:
    """What model ``name`` is trained on: ``"vectors"`` or ``"tokens"`` (see :func:`register`)."""
    builder_for(name)
    return _DATA_KINDS.get(name, "vectors")


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


EMBEDDING_OPTIONS: dict[str, Any] = {
    "embedding": None,
    "embedding_features": 16,
    "observation_shape": None,
    "embedding_hidden": [64, 64],
}
"""Options of a context embedding, which every conditional model takes (see :func:`build`)."""


def build(name: str, **kwargs: Any) -> Model:
    """Builds the model registered as ``name`` with keyword options.

    Unknown keyword names are an error that lists the valid ones. The resolved
    name and options are stored on ``model.config`` so ``save``/``load`` can
    rebuild it without pickle.

    Every model that takes a ``context`` also takes a context embedding, a network
    trained with it that summarises a high-dimensional observation before the
    model's conditioners read it (:mod:`pushforward.nn.embedding`):
    ``embedding`` (``"mlp"``, ``"cnn"`` for time series, ``"set"`` for i.i.d.
    observations, or ``None``), ``embedding_features`` (its output size, 16),
    ``observation_shape`` (how a context row is laid out: ``[channels, length]`` or
    ``[elements, element_features]``) and ``embedding_hidden`` (its widths).

    Example:
        >>> model = build("nsf", features=2, context=20, embedding="set",
        ...               observation_shape=[10, 2], transforms=2, hidden=[16])
        >>> model.context_features, model.context_embedding.out_features
        (20, 16)
    """
    builder = builder_for(name)
    valid = keywords(name)
    if "context" in valid and any(key in kwargs for key in EMBEDDING_OPTIONS):
        return _build_embedded(name, kwargs)
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
    return builder(**kwargs)


def _build_embedded(name: str, kwargs: dict[str, Any]) -> Model:
    """:func:`build` of a model whose context goes through an embedding network first."""
    given = {key: kwargs.pop(key) for key in list(kwargs) if key in EMBEDDING_OPTIONS}
    resolved = {**EMBEDDING_OPTIONS, **given}
    if resolved["embedding"] is None:
        extra = sorted(key for key in given if key != "embedding")
        if extra:
            raise ValueError(f"option {extra[0]!r} needs an embedding (option 'embedding')")
        return build(name, **kwargs)
    context = positive_int("context", kwargs.get("context", 0), minimum=0)
    if context == 0:
        raise ValueError(
            "option 'embedding' summarises a context, but the model is unconditional (context=0)"
        )
    features = positive_int("embedding_features", resolved["embedding_features"])
    shape = resolved["observation_shape"]
    hidden = list(hidden_widths(resolved["embedding_hidden"]))
    embedding = make_embedding(str(resolved["embedding"]), context, features, shape, hidden)
    model = build(name, **{**kwargs, "context": features})
    model.set_context_embedding(embedding)
    resolved.update(
        embedding_features=features,
        observation_shape=None if shape is None else [int(v) for v in shape],
        embedding_hidden=hidden,
    )
    model.config["options"].update(context=context, **_json_ready(resolved))
    return model
