r"""The earth-science point sets on the sphere :math:`S^2`: volcanoes, earthquakes, floods, fires.

Each set is a list of event locations (latitude and longitude in degrees) shipped
with the package (``earth_data/``, with a README naming the sources: NOAA NGDC,
the Dartmouth Flood Observatory, NASA FIRMS). :func:`load_earth` returns them as
unit vectors in :math:`\mathbb R^3`,

.. math:: x = \cos\varphi \cos\lambda,\quad y = \cos\varphi \sin\lambda,\quad
          z = \sin\varphi

(latitude :math:`\varphi`, longitude :math:`\lambda`), split 80/10/10 into
train, validation and test rows by a permutation fixed by a seed.

==============  ==================  ======
name            file                rows
==============  ==================  ======
``volcano``     ``volerup.csv``     827
``earthquake``  ``quakes_all.csv``  6,120
``flood``       ``flood.csv``       4,875
``fire``        ``fire.csv``        12,809
==============  ==================  ======

References:
    Mathieu & Nickel (2020), Riemannian Continuous Normalizing Flows (the four sets
    as a benchmark of densities on the sphere).
    Chen & Lipman (2024), Flow Matching on General Geometries (the same sets for
    Riemannian flow matching).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

import torch
from torch import Tensor

from pushforward.data.files import load_array
from pushforward.options import closest

EARTH_SETS = ("volcano", "earthquake", "flood", "fire")
"""The names of the earth sets, in the order of the papers' tables."""

EARTH_FILES: dict[str, tuple[str, int]] = {
    "volcano": ("volerup.csv", 827),
    "earthquake": ("quakes_all.csv", 6120),
    "flood": ("flood.csv", 4875),
    "fire": ("fire.csv", 12809),
}
"""Each set's file in the package's ``earth_data`` folder and its number of rows."""

EARTH_SPLITS = ("train", "val", "test", "all")
"""The splits :func:`load_earth` accepts: 80% train, 10% validation, 10% test, or every row."""

DATA_FOLDER = "earth_data"


def latlon_to_unit(lat_deg: Tensor, lon_deg: Tensor) -> Tensor:
    r"""Unit vectors on :math:`S^2` from latitude and longitude in degrees.

    .. math:: (\cos\varphi \cos\lambda,\ \cos\varphi \sin\lambda,\ \sin\varphi)

    Args:
        lat_deg: latitudes :math:`\varphi` ``(n,)`` (any shape broadcasting with ``lon_deg``).
        lon_deg: longitudes :math:`\lambda` ``(n,)``.

    Returns:
        ``(n, 3)`` unit vectors (``(*shape, 3)`` in general), in the inputs' floating
        dtype (float64 for integer inputs) and device.

    Example:
        >>> latlon_to_unit(torch.tensor([0.0]), torch.tensor([0.0]))
        tensor([[1., 0., 0.]])
    """
    lat, lon = torch.broadcast_tensors(torch.as_tensor(lat_deg), torch.as_tensor(lon_deg))
    if not lat.is_floating_point():
        lat = lat.to(torch.float64)
    lat = torch.deg2rad(lat)
    lon = torch.deg2rad(lon.to(lat.dtype))
    cos_lat = torch.cos(lat)
    return torch.stack([cos_lat * torch.cos(lon), cos_lat * torch.sin(lon), torch.sin(lat)], -1)


def unit_to_latlon(x: Tensor) -> tuple[Tensor, Tensor]:
    r"""Latitude and longitude in degrees of points of :math:`S^2`; the inverse of
    :func:`latlon_to_unit`.

    .. math:: \varphi = \operatorname{atan2}\big(z, \sqrt{x^2 + y^2}\big), \qquad
              \lambda = \operatorname{atan2}(y, x)

    ``atan2`` rather than ``asin(z)`` keeps full precision near the poles and accepts
    vectors of any positive length. At a pole the longitude is arbitrary (0 for ``y = x = 0``).

    Args:
        x: ``(n, 3)`` points (``(*shape, 3)`` in general).

    Returns:
        ``(lat, lon)``, each ``(n,)``: latitude in ``[-90, 90]``, longitude in ``(-180, 180]``.
    """
    if x.shape[-1] != 3:
        raise ValueError(f"points on S^2 must have 3 coordinates, got shape {tuple(x.shape)}")
    lat = torch.atan2(x[..., 2], torch.hypot(x[..., 0], x[..., 1]))
    lon = torch.atan2(x[..., 1], x[..., 0])
    return torch.rad2deg(lat), torch.rad2deg(lon)


COORDINATES = ("native", "latlon")
"""How a data file's rows are read: ``"native"`` (as they are) or ``"latlon"`` (two
columns, latitude and longitude in degrees, converted to unit vectors of :math:`S^2`)."""


def check_coordinates(coordinates: str) -> str:
    """``coordinates`` if it is one of :data:`COORDINATES`, else a ``ValueError`` naming them."""
    if coordinates not in COORDINATES:
        raise ValueError(
            f"unknown coordinates {coordinates!r}; valid: {', '.join(map(repr, COORDINATES))}"
        )
    return coordinates


