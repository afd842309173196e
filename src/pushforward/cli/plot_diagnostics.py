"""Figures of calibration diagnostics: SBC rank histograms, coverage curves and TARP.

Each function draws one result of :mod:`pushforward.sbi.diagnostics` into a PNG file and
returns its path; matplotlib is the optional ``plot`` extra.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pushforward.sbi.diagnostics import BAND, CoverageResult, SBCResult, TARPResult

MAX_PANELS = 16
"""Dimensions drawn by :func:`plot_rank_histograms`, the first ones, on a grid of
:data:`COLUMNS` columns; beyond that the panels are too small to read."""
COLUMNS = 4
MAX_CURVES = 10
"""Dimensions drawn by :func:`plot_coverage` for marginal coverage, one curve each."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ValueError(
            "diagnostic figures need matplotlib, which is not installed; "
            "pip install 'pushforward[plot]'"
        ) from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as pyplot

    return pyplot


def plot_rank_histograms(result: SBCResult, path: str | Path) -> Path:
    """Rank histograms of simulation-based calibration, one panel per dimension.

    The shaded band is where a bin's count lies with probability :data:`BAND` when the
    estimator is calibrated: a U shape means too narrow, a hump too wide, a slope a bias.
    """
    pyplot = _pyplot()
    path = Path(path)
    dims = result.counts.shape[1]
    shown = min(dims, MAX_PANELS)
    columns = min(shown, COLUMNS)
    rows = math.ceil(shown / columns)
    figure, axes = pyplot.subplots(
        rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False, sharey=True
    )
    edges = result.bin_edges.cpu().double()
    # The band as a step over each bin's span of ranks: bins may differ by one in width.
    steps_x = edges.repeat_interleave(2)[1:-1].numpy()
    lower = result.band_lower.cpu().repeat_interleave(2).numpy()
    upper = result.band_upper.cpu().repeat_interleave(2).numpy()
    for index, axis in enumerate(axes.reshape(-1)):
        if index >= shown:
            axis.axis("off")
            continue
        axis.fill_between(steps_x, lower, upper, color="gray", alpha=0.3, linewidth=0)
        counts = result.counts[:, index].cpu().numpy()
        axis.bar(
            edges[:-1].numpy(),
            counts,
            width=(edges[1:] - edges[:-1]).numpy(),
            align="edge",
            color="C0",
            alpha=0.8,
            edgecolor="white",
        )
        pvalue = float(result.ks_pvalues[index])
        axis.set_title(f"dimension {index + 1} (KS p = {pvalue:.2g})", fontsize=9)
        axis.set_xlim(0, result.samples_per_pair + 1)
        if index + columns >= shown:  # the lowest panel of its column
            axis.set_xlabel("rank of the true value")
        if index % columns == 0:
            axis.set_ylabel("test pairs")
    more = f", the first {shown} of {dims} dimensions" if dims > shown else ""
    figure.suptitle(
        f"simulation-based calibration: {result.ranks.shape[0]} pairs, "
        f"{result.samples_per_pair} draws each{more}\n(grey: where {BAND:.0%} "
        "of the counts of a calibrated estimator fall)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def plot_coverage(result: CoverageResult, path: str | Path) -> Path:
    """Coverage against credibility level, beside the diagonal of a calibrated estimator.

    Above the diagonal is conservative (regions too wide), below overconfident (too
    narrow); the shaded band is the pointwise :data:`BAND` binomial band around the
    diagonal. One curve for highest-density regions, one per dimension for marginal
    central intervals (the first :data:`MAX_CURVES`).
    """
    pyplot = _pyplot()
    path = Path(path)
    levels = result.levels.detach().cpu().double().numpy()
    figure, axis = pyplot.subplots(figsize=(4.5, 4.5))
    axis.fill_between(
        levels,
        result.band_lower.detach().cpu().double().numpy(),
        result.band_upper.detach().cpu().double().numpy(),
        color="gray",
        alpha=0.3,
        linewidth=0,
        label=f"{BAND:.0%} band if calibrated",
    )
    axis.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="calibrated")
    coverage = result.coverage.detach().cpu().double()
    area = result.signed_area.detach().cpu().double().reshape(-1)
    if coverage.dim() == 1:
        axis.plot(levels, coverage.numpy(), color="C0", label="highest-density regions")
        title = f"expected coverage (signed area {float(area[0]):+.3f})"
    else:
        shown = min(coverage.shape[1], MAX_CURVES)
        for index in range(shown):
            axis.plot(
                levels,
                coverage[:, index].numpy(),
                color=f"C{index % 10}",
                label=f"dimension {index + 1} ({float(area[index]):+.3f})",
            )
        title = "marginal coverage of central intervals"
    _coverage_axes(
        axis,
        "conservative\n(too wide)",
        "overconfident\n(too narrow)",
        "fraction of true values inside the region",
    )
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7, loc="center right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def plot_tarp(result: TARPResult, path: str | Path) -> Path:
    """TARP's expected coverage probability against credibility level, with the ATC.

    Above the diagonal is overdispersed (too wide, ATC > 0), below underdispersed (too
    narrow, ATC < 0), sbi's convention.
    """
    pyplot = _pyplot()
    path = Path(path)
    levels = result.levels.detach().cpu().double().numpy()
    figure, axis = pyplot.subplots(figsize=(4.5, 4.5))
    axis.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="calibrated")
    axis.plot(levels, result.ecp.detach().cpu().double().numpy(), color="C0", label="TARP")
    _coverage_axes(
        axis,
        "overdispersed\n(too wide)",
        "underdispersed\n(too narrow)",
        "expected coverage probability",
    )
    axis.set_title(f"TARP: ATC {result.atc:+.3f}, KS p = {result.ks_pvalue:.2g}", fontsize=10)
    axis.legend(fontsize=8, loc="center right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def _coverage_axes(axis: Any, above: str, below: str, ylabel: str) -> None:
    """The unit square of a coverage curve, what lies above and below its diagonal named."""
    style = {"transform": axis.transAxes, "fontsize": 9, "color": "dimgray"}
    axis.text(0.04, 0.94, above, va="top", **style)
    axis.text(0.96, 0.06, below, ha="right", va="bottom", **style)
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="credibility level", ylabel=ylabel)


