"""Tissue classes of the phantom and the structure labels of the ground truth.

``Tissue`` codes (uint8) are what :func:`lumbargrade.phantom.anatomy.tissue_at` returns; the MR
signal of each code comes from :mod:`lumbargrade.phantom.mr`. ``STRUCTURE_LABELS`` are the label
values of the truth label maps (docs/architecture.md, "Label maps").
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "FAT_TISSUES",
    "STRUCTURE_LABELS",
    "Structure",
    "Tissue",
    "nucleus_tissue",
]


class Tissue(IntEnum):
    """Tissue class of a point (uint8 code)."""

    AIR = 0
    CSF = 1
    ROOTLET = 2  # cauda equina rootlets inside the dural sac
    NUCLEUS = 3  # nucleus pulposus, Pfirrmann I (see NUCLEUS_P2..P5 for grades II-V)
    ANNULUS = 4
    MARROW = 5
    CORTEX = 6  # cortical bone, endplates, ALL/PLL (signal void)
    EPIDURAL_FAT = 7
    SUBCUT_FAT = 8  # subcutaneous and retroperitoneal fat
    MUSCLE = 9
    LIGAMENTUM_FLAVUM = 10
    FACET_CARTILAGE = 11
    EFFUSION = 12  # facet joint fluid
    NERVE_ROOT = 13  # exiting root / dorsal root ganglion in the foramen
    VESSEL = 14  # aorta, IVC, iliac vessels (flow void)
    VISCERA = 15  # bowel and solid organs (intermediate)
    CORD = 16  # spinal cord / conus medullaris
    FIBROUS = 17  # fibrous tissue, osteophyte soft tissue and scar filling a stenotic foramen
    BOWEL_FLUID = 18  # fluid inside bowel loops (bright)
    NUCLEUS_P2 = 19
    NUCLEUS_P3 = 20
    NUCLEUS_P4 = 21
    NUCLEUS_P5 = 22
    MUSCLE_FATTY = 23  # fat-infiltrated muscle (older patients)
    INTERSPINOUS = 24  # interspinous / supraspinous ligament, dura (dark)
    ANNULUS_INNER = 25  # inner annulus / transition zone (intermediate)


FAT_TISSUES = (Tissue.EPIDURAL_FAT, Tissue.SUBCUT_FAT)


def nucleus_tissue(pfirrmann: int) -> Tissue:
    """Nucleus tissue code for a Pfirrmann grade 1-5."""
    p = int(pfirrmann)
    return {1: Tissue.NUCLEUS, 2: Tissue.NUCLEUS_P2, 3: Tissue.NUCLEUS_P3,
            4: Tissue.NUCLEUS_P4, 5: Tissue.NUCLEUS_P5}[min(5, max(1, p))]


class Structure(IntEnum):
    """Structure label values of the truth label maps (patient's left and right)."""

    BACKGROUND = 0
    DURAL_SAC = 1
    DISC = 2
    FACET_LEFT = 3
    FACET_RIGHT = 4
    FORAMEN_LEFT = 5
    FORAMEN_RIGHT = 6


STRUCTURE_LABELS: dict[int, str] = {
    0: "background",
    1: "dural sac",
    2: "disc",
    3: "facet left",
    4: "facet right",
    5: "foramen left",
    6: "foramen right",
}
