"""Figures of a run fitted to a target: the target beside the flow, and its importance weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pushforward.model import Model
from pushforward.sampling.importance import LogWeights, importance_log_weights, reverse_ess
from pushforward.sampling.target import Target, checked_log_prob
from pushforward.train.run_directory import read_metrics

GRID = 120
"""Points per side of the density panels (cheap: a target and a flow evaluate in one pass)."""
SAMPLES = 4000
MARGINALS = 4
"""Coordinates whose marginals are drawn for a target of more than two dimensions."""


def quantile_grid(
    reference: torch.Tensor, tail: float, margin: float, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A ``size`` x ``size`` float64 grid over the plane of 2-D ``reference`` points.

    The box spans the ``tail`` and ``1 - tail`` quantiles of each coordinate, widened by
    ``margin`` of its width on both sides.

    Returns:
        ``(low, high, grid_x, grid_y, points)``: the box's corners ``(2,)``, the meshgrid
        ``(size, size)`` (``"xy"`` indexing) and its points ``(size * size, 2)``.
    """
    low = torch.quantile(reference, tail, dim=0)
    high = torch.quantile(reference, 1 - tail, dim=0)
    pad = margin * (high - low)
    low, high = low - pad, high + pad
    xs = torch.linspace(float(low[0]), float(high[0]), size, dtype=torch.float64)
    ys = torch.linspace(float(low[1]), float(high[1]), size, dtype=torch.float64)
    grid_x, grid_y = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
    return low, high, grid_x, grid_y, points


def plot_target_densities(
    pyplot: Any, directory: Path, model: Model, target: Target, samples: torch.Tensor
) -> Path:
    """``samples.png``: the target's density, the flow's and its samples (2-D), or marginal
    histograms of the flow's samples against exact target samples where the target has them."""
    if target.features == 2:
        return _plane(pyplot, directory, model, target, samples)
    return _marginals(pyplot, directory, target, samples)


def _plane(
    pyplot: Any, directory: Path, model: Model, target: Target, samples: torch.Tensor
) -> Path:
    reference = samples
    if target.has_sample:
        reference = target.sample(SAMPLES, torch.Generator().manual_seed(0))
    low, high, grid_x, grid_y, points = quantile_grid(reference, 0.002, 0.15, GRID)
    dtype = next(iter(model.parameters())).dtype
    with torch.no_grad():
        log_target = checked_log_prob(target, points.to(dtype)).double()
        log_flow = model.log_prob(points.to(dtype)).double()
    # Each density relative to its own peak on the grid: the target's Z is unknown.
    target_density = (log_target - log_target.max()).exp().reshape(GRID, GRID)
    flow_density = (log_flow - log_flow.max()).exp().reshape(GRID, GRID)
    figure, axes = pyplot.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
    axes[0].contourf(grid_x, grid_y, target_density, levels=20)
    axes[0].set_title(f"target {target.name}")
    axes[1].contourf(grid_x, grid_y, flow_density, levels=20)
    axes[1].set_title("flow density")
    shown = samples[:SAMPLES]
    axes[2].scatter(shown[:, 0], shown[:, 1], s=2, alpha=0.4, color="C1")
    axes[2].set_title("flow samples")
    for axis in axes:
        axis.set_xlim(float(low[0]), float(high[0]))
        axis.set_ylim(float(low[1]), float(high[1]))
    figure.tight_layout()
    path = directory / "samples.png"
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def _marginals(pyplot: Any, directory: Path, target: Target, samples: torch.Tensor) -> Path:
    count = min(MARGINALS, target.features)
    exact = None
    if target.has_sample:
        exact = target.sample(samples.shape[0], torch.Generator().manual_seed(0))
    figure, axes = pyplot.subplots(1, count, figsize=(3.2 * count, 3), squeeze=False)
    for index, axis in enumerate(axes[0]):
        values = samples[:, index]
        pooled = values if exact is None else torch.cat([values, exact[:, index]])
        low, high = torch.quantile(pooled, 0.002), torch.quantile(pooled, 0.998)
        bins = torch.linspace(float(low), float(high), 60).numpy()
        axis.hist(values.numpy(), bins=bins, density=True, alpha=0.6, label="flow", color="C1")
        if exact is not None:
            axis.hist(exact[:, index].numpy(), bins=bins, density=True, histtype="step",
                      color="black", label="target (exact)")  # fmt: skip
        axis.set_title(f"x[{index}]")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"marginals: flow against target {target.name}", fontsize=10)
    figure.tight_layout()
    path = directory / "samples.png"
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def plot_weights(pyplot: Any, directory: Path, model: Model, target: Target) -> Path:
    """``weights.png``: the normalised log-weights of the flow's samples and the training
    curve of the reverse ESS (from the evaluations in ``metrics.jsonl``)."""
    _, log_w = importance_log_weights(model, target, SAMPLES)
    weights = LogWeights.of(log_w)
    values = weights.values[torch.isfinite(weights.values)]
    figure, axes = pyplot.subplots(1, 2, figsize=(9, 3.5))
    if values.numel():
        centred = (
            values - torch.logsumexp(values, 0) + torch.log(torch.tensor(float(values.numel())))
        )
        axes[0].hist(centred.numpy(), bins=60, color="C2")
    axes[0].set(xlabel="log w - log mean w", ylabel="samples")
    axes[0].set_title(
        f"importance weights (ESS {reverse_ess(log_w):.3f}; "
        f"{weights.masked + weights.zero} of {log_w.numel()} zero or masked)",
        fontsize=9,
    )
    curve = [(r["step"], r["ess"]) for r in read_metrics(directory) if r.get("ess") is not None]
    if curve:
        axes[1].plot(*zip(*curve, strict=True), marker=".")
    axes[1].set(xlabel="step", ylabel="reverse ESS / n", ylim=(0, 1.02))
    axes[1].set_title("ESS during training", fontsize=9)
    figure.tight_layout()
    path = directory / "weights.png"
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
