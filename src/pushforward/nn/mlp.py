"""Multilayer perceptrons used as conditioners."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


# How a conditioner's output layer starts (see initialize_linear).
LAST_LAYER_INITS = ("zero", "random")


def activation(name: str) -> nn.Module:
    """An activation module by name; unknown names list the valid ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()


def initialize_linear(layer: nn.Linear, init: str) -> None:
    r"""Sets a linear layer's weights and bias to their starting values, in place.

    ``"zero"``: :math:`W = 0, b = 0`, so a conditioner's outputs start at zero and the
    transform it drives starts at the identity (as in Glow). ``"random"``: PyTorch's
    default, :math:`W_{ij}, b_i \sim U(-1/\sqrt{n}, 1/\sqrt{n})` with :math:`n` the
    input width (Kaiming-uniform with :math:`a = \sqrt 5`), as zuko leaves its layers.

    References:
        Kingma & Dhariwal (2018), Glow: Generative Flow with Invertible 1x1 Convolutions;
        He et al. (2015), Delving Deep into Rectifiers.

    Args:
        layer: the layer, weight ``(out, in)``.
        init: ``"zero"`` or ``"random"``.
    """
    if init not in LAST_LAYER_INITS:
        valid = ", ".join(map(repr, LAST_LAYER_INITS))
        raise ValueError(f"unknown last-layer initialisation {init!r}; valid: {valid}")
    if init == "zero":
        nn.init.zeros_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    else:
        layer.reset_parameters()


class MLP(nn.Sequential):
    """A fully connected network ``in_features -> hidden... -> out_features``.

    Args:
        in_features: input width.
        out_features: output width.
        hidden: widths of the hidden layers.
        activation: name of the nonlinearity between layers.
        zero_last: start the last layer at zero, so a conditioner built on it
            starts its transform at the identity (as in Glow).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation_name: str = "relu",
        zero_last: bool = True,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, int(size)), activation(activation_name)]
            width = int(size)
        last = nn.Linear(width, out_features)
        if zero_last:
            initialize_linear(last, "zero")
        layers.append(last)
        super().__init__(*layers)

    def initialize_last_layer(self, init: str) -> None:
        """Re-initialises the output layer, ``"zero"`` or ``"random"`` (see initialize_linear)."""
        initialize_linear(cast(nn.Linear, self[-1]), init)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x)
