"""lumbargrade: interpretable grading of lumbar spinal stenosis and facet arthropathy from axial T2 MRI.

Data flow: study in (:mod:`lumbargrade.io`) -> levels (:mod:`lumbargrade.levels`) -> masks
(:mod:`lumbargrade.segmentation`) -> measurements (:mod:`lumbargrade.measurements`) -> boxes
(:mod:`lumbargrade.boxes`) -> grades (:mod:`lumbargrade.grading`) -> report out
(:mod:`lumbargrade.report`). The synthetic study generator is :mod:`lumbargrade.phantom`.

Importing this package is cheap: heavy libraries (torch, monai, timm) are imported lazily.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
