"""Bijections: elementwise maths, coupling, autoregressive, linear and normalisation layers,
and the preprocessing a model holds (standardisation)."""

from pushforward.transforms.base import Compose, Inverse, Transform
from pushforward.transforms.preprocessing import PREPROCESSING_KINDS, Preprocessing
from pushforward.transforms.standardize import Standardize, fit_standardization

__all__ = [
    "PREPROCESSING_KINDS",
    "Compose",
    "Inverse",
    "Preprocessing",
    "Standardize",
    "Transform",
    "fit_standardization",
]
