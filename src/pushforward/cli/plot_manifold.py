"""Figures of a run on a manifold: the sphere on an equal-area map, the torus as its
square, rotations by their angle."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pushforward.geometry import SO3, FlatTorus, Manifold, Sphere, rotation_angle
from pushforward.model import Model

GRID = 60
"""Cells per side of a density panel (3,600 log-densities: a few seconds for an ODE model)."""
DENSITY_TOLERANCE = 1e-3
"""Tolerance of the adaptive solve behind a density panel (``eval`` keeps the model's own)."""


def can_plot(manifold: Manifold) -> bool:
    """Whether :func:`plot_manifold` has a figure for ``manifold``."""
    return isinstance(manifold, SO3) or (
        isinstance(manifold, (Sphere, FlatTorus)) and manifold.dim in (1, 2)
    )


def _log_density(model: Model, points: Tensor) -> Tensor | None:
    if not model.has_log_prob:
        return None
    declared = model.log_prob_options.names()
    options: dict[str, Any] = {k: DENSITY_TOLERANCE for k in ("atol", "rtol") if k in declared}
    dtype = next(iter(model.parameters())).dtype
    with torch.no_grad():
        return model.log_prob(points.to(dtype), **options).double()


def _panels(data: Tensor | None, samples: Tensor) -> list[tuple[str, Tensor]]:
    return ([] if data is None else [("data", data)]) + [("model samples", samples)]


def _longitude_latitude(x: Tensor) -> tuple[Tensor, Tensor]:
    """Longitude in ``[-pi, pi]`` and latitude in ``[-pi/2, pi/2]`` of unit vectors."""
    return torch.atan2(x[:, 1], x[:, 0]), torch.asin(x[:, 2].clamp(-1, 1))


def _sphere_figure(pyplot: Any, model: Model, data: Tensor | None, samples: Tensor) -> Any:
    # Mollweide is an equal-area projection: equal areas of the sphere look equal, so
    # the eye reads the density as it is.
    longitude = torch.linspace(-math.pi, math.pi, 2 * GRID + 1, dtype=torch.float64)
    latitude = torch.linspace(-math.pi / 2, math.pi / 2, GRID + 1, dtype=torch.float64)
    lon_mid = (longitude[1:] + longitude[:-1]) / 2
    lat_mid = (latitude[1:] + latitude[:-1]) / 2
    lat, lon = torch.meshgrid(lat_mid, lon_mid, indexing="ij")
    points = torch.stack(
        [torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], -1
    ).reshape(-1, 3)
    log_density = _log_density(model, points)
    panels = _panels(data, samples)
    count = len(panels) + (log_density is not None)
    figure = pyplot.figure(figsize=(5 * count, 3.2))
    for index, (title, values) in enumerate(panels):
        axis = figure.add_subplot(1, count, index + 1, projection="mollweide")
        x, y = _longitude_latitude(values)
        axis.scatter(
            x.numpy(), y.numpy(), s=1.5, alpha=0.5, color="C0" if title == "data" else "C1"
        )
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.set_xticklabels([])
    if log_density is not None:
        axis = figure.add_subplot(1, count, count, projection="mollweide")
        density = log_density.exp().reshape(GRID, 2 * GRID)
        # A log scale: a sharp mode would leave every other one invisible on a linear one.
        floor = float(density.max()) * 1e-3
        shown = density.clamp_min(floor).numpy()
        mesh = axis.pcolormesh(longitude.numpy(), latitude.numpy(), shown, shading="flat",
                               norm="log")  # fmt: skip
        figure.colorbar(mesh, ax=axis, shrink=0.7, label="density (per unit area)")
        axis.set_title("model density")
        axis.grid(True, alpha=0.3)
        axis.set_xticklabels([])
    return figure


def _torus_figure(pyplot: Any, model: Model, data: Tensor | None, samples: Tensor) -> Any:
    edges = torch.linspace(-math.pi, math.pi, GRID + 1, dtype=torch.float64)
    middle = (edges[1:] + edges[:-1]) / 2
    a, b = torch.meshgrid(middle, middle, indexing="xy")
    log_density = _log_density(model, torch.stack([a.reshape(-1), b.reshape(-1)], -1))
    panels = _panels(data, samples)
    count = len(panels) + (log_density is not None)
    figure, axes = pyplot.subplots(1, count, figsize=(4 * count, 4), squeeze=False)
    axes = axes[0]
    for axis, (title, values) in zip(axes, panels, strict=False):
        axis.scatter(values[:, 0].numpy(), values[:, 1].numpy(), s=1.5, alpha=0.5,
                     color="C0" if title == "data" else "C1")  # fmt: skip
        axis.set_title(title)
    if log_density is not None:
        density = log_density.exp().reshape(GRID, GRID).numpy()
        mesh = axes[-1].pcolormesh(edges.numpy(), edges.numpy(), density)
        figure.colorbar(mesh, ax=axes[-1], shrink=0.8)
        axes[-1].set_title("model density")
    for axis in axes:
        # The square is the torus: its opposite sides are the same circle.
        axis.set_xlim(-math.pi, math.pi)
        axis.set_ylim(-math.pi, math.pi)
        axis.set_aspect("equal")
        axis.set_xlabel("angle 1 (glued at ±π)")
        axis.set_ylabel("angle 2 (glued at ±π)")
    return figure


def _circle_figure(pyplot: Any, model: Model, data: Tensor | None, samples: Tensor) -> Any:
    manifold = model.manifold  # type: ignore[attr-defined]
    angles = torch.linspace(-math.pi, math.pi, 4 * GRID + 1, dtype=torch.float64)[:-1]
    if isinstance(manifold, Sphere):
        points = torch.stack([torch.cos(angles), torch.sin(angles)], -1)

        def angle_of(x: Tensor) -> Tensor:
            return torch.atan2(x[:, 1], x[:, 0])
    else:
        points = angles[:, None]

        def angle_of(x: Tensor) -> Tensor:
            return x[:, 0]

    figure, axis = pyplot.subplots(1, 1, figsize=(6, 3.5))
    bins = torch.linspace(-math.pi, math.pi, 61).numpy()
    if data is not None:
        axis.hist(angle_of(data).numpy(), bins=bins, density=True, alpha=0.4, label="data")
    axis.hist(angle_of(samples).numpy(), bins=bins, density=True, alpha=0.4, label="samples")
    log_density = _log_density(model, points)
    if log_density is not None:
        axis.plot(angles.numpy(), log_density.exp().numpy(), color="k", label="model density")
    axis.set_xlim(-math.pi, math.pi)
    axis.set_xlabel("angle (radians)")
    axis.legend()
    return figure


def _rotation_figure(pyplot: Any, model: Model, data: Tensor | None, samples: Tensor) -> Any:
    figure, axis = pyplot.subplots(1, 1, figsize=(6, 3.5))
    bins = torch.linspace(0, math.pi, 61).numpy()
    if data is not None:
        axis.hist(rotation_angle(data).numpy(), bins=bins, density=True, alpha=0.4, label="data")
    axis.hist(rotation_angle(samples).numpy(), bins=bins, density=True, alpha=0.4,
              label="samples")  # fmt: skip
    theta = torch.linspace(0, math.pi, 200)
    # A uniform rotation's angle has density (1 - cos theta) / pi.
    axis.plot(
        theta.numpy(), ((1 - torch.cos(theta)) / math.pi).numpy(), "k--", label="uniform rotations"
    )
    axis.set_xlabel("rotation angle (radians)")
    axis.legend()
    return figure


def plot_manifold(pyplot: Any, directory: Path, model: Model, data: Tensor | None) -> Path:
    """``samples.png`` of a run on a manifold: data, samples and (with a density) the
    model's density, on the sphere's Mollweide map, the torus's square, the circle's
    angle, or the distribution of rotation angles for SO(3)."""
    manifold = model.manifold  # type: ignore[attr-defined]
    torch.manual_seed(0)
    with torch.no_grad():
        samples = model.sample(2000).double()
    if isinstance(manifold, SO3):
        figure = _rotation_figure(pyplot, model, data, samples)
    elif manifold.dim == 1:
        figure = _circle_figure(pyplot, model, data, samples)
    elif isinstance(manifold, Sphere):
        figure = _sphere_figure(pyplot, model, data, samples)
    else:
        figure = _torus_figure(pyplot, model, data, samples)
    figure.tight_layout()
    path = directory / "samples.png"
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
