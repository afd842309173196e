"""Built-in data sets, loading and validating user files, and standardisation.

* 2-D toys with exact densities: :func:`get_toy`, :data:`TOYS`, :func:`sample_toy`;
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
from pushforward.data.files import load_array
from pushforward.data.toys import TOYS, Toy, get_toy, sample_toy
from pushforward.transforms.standardize import Standardize, fit_standardization

__all__ = [
    "BUILTIN_PREFIX",
    "DIGIT_LEVELS",
    "DIGIT_SHAPE",
    "TOYS",
    "Dataset",
    "IsotropicGaussianMixture",
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
    "load_array",
    "load_dataset",
    "load_digits",
    "sample_toy",
    "uniform_dequantize",
]
