"""``pushforward reflow`` and ``pushforward distill``: new runs from a trained ``fm`` run.

Both read a flow-matching run, draw source points and solve its ODE for their ends
(the coupling the model induces), and train a new model on those pairs through the
training engine: ``reflow`` an ``fm`` model (the next rectified flow), ``distill``
a one-step ``distilled`` model. The new run directory is a normal one: the parent's
data and standardisation records (so the model is in the data's original units),
``metrics.jsonl``, checkpoints, the model, a ``lineage`` entry in ``config.json``
saying where the pairs came from, and ``pairs.safetensors``: the pairs trained on,
so that ``--resume`` continues an interrupted run without solving the ODE again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor

from pushforward.cli.evaluate import open_run
from pushforward.cli.train import parse_set_items
from pushforward.data import load_array
from pushforward.matching.couplings import PairedBatch
from pushforward.matching.model import SOLVERS, FlowMatching
from pushforward.model import Model
from pushforward.ode import FIXED_STEP_METHODS
from pushforward.options import choice, closest
from pushforward.recipes.distill import student_for
from pushforward.recipes.pairs import INITIALIZATIONS, fit_pairs, reflow_pairs
from pushforward.recipes.reflow import rectified_model
from pushforward.serialization import atomic_write_bytes, save
from pushforward.train.config import TrainingConfig
from pushforward.train.run_directory import (
    CHECKPOINTS,
    CONFIG_FILE,
    METRICS_FILE,
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    MetricsLog,
    package_version,
    read_config,
    write_config,
)

PAIRS_DEFAULT = 20_000
"""Pairs drawn by default: 2000 steps of 512 see each about 50 times."""

FIXED_SOLVER_STEPS = 100
"""Steps of a fixed-step pair solver when ``--solver-steps`` is not given."""

PAIR_TOLERANCE = 1e-6
"""Default ``atol`` and ``rtol`` of an adaptive pair solver (tighter than sampling's)."""

REFLOW_TRAIN: dict[str, Any] = {"lr": 1e-3}
"""Training defaults of ``reflow`` and ``distill`` over ``pushforward train``'s: a
model that starts from its parent's weights is fine-tuned, at a lower peak rate
than ``fm``'s 5e-3 from scratch."""

IGNORED_TRAIN = ("n",)
"""``pushforward train`` options that mean nothing here (the pairs are drawn, not read)."""

PAIRS_FILE = "pairs.safetensors"
"""The pairs a run trains on, standardised, as drawn: tensors ``x0``, ``x1`` and
``context`` (conditional runs); ``--resume`` reads them instead of drawing again."""

PAIR_SETTINGS = {
    "pairs": "--pairs",
    "solver": "--solver, --solver-steps, --atol and --rtol",
    "init": "--set init",
    "guidance": "--guidance",
    "context": "--context",
}
"""Lineage entries that fix the pairs or the starting weights, and the options that set
them: a resumed run must repeat them."""


def run_reflow(arguments: argparse.Namespace) -> int:
    """``pushforward reflow RUN_DIR --out NEW_RUN``: the next rectified flow."""
    return _run(arguments, "reflow")


def run_distill(arguments: argparse.Namespace) -> int:
    """``pushforward distill RUN_DIR --out NEW_RUN``: a one-step model."""
    return _run(arguments, "distill")


def resolve_options(
    arguments: argparse.Namespace, parent_seed: int
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The new model's options, the training options and ``init``, from defaults <
    ``--set`` < flags.

    ``--set`` keys that are training options (``ema``, ``warmup``, ``validation``,
    ...) go to training, ``init`` chooses the initial weights (``parent`` or
    ``fresh``), and any other key is a model option; ``model.KEY`` forces a model
    option where the name is also a training one (``model.steps``).
    """
    # A fixed budget: the pairs' regression has no convergence default (yet).
    fixed = TrainingConfig(steps=TrainingConfig.default_steps).as_dict()
    train = {k: v for k, v in fixed.items() if k not in ("max_steps", "default_steps")}
    for key in IGNORED_TRAIN:
        train.pop(key, None)
    train.update(REFLOW_TRAIN)
    train["seed"] = parent_seed
    model_options: dict[str, Any] = {}
    init = "parent"
    for key, value in parse_set_items(arguments.set or []):
        if key.startswith("model."):
            model_options[key.removeprefix("model.")] = value
        elif key.startswith("train.") or key in train:
            name = key.removeprefix("train.")
            if name not in train:
                raise ValueError(
                    f"unknown training option {name!r}{closest(name, list(train))}; "
                    f"valid: {', '.join(train)}"
                )
            train[name] = value
        elif key == "init":
            init = choice("init", value, INITIALIZATIONS)
        elif key in IGNORED_TRAIN:
            raise ValueError(f"option {key!r} does not apply: the pairs are drawn with --pairs")
        else:
            model_options[key] = value
    for key in ("steps", "batch_size", "lr", "seed"):
        value = getattr(arguments, key, None)
        if value is not None:
            train[key] = value
    return model_options, train, init


def _parent(run: str) -> tuple[dict[str, Any], FlowMatching, FlowMatching]:
    config, model = open_run(run)
    name = config["model"]["name"]
    if name != "fm":
        raise ValueError(
            f"'{run}' holds a {name!r} model; reflow and distill need a flow-matching "
            "run (trained with --model fm, or made by pushforward reflow)"
        )
    if not isinstance(model, FlowMatching):
        raise ValueError(f"'{run}' does not hold a flow-matching model")
    return config, model, model


def _check_out(out: Path) -> None:
    if not out.exists():
        return
    made = None
    if (out / CONFIG_FILE).is_file():
        try:
            made = _made_by(read_config(out))
        except (ValueError, OSError):
            made = None
    if made in ("reflow", "distill"):
        raise ValueError(
            f"--out '{out}' already exists and holds a {made} run; pass --resume to "
            "continue it, or choose a new run directory"
        )
    raise ValueError(
        f"--out '{out}' already exists; choose a new run directory "
        "(reflow and distill start a new run unless --resume continues one)"
    )


def _made_by(config: dict[str, Any]) -> str | None:
    lineage = config.get("lineage")
    return lineage.get("method") if isinstance(lineage, dict) else None


def _previous_run(out: Path, method: str) -> dict[str, Any]:
    """The configuration of the run ``--resume`` continues, checked to be one of ``method``."""
    if not (out / CONFIG_FILE).is_file():
        where = "does not exist" if not out.exists() else f"holds no run (no {CONFIG_FILE})"
        raise ValueError(
            f"nothing to resume in '{out}': it {where}; run without --resume to start a new run"
        )
    previous = read_config(out)
    made = _made_by(previous)
    if made != method:
        what = "pushforward train" if made is None else f"pushforward {made}"
        raise ValueError(
            f"cannot resume '{out}': it holds a run made by {what}, not by pushforward {method}"
        )
    return previous


def _check_resumable(
    out: Path, previous: dict[str, Any], record: dict[str, Any], seed: int
) -> None:
    """Refuses to resume a run whose parent, model or pairs differ from this command's."""
    before, now = previous["lineage"], record["lineage"]
    if before.get("parent") != now["parent"]:
        raise ValueError(
            f"cannot resume '{out}': it was made from the run '{before.get('parent')}', "
            f"not '{now['parent']}'"
        )
    for key in ("data", "standardization", "source"):
        if previous.get(key) != record.get(key):
            raise ValueError(
                f"cannot resume '{out}': its parent run '{now['parent']}' has changed since "
                f"(its {key} differs); start a new run"
            )
    model = _as_json(record["model"])
    if previous["model"] != model:
        raise ValueError(
            f"cannot resume '{out}': it holds model {previous['model']['name']!r} with "
            f"options {previous['model']['options']}, not {model['name']!r} with "
            f"{model['options']}"
        )
    for key, flags in PAIR_SETTINGS.items():
        if before.get(key) != _as_json(now.get(key)):
            raise ValueError(
                f"cannot resume '{out}': its pairs were made with {key} {before.get(key)!r}, "
                f"not {now.get(key)!r} (repeat its {flags})"
            )
    if int(previous["train"]["seed"]) != seed:
        raise ValueError(
            f"cannot resume '{out}': its pairs were drawn with --seed "
            f"{previous['train']['seed']}, not {seed}"
        )


def _as_json(value: Any) -> Any:
    # What config.json gives back: tuples become lists.
    return json.loads(json.dumps(value))


def _pairs_bytes(pairs: PairedBatch) -> bytes:
    tensors = {"x0": pairs.x0.contiguous(), "x1": pairs.x1.contiguous()}
    if pairs.context is not None:
        tensors["context"] = pairs.context.contiguous()
    return safetensors_save(tensors)


def _read_pairs(out: Path, lineage: dict[str, Any], student: Model) -> PairedBatch:
    """The pairs saved in ``out``, checked against the run's record and the model."""
    path = out / PAIRS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"cannot resume '{out}': {PAIRS_FILE} is missing (the run stopped before its "
            "pairs were saved); start a new run without --resume"
        )
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != lineage.get("pairs_sha256"):
        raise ValueError(
            f"cannot resume '{out}': {path} is damaged (its SHA-256 differs from the one "
            f"in {CONFIG_FILE}); start a new run without --resume"
        )
    try:
        tensors = safetensors_load(data)
    except SafetensorError as error:
        raise ValueError(f"{path} is not a valid safetensors file ({error})") from None
    conditional = bool(student.context_features)
    names = {"x0", "x1", "context"} if conditional else {"x0", "x1"}
    if set(tensors) != names:
        raise ValueError(f"{path} holds tensors {sorted(tensors)}, expected {sorted(names)}")
    n = int(lineage["pairs"])
    expected = {"x0": (n, *student.event_shape), "x1": (n, *student.event_shape)}
    if conditional:
        expected["context"] = (n, int(student.context_features))
    dtype = next(iter(student.parameters())).dtype
    for name, shape in expected.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise ValueError(
                f"{path}: {name} is {tensor.dtype} of shape {tuple(tensor.shape)}, expected "
                f"{dtype} of shape {shape} ({n} pairs of the model's events)"
            )
    return PairedBatch(tensors["x0"], tensors["x1"], tensors.get("context"))


def _pair_context(
    arguments: argparse.Namespace,
    config: dict[str, Any],
    wrapper: Model,
    n: int,
    generator: torch.Generator,
) -> Tensor | None:
    """Standardised context rows for ``n`` pairs, drawn with replacement from the
    context file (``--context``, or the parent's)."""
    if not wrapper.context_features:
        return None
    path = arguments.context or config["data"].get("context")
    if path is None:
        raise ValueError("the parent run is conditional; pass --context FILE")
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"the parent's context file '{path}' does not exist; pass --context FILE"
        )
    values = load_array(path, ndim=2)
    if arguments.context is None:
        values = values[: int(config["data"]["rows"])]
    if values.shape[1] != wrapper.context_features:
        raise ValueError(
            f"context file '{path}' has {values.shape[1]} columns, "
            f"the parent run was trained with {wrapper.context_features}"
        )
    dtype = next(iter(wrapper.parameters())).dtype
    rows = torch.randint(0, values.shape[0], (n,), generator=generator)
    context = torch.from_numpy(values.copy()).to(dtype)[rows]
    return wrapper.preprocessing.encode_context(context)


