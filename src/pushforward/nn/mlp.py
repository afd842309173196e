"""Multilayer perceptrons used as conditioners."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    """An activation module by name; unknown names list the valid ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()


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
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x)
