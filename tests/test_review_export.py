"""``lumbargrade review export``: corrected levels become a manifest cohort that the trainers read
without conversion; splits by patient; one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "review"))

from analyzed import review_copy


@pytest.fixture(scope="module")
def corrected(tmp_path_factory):
    """Two studies: A with an edited L4/L5 sac (not signed); B with the reader's grades for L3/L4,
    signed."""
    from PIL import Image

    from lumbargrade.regrade import regrade
    from lumbargrade.signoff import set_reader_grades, sign_off

    root = review_copy(tmp_path_factory, tmp_path_factory.mktemp("export") / "root")
    a, b = sorted(p for p in root.iterdir() if p.is_dir())
    lab = np.asarray(Image.open(a / "levels" / "L4-L5" / "labels.png")).copy()
    rows, cols = np.nonzero(lab == 1)
    lab[rows.max() + 1: rows.max() + 3, cols.min(): cols.max()][lab[rows.max() + 1: rows.max() + 3, cols.min(): cols.max()] == 0] = 1
    regrade(a, "L4/L5", labels=lab, by="Dr A")
    set_reader_grades(b, "L3/L4", {"central_canal": "moderate", "foramen_right": "moderate/severe"}, by="Dr B")
    sign_off(b, by="Dr B")
    return root, a.name, b.name


def test_export_writes_a_manifest_the_trainers_read(corrected, tmp_path, capsys):
    from lumbargrade.cli import main
    from lumbargrade.manifest import load_axial, load_label_map, read_manifest

    root, a, b = corrected
    out = tmp_path / "cohort"
    assert main(["review", "export", str(root), "--out", str(out)]) == 0
    assert "2 levels of 2 studies" in capsys.readouterr().out
    rows = read_manifest(out / "manifest.csv", required=("patient_id", "split", "level", "axial_image", "label_map"))
    by_study = {r["study"]: r for r in rows}
    ra, rb = by_study[a], by_study[b]
    assert (ra["level"], ra["corrected"], ra["signed"], ra["changed_by"]) == ("L4/L5", "1", "0", "Dr A")
    assert ra["central_canal"] == "" and ra["grades_from"] == ""  # not signed, no reader grade: unknown
    assert (rb["level"], rb["central_canal"], rb["foramen_right"], rb["signed"]) == ("L3/L4", "2", "1", "1")
    assert rb["foramen_left"] in ("0", "1") and rb["grades_from"] == "reader+signed"  # the signed report's grade
    assert {ra["split"], rb["split"]} == {"train", "val"}  # two patients: one of each
    assert ra["patient_id"] != rb["patient_id"]
    for r in rows:
        image, spacing = load_axial(r)
        labels = load_label_map(r)
        assert image.shape == labels.shape and min(spacing) > 0
        assert r["axial_image"].endswith(".dcm")  # the study's own DICOM slice
        src = root / r["study"] / "levels" / r["level"].replace("/", "-") / "labels.png"
        from PIL import Image

        np.testing.assert_array_equal(labels, np.asarray(Image.open(src)))
    summary = json.loads((out / "export.json").read_text())
    assert summary["levels"] == 2 and summary["patients"] == 2 and not summary["skipped"]
    # NPY images carry their spacing in the manifest
    out2 = tmp_path / "npy"
    assert main(["review", "export", str(root), "--out", str(out2), "--images", "npy"]) == 0
    r2 = read_manifest(out2 / "manifest.csv")[0]
    img, sp = load_axial(r2)
    assert r2["axial_image"].endswith(".npy") and sp == (float(r2["pixel_spacing_row_mm"]), float(r2["pixel_spacing_col_mm"]))


def test_signed_studies_export_every_level_and_train_segmentation(corrected, tmp_path):
    from lumbargrade.cli import main
    from lumbargrade.manifest import read_manifest

    root, a, b = corrected
    out = tmp_path / "cohort"
    assert main(["review", "export", str(root), "--out", str(out), "--signed"]) == 0
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 1 + 5  # A's corrected level, all five of signed B
    assert sum(r["corrected"] == "1" for r in rows) == 2
    b_rows = [r for r in rows if r["study"] == b]
    assert all(r["central_canal"] != "" and r["signed_by"] == "Dr B" for r in b_rows)
    assert all(r["sagittal_image"] and r["landmark_row"] for r in b_rows)  # signed: landmarks are labels too
    run = tmp_path / "seg"
    tiny = ["epochs=1", "size=64", "target_spacing=1.5", "margin=8", "batch_size=2", "num_threads=1",
            "progress=false", "bf16=false", 'model_kwargs={"channels": [8, 8, 16, 16, 32]}']
    argv = ["train", "segmentation", "--data", str(out / "manifest.csv"), "--out", str(run)]
    for s in tiny:
        argv += ["--set", s]
    assert main(argv) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["finished"] and m["n_train"] >= 1 and m["n_val"] >= 1
    assert (run / "model.safetensors").is_file()


def test_export_refuses_with_one_line(corrected, tmp_path, capsys):
    from lumbargrade.cli import main

    root, a, b = corrected
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    cases = [
        ["review", "export", str(root), "--out", str(out)],  # not empty
        ["review", "export", str(tmp_path / "missing"), "--out", str(tmp_path / "x")],
        ["review", "export", str(root)],  # no --out
        ["review", "export", str(root), "--out", str(root / "inside")],
        ["review", "export", str(root / a), "--out", str(tmp_path / "y")],  # one study, not a ROOT
        ["review", "export", str(root), "--out", str(tmp_path / "z"), "--val-fraction", "1.5"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("lumbargrade: error:") and "\n" not in err, err
    assert (out / "mine.txt").read_text() == "keep"


def test_assign_splits_is_stable_and_has_train_and_val():
    from lumbargrade.service.review.export import assign_splits

    s2 = assign_splits(["p1", "p2"])
    assert sorted(s2.values()) == ["train", "val"]
    many = [f"p{i}" for i in range(200)]
    s = assign_splits(many)
    assert 20 <= sum(v == "val" for v in s.values()) <= 60
    more = assign_splits(many + [f"q{i}" for i in range(50)])
    assert all(more[p] == s[p] for p in many)  # adding patients keeps the old ones' splits
    assert assign_splits(["only"]) == {"only": "train"}


def test_review_without_the_extra_names_it(monkeypatch, tmp_path, capsys):
    from lumbargrade.cli import main

    monkeypatch.setitem(sys.modules, "starlette", None)
    assert main(["review", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "[review]" in err and "\n" not in err
