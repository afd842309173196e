"""Riemannian flow matching on spheres, tori, SO(3) and their products, and the
registered ``rfm`` model (Chen & Lipman 2024)."""

from __future__ import annotations

from pushforward.matching.riemannian.model import RiemannianFlowMatching
from pushforward.matching.riemannian.rfm import riemannian_flow_matching

__all__ = ["RiemannianFlowMatching", "riemannian_flow_matching"]
