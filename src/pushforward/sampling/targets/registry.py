"""The built-in targets by name: ``builtin_target("gmm-40")``, the ``NAME`` of ``builtin:NAME``."""

from __future__ import annotations

from collections.abc import Callable

from pushforward.options import closest
from pushforward.sampling.target import Target
from pushforward.sampling.targets.fab_mixture import FABGaussianMixture
from pushforward.sampling.targets.funnel import NealFunnel
from pushforward.sampling.targets.grid_mixture import GaussianGrid
from pushforward.sampling.targets.many_well import ManyWell
from pushforward.sampling.targets.phi_four import PhiFour
from pushforward.sampling.targets.toy_target import ToyTarget


def _two_moons() -> Target:
    return ToyTarget("moons", name="two-moons")


def _rings() -> Target:
    return ToyTarget("rings", name="rings")


_FACTORIES: dict[str, Callable[[], Target]] = {
    "gmm-40": FABGaussianMixture,
    "grid-9": GaussianGrid,
    "many-well-32": ManyWell,
    "funnel-10": NealFunnel,
    "two-moons": _two_moons,
    "rings": _rings,
    "phi4-64": PhiFour,
}

BUILTIN_TARGETS: tuple[str, ...] = tuple(_FACTORIES)
"""The names of the built-in targets."""


def builtin_target(name: str) -> Target:
    """A new instance of the built-in target called ``name``, with its default options.

    Raises:
        ValueError: for an unknown name, with the closest valid names and the full list.

    Example:
        >>> builtin_target("funnel-10").features
        10
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        names = list(BUILTIN_TARGETS)
        raise ValueError(
            f"unknown built-in target {name!r}{closest(name, names)}; valid: {', '.join(names)}"
        )
    return factory()
