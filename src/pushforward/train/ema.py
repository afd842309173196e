"""Exponential moving average of a model's weights (Polyak averaging)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from pushforward.nn.averaging import move_toward


class EMA:
    r"""Shadow copies of a module's floating weights, averaged exponentially over steps.

    After every optimiser step,

    .. math::
        \beta_n = \min\Bigl(\beta, \frac{1 + n}{10 + n}\Bigr), \qquad
        \bar\theta \leftarrow \beta_n \bar\theta + (1 - \beta_n)\,\theta,

    where ``n`` counts the updates so far. The warm-up of ``beta_n`` (as in
    TensorFlow's ``ExponentialMovingAverage(num_updates=...)``) keeps the
    average from clinging to the random initial weights on short runs; pass
    ``warmup=False`` for the plain recursion. Parameters and floating buffers
    are averaged; integer buffers (masks, orders) and the buffers a submodule
    names in a ``constant_buffers`` attribute (stored data) are not touched.

    The averaged weights are what evaluation and sampling should use; swap them
    in with :meth:`applied` (a context manager) or :meth:`copy_to`.

    References: Polyak & Juditsky (1992), Acceleration of Stochastic
    Approximation by Averaging; Ruppert (1988), Efficient Estimations from a
    Slowly Convergent Robbins-Monro Process.

    Args:
        module: the module to track; the shadow starts as a copy of its weights.
        decay: the decay ``beta`` in ``[0, 1)``.
        warmup: whether to use the ``(1 + n) / (10 + n)`` warm-up of the decay.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        self.shadow: dict[str, Tensor] = {
            name: tensor.detach().clone() for name, tensor in _floating_state(module).items()
        }

    def current_decay(self) -> float:
        """The decay ``beta_n`` the next update will use."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Moves the shadow towards ``module``'s current weights by one step."""
        state = _floating_state(module)
        move_toward(
            self.shadow.values(), (state[name] for name in self.shadow), 1.0 - self.current_decay()
        )
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrites ``module``'s floating weights with the averaged ones."""
        state = _floating_state(module)
        for name, shadow in self.shadow.items():
            state[name].copy_(shadow)

    @contextmanager
    def applied(self, module: nn.Module) -> Iterator[nn.Module]:
        """Context manager: ``module`` holds the averaged weights inside, its own after.

        Example::

            with ema.applied(model):
                samples = model.sample(1000)
        """
        state = _floating_state(module)
        saved = {name: state[name].detach().clone() for name in self.shadow}
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for name, tensor in saved.items():
                    state[name].copy_(tensor)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights by state-dict key (floating entries only)."""
        return dict(self.shadow)

    def module_state(self, module: nn.Module) -> dict[str, Tensor]:
        """``module``'s full state dict with the averaged weights in place of its own.

        This is a state dict any copy of ``module`` loads with ``strict=True``,
        so it is saved and loaded like ordinary weights.
        """
        state = {name: tensor.detach() for name, tensor in module.state_dict().items()}
        state.update(self.shadow)
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor], updates: int | None = None) -> None:
        """Loads averaged weights (extra non-floating keys are ignored)."""
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"the EMA weights lack {len(missing)} entries, e.g. {missing[0]!r}")
        for name, shadow in self.shadow.items():
            shadow.copy_(state[name])
        if updates is not None:
            self.updates = int(updates)


def _floating_state(module: nn.Module) -> dict[str, Tensor]:
    # keep_vars=True returns the live parameters and buffers, so in-place
    # copies reach the module itself. Buffers a module lists in
    # ``constant_buffers`` (data it stores, such as an empirical source's rows)
    # never change in training: averaging them is exact but costs a copy and a
    # pass over them every step.
    constant = {
        f"{prefix}.{name}" if prefix else name
        for prefix, sub in module.named_modules()
        for name in getattr(sub, "constant_buffers", ())
    }
    return {
        name: tensor
        for name, tensor in module.state_dict(keep_vars=True).items()
        if tensor.is_floating_point() and name not in constant
    }
