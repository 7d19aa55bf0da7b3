"""Adjacent slices as classifier channels: which slices are neighbours (by patient geometry), how
the stack is normalised, and that a context classifier sees them through analyze's path."""

import json

import numpy as np
import pytest

from lumbargrade.geometry import SliceGeometry
from lumbargrade.grading.context import neighbour_indices, stack_context
from lumbargrade.grading.patches import (
    PatchConfig,
    level_patches,
    normalise_context,
    normalise_slice,
)


def _axial(z, row=(1, 0, 0), col=(0, 1, 0), shift=(0.0, 0.0), rows=64, spacing=0.8):
    """An axial-ish slice whose origin lies at height ``z`` along its normal (LPS mm)."""
    r, c = np.asarray(row, float), np.asarray(col, float)
    n = np.cross(r, c)
    pos = z * n + shift[0] * r + shift[1] * c
    return SliceGeometry(position=pos, row_cosine=r, col_cosine=c, pixel_spacing=(spacing, spacing),
                         rows=rows, columns=rows)


@pytest.mark.core
def test_neighbours_by_patient_geometry_not_by_list_order():
    centre = _axial(0.0)
    others = [_axial(8.0), _axial(-3.6), _axial(3.5), _axial(-7.0), _axial(0.0)]  # shuffled; one duplicate
    lo, hi = neighbour_indices(centre, others)
    assert (lo, hi) == (1, 2)  # -3.6 mm is caudal, +3.5 mm cranial; the duplicate and the far ones skipped
    # the normal pointing feet-ward (row and column cosines swapped): still caudal = lower z
    centre_r = _axial(0.0, row=(0, 1, 0), col=(1, 0, 0))
    # with this orientation the normal is -z, so "z" along the normal is minus patient z
    others_r = [_axial(-3.5, row=(0, 1, 0), col=(1, 0, 0)), _axial(3.6, row=(0, 1, 0), col=(1, 0, 0))]
    lo, hi = neighbour_indices(centre_r, others_r)
    assert others_r[lo].position[2] < 0 < others_r[hi].position[2]


@pytest.mark.core
def test_slices_off_the_grid_or_too_far_are_not_neighbours():
    centre = _axial(0.0)
    tilted = SliceGeometry(position=np.array([0.0, 0.0, 3.5]), row_cosine=np.array([1.0, 0, 0]),
                           col_cosine=np.array([0, np.cos(0.2), np.sin(0.2)]), pixel_spacing=(0.8, 0.8),
                           rows=64, columns=64)
    others = [tilted, _axial(3.5, shift=(2.0, 0.0)), _axial(-3.5, rows=32), _axial(-3.5, spacing=0.9), _axial(7.0)]
    assert neighbour_indices(centre, others) == (None, None)
    assert neighbour_indices(centre, [_axial(7.0)], max_gap_mm=7.5) == (None, 0)
    sagittal = SliceGeometry(position=np.zeros(3), row_cosine=np.array([0, 1.0, 0]), col_cosine=np.array([0, 0, -1.0]),
                             pixel_spacing=(0.8, 0.8), rows=64, columns=64)
    assert neighbour_indices(sagittal, [_axial(3.5)]) == (None, None)


@pytest.mark.core
def test_context_stack_keeps_the_graded_slices_range_and_fills_gaps():
    rng = np.random.default_rng(0)
    c = rng.normal(100, 10, (32, 32)).astype(np.float32)
    up = 2 * c
    st = normalise_context(c, None, up)
    assert st.shape == (3, 32, 32)
    np.testing.assert_allclose(st[1], normalise_slice(c), atol=1e-5)
    np.testing.assert_allclose(st[0], st[1])  # a missing caudal slice is the graded one
    assert st[2].mean() > st[1].mean() + 1.0  # the brighter neighbour stays brighter
    with pytest.raises(ValueError, match="shape"):
        stack_context(c, c[:16], None)
    boxes = {"foramen_left": [4, 18, 14, 30], "foramen_right": [4, 2, 14, 14]}
    p = level_patches(st, (0.8, 0.8), None, boxes, PatchConfig(patch_px=16), normalised=True)
    single = level_patches(st[1], (0.8, 0.8), None, boxes, PatchConfig(patch_px=16), normalised=True)
    assert p["foramen_left"].shape == (3, 16, 16)
    np.testing.assert_allclose(p["foramen_left"][1], single["foramen_left"])  # same place, same mirroring


