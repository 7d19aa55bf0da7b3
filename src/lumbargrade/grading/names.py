"""Names of the graded findings and of the central canal grades (one place for all modules)."""

from __future__ import annotations

__all__ = ["CENTRAL_GRADES", "LATERAL_FINDINGS", "BINARY_LABELS"]

#: Central canal grades 0-3 (Schizas A1-A2 / A3-A4 / B / C-D).
CENTRAL_GRADES: tuple[str, ...] = ("normal", "mild", "moderate", "severe")

#: The left/right binary findings (foraminal stenosis, facet arthropathy), patient's sides.
LATERAL_FINDINGS: tuple[str, ...] = ("foramen_left", "foramen_right", "facet_left", "facet_right")

#: Labels of a binary finding: 0 = grade 0-1, 1 = grade 2-3.
BINARY_LABELS: tuple[str, ...] = ("normal/mild", "moderate/severe")
