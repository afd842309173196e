"""Velocity networks of two times, the input of average-velocity and flow-map models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pushforward.nn.time_embedding import SinusoidalTimeEmbedding
from pushforward.nn.velocity import VelocityMLP, checked_context


class TwoTimeVelocityMLP(nn.Module):
    r"""A field :math:`f_\theta(x, t, s, c)` of a state and two times, on flattened events.

    Few-step generators condition on a second time: MeanFlow's average velocity
    :math:`u(z, r, t)` (with :math:`s = t - r`), a shortcut model's
    :math:`s(x_t, t, d)` (with the step size :math:`s = d`), a flow map
    :math:`X(x, t, s)` between two times. The network is a
    :class:`~pushforward.nn.velocity.VelocityMLP` whose conditioning vector gains a
    sinusoidal embedding of :math:`s`,

    .. math:: f_\theta(x, t, s, c) = \mathrm{VelocityMLP}\big(x,\ t,\
        [\,e_2(s) \,\Vert\, c\,]\big),

    so both times enter every residual block (or the first layer of the plain
    MLP). What :math:`s` means is the model's business; the network only needs
    :math:`s \in [0, 1]` for the embedding's frequencies to fit.

    Every output row depends only on the same row of the inputs, and the network
    is a smooth function of ``x``, ``t`` and ``s`` (for smooth activations), so
    ``torch.func.jvp`` through it gives the total time derivatives MeanFlow needs.

    References:
        Geng et al. (2025), Mean Flows for One-step Generative Modeling;
        Frans et al. (2025), One Step Diffusion via Shortcut Models;
        Sabour et al. (2025), Align Your Flow: Scaling Continuous-Time Flow Map
        Distillation.

    Args:
        features: size of one flattened event.
        context: context width (0 for unconditional).
        hidden: hidden widths (equal, one block each, with ``residual``).
        time_embedding: width of each of the two sinusoidal embeddings (at least 2).
        activation: name of the nonlinearity.
        residual: use the residual variant of :class:`VelocityMLP`.
        time_scale: the ``scale`` of both sinusoidal embeddings.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (256, 256, 256),
        time_embedding: int = 32,
        activation: str = "silu",
        residual: bool = False,
        *,
        time_scale: float = 10.0,
    ) -> None:
        super().__init__()
        if int(context) < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        if int(time_embedding) < 2:
            raise ValueError(f"time_embedding must be at least 2, got {time_embedding}")
        self.features = int(features)
        self.context = int(context)
        self.second_embedding = SinusoidalTimeEmbedding(int(time_embedding), scale=time_scale)
        self.inner = VelocityMLP(
            features,
            context=self.context + int(time_embedding),
            hidden=hidden,
            time_embedding=time_embedding,
            activation=activation,
            residual=residual,
            time_scale=time_scale,
        )

    def forward(
        self, x: Tensor, t: Tensor | float, s: Tensor | float, context: Tensor | None = None
    ) -> Tensor:
        """Evaluate the field.

        Args:
            x: ``(batch, *event)`` with ``prod(event) == features``.
            t: 0-dim or ``(batch,)`` first times.
            s: 0-dim or ``(batch,)`` second times.
            context: ``(batch, context)`` (or one row, broadcast), or None.

        Returns:
            ``(batch, *event)``.
        """
        return self.inner(x, t, self._conditioning(x, s, context))

    def velocity_and_divergence(
        self,
        x: Tensor,
        t: Tensor | float,
        s: Tensor | float,
        context: Tensor | None = None,
        *,
        chunk_size: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        r"""The field and its exact divergence in ``x``, :math:`\nabla_x \cdot f(x, t, s, c)`.

        Both times and the context only enter through the conditioning vector, which
        does not depend on ``x``, so this is the hand-pushed Jacobian trace of
        :meth:`VelocityMLP.velocity_and_divergence` with that vector as its context.

        Returns:
            ``(field: (batch, *event), divergence: (batch,))``.
        """
        return self.inner.velocity_and_divergence(
            x, t, self._conditioning(x, s, context), chunk_size=chunk_size
        )

    def _conditioning(self, x: Tensor, s: Tensor | float, context: Tensor | None) -> Tensor:
        batch = x.shape[0]
        if not isinstance(s, Tensor):
            s = torch.as_tensor(s, dtype=x.dtype, device=x.device)
        s = self.inner._check_time(s, batch).to(dtype=x.dtype, device=x.device)
        parts = [self.second_embedding(s).expand(batch, -1)]
        if self.context > 0:
            parts.append(checked_context(context, self.context, batch).to(x.dtype))
        elif context is not None:
            raise ValueError("a context was given, but the network was built with context=0")
        return torch.cat(parts, dim=-1)

    def extra_repr(self) -> str:
        return f"features={self.features}, context={self.context}"
