"""The run directory a ``pushforward train`` writes, and how later commands read it.

Layout of ``RUN_DIR``:

* ``config.json``: the resolved configuration (pushforward version, model name
  and options, data source, standardisation, training options);
* ``model.json`` + ``model.safetensors``: the final model in the data's original
  units (``pushforward.load(RUN_DIR)`` reads them);
* ``metrics.jsonl``: one JSON object per logged step;
* ``checkpoints/``: training checkpoints for ``--resume``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pushforward._version import __version__
from pushforward.model import Model
from pushforward.registry import available
from pushforward.serialization import atomic_write_bytes, load
from pushforward.train.callbacks import Callback

RUN_FORMAT = "pushforward-run"
RUN_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


def package_version() -> str:
    """The installed pushforward version."""
    return __version__


def _release(version: str) -> tuple[str, ...]:
    # Runs are read across patch releases, not across minor or major ones.
    return tuple(str(version).split(".")[:2])


def write_config(directory: Path, config: dict[str, Any]) -> None:
    """Writes ``config.json`` atomically."""
    atomic_write_bytes(directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads and checks ``RUN_DIR/config.json``.

    Raises:
        FileNotFoundError: no such directory, or no ``config.json`` in it.
        ValueError: not a run directory, or one written by another version.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"run directory '{directory}' does not exist")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"'{directory}' is not a run directory (no {CONFIG_FILE}); "
            "create one with pushforward train"
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path} is not valid JSON") from None
    if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
        raise ValueError(f"{path} is not a pushforward run configuration")
    version = str(config.get("pushforward_version"))
    if config.get("format_version") != RUN_FORMAT_VERSION or _release(version) != _release(
        package_version()
    ):
        raise ValueError(
            f"run directory '{directory}' was written by pushforward {version} "
            f"(run format {config.get('format_version')}); this is pushforward "
            f"{package_version()} (run format {RUN_FORMAT_VERSION})"
        )
    name = config.get("model", {}).get("name")
    if name not in available():
        raise ValueError(
            f"run directory '{directory}' holds a model {name!r} that this pushforward "
            f"does not know; known models: {', '.join(available())}"
        )
    return config


class MetricsLog(Callback):
    """Appends one JSON object per logged step to ``metrics.jsonl``.

    A record holds ``step``, ``loss`` (the mean finite training loss since the
    previous record), ``learning_rate``, ``skipped`` (non-finite steps since the
    previous record) and, at validation steps, ``val_loss``; losses are those of
    the model on standardised data (add ``standardization.log_std_sum`` of
    ``config.json`` for nats in the original units). On a resume,
    records after the step the run restarts from are dropped first, so the log
    always matches the checkpoint it continues.

    Args:
        path: the ``metrics.jsonl`` file.
        log_every: steps between records (and one at the last step).
        eval_every: steps between validations, ``None`` without validation.
    """

    def __init__(self, path: Path, log_every: int, eval_every: int | None) -> None:
        self.path = path
        self.log_every = log_every
        self.eval_every = eval_every
        self.total = 0
        self._losses: list[float] = []
        self._skipped = 0
        self._pending: dict[str, Any] | None = None

    def on_start(self, step: int, total: int) -> None:
        self.total = total
        kept = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if isinstance(record, dict) and int(record.get("step", 0)) <= step:
                    kept.append(json.dumps(record))
        atomic_write_bytes(self.path, "".join(line + "\n" for line in kept).encode())

    def _validates(self, step: int) -> bool:
        return self.eval_every is not None and (step % self.eval_every == 0 or step == self.total)

    def on_step(self, step: int, logs: dict[str, Any]) -> bool | None:
        loss = float(logs["loss"])
        if math.isfinite(loss):
            self._losses.append(loss)
        self._skipped += int(logs.get("skipped", 0))
        if step % self.log_every and step != self.total and not self._validates(step):
            return None
        record: dict[str, Any] = {
            "step": step,
            "loss": sum(self._losses) / len(self._losses) if self._losses else None,
            "learning_rate": float(logs["learning_rate"]),
            "skipped": self._skipped,
        }
        self._losses, self._skipped = [], 0
        if self._validates(step):
            self._pending = record
        else:
            self._write(record)
        return None

    def on_eval(self, step: int, logs: dict[str, Any]) -> bool | None:
        record: dict[str, Any] = self._pending if self._pending is not None else {"step": step}
        self._pending = None
        record["val_loss"] = float(logs["val_loss"])
        # A run fitted to a target also logs its importance-sampling diagnostics.
        for key in ("ess", "log_z"):
            if key in logs:
                record[key] = _finite_or_none(logs[key])
        self._write(record)
        return None

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def previous_run(out: Path, resume: bool) -> dict[str, Any] | None:
    """The config of the run in ``out`` when resuming it, ``None`` for a new run.

    Raises:
        ValueError: ``out`` holds a run and ``resume`` is off, or ``out`` is a file.
    """
    if (out / CONFIG_FILE).exists():
        if not resume:
            raise ValueError(
                f"'{out}' already holds a run; pass --resume to continue it or choose another --out"
            )
        return read_config(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' exists and is not a directory")
    return None


def run_header(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The first entries of every run's ``config.json``: the format and the model."""
    return {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "pushforward_version": package_version(),
        "model": {"name": name, "options": options},
    }


def check_same_model(out: Path, previous: dict[str, Any], resolved: dict[str, Any]) -> None:
    """Refuses to resume ``out`` with another model or other model options."""
    if previous["model"] != resolved["model"]:
        raise ValueError(
            f"cannot resume '{out}': it holds model {previous['model']['name']!r} with "
            f"options {previous['model']['options']}, not {resolved['model']['name']!r} with "
            f"{resolved['model']['options']}"
        )


def read_metrics(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/metrics.jsonl`` (lines that do not parse are skipped)."""
    path = Path(directory) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def open_run(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], Model]:
    """The run's config and its model (in the data's units), checked against each other."""
    config = read_config(directory)
    if not (Path(directory) / "model.json").is_file():
        raise FileNotFoundError(
            f"run directory '{directory}' has no trained model yet (training did not finish); "
            "continue it with pushforward train ... --resume"
        )
    model = load(directory)
    saved = getattr(model, "config", {})
    if saved.get("model") != config["model"]["name"]:
        raise ValueError(
            f"run directory '{directory}' is inconsistent: config.json names model "
            f"{config['model']['name']!r} but model.json holds {saved.get('model')!r}"
        )
    return config, model
