"""Option groups flattened into a builder's keywords: signature, calls, docs, errors."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import pytest

from pushforward.option_groups import OptionGroup, grouped_options, option


@dataclass(frozen=True)
class Widths(OptionGroup):
    hidden: Sequence[int] = option((4, 4), "widths of the hidden layers.")
    base: str = option("normal", "source distribution name.")
    residual: bool = option(False, "residual blocks.")

    leading: ClassVar[tuple[str, ...]] = ("hidden", "base")


@dataclass(frozen=True)
class Solve(OptionGroup):
    atol: float = option(1e-5, "absolute tolerance.")
    rtol: float = option(1e-5, "relative tolerance.")


@dataclass(frozen=True)
class SolveWithSteps(Solve):
    rtol: float = option(1e-3, "relative tolerance, looser.")
    steps: int = option(8, "fixed steps.")

    @classmethod
    def option_order(cls) -> tuple[str, ...]:
        return ("steps", "atol", "rtol")


WIDTHS = Widths()
SOLVE = Solve()
SOLVE_WITH_STEPS = SolveWithSteps()


@grouped_options(network=Widths, solve=Solve)
def builder(
    features: int,
    context: int = 0,
    loss: str = "mse",
    network: Widths = WIDTHS,
    solve: Solve = SOLVE,
    seed: int = 1,
) -> tuple[object, ...]:
    """A builder for the tests.

    Args:
        features: values per event.
        context: context size.
        loss: the loss,
            over two lines.
        seed: the seed.
    """
    return features, context, loss, network, solve, seed


def test_signature_is_flat_with_leading_options_after_context():
    parameters = inspect.signature(builder).parameters
    assert list(parameters) == [
        "features",
        "context",
        "hidden",
        "base",
        "loss",
        "residual",
        "atol",
        "rtol",
        "seed",
    ]
    assert parameters["hidden"].default == (4, 4)
    assert parameters["hidden"].annotation == "Sequence[int]"
    kinds = {p.kind for p in parameters.values()}
    assert kinds == {inspect.Parameter.POSITIONAL_OR_KEYWORD}


def test_a_call_collects_the_flat_options_into_groups():
    features, context, loss, network, solve, seed = builder(3, hidden=[2], rtol=0.1)
    assert (features, context, loss, seed) == (3, 0, "mse", 1)
    assert network == Widths(hidden=[2])
    assert solve == Solve(rtol=0.1)
    positional = builder(3, 1, [5], "uniform")
    assert positional[3] == Widths(hidden=[5], base="uniform")


def test_an_unknown_option_names_the_valid_ones():
    with pytest.raises(TypeError, match=r"unknown option 'rtoll'.*did you mean 'rtol'.*valid"):
        builder(3, rtoll=0.1)


def test_docs_list_every_option_once_in_signature_order():
    doc = inspect.getdoc(builder) or ""
    assert doc.startswith("A builder for the tests.")
    args = doc[doc.index("Args:") :].splitlines()[1:]
    assert args == [
        "    features: values per event.",
        "    context: context size.",
        "    hidden: widths of the hidden layers.",
        "    base: source distribution name.",
        "    loss: the loss,",
        "        over two lines.",
        "    residual: residual blocks.",
        "    atol: absolute tolerance.",
        "    rtol: relative tolerance.",
        "    seed: the seed.",
    ]


def test_a_subclass_changes_defaults_docs_and_order():
    @grouped_options(solve=SolveWithSteps)
    def stepped(features: int, solve: SolveWithSteps = SOLVE_WITH_STEPS) -> SolveWithSteps:
        """Stepped."""
        return solve

    parameters = inspect.signature(stepped).parameters
    assert list(parameters) == ["features", "steps", "atol", "rtol"]
    assert parameters["rtol"].default == 1e-3
    assert stepped(1) == SolveWithSteps(steps=8, atol=1e-5, rtol=1e-3)
    assert "rtol: relative tolerance, looser." in (inspect.getdoc(stepped) or "")


def test_a_group_parameter_the_builder_lacks_is_an_error():
    with pytest.raises(TypeError, match="has no parameter 'solve'"):

        @grouped_options(solve=Solve)
        def lacking(features: int) -> int:
            return features


def test_an_option_taken_twice_is_an_error():
    with pytest.raises(TypeError, match="takes option 'atol' twice"):

        @grouped_options(solve=Solve)
        def twice(features: int, atol: float = 0.0, solve: Solve = SOLVE) -> int:
            return features
