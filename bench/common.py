"""Shared harness of the side-by-side benchmarks: environment, interleaved timing, tables.

Every benchmark script calls :func:`setup` first. It pins the allocator
settings (by re-executing the script when they are missing), one thread and
float32, so that every candidate runs under the same conditions:

- glibc malloc serves large temporaries with ``mmap`` and returns them at once,
  so each big allocation page-faults afresh; that moves CPU timings by up to a
  third between otherwise equal processes. ``MALLOC_MMAP_THRESHOLD_`` and
  ``MALLOC_TRIM_THRESHOLD_`` keep such blocks in the heap for every candidate.
- Candidates are timed round by round: round ``r`` runs each candidate once, in
  an order rotated by ``r``, so slow drifts of machine load hit all of them
  alike. Warm-up rounds are discarded. We report each candidate's median
  time per call and, for ratios, the median of the per-round paired ratios.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
# Set by the re-exec so that a failed exec cannot loop.
_REEXEC_FLAG = "PUSHFORWARD_BENCH_REEXEC"


def setup(threads: int = 1) -> None:
    """Re-executes the script under ``MALLOC_ENV`` if needed, then pins threads and dtype.

    Falls back to a warning where the re-exec is impossible (already tried, or
    ``os.execve`` failed): timings are then less comparable between runs.
    """
    missing = {key: value for key, value in MALLOC_ENV.items() if os.environ.get(key) != value}
    if missing:
        if os.environ.get(_REEXEC_FLAG) != "1":
            env = {**os.environ, **MALLOC_ENV, _REEXEC_FLAG: "1"}
            try:
                sys.stdout.flush()
                sys.stderr.flush()
                os.execve(sys.executable, [sys.executable, *sys.argv], env)
            except OSError as error:
                print(
                    f"warning: could not re-exec with the malloc settings ({error})",
                    file=sys.stderr,
                )
        print(
            "warning: run with "
            + " ".join(f"{key}={value}" for key, value in MALLOC_ENV.items())
            + "; timings may be off by up to a third",
            file=sys.stderr,
        )
    torch.set_num_threads(threads)
    torch.set_default_dtype(torch.float32)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def command_line() -> str:
    """The command that reproduces this run, with the allocator settings spelled out."""
    env = " ".join(f"{key}={os.environ.get(key, '')}" for key in MALLOC_ENV)
    return f"{env} python {shlex.join(sys.argv)}"


def environment(libraries: Mapping[str, str]) -> dict[str, str]:
    """Versions, machine and command, to print above a table and store in the JSON."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(),
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical CPUs visible)",
        "threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **libraries,
    }


def print_environment(info: Mapping[str, str]) -> None:
    """Prints the environment as a Markdown bullet list."""
    for key, value in info.items():
        print(f"- {key}: `{value}`" if key == "command" else f"- {key}: {value}")
    print()


@dataclass
class Timing:
    """Seconds per call of one candidate, one entry per kept round."""

    name: str
    calls: int
    rounds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)


def _time(function: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def calls_for(function: Callable[[], object], target: float, maximum: int = 1000) -> int:
    """How many calls make one round of ``function`` last about ``target`` seconds."""
    function()  # first call: lazy initialisation, allocator growth
    once = _time(function, 1)
    if once >= target:
        return 1
    calls = max(1, min(maximum, int(target / once)))
    # A second estimate over several calls: the first call is often slower.
    each = _time(function, min(calls, 5))
    return max(1, min(maximum, int(target / max(each, 1e-9))))


def interleaved(
    candidates: Mapping[str, Callable[[], object]],
    rounds: int,
    warmup: int = 2,
    target: float = 0.03,
) -> dict[str, Timing]:
    """Times every candidate round by round in rotating order; returns the kept rounds.

    Args:
        candidates: name -> function taking no argument.
        rounds: rounds kept (after ``warmup`` discarded ones).
        warmup: rounds run first and thrown away.
        target: seconds one candidate should take per round; sets its call count.

    Returns:
        name -> :class:`Timing` with ``rounds`` seconds-per-call values.
    """
    names = list(candidates)
    timings = {name: Timing(name, calls_for(candidates[name], target)) for name in names}
    for index in range(warmup + rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = _time(candidates[name], timings[name].calls)
            if index >= warmup:
                timings[name].rounds.append(seconds)
    return timings


def paired_ratio(timings: Mapping[str, Timing], numerator: str, denominator: str) -> float:
    """Median over rounds of ``numerator[r] / denominator[r]``."""
    a, b = timings[numerator].rounds, timings[denominator].rounds
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    """A Markdown table; the first ``left`` columns left-aligned, the others right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        parts = [
            row[i].ljust(widths[i]) if i < left else row[i].rjust(widths[i])
            for i in range(len(row))
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ":" + "-" * (w + 1) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(list(map(str, headers))), rule, *(line(row) for row in cells)])


def write_json(path: str | None, payload: object) -> None:
    """Writes ``payload`` as indented JSON to ``path`` (nothing when ``path`` is None)."""
    if path:
        with open(path, "w") as handle:
            json.dump(payload, handle, indent=2)
        print(f"\nJSON written to {path}")


def cli(arguments: Sequence[str]) -> str:
    """Runs ``pushforward ARGUMENTS`` in process; returns its standard output."""
    import contextlib
    import io

    from pushforward.cli.main import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = main(list(arguments))
    if status != 0:
        raise RuntimeError(f"pushforward {' '.join(arguments)} exited with status {status}")
    return buffer.getvalue()


def mean_and_error(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (nan error for a single value, nan mean for none)."""
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, error


def cell(values: Sequence[float], digits: int = 3, scale: float = 1.0) -> str:
    """``mean ± se`` of ``values * scale`` (just the mean for one value, "nan" for none)."""
    mean, error = mean_and_error([v * scale for v in values])
    if math.isnan(mean):
        return "nan"
    if math.isnan(error):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {error:.{digits}f}"


def train_arguments(data: str, model: str, out: object, seed: int) -> list[str]:
    """``pushforward train``'s arguments for a quiet one-thread run of ``model`` on ``data``."""
    return [
        "train",
        "--threads",
        "1",
        "--quiet",
        "--data",
        data,
        "--model",
        model,
        "--out",
        str(out),
        "--seed",
        str(seed),
    ]