def _split(
    pairs: PairedBatch, fraction: float, seed: int
) -> tuple[PairedBatch, PairedBatch | None]:
    if not fraction:
        return pairs, None
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"validation must be a fraction in (0, 1), got {fraction}")
    n = pairs.x0.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    held = max(1, round(float(fraction) * n))

    def take(rows: Tensor) -> PairedBatch:
        return PairedBatch(
            pairs.x0[rows], pairs.x1[rows], None if pairs.context is None else pairs.context[rows]
        )

    return take(order[held:]), take(order[:held])


def _solver(arguments: argparse.Namespace) -> dict[str, Any]:
    method = choice("solver", arguments.solver or "dopri5", SOLVERS)
    if method in FIXED_STEP_METHODS:
        if arguments.atol is not None or arguments.rtol is not None:
            raise ValueError(f"--atol/--rtol apply to adaptive solvers, not {method!r}")
        steps = FIXED_SOLVER_STEPS if arguments.solver_steps is None else arguments.solver_steps
        if steps < 1:
            raise ValueError(f"--solver-steps must be positive, got {steps}")
        return {"method": method, "steps": int(steps)}
    if arguments.solver_steps is not None:
        raise ValueError(f"--solver-steps applies to fixed-step solvers, not {method!r}")
    tolerances = {}
    for key in ("atol", "rtol"):
        value = getattr(arguments, key)
        value = PAIR_TOLERANCE if value is None else float(value)
        if not value > 0:
            raise ValueError(f"--{key} must be positive, got {value}")
        tolerances[key] = value
    return {"method": method, **tolerances}


