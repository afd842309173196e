r"""The maths of the classic variational-inference flows: planar, radial, Sylvester.

Each map is written in its generative direction :math:`z \mapsto z'` (base to data,
as the papers write it) with a function for the inverse; both return
``(output, logabsdet)``, the log-determinant of the map they applied, ``(batch,)``.
Parameters carry a leading dimension of the batch's size or 1 (amortised per row,
or shared), so one function serves conditional and unconditional layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pushforward.transforms.functional.tanh_residual import tanh_residual_inverse

#: :math:`\log(e - 1)`: shifts the planar constraint's softplus so ``u = 0`` gives
#: :math:`w^\top \hat u = 0`, the identity.
PLANAR_OFFSET = math.log(math.e - 1.0)


# -- planar --------------------------------------------------------------------------


def planar_constraint(u: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r""":math:`\hat u` with :math:`w^\top \hat u = m(w^\top u) > -1`, :math:`m` and :math:`1 + m`.

    .. math:: \hat u = u + \frac{m(w^\top u) - w^\top u}{\|w\|^2} w, \qquad
              m(a) = -1 + \mathrm{softplus}(a + \log(e - 1))

    Rezende & Mohamed's Appendix A, with the argument of the softplus shifted so that
    :math:`m(0) = 0` (then ``u = 0`` is the identity map). For :math:`a < 1`, :math:`m` is
    evaluated as :math:`\log(1 + (1 - e^{-1})(e^a - 1))` (the same function), exact
    near 0: a rounding error of :math:`m` is divided by :math:`\|w\|` in :math:`\hat u`.

    Args:
        u: ``(batch or 1, D)``.
        w: ``(batch or 1, D)``.

    Returns:
        :math:`\hat u` ``(batch or 1, D)``, :math:`m = w^\top \hat u` and
        :math:`1 + m > 0` ``(batch or 1,)``, the last without the cancellation of ``1 + m``.
    """
    projection = (w * u).sum(-1)
    one_plus_m = F.softplus(projection + PLANAR_OFFSET)
    # Clamped: the discarded branch's expm1 must not overflow.
    near_zero = torch.log1p((1 - math.exp(-1.0)) * torch.expm1(projection.clamp(max=1.0)))
    m = torch.where(projection < 1, near_zero, one_plus_m - 1)
    # A vanishing w makes the correction 0/0; its numerator vanishes faster.
    norm = w.square().sum(-1).clamp_min(torch.finfo(w.dtype).tiny)
    u_hat = u + ((m - projection) / norm).unsqueeze(-1) * w
    return u_hat, m, one_plus_m


def _planar_logabsdet(tanh: Tensor, one_plus_m: Tensor) -> Tensor:
    # 1 + m sech^2 = tanh^2 + (1 + m) sech^2: no cancellation as m -> -1.
    return torch.log(tanh.square() + one_plus_m * (1 - tanh.square()))


def planar(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    r"""The planar map :math:`z' = z + \hat u \tanh(w^\top z + b)`.

    .. math:: \log |\det \partial z' / \partial z| = \log |1 + \hat u^\top w\, h'(w^\top z + b)|

    References:
        Rezende & Mohamed (2015), Variational Inference with Normalizing Flows.

    Args:
        z: ``(batch, D)``.
        u, w: ``(batch or 1, D)``; :math:`\hat u` from :func:`planar_constraint`.
        b: ``(batch or 1,)``.

    Returns:
        :math:`z'` ``(batch, D)`` and the log-determinant ``(batch,)``.
    """
    u_hat, _, one_plus_m = planar_constraint(u, w)
    tanh = torch.tanh((w * z).sum(-1) + b)
    return z + u_hat * tanh.unsqueeze(-1), _planar_logabsdet(tanh, one_plus_m)


def planar_inverse(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    r"""The inverse of :func:`planar`, exact to the dtype's precision.

    Along :math:`w` the map is scalar: :math:`\alpha' = w^\top z'` and
    :math:`\alpha = w^\top z` satisfy :math:`\alpha' = \alpha + w^\top \hat u \tanh(\alpha + b)`,
    increasing in :math:`\alpha` as :math:`w^\top \hat u > -1`; it is solved by
    :func:`~pushforward.transforms.functional.tanh_residual.tanh_residual_inverse`
    (bracketed bisection, a fixed count that provably converges, then one Newton
    step), and :math:`z = z' - \hat u \tanh(\alpha + b)`.

    Args: as :func:`planar`, with ``z`` the map's output :math:`z'`.

    Returns:
        :math:`z` ``(batch, D)`` and the inverse map's log-determinant ``(batch,)``.
    """
    u_hat, m, one_plus_m = planar_constraint(u, w)
    alpha = tanh_residual_inverse((w * z).sum(-1), m, b.new_ones(()), b, one_plus_m)
    tanh = torch.tanh(alpha + b)
    return z - u_hat * tanh.unsqueeze(-1), -_planar_logabsdet(tanh, one_plus_m)


# -- radial --------------------------------------------------------------------------


def _radial_logabsdet(r: Tensor, alpha: Tensor, beta_plus_alpha: Tensor, features: int) -> Tensor:
    # 1 + beta h = (r + softplus(beta)) / (alpha + r) and
    # 1 + beta h + beta h' r = (r^2 + 2 alpha r + alpha softplus(beta)) / (alpha + r)^2:
    # both numerators are sums of positive terms, whatever beta's sign.
    log_denominator = torch.log(alpha + r)
    radial_part = torch.log(r.square() + 2 * alpha * r + alpha * beta_plus_alpha)
    tangential = torch.log(r + beta_plus_alpha) - log_denominator
    return (features - 1) * tangential + radial_part - 2 * log_denominator


def radial(z: Tensor, center: Tensor, alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    r"""The radial map :math:`z' = z + \hat\beta\, h(\alpha, r)(z - z_0)`.

    With :math:`h(\alpha, r) = 1/(\alpha + r)`, :math:`r = \|z - z_0\|`,
    :math:`\alpha = \mathrm{softplus}(\tilde\alpha) > 0` and
    :math:`\hat\beta = -\alpha + \mathrm{softplus}(\tilde\beta) > -\alpha` (invertibility):

    .. math:: \log |\det \partial z' / \partial z| = (D - 1) \log(1 + \hat\beta h)
              + \log(1 + \hat\beta h + \hat\beta h'(r) r)

    References:
        Rezende & Mohamed (2015), Variational Inference with Normalizing Flows.

    Args:
        z: ``(batch, D)``.
        center: :math:`z_0`, ``(batch or 1, D)``.
        alpha: :math:`\tilde\alpha`, ``(batch or 1,)``, unconstrained.
        beta: :math:`\tilde\beta`, ``(batch or 1,)``, unconstrained.

    Returns:
        :math:`z'` ``(batch, D)`` and the log-determinant ``(batch,)``.
    """
    alpha, beta_plus_alpha = F.softplus(alpha), F.softplus(beta)
    offset = z - center
    r = torch.linalg.vector_norm(offset, dim=-1)
    scale = (r + beta_plus_alpha) / (alpha + r)
    logabsdet = _radial_logabsdet(r, alpha, beta_plus_alpha, z.shape[-1])
    return center + offset * scale.unsqueeze(-1), logabsdet


def radial_inverse(z: Tensor, center: Tensor, alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    r"""The inverse of :func:`radial`, in closed form.

    The map keeps the direction of :math:`z - z_0` and sends :math:`r` to
    :math:`r' = r (r + \mathrm{softplus}(\tilde\beta)) / (\alpha + r)`; :math:`r` is the
    non-negative root of :math:`r^2 + (\mathrm{softplus}(\tilde\beta) - r') r - \alpha r' = 0`,
    taken in whichever of its two algebraic forms adds terms of one sign.

    Args: as :func:`radial`, with ``z`` the map's output :math:`z'`.

    Returns:
        :math:`z` ``(batch, D)`` and the inverse map's log-determinant ``(batch,)``.
    """
    alpha, beta_plus_alpha = F.softplus(alpha), F.softplus(beta)
    offset = z - center
    r_out = torch.linalg.vector_norm(offset, dim=-1)
    q = r_out - beta_plus_alpha
    root = torch.sqrt(q.square() + 4 * alpha * r_out)
    # Both forms stay finite on every row (root > |q| unless r' = 0, where q < 0).
    r = torch.where(q >= 0, 0.5 * (q + root), 2 * alpha * r_out / (root - q))
    scale = (alpha + r) / (r + beta_plus_alpha)
    logabsdet = -_radial_logabsdet(r, alpha, beta_plus_alpha, z.shape[-1])
    return center + offset * scale.unsqueeze(-1), logabsdet


# -- Sylvester -----------------------------------------------------------------------


@dataclass(frozen=True)
class SylvesterParameters:
    r"""The parameters of one Sylvester layer; every field has a leading ``batch or 1``.

    Attributes:
        householder: ``(., K, D)`` vectors :math:`v_k` of :math:`Q = H_1 \cdots H_K`,
            :math:`H_k = I - 2 v_k v_k^\top / \|v_k\|^2`; :math:`Q`'s first ``M``
            columns are orthonormal.
        r, r_tilde: ``(., M, M)``; their entries above the diagonal are those of
            :math:`R` and :math:`\tilde R` (the rest is not read).
        r_diagonal, r_tilde_diagonal: ``(., M)`` unconstrained; :math:`R_{ii} = \tanh`
            of it, likewise :math:`\tilde R_{ii}`, so :math:`R_{ii} \tilde R_{ii} > -1`.
        shift: ``(., M)``, :math:`b`.
    """

    householder: Tensor
    r: Tensor
    r_tilde: Tensor
    r_diagonal: Tensor
    r_tilde_diagonal: Tensor
    shift: Tensor

    @property
    def columns(self) -> int:
        """``M``."""
        return self.shift.shape[-1]

    def upper(self, tilde: bool) -> Tensor:
        r""":math:`R` (or :math:`\tilde R` with ``tilde``), ``(., M, M)`` upper triangular."""
        matrix, diagonal = (
            (self.r_tilde, self.r_tilde_diagonal) if tilde else (self.r, self.r_diagonal)
        )
        return torch.triu(matrix, 1) + torch.diag_embed(torch.tanh(diagonal))

    def log_one_plus_diagonal_product(self) -> Tensor:
        r""":math:`\log(1 + R_{ii} \tilde R_{ii})` ``(., M)``, exact as the product nears -1.

        :math:`1 + \tanh a \tanh c = \cosh(a + c) / (\cosh a \cosh c)`.
        """
        a, c = self.r_diagonal, self.r_tilde_diagonal
        return _log_cosh(a + c) - _log_cosh(a) - _log_cosh(c)


def _log_cosh(x: Tensor) -> Tensor:
    magnitude = x.abs()
    return magnitude + F.softplus(-2 * magnitude) - math.log(2.0)


def _reflect(x: Tensor, vector: Tensor) -> Tensor:
    # A zero vector is no reflection (its 0/0 is read as 0).
    norm = vector.square().sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return x - (2 * (vector * x).sum(-1, keepdim=True) / norm) * vector


def orthonormal_transpose_apply(z: Tensor, householder: Tensor, columns: int) -> Tensor:
    r""":math:`Q^\top z` for :math:`Q` the first ``columns`` columns of :math:`H_1 \cdots H_K`.

    Args:
        z: ``(batch, D)``.
        householder: ``(batch or 1, K, D)``.
        columns: ``M <= D``.

    Returns:
        ``(batch, M)``.
    """
    for k in range(householder.shape[-2]):
        z = _reflect(z, householder[..., k, :])
    return z[..., :columns]


def orthonormal_apply(y: Tensor, householder: Tensor) -> Tensor:
    r""":math:`Q y` for :math:`Q` the first ``M`` columns of :math:`H_1 \cdots H_K`.

    Args:
        y: ``(batch, M)``.
        householder: ``(batch or 1, K, D)``.

    Returns:
        ``(batch, D)``.
    """
    x = F.pad(y, (0, householder.shape[-1] - y.shape[-1]))
    for k in reversed(range(householder.shape[-2])):
        x = _reflect(x, householder[..., k, :])
    return x


def _sylvester_logabsdet(tanh: Tensor, log_one_plus_product: Tensor) -> Tensor:
    # 1 + R_ii Rt_ii sech^2 = tanh^2 + (1 + R_ii Rt_ii) sech^2, without cancellation.
    terms = tanh.square() + torch.exp(log_one_plus_product) * (1 - tanh.square())
    return torch.log(terms).sum(-1)


def sylvester(z: Tensor, parameters: SylvesterParameters) -> tuple[Tensor, Tensor]:
    r"""The Sylvester map :math:`z' = z + Q R \tanh(\tilde R Q^\top z + b)`.

    By Sylvester's determinant identity, with :math:`R` and :math:`\tilde R` upper
    triangular,

    .. math:: \log |\det \partial z' / \partial z| = \sum_i \log |1 + R_{ii} \tilde R_{ii}
              h'\big((\tilde R Q^\top z + b)_i\big)|

    References:
        van den Berg et al. (2018), Sylvester Normalizing Flows for Variational Inference.

    Args:
        z: ``(batch, D)``.
        parameters: see :class:`SylvesterParameters`.

    Returns:
        :math:`z'` ``(batch, D)`` and the log-determinant ``(batch,)``.
    """
    p = parameters
    v = orthonormal_transpose_apply(z, p.householder, p.columns)
    tanh = torch.tanh((p.upper(tilde=True) @ v.unsqueeze(-1)).squeeze(-1) + p.shift)
    step = (p.upper(tilde=False) @ tanh.unsqueeze(-1)).squeeze(-1)
    logabsdet = _sylvester_logabsdet(tanh, p.log_one_plus_diagonal_product())
    return z + orthonormal_apply(step, p.householder), logabsdet


def sylvester_inverse(z: Tensor, parameters: SylvesterParameters) -> tuple[Tensor, Tensor]:
    r"""The inverse of :func:`sylvester`, exact to the dtype's precision.

    The part of :math:`z'` orthogonal to :math:`Q`'s columns is that of :math:`z`;
    in :math:`Q`'s coordinates :math:`v = Q^\top z` the map reads
    :math:`v' = v + R \tanh(\tilde R v + b)`, and as :math:`R` and :math:`\tilde R` are
    upper triangular its :math:`i`-th row involves :math:`v_j` for :math:`j \ge i`
    only. Back-substitution from :math:`i = M` down then solves one increasing
    scalar equation per row,

    .. math:: v'_i - \sum_{j > i} R_{ij} \tanh(\cdot)_j = v_i + R_{ii} \tanh\big(\tilde R_{ii} v_i
              + \textstyle\sum_{j>i} \tilde R_{ij} v_j + b_i\big),

    by :func:`~pushforward.transforms.functional.tanh_residual.tanh_residual_inverse`
    (:math:`R_{ii} \tilde R_{ii} > -1`); then :math:`z = z' - Q(v' - v)`. This costs
    ``M`` sequential solves, the density's price for a one-pass sampler.

    Args: as :func:`sylvester`, with ``z`` the map's output :math:`z'`.

    Returns:
        :math:`z` ``(batch, D)`` and the inverse map's log-determinant ``(batch,)``.
    """
    p = parameters
    r, r_tilde = p.upper(tilde=False), p.upper(tilde=True)
    log_one_plus_product = p.log_one_plus_diagonal_product()
    one_plus_product = torch.exp(log_one_plus_product)
    v_out = orthonormal_transpose_apply(z, p.householder, p.columns)
    solved: list[Tensor] = []  # v_i, then the v_j of the rows below, in order
    tanhs: list[Tensor] = []
    for i in reversed(range(p.columns)):
        shift, target = p.shift[..., i], v_out[..., i]
        if solved:
            later, later_tanh = torch.stack(solved, -1), torch.stack(tanhs, -1)
            shift = shift + (r_tilde[..., i, i + 1 :] * later).sum(-1)
            target = target - (r[..., i, i + 1 :] * later_tanh).sum(-1)
        r_ii, r_tilde_ii = r[..., i, i], r_tilde[..., i, i]
        v_i = tanh_residual_inverse(target, r_ii, r_tilde_ii, shift, one_plus_product[..., i])
        solved.insert(0, v_i)
        tanhs.insert(0, torch.tanh(r_tilde_ii * v_i + shift))
    v, tanh = torch.stack(solved, -1), torch.stack(tanhs, -1)
    logabsdet = -_sylvester_logabsdet(tanh, log_one_plus_product)
    return z - orthonormal_apply(v_out - v, p.householder), logabsdet