def latlon_rows(values: Tensor, source: str = "the data") -> Tensor:
    """Unit vectors of :math:`S^2` from rows of (latitude, longitude) in degrees.

    The rows are checked before they are converted, so that a file in another layout
    (longitude first, radians, three columns) is refused instead of read as something
    else: exactly two columns, finite values, latitudes in ``[-90, 90]``. Longitudes may
    be any real number (they are taken modulo 360).

    Args:
        values: ``(n, 2)`` latitude and longitude in degrees.
        source: how to name the data in errors (a file path).

    Returns:
        ``(n, 3)`` unit vectors (:func:`latlon_to_unit`) in the dtype of ``values``.

    Raises:
        ValueError: not two columns, a NaN or Inf, or a latitude outside ``[-90, 90]``,
            naming the first bad row (counted from 0).

    Example:
        >>> latlon_rows(torch.tensor([[90.0, 10.0]], dtype=torch.float64)).round(decimals=6)
        tensor([[0., 0., 1.]], dtype=torch.float64)
    """
    if values.ndim != 2 or values.shape[1] != 2:
        raise ValueError(
            f"latitude/longitude data must have 2 columns (degrees), but {source} has rows "
            f"of shape {tuple(values.shape[1:])}"
        )
    finite = torch.isfinite(values).all(-1)
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0])
        raise ValueError(f"{source} has a NaN or Inf value in row {row}: {values[row].tolist()}")
    bad = values[:, 0].abs() > 90
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"{source} row {row} has latitude {float(values[row, 0])}, outside [-90, 90]; "
            "latitude/longitude files give the latitude first, in degrees"
        )
    return latlon_to_unit(values[:, 0], values[:, 1])


def unit_to_latlon_rows(x: Tensor) -> Tensor:
    """``(n, 2)`` rows of latitude and longitude in degrees from ``(n, 3)`` points of
    :math:`S^2`: the inverse of :func:`latlon_rows`."""
    lat, lon = unit_to_latlon(x)
    return torch.stack([lat, lon], -1)


def earth_file(name: str) -> Traversable:
    """The packaged CSV file of the earth set ``name``, through :mod:`importlib.resources`.

    Raises:
        ValueError: ``name`` is not one of :data:`EARTH_SETS` (with the closest ones).
    """
    if name not in EARTH_FILES:
        raise ValueError(
            f"unknown earth data set {name!r}{closest(name, list(EARTH_SETS))}; "
            f"valid: {', '.join(EARTH_SETS)}"
        )
    return resources.files("pushforward.data").joinpath(DATA_FOLDER, EARTH_FILES[name][0])


def read_earth_latlon(name: str) -> Tensor:
    """Every row of the earth set ``name`` as read from its file: float64 ``(n, 2)``
    latitude and longitude in degrees, in file order.

    The row count and the ranges ``|lat| <= 90``, ``|lon| <= 180`` are checked, so a
    damaged or truncated installation fails here rather than in training.

    Raises:
        ValueError: unknown name, or a file whose rows or values are not as shipped.
    """
    resource = earth_file(name)
    file, rows = EARTH_FILES[name]
    with resources.as_file(resource) as path:
        values = torch.from_numpy(load_array(path))
    if values.shape != (rows, 2):
        raise ValueError(
            f"earth data file {file} should hold {rows} rows of (latitude, longitude), "
            f"got shape {tuple(values.shape)}"
        )
    if values[:, 0].abs().max() > 90 or values[:, 1].abs().max() > 180:
        raise ValueError(
            f"earth data file {file} has a latitude beyond 90 or a longitude beyond 180 degrees"
        )
    return values


def check_split(split: str) -> None:
    """Raises a ValueError (with the closest valid names) unless ``split`` is one of
    :data:`EARTH_SPLITS`."""
    if split not in EARTH_SPLITS:
        raise ValueError(
            f"unknown split {split!r}{closest(split, list(EARTH_SPLITS))}; "
            f"valid: {', '.join(EARTH_SPLITS)}"
        )


def split_rows(n: int, split: str, seed: int = 0) -> Tensor:
    """The row indices of one split of ``n`` rows: a seeded 80/10/10 partition.

    One permutation of ``range(n)`` drawn from ``seed`` is cut into validation
    (the first ``n // 10``), test (the next ``n // 10``) and train (the rest, so
    about 80%); ``"all"`` is the whole permutation. The three splits are disjoint
    and cover every row. The permutation is ``torch.randperm`` on a CPU generator
    seeded with ``seed``, the same on every machine (a test pins its first rows, so a
    change in torch that would move the test rows is caught).

    Args:
        n: the number of rows.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        seed: the seed of the permutation.

    Returns:
        int64 ``(m,)`` row indices, in the permutation's (shuffled) order.

    Raises:
        ValueError: an unknown split name.
    """
    check_split(split)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    tenth = n // 10
    parts = {"val": order[:tenth], "test": order[tenth : 2 * tenth], "train": order[2 * tenth :]}
    return order if split == "all" else parts[split]


def load_earth(name: str, split: str = "train", seed: int = 0) -> Tensor:
    """One split of an earth set as unit vectors on :math:`S^2`.

    Args:
        name: one of :data:`EARTH_SETS` (``"volcano"``, ``"earthquake"``, ``"flood"``,
            ``"fire"``).
        split: ``"train"`` (80% of the rows), ``"val"`` (10%), ``"test"`` (10%) or
            ``"all"``; see :func:`split_rows`.
        seed: the seed of the split's permutation (the built-in ``builtin:NAME`` sets
            use 0).

    Returns:
        float64 ``(m, 3)`` unit vectors, in the split's shuffled order.

    Raises:
        ValueError: an unknown set or split (with the closest valid names).

    Example:
        >>> load_earth("volcano", "test").shape
        torch.Size([82, 3])
    """
    check_split(split)
    latlon = read_earth_latlon(name)
    rows = split_rows(latlon.shape[0], split, seed)
    return latlon_to_unit(latlon[rows, 0], latlon[rows, 1])
