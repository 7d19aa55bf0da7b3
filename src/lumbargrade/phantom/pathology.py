"""Latent pathology per disc level: continuous severities that drive the anatomy, and the grades.

Interface shared by the anatomy/rendering code (which reads these severities) and the cohort code
(which samples them and derives grades and readers).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LevelPathology"]


@dataclass(frozen=True)
class LevelPathology:
    """Latent severities of one disc level, each a float in [0, 1] (0 healthy, 1 worst).

    central: central canal stenosis. The true grade is ``digitize(central, CENTRAL_CUTS)`` with
        cuts defined in :mod:`lumbargrade.phantom.grades`; the rendered dural sac area must fall
        monotonically with it, and rootlet clumping / CSF loss / posterior epidural fat loss
        follow Schizas (A1-A2 normal, A3-A4 mild, B moderate, C-D severe).
    foramen_left, foramen_right: foraminal stenosis (Lee): perineural fat loss, then root
        deformation. Binary truth: severity >= 0.5 is grade 2-3.
    facet_left, facet_right: facet arthropathy (Weishaupt): joint narrowing, hypertrophy,
        osteophytes, effusion. Binary truth: severity >= 0.5 is grade 2-3.
    pfirrmann: disc degeneration grade 1-5 (nucleus signal and disc height).
    """

    central: float = 0.0
    foramen_left: float = 0.0
    foramen_right: float = 0.0
    facet_left: float = 0.0
    facet_right: float = 0.0
    pfirrmann: int = 2