def _run(arguments: argparse.Namespace, method: str) -> int:
    out = Path(arguments.out)
    resume = bool(getattr(arguments, "resume", False))
    previous = _previous_run(out, method) if resume else None
    if previous is None:
        _check_out(out)
    config, teacher, wrapper = _parent(arguments.run)
    if not wrapper.context_features and arguments.context is not None:
        raise ValueError("the parent run is unconditional; do not pass --context")
    model_options, train, init = resolve_options(
        arguments, int(config.get("train", {}).get("seed", 0))
    )
    solver = _solver(arguments)
    guidance = getattr(arguments, "guidance", None)
    n = PAIRS_DEFAULT if arguments.pairs is None else int(arguments.pairs)
    batch = int(train["batch_size"])
    if batch < 1:
        raise ValueError(f"--batch-size must be positive, got {batch}")
    if n < 1:
        raise ValueError(f"--pairs must be positive, got {n}")
    held = round(float(train["validation"] or 0) * n)
    if n - held < batch:
        reason = f" ({held} held out for validation)" if held else ""
        raise ValueError(
            f"--pairs {n} leaves {n - held} training pairs{reason}, fewer than the batch "
            f"size {batch}; draw more pairs or pass a smaller --batch-size"
        )
    seed = int(train["seed"])
    # Build the new model before the expensive solve, so bad options fail at once.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if method == "reflow":
            student: Model = rectified_model(teacher, init=init, **model_options)
        else:
            student = student_for(teacher, init=init, **model_options)

    parent_lineage = config.get("lineage")
    parent_k = int(parent_lineage.get("k", 1)) if isinstance(parent_lineage, dict) else 1
    lineage: dict[str, Any] = {
        "method": method,
        "parent": str(Path(arguments.run).resolve()),
        "parent_model": config["model"]["name"],
        "pairs": n,
        "validation_pairs": 0,
        "solver": solver,
        "pair_seconds": 0.0,
        "init": init,
        "parent_lineage": parent_lineage,
    }
    if wrapper.context_features:
        # None: rows of the parent's own context file.
        lineage["context"] = arguments.context
    if method == "reflow":
        lineage["k"] = parent_k + 1
    else:
        lineage["teacher_k"] = parent_k
        if guidance is not None:
            lineage["guidance"] = float(guidance)
    record = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "pushforward_version": package_version(),
        "model": {"name": student.config["model"], "options": student.config["options"]},
        "data": config["data"],
        "standardization": config["standardization"],
        "train": train,
        "lineage": lineage,
    }
    if "source" in config:
        # A flow between two data sets: the new model keeps the parent's source.
        record["source"] = config["source"]

    pair_bytes = None
    if previous is not None:
        _check_resumable(out, previous, record, seed)
        pairs = _read_pairs(out, previous["lineage"], student)
        pair_seconds = float(previous["lineage"].get("pair_seconds", 0.0))
        lineage["pairs_sha256"] = previous["lineage"]["pairs_sha256"]
    else:
        generator = torch.Generator().manual_seed(seed)
        context = _pair_context(arguments, config, wrapper, n, generator)
        start = time.perf_counter()
        pairs = reflow_pairs(
            teacher,
            n,
            context,
            solver=solver["method"],
            steps=solver.get("steps"),
            atol=solver.get("atol", PAIR_TOLERANCE),
            rtol=solver.get("rtol", PAIR_TOLERANCE),
            guidance=1.0 if guidance is None else float(guidance),
            generator=generator,
        )
        pair_seconds = time.perf_counter() - start
        pair_bytes = _pairs_bytes(pairs)
        lineage["pairs_sha256"] = hashlib.sha256(pair_bytes).hexdigest()
    # Seeded: a resumed run holds out the same pairs as the first start.
    training_pairs, validation = _split(pairs, train["validation"], seed)
    lineage["validation_pairs"] = 0 if validation is None else int(validation.x0.shape[0])
    lineage["pair_seconds"] = round(pair_seconds, 3)

    out.mkdir(parents=True, exist_ok=previous is not None)
    write_config(out, record)
    if pair_bytes is not None:
        atomic_write_bytes(out / PAIRS_FILE, pair_bytes)
    metrics = MetricsLog(
        out / METRICS_FILE, train["log_every"], None if validation is None else train["eval_every"]
    )
    history = fit_pairs(
        student,
        training_pairs,
        validation,
        steps=train["steps"],
        batch_size=batch,
        lr=train["lr"],
        warmup=min(train["warmup"], max(train["steps"] // 10, 1)),
        clip=train["clip"],
        weight_decay=train["weight_decay"],
        ema=train["ema"],
        eval_every=train["eval_every"],
        patience=train["patience"],
        seed=seed,
        log_every=train["log_every"],
        callbacks=[metrics],
        quiet=arguments.quiet,
        checkpoint_dir=out / CHECKPOINTS,
        checkpoint_every=train["checkpoint_every"],
        resume=previous is not None,
    )
    # The student took the parent's preprocessing when it was made from it.
    save(student, out)
    if not arguments.quiet:
        last = history.loss[-1] if history.loss else float("nan")
        what = f"{lineage['k']}-rectified fm" if method == "reflow" else "one-step distilled"
        drawn = "saved" if previous is not None else f"{pair_seconds:.1f} s to draw"
        print(
            f"trained a {what} model on {n} pairs ({drawn}) for "
            f"{history.steps_done} steps (loss {last:.4f}); run in {out}"
        )
    return 0
