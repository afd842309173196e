"""The training engine: one loop for every model that speaks the protocol."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor

from pushforward.model import Model
from pushforward.sampling.objectives import Objective
from pushforward.train.batches import EpochBatches, Rows
from pushforward.train.callbacks import Callback
from pushforward.train.config import validation_split
from pushforward.train.distributed import loss_function, placement
from pushforward.train.ema import EMA
from pushforward.train.history import History
from pushforward.train.interrupts import stop_on_signals
from pushforward.train.loop import TrainingLoop, model_device, rng_devices
from pushforward.train.prepare import PrepareAhead, default_prepare_workers
from pushforward.train.progress import ProgressBar
from pushforward.train.schedule import warmup_cosine
from pushforward.train.target_fit import fit_target

Validation = (
    float | Tensor | tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, Tensor] | None
)


def fit(
    model: Model,
    data: Tensor | None = None,
    context: Tensor | None = None,
    *,
    target: Any = None,
    objective: str | Objective | None = None,
    objective_options: dict[str, Any] | None = None,
    beta: float = 1.0,
    anneal: int = 0,
    eval_samples: int = 0,
    source: Tensor | None = None,
    preprocessed: bool = False,
    steps: int = 2000,
    batch_size: int = 512,
    lr: float = 1e-3,
    optimizer: str = "adamw",
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    warmup: int = 100,
    final_lr: float = 0.0,
    clip: float | None = 5.0,
    ema: float | None = None,
    validation: Validation = None,
    eval_every: int = 100,
    patience: int | None = None,
    min_delta: float = 0.0,
    eval_batch_size: int | None = None,
    seed: int = 0,
    log_every: int = 100,
    max_skipped_in_a_row: int = 50,
    callbacks: Sequence[Callback] = (),
    quiet: bool = False,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    distributed: bool | None = None,
    handle_signals: bool = True,
    prepare_workers: int | None = None,
) -> History:
    r"""Trains ``model`` on minibatches of ``data`` by ``model.loss``, or on a ``target``.

    Adam or AdamW (Kingma & Ba, 2015; Loshchilov & Hutter, 2019) with learning
    rate ``lr * f(step)``, ``f`` a linear warm-up then cosine decay
    (:func:`warmup_cosine`), gradient-norm clipping at ``clip``, and weight
    decay on weight matrices only (parameters with two or more dimensions).
    Minibatches are epoch-wise permutations from a generator seeded with
    ``seed``; torch's global generator is forked and seeded with ``seed`` for
    the run (so stochastic losses are reproducible and the caller's generator is
    left untouched). Same seed, same initial weights: bitwise the same weights
    on CPU.

    **Weights after fit.** With validation, the model holds the weights of the
    best validation loss (the EMA weights at that step when EMA is on); else,
    with EMA, the EMA weights; else the last weights. ``history.weights`` says
    which, and ``history.last_weights`` keeps the raw last weights when they
    are not the ones returned.

    **Non-finite steps.** A step whose loss or gradient norm is NaN/Inf is
    skipped (no update), counted in ``history.skipped``; after
    ``max_skipped_in_a_row`` in a row a ``RuntimeError`` stops the run. Weights
    are checked before every checkpoint and a non-finite one is never written.

    **Checkpoints.** With ``checkpoint_dir``, a checkpoint (see
    :mod:`pushforward.train.checkpoint`) is written every ``checkpoint_every``
    steps and when the run ends or is stopped; ``resume=True`` continues from the
    latest one exactly (the same weights, bitwise, as an uninterrupted run), or
    starts afresh when there is none. SIGINT/SIGTERM received during ``fit``
    finish the current step, write a checkpoint, and raise ``KeyboardInterrupt``
    (exit status 130) or ``SystemExit(143)``; the previous handlers are restored.

    **Fixed pairs.** With ``source``, row ``i`` of ``source`` is the source point
    paired with row ``i`` of ``data`` (the end points of a teacher's ODE, say): the
    engine batches, shuffles, splits and validates the three aligned tensors
    together and hands each batch's pairs to the model's loss as they are, with no
    coupling drawn (reflow and distillation train this way). Only models that
    learn from pairs (``learns_from_pairs``: the flow-matching family, ``distilled``)
    take a ``source``.

    **A target instead of data.** With ``target`` (an unnormalized log-density: a
    :class:`~pushforward.sampling.Target`, or a callable of ``(batch, D)`` returning
    ``(batch,)``) and no ``data``, every step draws ``batch_size`` samples of the model
    and minimises ``objective`` (:mod:`pushforward.sampling.objectives`:
    ``"reverse-kl"`` by default, ``"path-gradient"``, ``"forward-kl"`` from the target's
    exact samples, ``"alpha"``) with ``objective_options``. The target is tempered,
    :math:`\tilde p^{\beta_k}`, with :math:`\beta_k` rising linearly from ``beta`` to 1
    over the first ``anneal`` steps. With ``eval_samples``, every ``eval_every`` steps
    that many samples (fixed noise) give the reverse ESS and :math:`\log \hat Z`, passed
    to callbacks as ``ess`` and ``log_z``; the validation loss is minus the ELBO. The
    model is returned with its EMA weights when ``ema`` is set, else the last ones.
    Checkpoints and exact resume work as with data.

    **Distributed.** Inside an initialised ``torch.distributed`` process group
    (e.g. under ``torchrun``) the model is wrapped in DistributedDataParallel;
    every rank draws the same global batch of ``batch_size`` examples and
    trains on its slice of ``batch_size / world_size``; only rank 0 writes
    checkpoints and shows progress.

    References: Kingma & Ba (2015), Adam: A Method for Stochastic Optimization;
    Loshchilov & Hutter (2019), Decoupled Weight Decay Regularization;
    Polyak & Juditsky (1992), Acceleration of Stochastic Approximation by Averaging;
    Prechelt (1998), Early Stopping - But When?

    Args:
        model: any pushforward model.
        data: ``(n, *event_shape)`` training data in the data's units; the model's
            preprocessing maps the whole set once (float64 data are mapped in
            float64, then cast to the model's dtype).
        context: ``(n, context)`` conditioning inputs, or ``None``.
        source: ``(n, *event_shape)`` source points aligned with ``data``, one per
            row, in the source's units (the model's ``transport`` input), or ``None``.
        preprocessed: ``data``, ``context`` and ``source`` (and explicit validation
            rows) are already in the model's units (pairs made by the model's own
            ODE): the preprocessing is not applied again.
        steps: optimisation steps in all (a resumed run counts those already done).
        batch_size: global minibatch size (capped at the training-set size).
        lr: peak learning rate.
        optimizer: ``"adamw"`` (decoupled weight decay) or ``"adam"`` (L2 penalty).
        betas: Adam's moment decays.
        weight_decay: weight decay of weight matrices.
        warmup: linear warm-up steps.
        final_lr: the learning-rate factor reached at the end of the cosine decay.
        clip: maximal gradient norm, or ``None`` for no clipping.
        ema: decay of the exponential moving average of weights, or ``None``.
        validation: a fraction of the rows held out (seeded split), explicit
            validation data ``(m, *event_shape)``, ``(data, context)``, or with
            ``source`` ``(data, context, source)``.
        eval_every: steps between validations (and one at the last step).
        patience: stop after this many validations without improvement by more
            than ``min_delta``; ``None`` never stops early.
        min_delta: the improvement that counts.
        eval_batch_size: chunk size of validation (default ``4 * batch_size``).
        seed: seed of the minibatch order, the validation split and the run's RNG.
        log_every: steps between entries of ``history.loss``.
        max_skipped_in_a_row: non-finite steps in a row that stop the run.
        callbacks: :class:`Callback` objects.
        quiet: no progress bar (it is also off when standard error is not a TTY).
        checkpoint_dir: where checkpoints go (``None`` for none).
        checkpoint_every: steps between checkpoints (default: only at the end).
        resume: continue from the latest checkpoint in ``checkpoint_dir``.
        distributed: ``None`` follows ``torch.distributed``; ``False`` trains alone.
        handle_signals: turn SIGINT/SIGTERM into checkpoint-and-exit.
        target: an unnormalized target to fit instead of ``data`` (see above).
        objective: the objective against ``target`` (a name or an
            :class:`~pushforward.sampling.objectives.Objective`).
        objective_options: the objective's options (``{"estimator": "drop-in"}``).
        beta: the initial inverse temperature of the target (with ``anneal``).
        anneal: steps over which the inverse temperature rises to 1.
        eval_samples: samples of each evaluation against the target (0: none).
        prepare_workers: threads that prepare coming batches for a model whose
            ``prepare_batch`` does work (an optimal-transport coupling); that many
            steps are prepared ahead. ``None``: the cores training leaves free
            (:func:`~pushforward.train.prepare.default_prepare_workers`). The
            result does not depend on it.

    Returns:
        The :class:`History` of the run (including the part before a resume).
    """
    where = placement(distributed)
    if target is not None:
        if data is not None or context is not None or source is not None:
            raise ValueError("fit takes data or a target, not both (target= with data=)")
        if validation is not None:
            raise ValueError(
                "validation rows do not apply to a target; use eval_samples for importance "
                "weights of the model's own samples"
            )
        return fit_target(
            model,
            target,
            objective,
            objective_options,
            optim=_optimizer(model, optimizer, lr, betas, weight_decay),
            where=where,
            optimizer=optimizer,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            warmup=warmup,
            final_lr=final_lr,
            clip=clip,
            ema=ema,
            beta=beta,
            anneal=anneal,
            eval_every=eval_every,
            eval_samples=eval_samples,
            seed=seed,
            log_every=log_every,
            max_skipped_in_a_row=max_skipped_in_a_row,
            callbacks=callbacks,
            quiet=quiet,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            resume=resume,
            handle_signals=handle_signals,
        )
    if data is None:
        raise ValueError("fit needs data (or a target= to fit instead)")
    if objective is not None or objective_options:
        raise ValueError("an objective applies to a target (target=), not to data")
    if source is not None and not model.learns_from_pairs:
        raise ValueError(
            f"{type(model).__name__} learns from data alone; source= (fixed pairs) needs "
            "a model trained on (source, data) pairs, such as fm or distilled"
        )
    training, held_out = _split(model, Rows(data, context, source), validation, seed, preprocessed)
    train_x = training.x
    global_batch = min(batch_size, train_x.shape[0])
    if global_batch % where.world_size:
        raise ValueError(
            f"batch_size {global_batch} is not divisible by the {where.world_size} processes"
        )
    if steps < 0 or eval_every < 1 or log_every < 1:
        raise ValueError("steps must be >= 0 and eval_every, log_every >= 1")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    options = {
        "seed": seed,
        "batch_size": global_batch,
        "optimizer": optimizer,
        "train_size": train_x.shape[0],
        "validation_size": 0 if held_out is None else held_out.x.shape[0],
        "steps": steps,
        "lr": lr,
        "warmup": warmup,
        "final_lr": final_lr,
        "ema": ema,
        "world_size": where.world_size,
    }
    optim = _optimizer(model, optimizer, lr, betas, weight_decay)
    # Under DDP, wrapping broadcasts rank 0's weights: the EMA must start after it.
    loss_of = loss_function(model, where)
    averager = None if ema is None else EMA(model, ema)
    batches = EpochBatches(train_x.shape[0], global_batch, seed)
    progress = ProgressBar(quiet=quiet or not where.writes)
    watchers = [progress, *callbacks]
    loop = TrainingLoop(model, optim, averager, batches, where, options, checkpoint_dir)
    device = model_device(model)
    devices = rng_devices(model)
    with torch.random.fork_rng(devices=devices), stop_on_signals(handle_signals) as request:
        torch.manual_seed(seed)
        if resume and checkpoint_dir is not None:
            loop.restore()
        local = global_batch // where.world_size
        start = time.perf_counter()
        seconds_before = loop.history.seconds
        for watcher in watchers:
            watcher.on_start(loop.step, steps)
        workers = default_prepare_workers(device) if prepare_workers is None else prepare_workers
        preparer = PrepareAhead(model, seed, where.rank, workers)

        def rows(index: Tensor) -> Rows:
            return training.take(index[where.rank * local : (where.rank + 1) * local])

        try:
            while loop.step < steps and not loop.history.stopped_early:
                chosen = rows(batches.next())
                batch, batch_context = chosen.x, chosen.context
                if loop.step == 0:
                    # Data-dependent layers (ActNorm) start from the first batch; on a
                    # resume their values come from the checkpoint instead.
                    model.initialize_preprocessed(batch, batch_context)
                # Fixed pairs go to the loss as they are; otherwise the model may
                # prepare the batch (draw and couple source points) ahead.
                prepared = chosen.pairs()
                if prepared is None:
                    prepared = preparer.current(loop.step, batch, batch_context)
                if preparer.enabled and training.source is None:
                    coming = range(loop.step + 1, min(loop.step + 1 + workers, steps))
                    if any(preparer.wants(step) for step in coming):
                        # Usually one step is new; only its rows are gathered.
                        for step, index in zip(coming, batches.upcoming(len(coming)), strict=True):
                            if preparer.wants(step):
                                coming_rows = rows(index)
                                preparer.ahead(step, coming_rows.x, coming_rows.context)
                lr_now = lr * warmup_cosine(loop.step, steps, warmup, final_lr)
                arguments = (
                    (batch, batch_context) if prepared is None else (batch, batch_context, prepared)
                )
                logs = loop.train_step(partial(loss_of, *arguments), lr_now, clip, request)
                step = loop.step
                if logs["skipped"] and loop.in_a_row >= max_skipped_in_a_row:
                    raise RuntimeError(
                        f"the loss or its gradient was NaN or Inf for {loop.in_a_row} steps in a "
                        f"row (up to step {step}); lower the learning rate (lr={lr}), "
                        "set clip, or check the data"
                    )
                stop = any([bool(w.on_step(step, logs)) for w in watchers])
                if held_out is not None and (step % eval_every == 0 or step == steps):
                    size = eval_batch_size or 4 * global_batch
                    eval_logs = loop.evaluate(held_out, size, seed, patience, min_delta)
                    stop = any([bool(w.on_eval(step, eval_logs)) for w in watchers]) or stop
                loop.history.seconds = seconds_before + time.perf_counter() - start
                loop.end_step(lr_now, stop, request, log_every, checkpoint_every)
                if stop:
                    break
            if loop.written != loop.step:
                loop.checkpoint()
        finally:
            preparer.close()
            progress.close()
    loop.finish()
    for watcher in watchers:
        watcher.on_end(loop.history)
    return loop.history


def _optimizer(
    model: Model, name: str, lr: float, betas: tuple[float, float], weight_decay: float
) -> torch.optim.Optimizer:
    # Decay weight matrices only: shifts, scales and norms are not penalised.
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas)
    raise ValueError(f"unknown optimizer {name!r}; use 'adam' or 'adamw'")


def preprocessed_rows(model: Model, rows: Rows, preprocessed: bool = False) -> Rows:
    """Checked rows of data, context and source in the model's units, once for the whole set.

    With a fitted preprocessing the data may come in float64 (the precision its
    statistics were fitted in): they are mapped in float64 and then cast to the
    model's dtype. Without one (or when the rows are ``preprocessed`` already),
    they must be in the model's dtype.
    """
    n = rows.x.shape[0] if isinstance(rows.x, Tensor) and rows.x.ndim else 0
    if rows.source is not None and (
        not isinstance(rows.source, Tensor) or rows.source.shape[:1] != (n,)
    ):
        got = tuple(rows.source.shape) if isinstance(rows.source, Tensor) else rows.source
        raise ValueError(f"source has shape {got}; it must have one row per data row ({n})")
    if preprocessed or model.preprocessing.identity:
        data = model.check_input(rows.x)
        source = None if rows.source is None else _checked_source(model, rows.source, True)
        return Rows(data, model.check_context(rows.context, n), source)
    if not model.preprocessing.deterministic:
        raise ValueError(
            "the model's preprocessing draws noise, so fit cannot map the data set once; "
            "this engine supports deterministic preprocessing only"
        )
    data = model.check_input(rows.x, match_dtype=False)
    context = model.check_context(rows.context, n, match_dtype=False)
    reference = model._reference()
    dtype = data.dtype if reference is None else reference.dtype
    encoded = model.preprocessing.encode(data)[0]
    if encoded.is_floating_point():  # tokens stay integers
        encoded = encoded.to(dtype)
    mapped = model.preprocessing.encode_context(context)
    source = None
    if rows.source is not None:
        source = model.preprocessing.encode_source(_checked_source(model, rows.source, False))
    return Rows(
        encoded,
        None if mapped is None else mapped.to(dtype),
        None if source is None else source.to(dtype),
    )


def _checked_source(model: Model, source: Tensor, match_dtype: bool) -> Tensor:
    try:
        return model.check_input(source, match_dtype=match_dtype)
    except (TypeError, ValueError) as error:
        raise type(error)(f"source points: {error}") from None


def _split(
    model: Model, rows: Rows, validation: Validation, seed: int, preprocessed: bool
) -> tuple[Rows, Rows | None]:
    """Checks and preprocesses the inputs; returns the training and validation rows."""
    if not isinstance(rows.x, Tensor) or rows.x.ndim == 0 or rows.x.shape[0] == 0:
        raise ValueError("the training data is empty")
    rows = preprocessed_rows(model, rows, preprocessed)
    if validation is None:
        return rows, None
    if isinstance(validation, float):
        if not 0.0 < validation < 1.0:
            raise ValueError(f"the validation fraction must be in (0, 1), got {validation}")
        train, val = validation_split(rows.x.shape[0], validation, seed, minimum_rows=2)
        if val is None:
            raise ValueError(f"validation={validation} leaves no training data")
        return rows.take(train), rows.take(val)
    if isinstance(validation, tuple):
        held = Rows(
            validation[0],
            validation[1] if len(validation) > 1 else None,
            validation[2] if len(validation) > 2 else None,
        )
    else:
        held = Rows(validation)
    if held.x.shape[0] == 0:
        raise ValueError("the validation data is empty")
    if held.context is not None and held.context.shape[0] != held.x.shape[0]:
        raise ValueError(
            f"validation context has {held.context.shape[0]} rows but there are "
            f"{held.x.shape[0]} validation rows"
        )
    if (held.source is None) != (rows.source is None):
        raise ValueError(
            "with source= the validation rows need their source points too, "
            "(data, context, source); without it they take none"
            if rows.source is not None
            else "validation rows have source points but the training data has no source="
        )
    return rows, preprocessed_rows(model, held, preprocessed)
