"""Built-in data sets, loading and validating user files, and standardisation.

* 2-D toys with exact densities: :func:`get_toy`, :data:`TOYS`, :func:`sample_toy`;
* sets on the sphere, torus, SO(3) and a box with exact densities:
  :data:`MANIFOLD_TOYS` (:class:`ManifoldToy`);
* the earth-science sets on the sphere: :func:`load_earth`, :data:`EARTH_SETS`,
  :func:`latlon_to_unit`, :func:`unit_to_latlon`;
* user files: :func:`load_array` (``.npy``, ``.npz[:key]``, ``.csv``);
* one entry point: :func:`load_dataset` (``builtin:NAME`` or a path);
* images: :func:`load_digits` (scikit-learn extra), :func:`bits_per_dim`;
* standardisation as part of the model: :class:`Standardize`,
  :func:`fit_standardization`.
"""

from pushforward.data.dataset import BUILTIN_PREFIX, Dataset, builtin_names, load_dataset
from pushforward.data.densities import (
    IsotropicGaussianMixture,
    NoisyCircles,
    ToyDensity,
    UnionOfSquares,
)
from pushforward.data.dequantization import bits_per_dim, uniform_dequantize
from pushforward.data.digits import DIGIT_LEVELS, DIGIT_SHAPE, digit_labels, load_digits
from pushforward.data.earth import (
    EARTH_SETS,
    latlon_rows,
    latlon_to_unit,
    load_earth,
    unit_to_latlon,
    unit_to_latlon_rows,
)
from pushforward.data.files import load_array, load_context_rows
from pushforward.data.manifold_toys import MANIFOLD_TOYS, MANIFOLDS, ManifoldToy
from pushforward.data.toys import TOYS, Toy, get_toy, sample_toy
from pushforward.transforms.standardize import Standardize, fit_standardization

__all__ = [
    "BUILTIN_PREFIX",
    "DIGIT_LEVELS",
    "DIGIT_SHAPE",
    "EARTH_SETS",
    "MANIFOLDS",
    "MANIFOLD_TOYS",
    "TOYS",
    "Dataset",
    "IsotropicGaussianMixture",
    "ManifoldToy",
    "NoisyCircles",
    "Standardize",
    "Toy",
    "ToyDensity",
    "UnionOfSquares",
    "bits_per_dim",
    "builtin_names",
    "digit_labels",
    "fit_standardization",
    "get_toy",
    "latlon_rows",
    "latlon_to_unit",
    "load_array",
    "load_context_rows",
    "load_dataset",
    "load_digits",
    "load_earth",
    "sample_toy",
    "uniform_dequantize",
    "unit_to_latlon",
    "unit_to_latlon_rows",
]