MAX_PAIR_DIMENSIONS = 10
"""Dimensions a posterior pairplot draws, the first ones (a 10 x 10 grid)."""


def plot_posterior_pairs(
    samples: Any, path: str | Path, truth: Any = None, title: str = "posterior samples"
) -> Path:
    """A pairplot of posterior samples ``(n, D)``: marginal histograms on the diagonal,
    2-D histograms of each pair below it, the true parameters (``(D,)``) marked if given."""
    pyplot = _pyplot()
    values = samples.detach().double().cpu().numpy()
    dims = min(values.shape[1], MAX_PAIR_DIMENSIONS)
    marked = None if truth is None else truth.detach().double().cpu().reshape(-1).numpy()
    size = 1.9 * dims + 0.6
    figure, axes = pyplot.subplots(dims, dims, figsize=(size, size), squeeze=False)
    for row in range(dims):
        for column in range(dims):
            axis = axes[row][column]
            if column > row:
                axis.set_visible(False)
                continue
            if row == column:
                axis.hist(values[:, row], bins=50, color="#4c72b0", density=True)
                axis.set_yticks([])
                if marked is not None:
                    axis.axvline(marked[row], color="#c44e52", linewidth=1.2)
            else:
                axis.hist2d(values[:, column], values[:, row], bins=60, cmap="Blues")
                if marked is not None:
                    axis.plot(marked[column], marked[row], "+", color="#c44e52", markersize=9)
            if row == dims - 1:
                axis.set_xlabel(f"theta {column + 1}")
            else:
                axis.set_xticklabels([])
            if column == 0 and row > 0:
                axis.set_ylabel(f"theta {row + 1}")
            elif column > 0:
                axis.set_yticklabels([])
    shown = "" if dims == values.shape[1] else f" (first {dims} of {values.shape[1]} dimensions)"
    figure.suptitle(f"{title}{shown}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return Path(path)
