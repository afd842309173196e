r"""Discrete flows of points on a compact manifold: the torus and the sphere :math:`S^2`.

Both push the manifold's uniform distribution forward through diffeomorphisms of the
manifold, so their densities are exact and are with respect to its Riemannian volume
(Lebesgue measure on :math:`[-\pi, \pi)^d`, the surface area on :math:`S^2`).

References:
    Rezende et al. (2020), Normalizing Flows on Tori and Spheres.
"""

from __future__ import annotations

from torch import Tensor

from pushforward.distributions.manifold import ManifoldUniform
from pushforward.flows.flow import Flow
from pushforward.geometry import Manifold, Sphere, cylinder_to_sphere, sphere_to_cylinder
from pushforward.inference import NoOptions
from pushforward.transforms.base import Transform


class ManifoldFlow(Flow):
    r"""A flow on a compact manifold: the uniform distribution pushed through a
    diffeomorphism of the manifold, in its own coordinates,

    .. math:: \log p(x) = -\log\operatorname{vol}(M) + \log |\det \partial f(x) / \partial x|,

    with ``transform`` (data to base) mapping points of the manifold to points of it
    (angles of :math:`T^d` to angles, for
    :func:`~pushforward.flows.circular.circular_nsf`). Data are checked as points of the
    manifold at the boundary (:meth:`check_points`), and are never standardised.

    References:
        Rezende et al. (2020), Normalizing Flows on Tori and Spheres.

    Args:
        transform: the diffeomorphism, data to base.
        manifold: the manifold of the points (compact).
        context_features: size of the context vector (0 for unconditional).
        normalize: accept sphere rows that are not unit vectors and take their directions,
            instead of refusing them.

    Example:
        >>> import torch
        >>> from pushforward.geometry import FlatTorus
        >>> from pushforward.transforms.base import Compose
        >>> from pushforward.transforms.circular import CircularCoupling
        >>> from pushforward.transforms.maps import CircularRationalQuadraticSplineMap
        >>> layer = CircularCoupling(2, CircularRationalQuadraticSplineMap(4), [True, False])
        >>> flow = ManifoldFlow(Compose([layer]), FlatTorus(2))
        >>> flow.check_points(torch.tensor([[4.0, -7.0]]))  # angles are wrapped
        tensor([[-2.2832, -0.7168]])
    """

    def __init__(
        self,
        transform: Transform,
        manifold: Manifold,
        context_features: int = 0,
        normalize: bool = False,
    ) -> None:
        if not manifold.compact:
            raise ValueError(f"a flow on a manifold needs a compact one, got {manifold.spec()}")
        super().__init__(transform, ManifoldUniform(manifold), context_features)
        self._manifold = manifold
        self.normalize = bool(normalize)

    @property
    def manifold(self) -> Manifold:
        """The manifold the model's points live on."""
        return self._manifold

    def check_points(self, x: Tensor, normalize: bool | None = None) -> Tensor:
        """Rows ``x: (n, ambient)`` checked to be points of the manifold, canonicalised
        (torus angles wrapped into :math:`[-\\pi, \\pi)`; sphere rows normalised when
        ``normalize``, by default the model's own option).

        Raises:
            ValueError: a wrong column count, a NaN, or a row off the manifold, naming the
                first bad row.
        """
        return self.manifold.check(x, normalize=self.normalize if normalize is None else normalize)

    def check_input(self, x: Tensor, match_dtype: bool = True) -> Tensor:
        return self.check_points(super().check_input(x, match_dtype))


class CylindricalSphereFlow(ManifoldFlow):
    r"""A flow on :math:`S^2` through its cylindrical coordinates (Rezende et al. 2020).

    The sphere minus its poles is the cylinder :math:`(-1, 1) \times S^1` by
    :math:`x \mapsto (z, \phi) = (x_3, \operatorname{atan2}(x_2, x_1))`
    (:func:`~pushforward.geometry.sphere_to_cylinder`), and the area element is
    :math:`dA = dz\,d\phi`: the map preserves area. ``transform`` is a diffeomorphism of
    the cylinder, acting on ``(batch, 2)`` rows :math:`(z, \phi)` (for
    :func:`~pushforward.flows.sphere.sphere_nsf`, circular splines of :math:`\phi` given
    :math:`z` and interval splines of :math:`z` given :math:`\phi`), and the uniform
    distribution of :math:`S^2` is the uniform one of the cylinder, so

    .. math:: \log p(x) = -\log 4\pi + \log |\det \partial f / \partial (z, \phi)|,

    the density with respect to the surface area, with **no** term for the change of
    coordinates (its Jacobian is exactly 1). Sampling draws the uniform sphere, maps it to
    the cylinder, runs the inverse transform and maps back to unit vectors.

    References:
        Rezende et al. (2020), Normalizing Flows on Tori and Spheres.

    Args:
        transform: the diffeomorphism of the cylinder, data to base.
        context_features: size of the context vector (0 for unconditional).
        normalize: accept rows that are not unit vectors and take their directions.
    """

    def __init__(
        self, transform: Transform, context_features: int = 0, normalize: bool = False
    ) -> None:
        super().__init__(transform, Sphere(2), context_features, normalize)

    def _log_prob(self, x: Tensor, context: Tensor | None, options: NoOptions) -> Tensor:
        w, logabsdet = self.transform(sphere_to_cylinder(x), context)
        # The uniform density, evaluated where the point lands (it is the same everywhere).
        return self.base.log_prob(cylinder_to_sphere(w)) + logabsdet

    def _rsample_and_log_prob(
        self, n: int, context: Tensor | None, options: NoOptions, log_prob_options: NoOptions | None
    ) -> tuple[Tensor, Tensor | None]:
        base = self.base.rsample(n)
        cylinder, logabsdet = self.transform.inverse(sphere_to_cylinder(base), context)
        x = cylinder_to_sphere(cylinder)
        if log_prob_options is None:
            return x, None
        return x, self.base.log_prob(base) - logabsdet
