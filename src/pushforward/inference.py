"""Inference options: what a model's ``sample`` and ``log_prob`` accept, as small dataclasses.

A model declares two option classes, ``sample_options`` and ``log_prob_options``
(for an ODE model: the solver, its steps and tolerances, the divergence
estimator, a guidance scale); the protocol methods of
:class:`~pushforward.model.Model` check the keywords they are given against
them, so an unknown name is an error that lists the valid ones, and hand the
resolved dataclass to the model. The command line derives its ``sample`` and
``eval`` flags and their help text from the same declarations.

Example:
    >>> from dataclasses import dataclass, field
    >>> @dataclass(frozen=True)
    ... class StepOptions(InferenceOptions):
    ...     steps: int | None = field(default=None, metadata={"help": "fixed steps"})
    >>> resolve_options(StepOptions, {"steps": 8}, "sample").steps
    8
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from pushforward.options import closest

Options = TypeVar("Options", bound="InferenceOptions")

_DECLARED: list[type[InferenceOptions]] = []


@dataclass(frozen=True)
class InferenceOptions:
    """Base of every options dataclass; each field's ``metadata["help"]`` documents it.

    Subclasses check their values in ``__post_init__`` and raise ``ValueError``
    naming the option. Every subclass is recorded, so the command line can offer
    the union of all declared options as flags (:func:`declared_fields`).
    """

    # Options not offered on the command line (a random generator, say).
    python_only: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _DECLARED.append(cls)

    @classmethod
    def names(cls) -> list[str]:
        """The option names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    def given(self) -> dict[str, Any]:
        """The options as keywords (every field, defaults included)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class NoOptions(InferenceOptions):
    """The options of a method that takes none (a normalizing flow's ``sample``)."""


def resolve_options(kind: type[Options], given: dict[str, Any], method: str) -> Options:
    """``given`` keywords checked against ``kind`` and made into an instance.

    Args:
        kind: the declared options dataclass.
        given: the keywords a protocol method received.
        method: the method's name, for the error message.

    Raises:
        ValueError: an option ``kind`` does not declare, naming the valid ones
            with a did-you-mean hint.
    """
    valid = kind.names()
    for name in given:
        if name not in valid:
            listed = ", ".join(valid) if valid else "none"
            raise ValueError(
                f"unknown option {name!r} for {method}{closest(name, valid)}; "
                f"valid options: {listed}"
            )
    return kind(**given)


def declared_fields(method_suffix: str = "") -> dict[str, dataclasses.Field[Any]]:
    """Every option field declared by any options class, first declaration wins.

    Args:
        method_suffix: keep only classes whose name ends with this (``"SampleOptions"``).
    """
    fields: dict[str, dataclasses.Field[Any]] = {}
    for kind in _DECLARED:
        if not kind.__name__.endswith(method_suffix):
            continue
        for f in dataclasses.fields(kind):
            if f.name not in kind.python_only:
                fields.setdefault(f.name, f)
    return fields
