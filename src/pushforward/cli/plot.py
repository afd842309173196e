"""``pushforward plot``: figures of a run (matplotlib is the optional ``plot`` extra)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from pushforward.cli.evaluate import context_rows, data_coordinates
from pushforward.cli.evaluate_target import run_target
from pushforward.cli.plot_diagnostics import plot_posterior_pairs
from pushforward.cli.plot_manifold import can_plot, plot_manifold
from pushforward.cli.plot_target import SAMPLES as TARGET_SAMPLES
from pushforward.cli.plot_target import plot_target_densities, plot_weights, quantile_grid
from pushforward.cli.report import write_report
from pushforward.data import BUILTIN_PREFIX, MANIFOLD_TOYS, TOYS, load_dataset
from pushforward.data.tokens import load_tokens
from pushforward.geometry import Manifold
from pushforward.matching.reflected import ReflectedFlowMatching
from pushforward.model import Model
from pushforward.train.run_directory import open_run, read_config, read_metrics

GRID = 80
"""Points per side of the density panel's grid: 6,400 log-densities, a few seconds for a
continuous-time model (an ODE solve with the divergence per point)."""
SAMPLES = 2000
POSTERIOR_SAMPLES = 10_000
"""Samples of a posterior pairplot (``plot --context``)."""
TOKEN_SAMPLES = 10_000
"""Pairs in each joint histogram of a two-token run."""
DENSITY_TOLERANCE = 1e-3
"""Absolute and relative tolerance of an adaptive ODE solve for the density panel (the
models' own default is 1e-5 for ``eval``): on the demo's flow-matching runs the
densities on the grid moved by less than 1% of their peak, invisible at the panel's 20
contour levels, and the panel took several times less to draw."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ValueError(
            "plot needs matplotlib, which is not installed; pip install 'pushforward[plot]'"
        ) from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as pyplot

    return pyplot


