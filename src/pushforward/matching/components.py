"""Small named components of a flow-matching model, each rebuilt exactly by name and options.

Schedulers, couplings, time samplers and loss weightings are small objects of
this kind: they hold no tensors and no learnable state, state their equation and
paper, and a model holds them instead of switching on a string. A saved model
stores only the names (and options) its builder was given, and the builder makes
the objects again, so they are never pickled.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from pushforward.options import closest


class Component:
    """A named component with plain (JSON-ready) options; equal when kind and options are.

    Attributes:
        name: the component's name in configs (``cond-ot``, ``ot``, ``logit-normal``, ...).
    """

    name: ClassVar[str]

    def options(self) -> dict[str, Any]:
        """The plain (JSON-ready) keyword options that rebuild this component."""
        return {}

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options().items())
        return f"{type(self).__name__}({options})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Component):
            return NotImplemented
        return type(self) is type(other) and self.options() == other.options()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.options().items()))))


ComponentType = TypeVar("ComponentType", bound=Component)


def make_component(
    kind: str, classes: Mapping[str, type[ComponentType]], name: str, options: dict[str, Any]
) -> ComponentType:
    """Builds the component registered in ``classes`` as ``name`` with keyword ``options``.

    Unknown names and options are a ValueError in the user's words, with the valid
    ones and a did-you-mean hint.

    Args:
        kind: what the component is, for messages (``"scheduler"``, ``"coupling"``, ...).
        classes: the component classes by name.
        name: the name to build.
        options: the keyword options of its class's constructor.
    """
    if name not in classes:
        names = list(classes)
        raise ValueError(
            f"unknown {kind} {name!r}{closest(str(name), names)}; valid {kind}s: {', '.join(names)}"
        )
    cls = classes[name]
    valid = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    ]
    for key in options:
        if key not in valid:
            hint = f"valid options: {', '.join(valid)}" if valid else "it takes no options"
            raise ValueError(
                f"unknown option {key!r} for {kind} {name!r}{closest(key, valid)}; {hint}"
            )
    return cls(**options)
