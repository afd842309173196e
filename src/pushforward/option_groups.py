"""Option groups: keyword options several builders share, declared once as a frozen dataclass.

A group holds the defaults of its options, one line of documentation each, and the
checks and constructions they feed. A builder takes the group as one parameter and
:func:`grouped_options` turns it back into the flat keywords that :func:`~pushforward.build`,
``--set key=value`` and a saved ``model.json`` use::

    @dataclass(frozen=True)
    class Widths(OptionGroup):
        hidden: Sequence[int] = option((64, 64), "widths of the hidden layers.")

    @grouped_options(network=Widths)
    def builder(features: int, network: Widths = Widths()) -> Model:
        '''...

        Args:
            features: values per event.
        '''

    inspect.signature(builder)  # (features: int, hidden: Sequence[int] = (64, 64))

This module imports nothing from the library but the option checks' did-you-mean
hint, so every folder's builders can use it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

from pushforward.options import closest

F = TypeVar("F", bound=Callable[..., Any])

_DOC = "doc"
_ARGS_HEADER = re.compile(r"^(?P<indent>\s*)Args:\s*$")
_ENTRY = re.compile(r"^(?P<names>\w+(?:,\s*\w+)*):")


def option(default: Any, doc: str) -> Any:
    """A field of an option group: its default and the one line that documents it."""
    return dataclasses.field(default=default, metadata={_DOC: doc})


@dataclass(frozen=True)
class OptionGroup:
    """The base of option groups: a frozen dataclass whose fields are builder options.

    Every field has a default and a line of documentation (see :func:`option`). A
    subclass changes a default or a line by declaring the field again, and the order
    of the fields in a builder's signature by overriding :meth:`option_order`.

    Attributes:
        leading: the fields that open a builder's options, right after its
            ``context`` parameter (or its first parameter), as the shared vocabulary
            reads; the others stand where the builder's parameter of the group stands.
    """

    leading: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def option_order(cls) -> tuple[str, ...]:
        """The group's option names in the order a builder's signature lists them."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def option_parameters(cls) -> dict[str, inspect.Parameter]:
        """The group's options as the flat parameters of a builder, by name."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        return {
            name: inspect.Parameter(
                name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=fields[name].default,
                annotation=fields[name].type,
            )
            for name in cls.option_order()
        }

    @classmethod
    def option_docs(cls) -> dict[str, str]:
        """The line that documents each option of the group, by name."""
        return {f.name: str(f.metadata.get(_DOC, "")) for f in dataclasses.fields(cls)}


def grouped_options(**groups: type[OptionGroup]) -> Callable[[F], F]:
    """Gives a builder that takes option groups a flat keyword signature.

    Each keyword names a parameter of the builder and the group it takes. The
    decorated builder's signature (``inspect.signature``, ``__signature__``) lists
    the builder's own parameters with each group parameter replaced by the group's
    options (:attr:`OptionGroup.leading` ones after ``context``); a call binds the
    flat keywords, builds each group from its options and calls the builder with the
    groups. The groups' option lines join the ``Args`` section of the docstring, in
    signature order, so help text lists every option once. An unknown keyword is a
    ``TypeError`` naming the valid ones, with a did-you-mean hint.

    Args:
        **groups: the builder's group parameters and their :class:`OptionGroup` types.
    """

    def decorator(builder: F) -> F:
        own = inspect.signature(builder)
        signature = own.replace(parameters=_flat_parameters(builder, own, groups))
        valid = list(signature.parameters)

        @functools.wraps(builder)
        def build(*args: Any, **kwargs: Any) -> Any:
            for key in kwargs:
                if key not in signature.parameters:
                    raise TypeError(
                        f"unknown option {key!r} for {builder.__name__}"
                        f"{closest(key, valid)}; valid options: {', '.join(valid)}"
                    )
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            for name, group in groups.items():
                values[name] = group(**{key: values.pop(key) for key in group.option_order()})
            return builder(**values)

        build.__signature__ = signature  # type: ignore[attr-defined]
        build.__annotations__ = {
            name: parameter.annotation for name, parameter in signature.parameters.items()
        } | {"return": own.return_annotation}
        build.__doc__ = _documented(builder.__doc__ or "", valid, groups)
        return cast(F, build)

    return decorator


def _flat_parameters(
    builder: Callable[..., Any],
    own: inspect.Signature,
    groups: dict[str, type[OptionGroup]],
) -> list[inspect.Parameter]:
    """The builder's parameters with every group parameter replaced by its options."""
    names = list(own.parameters)
    missing = [name for name in groups if name not in own.parameters]
    if missing:
        raise TypeError(f"{builder.__name__} has no parameter {', '.join(map(repr, missing))}")
    leading_after = "context" if "context" in own.parameters else names[0]
    flat: list[inspect.Parameter] = []
    for name, parameter in own.parameters.items():
        if name in groups:
            options = groups[name].option_parameters()
            flat += [p for key, p in options.items() if key not in groups[name].leading]
            continue
        flat.append(parameter)
        if name == leading_after:
            for group in groups.values():
                options = group.option_parameters()
                flat += [options[key] for key in group.leading]
    seen: set[str] = set()
    for parameter in flat:
        if parameter.name in seen:
            raise TypeError(f"{builder.__name__} takes option {parameter.name!r} twice")
        seen.add(parameter.name)
    return flat


def _documented(doc: str, order: list[str], groups: dict[str, type[OptionGroup]]) -> str:
    """``doc`` with the groups' option lines in its ``Args`` section, in signature order."""
    lines = inspect.cleandoc(doc).splitlines()
    start = next((i for i, line in enumerate(lines) if _ARGS_HEADER.match(line)), None)
    if start is None:
        lines += ["", "Args:"]
        start = len(lines) - 1
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(" ")):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    entries = _entries(lines[start + 1 : end])
    for group in groups.values():
        for name, line in group.option_docs().items():
            entries.append(([name], _wrapped(name, line)))
    position = {name: index for index, name in enumerate(order)}
    entries.sort(key=lambda entry: min(position.get(name, len(order)) for name in entry[0]))
    body = [line for _, text in entries for line in text]
    return "\n".join([*lines[: start + 1], *body, *lines[end:]]) + "\n"


def _entries(section: list[str]) -> list[tuple[list[str], list[str]]]:
    """The ``Args`` entries of a docstring: the names each documents and its lines."""
    entries: list[tuple[list[str], list[str]]] = []
    for line in section:
        match = _ENTRY.match(line.strip()) if line.startswith("    ") else None
        if match is not None and not line.startswith("     "):
            names = [name.strip() for name in match["names"].split(",")]
            entries.append((names, [line]))
        elif entries:
            entries[-1][1].append(line)
    return entries


def _wrapped(name: str, doc: str) -> list[str]:
    """One option's ``Args`` entry, wrapped to the docstring's width."""
    return textwrap.wrap(
        f"{name}: {doc}", width=92, initial_indent="    ", subsequent_indent="        "
    )
