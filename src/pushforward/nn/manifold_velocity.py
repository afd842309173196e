"""A velocity network on a manifold: features of a point in, a tangent vector out."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from pushforward.geometry import Manifold
from pushforward.nn.fourier import FourierFeatures
from pushforward.nn.velocity import VelocityMLP


class ManifoldVelocity(nn.Module):
    r"""A tangent vector field :math:`v_\theta(x, t, c) \in T_x M` from an MLP.

    .. math:: v_\theta(x, t, c) = V_{\hat x}\bigl(f_\theta(\phi(\hat x), t, c)\bigr),
              \qquad \hat x = \Pi(x),

    with :math:`\Pi` the manifold's projection (``x / |x|`` on a sphere),
    :math:`\phi` its features (coordinates; cosines and sines of torus angles; the
    rotation matrix of a quaternion) and :math:`V_{\hat x}` the map from the network's
    output to a tangent vector (the tangent projection; the body-frame angular
    velocity of a rotation). Because the field depends on ``x`` only through
    :math:`\hat x`, it is constant along the normal rays of a sphere, so the trace of
    its Jacobian in the ambient coordinates is its Riemannian divergence: the Euclidean
    likelihood machinery integrates the manifold's change of variables unchanged.

    References: Chen & Lipman (2024), Flow Matching on General Geometries;
    Mathieu & Nickel (2020), Riemannian Continuous Normalizing Flows.

    Args:
        manifold: where the field lives.
        context: context columns (with any presence flag).
        hidden, time_embedding, activation, residual, time_scale: the MLP's
            (:class:`~pushforward.nn.velocity.VelocityMLP`).
        fourier_features, fourier_scale: random Fourier features of :math:`\phi(\hat x)`
            (:class:`~pushforward.nn.fourier.FourierFeatures`; 0 frequencies: none) for
            sharply concentrated densities. They are functions of :math:`\hat x`, so the
            divergence argument above holds unchanged.

    Example:
        >>> import torch
        >>> from pushforward.geometry import Sphere
        >>> field = ManifoldVelocity(Sphere(2), hidden=(16, 16))
        >>> x = Sphere(2).random(4, dtype=torch.float32)
        >>> float((field(x, torch.zeros(4)) * x).sum(-1).abs().max()) < 1e-6  # tangent
        True
    """

    def __init__(
        self,
        manifold: Manifold,
        context: int = 0,
        hidden: Sequence[int] = (256, 256, 256),
        time_embedding: int = 32,
        activation: str = "silu",
        residual: bool = True,
        time_scale: float = 10.0,
        fourier_features: int = 0,
        fourier_scale: float = 4.0,
    ) -> None:
        super().__init__()
        self.manifold = manifold
        self.fourier = (
            FourierFeatures(manifold.feature_size, fourier_features, fourier_scale)
            if fourier_features
            else None
        )
        width = manifold.feature_size if self.fourier is None else self.fourier.out_features
        self.network = VelocityMLP(
            width,
            context=context,
            hidden=hidden,
            time_embedding=time_embedding,
            activation=activation,
            residual=residual,
            time_scale=time_scale,
            outputs=manifold.output_size,
        )

    def forward(self, x: Tensor, t: Tensor | float, context: Tensor | None = None) -> Tensor:
        """The tangent vector ``(batch, ambient)`` at ``x: (batch, ambient)``, times ``t``."""
        point = self.manifold.project(x)
        features = self.manifold.features(point)
        if self.fourier is not None:
            features = self.fourier(features)
        raw = self.network(features, t, context)
        return self.manifold.vector_field(point, raw)