def plot_losses(pyplot: Any, directory: Path) -> Path | None:
    """``loss.png``: training and validation loss (standardised units) against steps."""
    records = read_metrics(directory)
    if not records:
        return None
    figure, axes = pyplot.subplots(figsize=(5, 3.5))
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    if train:
        axes.plot(*zip(*train, strict=True), label="training")
    if val:
        axes.plot(*zip(*val, strict=True), label="validation", marker=".")
    config = read_config(directory)
    units = "nats" if "target" in config else "standardised units"
    axes.set(xlabel="step", ylabel=f"loss ({units})")
    axes.legend()
    figure.tight_layout()
    path = directory / "loss.png"
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def plot_2d(pyplot: Any, directory: Path, model: Model, data: torch.Tensor | None) -> Path:
    """``samples.png``: data and model samples side by side, with the model's density
    contours where the model has a density (one-step generators and flows from an
    empirical source have none)."""
    torch.manual_seed(0)
    samples = model.sample(SAMPLES).double()
    box = _box_of(model)
    if box is not None:
        # A model on a box: the box with a margin, its boundary drawn, and the density
        # on cell centres inside it (it is zero outside).
        low, high = box
        pad = 0.05 * (high - low)
        cells = [(low[j] + (high[j] - low[j]) * (torch.arange(GRID) + 0.5) / GRID).double()
                 for j in range(2)]  # fmt: skip
        xs, ys = cells
        low, high = low - pad, high + pad
        grid_x, grid_y = torch.meshgrid(xs, ys, indexing="xy")
        points = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
    else:
        reference = data if data is not None else samples
        low, high, grid_x, grid_y, points = quantile_grid(reference, 0.005, 0.1, GRID)
    dtype = next(iter(model.parameters())).dtype
    density = None
    if model.has_log_prob:
        declared = model.log_prob_options.names()
        options: dict[str, Any] = {k: DENSITY_TOLERANCE for k in ("atol", "rtol") if k in declared}
        with torch.no_grad():
            log_density = model.log_prob(points.to(dtype), **options)
        density = log_density.double().exp().reshape(GRID, GRID)
    panels = (2 if data is not None else 1) + (density is not None)
    figure, axes = pyplot.subplots(
        1, panels, figsize=(4 * panels, 4), sharex=True, sharey=True, squeeze=False
    )
    axes = axes[0]
    index = 0
    if data is not None:
        shown = data[:SAMPLES]
        axes[0].scatter(shown[:, 0], shown[:, 1], s=2, alpha=0.5)
        axes[0].set_title("data")
        index = 1
    axes[index].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, color="C1")
    axes[index].set_title("model samples")
    if density is not None:
        axes[index + 1].contourf(grid_x, grid_y, density, levels=20)
        axes[index + 1].set_title("model density")
    for axis in axes:
        axis.set_xlim(float(low[0]), float(high[0]))
        axis.set_ylim(float(low[1]), float(high[1]))
        if box is not None:
            (a, b), (c, d) = box[0].tolist(), box[1].tolist()
            axis.plot([a, c, c, a, a], [b, b, d, d, b], color="black", linewidth=1)
    figure.tight_layout()
    path = directory / "samples.png"
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def plot_images(pyplot: Any, directory: Path, model: Model, shape: list[int]) -> Path:
    """``samples.png``: a grid of 64 model samples shown as images."""
    torch.manual_seed(0)
    count = 64
    samples = model.sample(count).double().reshape(count, *shape)
    images = samples[:, 0] if len(shape) == 3 else samples.reshape(count, *shape[-2:])
    side = int(math.sqrt(count))
    figure, axes = pyplot.subplots(side, side, figsize=(side, side))
    for image, axis in zip(images, axes.reshape(-1), strict=True):
        axis.imshow(image.clamp(0, 1).numpy(), cmap="gray_r", vmin=0, vmax=1)
        axis.axis("off")
    figure.tight_layout()
    path = directory / "samples.png"
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def plot_tokens(
    pyplot: Any, directory: Path, model: Model, data: torch.Tensor | None, vocab: list[int]
) -> Path:
    """``samples.png`` of a token run: for two tokens, the joint histograms of the data
    and of model samples as images; for longer sequences, rows of tokens as a grid of
    coloured cells (one row a sequence), the data beside the model's."""
    torch.manual_seed(0)
    if len(vocab) == 2:
        samples = model.sample(TOKEN_SAMPLES)
        panels = _panels(data, samples)
        figure, axes = pyplot.subplots(1, len(panels), figsize=(4.2 * len(panels), 4))
        axes = [axes] if len(panels) == 1 else list(axes)
        for axis, (title, values) in zip(axes, panels, strict=True):
            counts = torch.zeros(vocab[0], vocab[1], dtype=torch.float64)
            counts.index_put_((values[:, 0], values[:, 1]), torch.ones(len(values),
                              dtype=torch.float64), accumulate=True)  # fmt: skip
            axis.imshow((counts / counts.sum()).T.numpy(), origin="lower", cmap="viridis")
            axis.set_title(f"{title} ({len(values):,} pairs)")
            axis.set_xlabel("token 1")
            axis.set_ylabel("token 2")
    else:
        rows = 48
        samples = model.sample(rows)
        panels = _panels(None if data is None else data[:rows], samples)
        width = min(12.0, 1.5 + 0.25 * len(vocab)) * len(panels)
        figure, axes = pyplot.subplots(1, len(panels), figsize=(width, 6))
        axes = [axes] if len(panels) == 1 else list(axes)
        for axis, (title, values) in zip(axes, panels, strict=True):
            axis.imshow(values.numpy(), aspect="auto", cmap="tab20", interpolation="nearest",
                        vmin=0, vmax=max(vocab) - 1)  # fmt: skip
            axis.set_title(title)
            axis.set_xlabel("position")
            axis.set_ylabel("sequence")
    figure.tight_layout()
    path = directory / "samples.png"
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def _panels(data: torch.Tensor | None, samples: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The panels of a token figure: the data where it could be read, then the model's."""
    return ([] if data is None else [("data", data)]) + [("model samples", samples)]


def _box_of(model: Model) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(low, high)`` (float64) of a model of points in a 2-D box, else None."""
    if not isinstance(model, ReflectedFlowMatching) or model.features != 2:
        return None
    return model.low.double().cpu(), model.high.double().cpu()


def _manifold_of(model: Model) -> Manifold | None:
    """The manifold of a model of points that :func:`plot_manifold` can draw, else None."""
    manifold = getattr(model, "manifold", None)
    return manifold if isinstance(manifold, Manifold) and can_plot(manifold) else None


def _plot_data(config: dict[str, Any]) -> torch.Tensor:
    """Up to :data:`SAMPLES` rows of the run's data, read as training read them: fresh
    draws of a built-in toy, else the first rows of the file or set (which may be fewer)."""
    source = str(config["data"]["source"])
    name = source.removeprefix(BUILTIN_PREFIX).partition(":")[0]
    fresh = source.startswith(BUILTIN_PREFIX) and (name in TOYS or name in MANIFOLD_TOYS)
    coordinates = data_coordinates(config, source)
    loaded = load_dataset(source, n=SAMPLES if fresh else None, coordinates=coordinates)
    return loaded.values[:SAMPLES]


def plot_run(directory: Path, context: str | None = None) -> list[Path]:
    """Writes ``loss.png``, for unconditional 2-D or image runs ``samples.png``, and
    ``report.html`` (the run's metrics, options and figures on one page) into the run
    directory ``directory``; returns the files written. With ``context`` (a file of one
    observation) a conditional run also gets ``posterior.png``, a pairplot of its samples
    given that observation."""
    config, model = open_run(str(directory))
    pyplot = _pyplot()
    written = [plot_losses(pyplot, directory)]
    if context is not None:
        written.append(_posterior_pairs(directory, model, context))
    if "target" in config:
        # A run fitted to a target: the target beside the flow, and the weights.
        target = run_target(config, None, None)
        torch.manual_seed(0)
        samples = model.sample(TARGET_SAMPLES).double()
        written.append(plot_target_densities(pyplot, directory, model, target, samples))
        written.append(plot_weights(pyplot, directory, model, target))
        title = f"pushforward run {directory.resolve().name}"
        written.append(write_report(directory, [directory], title=title))
        return [path for path in written if path is not None]
    shape = config["data"]["event_shape"]
    vocab = config["data"].get("vocab")
    if model.context_features == 0 and vocab is not None:
        tokens = None
        try:
            tokens = load_tokens(config["data"]["source"], vocab=vocab, n=TOKEN_SAMPLES).values
        except (ValueError, OSError):
            pass  # the data file moved: plot the model alone
        written.append(plot_tokens(pyplot, directory, model, tokens, vocab))
    elif model.context_features == 0 and _manifold_of(model) is not None:
        data = None
        try:
            loaded = _plot_data(config)
            check_points = getattr(model, "check_points", model.check_input)
            data = check_points(loaded.to(next(model.parameters()).dtype)).double()
        except (ValueError, OSError):
            pass  # the data file moved (or its rows need options): plot the model alone
        written.append(plot_manifold(pyplot, directory, model, data))
    elif model.context_features == 0 and shape == [2]:
        data = None
        try:
            data = _plot_data(config)
        except (ValueError, OSError):
            pass  # the data file moved: plot the model alone
        written.append(plot_2d(pyplot, directory, model, data))
    elif model.context_features == 0 and len(shape) >= 2:
        written.append(plot_images(pyplot, directory, model, shape))
    title = f"pushforward run {directory.resolve().name}"
    written.append(write_report(directory, [directory], title=title))
    return [path for path in written if path is not None]


def _posterior_pairs(directory: Path, model: Model, context: str) -> Path:
    """``posterior.png``: :data:`POSTERIOR_SAMPLES` samples given the one row of ``context``."""
    if not model.context_features:
        raise ValueError("this run is unconditional; plot --context takes a conditional run")
    rows = context_rows(context, model)
    assert rows is not None  # a conditional run
    if rows.shape != (1, model.context_features):
        raise ValueError(
            f"plot --context takes one observation: a file of 1 row of "
            f"{model.context_features} values, got shape {tuple(rows.shape)}"
        )
    torch.manual_seed(0)
    samples = model.sample(POSTERIOR_SAMPLES, rows)
    samples = samples.reshape(POSTERIOR_SAMPLES, -1)
    return plot_posterior_pairs(
        samples, directory / "posterior.png", title=f"posterior given {Path(context).name}"
    )


def run_plot(arguments: argparse.Namespace) -> int:
    """``pushforward plot RUN_DIR``: :func:`plot_run`, printing the files it wrote."""
    for path in plot_run(Path(arguments.run), getattr(arguments, "context", None)):
        print(f"wrote {path}")
    return 0