def test_context_classifier_sees_the_neighbours_in_order():
    torch = pytest.importorskip("torch")
    from lumbargrade.grading.classifier_inference import Classifier, grade_levels
    from lumbargrade.grading.classifiers import create_classifier

    torch.manual_seed(0)
    model = create_classifier("small_cnn", 2, in_chans=3).eval()
    clf = Classifier(model, {"task": "foramen", "model": "small_cnn", "num_classes": 2, "in_chans": 3,
                             "context_slices": 1, "patch": PatchConfig(patch_px=32).to_dict()})
    rng = np.random.default_rng(1)
    img = rng.normal(100, 10, (64, 64)).astype(np.float32)
    below, above = img + rng.normal(0, 30, img.shape).astype(np.float32), img * 1.5
    boxes = {"foramen_left": [20, 40, 34, 56], "foramen_right": [20, 8, 34, 24]}
    lv = (img, (0.8, 0.8), None, boxes)
    none, ctx, swapped = (grade_levels([lv + (c,)], {"foramen": clf})[0]["foramen_left"]["probability"]
                          for c in (None, (below, above), (above, below)))
    assert len({round(v, 6) for v in (none, ctx, swapped)}) == 3


def test_phantom_neighbours_from_the_manifest_and_from_the_study_agree(phantom_cohort):
    from lumbargrade import manifest as mf
    from lumbargrade.io.study import read_study
    from lumbargrade.pipeline import context_refs

    rows = mf.read_manifest(phantom_cohort / "manifest.csv")
    row = rows[2]
    below, above = mf.load_axial_context(row)
    assert below is not None and above is not None
    study = read_study(phantom_cohort / row["study_dir"])
    axial = study.find("axial_t2")
    uid = row["axial_sop_instance_uid"]
    ref = next(s for b in axial.blocks for s in b.slices if s.sop_instance_uid == uid)
    lo, hi = context_refs(axial, ref)
    np.testing.assert_array_equal(lo.pixels(), below)
    np.testing.assert_array_equal(hi.pixels(), above)
    assert lo.geometry.position[2] < ref.geometry.position[2] < hi.geometry.position[2]
    truth = json.loads((phantom_cohort / row["patient_id"] / "truth.json").read_text())
    assert truth["levels"][2]["axial_sop_instance_uid"] == uid


def test_analyze_gives_the_bundled_foramen_classifier_its_neighbours(phantom_patient):
    """The default pack's foramen classifier looks at three slices; analyze finds them in the axial
    series, and what it reports is what the classifier gives on those three slices."""
    from lumbargrade.grading.classifier_inference import grade_levels
    from lumbargrade.io.study import read_study
    from lumbargrade.modelpack import load_pack
    from lumbargrade.pipeline import analyze_study

    pack = load_pack()
    clf = pack.get("classifier_foramen")
    assert clf.context_slices == 1 and clf.in_chans == 3
    res = analyze_study(read_study(phantom_patient / "dicom"), pack)
    with_both = 0
    for lv in res.levels:
        below, above = lv.context_refs
        z = lv.geometry.position[2]
        assert below is None or below.geometry.position[2] < z
        assert above is None or above.geometry.position[2] > z
        with_both += below is not None and above is not None
        item = (lv.canonical(lv.image), lv.canonical_spacing, lv.canonical(lv.sac_mask), lv.canonical_boxes())
        seen = grade_levels([item + (lv.canonical_context(),)], {"foramen": clf})[0]
        alone = grade_levels([item], {"foramen": clf})[0]
        for side in ("foramen_left", "foramen_right"):
            assert lv.findings[side]["probability"] == pytest.approx(seen[side]["probability"], abs=1e-6)
        if below is not None or above is not None:
            assert alone["foramen_left"]["probability"] != pytest.approx(seen["foramen_left"]["probability"], abs=1e-6)
    assert with_both >= 3


