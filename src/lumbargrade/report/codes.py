"""Coded concepts of lumbargrade's DICOM SEG and SR (documented in ``docs/dicom-outputs.md``).

Standard codes (SNOMED CT ``SCT``, DICOM ``DCM``, ``UCUM`` units) are taken from pydicom's code
dictionary, so every one of them is a code that dictionary knows. Where no standard concept exists
there, a private code of the scheme :data:`PRIVATE_SCHEME` (``99LUMBARGRADE``) is used; private
codes are listed in :data:`PRIVATE_CODES`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FINDINGS",
    "PRIVATE_CODES",
    "PRIVATE_SCHEME",
    "add_scheme_identification",
    "binary_label_code",
    "central_grade_code",
    "code",
    "code_dict",
    "level_disc_site",
    "level_disc_structure",
]

#: The private coding scheme designator (DICOM PS3.16 8.2: "99" prefix for local schemes).
PRIVATE_SCHEME = "99LUMBARGRADE"

#: Private codes: value -> meaning.
PRIVATE_CODES: dict[str, str] = {
    "LG001": "Dural sac",
    "LG002": "Foraminal region box",
    "LG003": "Facet joint region box",
    "LG010": "Dural sac to disc area ratio",
    "LG011": "Dural sac to disc AP diameter ratio",
    "LG012": "Square root of dural sac to disc area ratio",
    "LG013": "Dural sac AP diameter",
    "LG014": "Disc AP diameter",
    "LG020": "Central canal stenosis grade",
    "LG021": "Foraminal stenosis",
    "LG022": "Facet arthropathy",
    "LG023": "Intervertebral foramen",
    "LG024": "Facet joint of lumbar spine",
    "LG030": "Normal or mild",
    "LG040": "Result needs review",
}

#: Report finding key -> (evaluation code value, box segment kind, laterality).
FINDINGS: dict[str, tuple[str, str, str]] = {
    "foramen_left": ("LG021", "foramen", "left"),
    "foramen_right": ("LG021", "foramen", "right"),
    "facet_left": ("LG022", "facet", "left"),
    "facet_right": ("LG022", "facet", "right"),
}


def code(name: str) -> Any:
    """A coded concept by short name: ``"LGxxx"`` (private), ``"SCT.Name"``, ``"DCM.Name"`` or
    ``"UCUM.Name"`` (pydicom's dictionary)."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    if name in PRIVATE_CODES:
        return Code(name, PRIVATE_SCHEME, PRIVATE_CODES[name])
    scheme, _, key = name.partition(".")
    return getattr(getattr(codes, scheme), key)


_DISC_STRUCTURE = {
    "L1/L2": "IntervertebralDiscStructureOfFirstLumbarVertebra",
    "L2/L3": "IntervertebralDiscStructureOfSecondLumbarVertebra",
    "L3/L4": "IntervertebralDiscStructureOfThirdLumbarVertebra",
    "L4/L5": "IntervertebralDiscStructureOfFourthLumbarVertebra",
    "L5/S1": "StructureOfIntervertebralDiscOfL5AndS1",
}


def level_disc_structure(level: str) -> Any:
    """SNOMED CT body structure of the disc at ``level`` (e.g. 'L4/L5' -> disc of L4); the meaning
    is shortened to DICOM's 64-character limit (the code value is SNOMED's)."""
    from pydicom.sr.coding import Code

    c = code("SCT." + _DISC_STRUCTURE[level])
    meaning = c.meaning.replace(" (body structure)", "").replace("disc structure of", "disc of")
    return Code(
        c.value,
        c.scheme_designator,
        meaning.replace("Structure of intervertebral", "Intervertebral"),
    )


def level_disc_site(level: str) -> Any:
    """SNOMED CT 'Level of L4/L5 intervertebral disc' (the level of a finding)."""
    return code("SCT.LevelOf" + level.replace("/", "") + "IntervertebralDisc")


_CENTRAL = {
    "normal": "SCT.Normal",
    "mild": "SCT.Mild",
    "moderate": "SCT.Moderate",
    "severe": "SCT.Severe",
}


def central_grade_code(grade: str) -> Any:
    """Code of a central canal grade name (normal/mild/moderate/severe)."""
    return code(_CENTRAL[grade])


def binary_label_code(label: str) -> Any:
    """Code of a binarised finding label ('normal/mild' or 'moderate/severe')."""
    return code("SCT.ModerateToSevere" if label == "moderate/severe" else "LG030")


def add_scheme_identification(ds: Any) -> None:
    """Declare the private scheme in ``ds.CodingSchemeIdentificationSequence`` (SOP Common module)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "lumbargrade private codes"
    item.CodingSchemeVersion = "1"
    item.CodingSchemeResponsibleOrganization = "lumbargrade project (docs/dicom-outputs.md)"
    seq = list(getattr(ds, "CodingSchemeIdentificationSequence", []) or [])
    seq = [s for s in seq if getattr(s, "CodingSchemeDesignator", None) != PRIVATE_SCHEME] + [item]
    ds.CodingSchemeIdentificationSequence = Sequence(seq)


def code_dict(c: Any) -> dict[str, str]:
    """JSON form of a code (for docs and tests)."""
    return {"value": c.value, "scheme": c.scheme_designator, "meaning": c.meaning}
