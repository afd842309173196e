"""The built-in targets of the sampling literature, each with what is known about it.

======================  =================================================  ======  =======
name                    density                                            log Z   samples
======================  =================================================  ======  =======
``gmm-40``              FAB's 40 Gaussians on [-40, 40]^2 (Midgley 2023)   0       exact
``grid-9``              9 Gaussians on {-5, 0, 5}^2, var 0.3 (PIS 2022)    0       exact
``many-well-32``        16 FAB double wells in 32-D (Midgley 2023)         164.70  exact
``funnel-10``           Neal's funnel in 10-D (Neal 2003)                  0       exact
``two-moons``           the ``moons`` toy                                  0       exact
``rings``               the ``rings`` toy                                  0       exact
``phi4-64``             1-D lattice phi^4 at beta 20 (Gabrié 2022)         --      --
======================  =================================================  ======  =======

:func:`builtin_target` builds one by name with its defaults; the classes take the
options (dimension, number of wells, couplings).
"""

from pushforward.sampling.targets.fab_mixture import FABGaussianMixture, fab_mixture_means
from pushforward.sampling.targets.funnel import NealFunnel
from pushforward.sampling.targets.gaussian_mixture import GaussianMixtureTarget
from pushforward.sampling.targets.grid_mixture import GaussianGrid
from pushforward.sampling.targets.many_well import DoubleWell, ManyWell
from pushforward.sampling.targets.phi_four import PhiFour
from pushforward.sampling.targets.registry import BUILTIN_TARGETS, builtin_target
from pushforward.sampling.targets.toy_target import ToyTarget

__all__ = [
    "BUILTIN_TARGETS",
    "DoubleWell",
    "FABGaussianMixture",
    "GaussianGrid",
    "GaussianMixtureTarget",
    "ManyWell",
    "NealFunnel",
    "PhiFour",
    "ToyTarget",
    "builtin_target",
    "fab_mixture_means",
]
