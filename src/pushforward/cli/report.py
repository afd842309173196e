"""``report.html``: one self-contained page showing one or several runs side by side.

The page needs nothing but itself: figures are embedded as base64 ``data:`` URIs,
the styling is an inline ``<style>`` block and there is no JavaScript, so the file
can be mailed or archived alone. Every piece of text taken from a run (model
options, data paths, labels) is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pushforward.serialization import atomic_write_bytes
from pushforward.train.checkpoint import latest_checkpoint
from pushforward.train.run_directory import CHECKPOINTS, package_version, read_config, read_metrics

REPORT_FILE = "report.html"
EVALUATION_FILE = "evaluation.json"
"""Test metrics stored in a run directory (written by ``pushforward demo``)."""
DIAGNOSTICS_FILE = "diagnostics.json"
"""A posterior run's calibration summary (written by ``pushforward diagnose``)."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIRST_FIGURES = ("samples.png", "loss.png")
"""Shown first, in this order, so that the runs' samples line up side by side."""

NO_VALUE = "n/a"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.2em; }
h3 { font-size: 1em; margin: 1em 0 0.3em; }
table { border-collapse: collapse; margin: 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.runs { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 1.5em; }
.run { border: 1px solid #ddd; border-radius: 6px; padding: 0 1em 1em; min-width: 0; }
figure { margin: 0.5em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; height: auto; }
.note { color: #555; font-size: 0.9em; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


@dataclass(frozen=True)
class Figure:
    """A PNG figure of a run.

    Attributes:
        name: the file name in the run directory, e.g. ``samples.png``.
        png: the file's bytes (they start with the PNG signature).
    """

    name: str
    png: bytes


@dataclass(frozen=True)
class RunSummary:
    """What the report shows of one run directory.

    Attributes:
        label: the run's name on the page (its path below the report's directory).
        path: the run directory.
        model: the registered model name.
        data: the data source (``builtin:NAME`` or a file path).
        options: the resolved model options (defaults included).
        train: the resolved training options.
        metrics: display name -> formatted value, in display order.
        figures: the run's PNG figures, ``samples.png`` and ``loss.png`` first.
    """

    label: str
    path: Path
    model: str
    data: str
    options: dict[str, Any]
    train: dict[str, Any]
    metrics: dict[str, str]
    figures: list[Figure]


def write_report(directory: Path, runs: Sequence[Path], title: str = "pushforward report") -> Path:
    """Writes ``directory/report.html`` showing ``runs`` side by side, atomically.

    The page holds a summary table (one row per run: model, data, steps, training
    seconds, losses and the stored test metrics, e.g. NLL +- standard error, KL
    for data with an exact density, bits/dim for images), then one column per
    run with its figures, metrics and resolved options.

    Args:
        directory: where ``report.html`` goes (created if needed).
        runs: run directories written by ``pushforward train`` (at least one).
        title: the page's title.

    Returns:
        The path of ``report.html``.
    """
    if not runs:
        raise ValueError("a report needs at least one run directory")
    directory = Path(directory)
    summaries = [summarize_run(Path(run), _label(Path(run), directory)) for run in runs]
    page = render_report(summaries, title, _matplotlib_installed())
    path = directory / REPORT_FILE
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def summarize_run(run: Path, label: str) -> RunSummary:
    """Reads what the report shows of a run: config, metrics log, evaluation, figures.

    Losses come from ``metrics.jsonl`` (standardised units, as ``loss.png``);
    test metrics from ``evaluation.json`` when the run has one; training time
    from it or from the latest checkpoint's history.

    Args:
        run: a run directory.
        label: the run's name on the page.

    Returns:
        The run's :class:`RunSummary`.
    """
    config = read_config(run)
    records = read_metrics(run)
    evaluation = read_evaluation(run)
    history = _checkpoint_history(run)
    losses = [r for r in records if _finite(r.get("loss"))]
    validations = [r for r in records if _finite(r.get("val_loss"))]
    best = min(validations, key=lambda r: r["val_loss"]) if validations else None
    steps = history.get("steps_done") or (records[-1].get("step") if records else None)
    seconds = evaluation.get("train_seconds", history.get("seconds"))
    metrics: dict[str, str] = {
        "steps": _format(steps),
        "train seconds": _format(seconds, ".1f"),
        "final training loss": _format(losses[-1]["loss"] if losses else None),
        "best validation loss": (
            NO_VALUE if best is None else f"{best['val_loss']:.4f} (step {best['step']})"
        ),
    }
    evaluated = [r for r in records if _finite(r.get("ess"))]
    if evaluated:
        last = evaluated[-1]
        metrics["reverse ESS (last evaluation)"] = f"{last['ess']:.4f} (step {last['step']})"
        if _finite(last.get("log_z")):
            metrics["log Z estimate (last evaluation)"] = _format(last["log_z"])
    if config.get("target"):
        known = config["target"].get("log_z")
        metrics["target"] = str(config["target"].get("spec") or config["target"].get("name"))
        metrics["exact log Z"] = _format(known)
        metrics["objective"] = str((config.get("objective") or {}).get("name", NO_VALUE))
    if _finite(evaluation.get("nll")):
        error = evaluation.get("nll_se")
        spread = f" \u00b1 {error:.4f}" if _finite(error) else ""
        metrics["test NLL (nats)"] = f"{evaluation['nll']:.4f}{spread}"
    if _finite(evaluation.get("nll_bound")):
        error = evaluation.get("nll_bound_se")
        spread = f" \u00b1 {error:.4f}" if _finite(error) else ""
        metrics["test NLL bound (nats, an upper bound)"] = f"{evaluation['nll_bound']:.4f}{spread}"
    if "bits_per_token" in evaluation:
        metrics["bits/token"] = _format(evaluation["bits_per_token"])
    if "joint_tv" in evaluation:
        metrics["samples' total variation to the exact joint"] = _format(evaluation["joint_tv"])
    if "kl" in evaluation:
        metrics["KL to the true density (nats)"] = _format(evaluation["kl"])
    if "bpd" in evaluation:
        metrics["bits/dim"] = _format(evaluation["bpd"])
    if "energy_distance" in evaluation:
        metrics["energy distance to test data"] = _format(evaluation["energy_distance"])
    if "n" in evaluation:
        metrics["test examples"] = _format(evaluation["n"])
    metrics.update(_calibration_rows(run))
    return RunSummary(
        label=label,
        path=run,
        model=str(config["model"]["name"]),
        data=str(config["data"]["source"]),
        options=dict(config["model"]["options"]),
        train=dict(config.get("train", {})),
        metrics=metrics,
        figures=run_figures(run),
    )


def _calibration_rows(run: Path) -> dict[str, str]:
    """Report rows of ``diagnostics.json`` (none when the run was not diagnosed)."""
    summary = read_run_json(run, DIAGNOSTICS_FILE)
    if not summary:
        return {}
    rows = {
        "calibration pairs x samples": (
            f"{summary.get('pairs', NO_VALUE)} x {summary.get('samples_per_pair', NO_VALUE)}"
        ),
        "SBC: smallest KS p-value": _format((summary.get("sbc") or {}).get("min_ks_pvalue")),
        "TARP area to curve (> 0 overdispersed)": _format((summary.get("tarp") or {}).get("atc")),
    }
    coverage = summary.get("expected_coverage")
    if coverage:
        rows["expected coverage signed area (> 0 conservative)"] = _format(
            coverage.get("signed_area")
        )
    if "leakage" in summary:
        rows["samples outside the prior"] = _format(summary["leakage"])
    return rows


def write_evaluation(run: Path, evaluation: dict[str, Any]) -> Path:
    """Stores test metrics as ``run/evaluation.json`` (atomically) for the report.

    Args:
        run: the run directory.
        evaluation: JSON-ready metrics, e.g. ``nll``, ``nll_se``, ``n``, ``kl``,
            ``bpd``, ``train_seconds``.

    Returns:
        The file's path.
    """
    return write_run_json(run, EVALUATION_FILE, evaluation)


def read_evaluation(run: Path) -> dict[str, Any]:
    """The run's ``evaluation.json`` (an empty dict when it has none)."""
    return read_run_json(run, EVALUATION_FILE)


def write_run_json(run: Path, name: str, values: dict[str, Any]) -> Path:
    """Stores ``values`` as ``run/name`` (atomically): metrics the report shows."""
    path = Path(run) / name
    atomic_write_bytes(path, (json.dumps(values, indent=2) + "\n").encode())
    return path


def read_run_json(run: Path, name: str) -> dict[str, Any]:
    """The JSON object of metrics in ``run/name`` (an empty dict when there is none)."""
    path = Path(run) / name
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path} is not valid JSON") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} does not hold a JSON object of metrics")
    return values


def run_figures(run: Path) -> list[Figure]:
    """The run's PNG files, ``samples.png`` and ``loss.png`` first, the rest by name."""
    paths = sorted(
        Path(run).glob("*.png"),
        key=lambda p: (FIRST_FIGURES.index(p.name) if p.name in FIRST_FIGURES else 99, p.name),
    )
    figures = []
    for path in paths:
        data = path.read_bytes()
        # A file that is not a PNG would show as a broken image: leave it out.
        if data.startswith(PNG_SIGNATURE):
            figures.append(Figure(path.name, data))
    return figures


def render_report(runs: Sequence[RunSummary], title: str, matplotlib_installed: bool) -> str:
    """The report's HTML text (see :func:`write_report`).

    Args:
        runs: the runs, in the order of the summary table and the columns.
        title: the page's title (escaped like every other text).
        matplotlib_installed: whether a run without figures can get them from
            ``pushforward plot`` as is, or needs ``pip install 'pushforward[plot]'`` first.

    Returns:
        A complete HTML document.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{_text(title)}</h1>",
        f'<p class="note">Written by pushforward {_text(package_version())}. Training and '
        "validation losses are in standardised units (the model's loss on the "
        "standardised data); test NLL and KL are in nats per example in the data's "
        "original units.</p>",
        "<h2>Summary</h2>",
        _summary_table(runs),
        '<div class="runs">',
    ]
    for index, run in enumerate(runs):
        parts.append(_run_section(index, run, matplotlib_installed))
    parts += ["</div>", "</body>", "</html>", ""]
    return "\n".join(parts)


def _summary_table(runs: Sequence[RunSummary]) -> str:
    names: list[str] = []
    for run in runs:
        names += [name for name in run.metrics if name not in names]
    header = "".join(f"<th>{_text(name)}</th>" for name in ["run", "model", "data", *names])
    rows = []
    for index, run in enumerate(runs):
        cells = [
            f'<td><a href="#run-{index}">{_text(run.label)}</a></td>',
            f"<td>{_text(run.model)}</td>",
            f"<td>{_text(run.data)}</td>",
        ]
        cells += [
            f'<td class="number">{_text(run.metrics.get(name, NO_VALUE))}</td>' for name in names
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _run_section(index: int, run: RunSummary, matplotlib_installed: bool) -> str:
    parts = [
        f'<section class="run" id="run-{index}">',
        f"<h2>{_text(run.label)}</h2>",
        f'<p>{_text(run.model)} on {_text(run.data)} <span class="note">({_text(run.path)})'
        "</span></p>",
        "<h3>Figures</h3>",
    ]
    for figure in run.figures:
        encoded = base64.b64encode(figure.png).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{encoded}" '
            f'alt="{_text(run.label)}: {_text(figure.name)}">'
            f"<figcaption>{_text(figure.name)}</figcaption></figure>"
        )
    if not run.figures:
        parts.append(_no_figures(run, matplotlib_installed))
    parts += [
        "<h3>Metrics</h3>",
        _pairs(run.metrics),
        "<h3>Model options</h3>",
        _pairs({key: _value(value) for key, value in run.options.items()}),
        "<h3>Training options</h3>",
        _pairs({key: _value(value) for key, value in run.train.items()}),
        "</section>",
    ]
    return "\n".join(parts)


def _no_figures(run: RunSummary, matplotlib_installed: bool) -> str:
    command = f"<code>pushforward plot {_text(run.path)}</code>"
    if matplotlib_installed:
        return f'<p class="note">No figures in this run yet; draw them with {command}.</p>'
    return (
        '<p class="note">No figures: they need matplotlib, which is not installed. '
        "Install it with <code>pip install 'pushforward[plot]'</code>, then run "
        f"{command}.</p>"
    )


def _pairs(values: dict[str, str]) -> str:
    rows = "".join(
        f"<tr><th>{_text(key)}</th><td>{_text(value)}</td></tr>" for key, value in values.items()
    )
    return f"<table><tbody>{rows}</tbody></table>"


def _label(run: Path, directory: Path) -> str:
    # Runs in sub-directories of the report are named by their relative path
    # ("nsf", "fm"); a run that is the report's own directory by its folder name.
    try:
        relative = run.resolve().relative_to(directory.resolve())
    except ValueError:
        return run.name or str(run)
    return str(relative) if str(relative) != "." else (run.resolve().name or str(run))


def _checkpoint_history(run: Path) -> dict[str, Any]:
    """The ``history`` of the latest checkpoint (training seconds, steps done), if readable."""
    checkpoint = latest_checkpoint(run / CHECKPOINTS)
    if checkpoint is None:
        return {}
    try:
        state = json.loads((checkpoint / "training_state.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}  # only for display: a damaged checkpoint is refused by --resume instead
    history = state.get("history") if isinstance(state, dict) else None
    return history if isinstance(history, dict) else {}


def _matplotlib_installed() -> bool:
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _format(value: Any, spec: str = ".4f") -> str:
    if isinstance(value, bool) or value is None:
        return NO_VALUE if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(value, spec) if math.isfinite(value) else str(value)
    return str(value)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _text(value: Any) -> str:
    return html.escape(str(value), quote=True)
