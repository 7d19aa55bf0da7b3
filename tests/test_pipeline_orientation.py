"""Results in patient space do not depend on how the axial series was stored: the same study in
three in-plane layouts (standard, transposed and flipped, rotated 180 degrees) gives the same
masks, measurements, boxes and grades."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lumbargrade.cli import main
from orientation_helpers import restore_study

LAYOUTS = ("+x+y", "-y+x", "-x-y")


@pytest.fixture(scope="module")
def analyses(tmp_path_factory):
    from lumbargrade.phantom.cohort import generate_cohort

    root = tmp_path_factory.mktemp("orient")
    generate_cohort(root / "cohort", 1, seed=123, split=(0, 0, 1), progress=False)
    study = root / "cohort" / "P0000" / "dicom"
    out = {}
    for layout in LAYOUTS:
        src = study if layout == "+x+y" else restore_study(study, root / f"study_{layout}", layout)
        dest = root / f"out_{layout}"
        assert main(["analyze", str(src), "--out", str(dest), "--outputs", "none"]) == 0
        out[layout] = (dest, json.loads((dest / "report.json").read_text()))
    return out


def _canonical_label_map(dest: Path, rec: dict) -> np.ndarray:
    from lumbargrade.io.orientation import AxialView

    lab = np.asarray(Image.open(dest / rec["label_map"]))
    o = rec["orientation"]
    return AxialView(o["transpose"], o["flip_rows"], o["flip_cols"]).to_canonical(lab)


def test_same_results_in_every_layout(analyses):
    ref_dest, ref = analyses["+x+y"]
    for layout in LAYOUTS[1:]:
        dest, rep = analyses[layout]
        assert [lv["level"] for lv in rep["levels"]] == [lv["level"] for lv in ref["levels"]]
        for a, b in zip(ref["levels"], rep["levels"]):
            assert b["orientation"]["transpose"] == (layout[1] == "y")
            np.testing.assert_array_equal(_canonical_label_map(ref_dest, a), _canonical_label_map(dest, b))
            for k, v in a["measurements"].items():
                assert b["measurements"][k] == pytest.approx(v, rel=1e-9, abs=1e-9), k
            assert b["central_canal"]["grade"] == a["central_canal"]["grade"]
            for f in ("foramen_left", "foramen_right", "facet_left", "facet_right"):
                assert b[f]["label"] == a[f]["label"], f
                assert b[f]["probability"] == pytest.approx(a[f]["probability"], abs=1e-5), f
            assert b["needs_review"] == a["needs_review"]


def test_boxes_cover_the_same_patient_region(analyses):
    from lumbargrade.io.orientation import AxialView

    ref_dest, ref = analyses["+x+y"]
    dest, rep = analyses["-y+x"]
    for a, b in zip(ref["levels"], rep["levels"]):
        o = b["orientation"]
        v = AxialView(o["transpose"], o["flip_rows"], o["flip_cols"])
        shape = np.asarray(Image.open(dest / b["label_map"])).shape
        for name, box in a["boxes"].items():
            assert v.box_to_canonical(b["boxes"][name], shape) == box, name
