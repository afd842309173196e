r"""What a flow-matching network predicts: the velocity, the data point or the noise.

On an affine path :math:`x_t = \alpha x_1 + \sigma x_0` with velocity
:math:`v = \dot\alpha x_1 + \dot\sigma x_0`, any one of :math:`(v, x_1, x_0)`
together with :math:`x_t` determines the other two, wherever the linear system
is non-singular. The conversions below are those exact identities.
"""

from __future__ import annotations

from torch import Tensor

from pushforward.matching.path import PathSample
from pushforward.matching.schedulers import SchedulerCoefficients

PARAMETERIZATIONS: tuple[str, ...] = ("velocity", "data", "noise")
"""``velocity``: :math:`\\dot x_t`; ``data``: :math:`x_1` (x1-prediction);
``noise``: :math:`x_0` (x0-prediction, epsilon-prediction for a Gaussian source)."""


def _check_name(role: str, name: str) -> None:
    if name not in PARAMETERIZATIONS:
        raise ValueError(
            f"unknown {role}parameterization {name!r}; valid ones: {', '.join(PARAMETERIZATIONS)}"
        )


def convert(
    prediction: Tensor,
    source: str,
    target: str,
    x_t: Tensor,
    coefficients: SchedulerCoefficients,
) -> Tensor:
    r"""Converts a prediction at :math:`x_t` from one parameterisation to another.

    With :math:`a = \alpha_t, s = \sigma_t, \dot a = \dot\alpha_t, \dot s = \dot\sigma_t`:

    * from data :math:`\hat x_1`: :math:`\hat x_0 = (x_t - a \hat x_1) / s` (singular
      where :math:`s = 0`, the data end of a path with :math:`\sigma_1 = 0`);
    * from noise :math:`\hat x_0`: :math:`\hat x_1 = (x_t - s \hat x_0) / a` (singular
      where :math:`a = 0`, the source end :math:`t = 0`);
    * from velocity :math:`\hat v`, solving the 2x2 system with
      :math:`\Delta = s \dot a - a \dot s`:
      :math:`\hat x_1 = (s \hat v - \dot s x_t) / \Delta`,
      :math:`\hat x_0 = (\dot a x_t - a \hat v) / \Delta` (singular where
      :math:`\Delta = 0`: never for ``cond-ot`` (:math:`\Delta = 1`) or ``cosine``
      (:math:`\Delta = \pi/2`), at :math:`t = 0` for ``polynomial`` with exponent
      above 1 (:math:`\Delta = n t^{n-1}`); for ``vp`` :math:`\Delta =
      \dot\alpha / \sigma` grows without bound at :math:`t = 1`);
    * to velocity: :math:`\hat v = \dot a \hat x_1 + \dot s \hat x_0`.

    Nothing is guarded: at a singular time the result is inf or NaN, so callers
    evaluate such conversions at times kept inside :math:`(0, 1)`.

    References:
        Lipman et al. (2024), Flow Matching Guide and Code;
        Albergo & Vanden-Eijnden (2023), Building Normalizing Flows with
        Stochastic Interpolants.

    Args:
        prediction: ``(batch, *event)``, in the ``source`` parameterisation.
        source: one of :data:`PARAMETERIZATIONS`.
        target: one of :data:`PARAMETERIZATIONS`.
        x_t: ``(batch, *event)``, the points the prediction was made at.
        coefficients: the scheduler's coefficients at the prediction's times, of
            shape ``(batch,)`` or already broadcast to ``(batch, 1, ..., 1)``.

    Returns:
        ``(batch, *event)``, the prediction in the ``target`` parameterisation.
    """
    _check_name("source ", source)
    _check_name("target ", target)
    if prediction.shape != x_t.shape:
        raise ValueError(
            f"prediction has shape {tuple(prediction.shape)} but x_t has shape "
            f"{tuple(x_t.shape)}; they must match"
        )
    if source == target:
        return prediction
    c = coefficients.broadcast_like(x_t)
    if source == "data":
        data = prediction
        noise = (x_t - c.alpha * data) / c.sigma
    elif source == "noise":
        noise = prediction
        data = (x_t - c.sigma * noise) / c.alpha
    else:
        determinant = c.sigma * c.d_alpha - c.alpha * c.d_sigma
        if target == "data":
            return (c.sigma * prediction - c.d_sigma * x_t) / determinant
        return (c.d_alpha * x_t - c.alpha * prediction) / determinant
    if target == "data":
        return data
    if target == "noise":
        return noise
    return c.d_alpha * data + c.d_sigma * noise


def regression_target(sample: PathSample, parameterization: str) -> Tensor:
    r"""The exact regression target of a path sample in a parameterisation.

    ``velocity``: :math:`\dot x_t = \dot\alpha_t x_1 + \dot\sigma_t x_0`;
    ``data``: :math:`x_1`; ``noise``: :math:`x_0`.

    References:
        Lipman et al. (2023), Flow Matching for Generative Modeling.

    Args:
        sample: a :class:`~pushforward.matching.path.PathSample`.
        parameterization: one of :data:`PARAMETERIZATIONS`.

    Returns:
        ``(batch, *event)``.
    """
    _check_name("", parameterization)
    if parameterization == "velocity":
        return sample.dx_t
    if parameterization == "data":
        return sample.x1
    return sample.x0