@pytest.mark.parametrize("task,boxes", [("central", "truth"), ("foramen", "rule")])
def test_cli_trains_a_context_classifier_on_png_slices(tmp_path, task, boxes):
    """PNG/NPY slices have no neighbours: the graded slice fills every channel, and training and
    inference run on three channels for a central and a lateral task alike."""
    pytest.importorskip("torch")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_classifiers import _write_cohort

    from lumbargrade.cli import main
    from lumbargrade.grading.classifier_inference import load_classifier

    man = _write_cohort(tmp_path / "cohort")
    out = tmp_path / "run"
    rc = main(["train", "classifier", "--task", task, "--data", str(man), "--out", str(out),
               "--set", "epochs=1", "--set", "patch.patch_px=32", "--set", "batch_size=8",
               "--set", f"patch_boxes={boxes}", "--set", "context_slices=1", "--set", "in_chans=3",
               "--set", "synth_copies=0", "--seed", "0"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["context_slices"] == 1 and cfg["in_chans"] == 3
    clf = load_classifier(out)
    assert clf.context_slices == 1
    assert clf.predict(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 4 if task == "central" else 2)
    # without in_chans=3 it is one line and exit status 2, not a traceback
    assert main(["train", "classifier", "--task", task, "--data", str(man), "--out", str(tmp_path / "bad"),
                 "--set", "context_slices=1"]) == 2


def test_synthetic_context_copies_take_the_neighbours_tissue_maps_from_the_slice_bank(phantom_cohort, caplog):
    """Domain-randomised copies of a three-slice patch: the caudal and cranial channels are drawn
    from those slices' own tissue maps (the slice bank beside the manifest, matched by file), the
    three as one acquisition; without the neighbours' maps a row gets no copies."""
    import csv

    from lumbargrade import manifest as mf
    from lumbargrade.grading import classifier_training as ct

    rows = mf.read_manifest(phantom_cohort / "manifest.csv")
    row = rows[2]
    view = mf.axial_view_of(row)
    centre = view.to_canonical(mf.load_image_file(phantom_cohort / row["tissue_map"]).astype(np.uint8))
    below, above = mf.axial_context_paths(row)
    stack = ct._context_tissues(row, centre, view, (below, above))
    assert below is not None and above is not None
    with open(phantom_cohort / "slices.csv", newline="") as fh:
        bank = {(phantom_cohort / r["axial_image"]).resolve(): r["tissue_map"] for r in csv.DictReader(fh)}
    for k, f in ((0, below), (2, above)):
        own = view.to_canonical(mf.load_image_file(phantom_cohort / bank[f]).astype(np.uint8))
        np.testing.assert_array_equal(stack[k], own)
        assert (stack[k] != centre).any()
    np.testing.assert_array_equal(stack[1], centre)

    cfg = ct.resolve_config({}, ["synth_copies=1", "context_slices=1", "in_chans=3", "patch_boxes=truth",
                                 "patch.patch_px=32"])
    from lumbargrade.segmentation.synth import SynthConfig

    synth = SynthConfig.from_dict(cfg["synth"])
    pcfg = ct.PatchConfig.from_dict(cfg["patch"])
    sac = np.zeros(centre.shape, bool)
    same = ct._synthetic_slice(np.stack([centre] * 3), sac, (0.8, 0.8), np.random.default_rng(1), synth, pcfg)
    np.testing.assert_array_equal(same[0], same[1])  # one draw for all three slices
    np.testing.assert_array_equal(same[2], same[1])

    import logging

    log = logging.getLogger("test-context-copies")
    with caplog.at_level(logging.INFO, logger=log.name):
        ps = ct.build_patch_set(rows[:2], "foramen", cfg, log, seed=0)
    assert ps.x.shape[1:] == (3, 32, 32)
    assert sum(" synth1 " in s for s in ps.source) == sum(" synth" not in s for s in ps.source) > 0
    assert "2 of 2 slices with 1 domain-randomised copies each" in caplog.text
    caplog.clear()
    ct._BANK_TISSUES[row["_base_dir"]] = {}  # a manifest without a slice bank: rendered patches only
    try:
        with caplog.at_level(logging.INFO, logger=log.name):
            ps = ct.build_patch_set(rows[:2], "foramen", cfg, log, seed=0)
    finally:
        ct._BANK_TISSUES.pop(row["_base_dir"])
    assert len(ps) > 0 and not any(" synth" in s for s in ps.source)
    assert "no tissue maps for its neighbouring slices" in caplog.text and "0 of 2 slices" in caplog.text
