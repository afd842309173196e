"""The training configuration of a run: the one source of its defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import tomllib
import torch
from torch import Tensor

from pushforward.options import closest, positive_int
from pushforward.registry import train_defaults

CONVERGENCE_PATIENCE = 10
"""Validations without improvement that end a run trained to convergence (the
default of ``convergence_patience``; a model may register its own)."""
DEFAULT_EVAL_EVERY = 100
"""Steps between validations when ``eval_every`` is not set (but see
:meth:`TrainingConfig.validation_every` for conditional runs)."""


@dataclass
class TrainingConfig:
    """How a run trains: the ``[train]`` table of a config file, ``--set`` and the flags.

    ``steps=None`` (the default) trains to convergence: until the validation
    loss has not improved for ``patience`` validations (``convergence_patience``
    when ``patience`` is not set; ``patience`` also stops a fixed budget early, which
    ``convergence_patience`` never does), at most ``max_steps`` steps, and the best
    weights are restored; the learning rate warms up and decays over
    ``max_steps``. A number of ``steps`` is a fixed budget, as is any run
    without validation rows (``default_steps`` then). A run fitted to a target
    (``pushforward train --target``) has no validation rows: it trains for ``steps``
    (else ``default_steps``) with ``objective`` (``reverse-kl`` when not set) and its
    ``objective_options``, tempers the target from inverse temperature ``beta`` to 1
    over ``anneal`` steps, evaluates importance weights of ``eval_samples`` samples
    every ``eval_every`` steps and trains in ``dtype`` (``"float32"`` or
    ``"float64"``); those options are refused for runs on data. A model may declare its
    own defaults at registration (``register("fm", train={"lr": 5e-3})``);
    they come between these and a config file.

    Example:
        >>> config = TrainingConfig.resolve("nsf", overrides={"steps": 300})
        >>> config.steps, config.lr, config.ema
        (300, 0.001, 0.999)
    """

    steps: int | None = None
    max_steps: int = 20_000
    default_steps: int = 2000
    batch_size: int = 512
    lr: float = 1e-3
    seed: int = 0
    n: int | None = None
    validation: float = 0.1
    ema: float | None = 0.999
    warmup: int = 100
    clip: float | None = 5.0
    weight_decay: float = 0.0
    log_every: int = 100
    eval_every: int | None = None
    checkpoint_every: int = 500
    patience: int | None = None
    convergence_patience: int = CONVERGENCE_PATIENCE
    prepare_workers: int | None = None
    # Runs fitted to a target (--target) instead of data:
    objective: str | None = None
    objective_options: dict[str, Any] | None = None
    beta: float = 1.0
    anneal: int = 0
    eval_samples: int = 2000
    dtype: str = "float32"

    TARGET_ONLY: ClassVar[tuple[str, ...]] = (
        "objective",
        "objective_options",
        "beta",
        "anneal",
        "eval_samples",
        "dtype",
    )

    @classmethod
    def names(cls) -> list[str]:
        """The option names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def resolve(
        cls,
        model: str,
        table: dict[str, Any] | None = None,
        overrides: dict[str, Any] | None = None,
        where: str = "training",
    ) -> TrainingConfig:
        """Defaults < the model's registered defaults < ``table`` < ``overrides`` (not ``None``).

        Raises:
            ValueError: an unknown option, named with the closest valid ones.
        """
        merged: dict[str, Any] = train_defaults(model)
        for source in (table or {}, {k: v for k, v in (overrides or {}).items() if v is not None}):
            valid = cls.names()
            for key in source:
                if key not in valid:
                    raise ValueError(
                        f"unknown {where} option {key!r}{closest(key, valid)}; "
                        f"valid: {', '.join(valid)}"
                    )
            merged.update(source)
        return cls(**merged)

    @classmethod
    def from_toml(cls, path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ``[model]`` and ``[train]`` tables of a config file (empty without one)."""
        if path is None:
            return {}, {}
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"config file '{file}' does not exist")
        try:
            config = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"config file '{file}' is not valid TOML ({error})") from None
        unknown = sorted(set(config) - {"model", "train"})
        if unknown:
            raise ValueError(
                f"config file '{file}' has unknown table(s) {', '.join(map(repr, unknown))}; "
                "use [model] and [train]"
            )
        for table in ("model", "train"):
            if not isinstance(config.get(table, {}), dict):
                raise ValueError(f"config file '{file}': {table!r} must be a table")
        valid = cls.names()
        for key in config.get("train", {}):
            if key not in valid:
                raise ValueError(
                    f"config file '{file}': unknown [train] option {key!r}{closest(key, valid)}; "
                    f"valid: {', '.join(valid)}"
                )
        return dict(config.get("model", {})), dict(config.get("train", {}))

    @property
    def converges(self) -> bool:
        """True when the run trains to convergence (no fixed ``steps``)."""
        return self.steps is None

    def budget(self, has_validation: bool) -> tuple[int, int | None]:
        """The step budget and the patience ``fit`` runs with."""
        if self.steps is not None:
            return self.steps, self.patience
        if not has_validation:
            return self.default_steps, self.patience
        if self.patience is not None:
            return self.max_steps, self.patience
        return self.max_steps, positive_int("convergence_patience", self.convergence_patience)

    def validation_every(self, train_rows: int, conditional: bool) -> int:
        """Steps between validations: ``eval_every`` where it is set.

        Otherwise :data:`DEFAULT_EVAL_EVERY`, except for a conditional run (a posterior
        estimator) trained to convergence, which validates about every five epochs,
        ``clamp(round(5 * train_rows / batch_size), 10, 100)`` steps: with 1,000
        simulations an epoch is two steps, and validating every 100 steps (about 55
        epochs) stopped too late, at a worse model (0.04 to 0.33 nats of test NLL on
        the sbibm tasks, ``bench/sbi_defaults.py``); from about 10,000 simulations the
        two rules nearly agree.
        """
        if self.eval_every is not None:
            return self.eval_every
        if conditional and self.converges:
            epoch = train_rows / self.batch_size
            return int(min(DEFAULT_EVAL_EVERY, max(10, round(5 * epoch))))
        return DEFAULT_EVAL_EVERY

    def target_options_set(self) -> list[str]:
        """The target-only options set to other than their defaults (refused on data)."""
        defaults = type(self)()
        return [name for name in self.TARGET_ONLY if getattr(self, name) != getattr(defaults, name)]

    def as_dict(self) -> dict[str, Any]:
        """The resolved options, for ``config.json``."""
        return dataclasses.asdict(self)


def validation_split(
    n: int, fraction: float, seed: int, minimum_rows: int = 10
) -> tuple[Tensor, Tensor | None]:
    """Seeded training and validation row indices (no validation below ``minimum_rows``).

    The permutation comes from a generator seeded with ``seed + 1``; the first
    ``max(1, round(fraction * n))`` rows of it are held out.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    if not fraction or n < minimum_rows:
        return order, None
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation must be a fraction in (0, 1), got {fraction}")
    held = max(1, round(fraction * n))
    if held >= n:
        raise ValueError(f"validation={fraction} leaves no training data")
    return order[held:], order[:held]
