"""The shared numeric helpers (``lumbargrade.numbers``) and the phantom truth lookup of a manifest row."""

import json
import math

import numpy as np
import pytest

from lumbargrade.errors import InputError
from lumbargrade.manifest import phantom_truth
from lumbargrade.numbers import is_finite_number, json_safe

pytestmark = pytest.mark.core


@pytest.mark.parametrize("value, expected", [
    (1, True), (0.0, True), (-2.5, True), (np.float32(3.0), True), (np.int64(4), True),
    (float("nan"), False), (float("inf"), False), (np.float64("-inf"), False), (None, False),
    (True, False), (np.bool_(True), False), ("1.5", False), ([1.0], False),
])
def test_is_finite_number(value, expected):
    assert is_finite_number(value) is expected


def test_json_safe_makes_results_json_safe():
    doc = {"a": float("nan"), "b": [np.float32(1.5), (np.int64(2), float("inf"))], "c": {"d": None, "e": "x"}}
    out = json_safe(doc)
    assert out == {"a": None, "b": [1.5, [2, None]], "c": {"d": None, "e": "x"}}
    assert type(out["b"][0]) is float and type(out["b"][1][0]) is int
    json.loads(json.dumps(out, allow_nan=False))  # strict JSON
    assert math.isnan(doc["a"])  # the input is left as it was


def test_phantom_truth_of_a_manifest_row(tmp_path):
    (tmp_path / "P0001").mkdir()
    (tmp_path / "P0001" / "truth.json").write_text(json.dumps({"patient_id": "P0001", "levels": []}))
    row = {"patient_id": "P0001", "_base_dir": str(tmp_path), "study_dir": "P0001/dicom"}
    cache: dict = {}
    assert phantom_truth(row, cache)["patient_id"] == "P0001"
    assert len(cache) == 1
    (tmp_path / "P0001" / "truth.json").write_text("{")  # read once: the cache answers
    assert phantom_truth(row, cache)["patient_id"] == "P0001"
    with pytest.raises(InputError, match=r"truth\.json.*cannot read truth\.json"):
        phantom_truth(row)
    assert phantom_truth({"patient_id": "P0002", "_base_dir": str(tmp_path)}) is None
