"""Threat models (SPEC section 6): natural, L-inf PGD, corruption, compositional."""

from attacks import corruption, linf, natural  # noqa: F401  (registration)
from attacks.base import AttackContext, ThreatModel
from attacks.pgd import PGDConfig, pgd_linf

__all__ = ["AttackContext", "ThreatModel", "PGDConfig", "pgd_linf"]
