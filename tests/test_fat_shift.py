"""The fat-water shift correction: pure mask moves, the direction reader's antisymmetry and
agreement rule, the pipeline's record, and the shipped reader on phantom studies."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from lumbargrade.geometry import SliceGeometry
from lumbargrade.segmentation.fat_shift import (
    FatShiftReader,
    correct_masks,
    patient_direction,
    readout_rows,
    shift_mask,
)


def _geometry(row=(1, 0, 0), col=(0, 1, 0), n=64):
    return SliceGeometry(position=np.zeros(3), row_cosine=np.array(row, float), col_cosine=np.array(col, float),
                         pixel_spacing=(0.5, 0.5), rows=n, columns=n, thickness=4.0)


def _centroid(m):
    return np.argwhere(m).mean(0)


def test_shift_mask_moves_by_subpixel_amount():
    m = np.zeros((40, 40), bool)
    m[10:20, 10:30] = True
    moved = shift_mask(m, (0.0, -2.0))
    assert _centroid(moved) == pytest.approx(_centroid(m) + [0, -2], abs=1e-6)
    assert moved.sum() == m.sum()
    assert not shift_mask(np.zeros((5, 5), bool), (1.0, 1.0)).any()


def test_shift_mask_equals_shifting_the_whole_image():
    """Only the mask's neighbourhood is interpolated; the result is that of the whole image's."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for _ in range(100):
        m = np.zeros((40, 50), bool)
        r, c = rng.integers(0, 35), rng.integers(0, 45)
        m[r:r + rng.integers(1, 12), c:c + rng.integers(1, 12)] = True
        move = rng.uniform(-3, 3, 2)
        whole = ndimage.shift(m.astype(np.float32), list(move), order=1, mode="constant") > 0.5
        assert np.array_equal(shift_mask(m, move), whole)


def test_correct_masks_moves_disc_and_regions_back_along_the_readout_only():
    disc = np.zeros((60, 60), bool)
    disc[20:30, 15:45] = True
    regions = np.zeros((60, 60), np.uint8)
    regions[35:42, 10:18] = 3
    regions[35:42, 42:50] = 4
    regions[44:50, 10:16] = 5
    d2, r2 = correct_masks(disc, regions, shift_px=2.0, axis=0, alpha=0.75)
    assert _centroid(d2) == pytest.approx(_centroid(disc) + [-1.5, 0], abs=0.3)
    for v in (3, 4, 5):
        assert _centroid(r2 == v)[1] == pytest.approx(_centroid(regions == v)[1], abs=1e-6)
        assert _centroid(r2 == v)[0] == pytest.approx(_centroid(regions == v)[0] - 1.5, abs=0.3)
    d3, _ = correct_masks(disc, None, shift_px=-2.0, axis=1, alpha=1.0)  # fat displaced the other way
    assert _centroid(d3) == pytest.approx(_centroid(disc) + [0, 2.0], abs=1e-6)


def test_patient_direction_follows_the_cosines():
    g = _geometry()
    assert patient_direction(g, 1, +1) == "left"  # +x of LPS is the patient's left
    assert patient_direction(g, 1, -1) == "right"
    assert patient_direction(g, 0, +1) == "posterior"
    flipped = _geometry(row=(-1, 0, 0))
    assert patient_direction(flipped, 1, +1) == "right"
    transposed = _geometry(row=(0, 1, 0), col=(1, 0, 0))
    assert patient_direction(transposed, 0, +1) == "left"


def test_readout_rows_turns_the_readout_onto_the_rows():
    a = np.arange(12, dtype=np.float32).reshape(3, 4) * 10
    assert readout_rows(a, 1).shape == (3, 4)
    assert readout_rows(a, 0).shape == (4, 3)
    assert np.allclose(readout_rows(a, 0) * np.percentile(a, 99), a.T)


class _EdgeNet:
    """A stand-in network: the mean of the right half minus the left half (so the score of a
    slice and of its mirror image are opposite)."""

    runtime = "test"

    def __call__(self, x):
        h = x.shape[-1] // 2
        return (x[..., h:].mean((1, 2, 3)) - x[..., :h].mean((1, 2, 3)))[:, None].astype(np.float32)


def _reader(min_agreement=0.8):
    return FatShiftReader(_EdgeNet(), {"crop": 32, "alpha": 0.75, "min_agreement": min_agreement})


def test_reader_scores_are_antisymmetric_and_need_agreement():
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (40, 1))
    right = [ramp + rng.normal(0, 0.01, ramp.shape).astype(np.float32) for _ in range(5)]
    s = _reader().scores(right)
    assert np.all(s > 0)
    assert np.allclose(_reader().scores([a[:, ::-1] for a in right]), -s, atol=1e-6)
    assert _reader().direction(right)["sign"] == 1
    assert _reader().direction([a[:, ::-1] for a in right])["sign"] == -1
    mixed = right[:3] + [a[:, ::-1] for a in right[3:]]  # 3 of 5 agree
    d = _reader().direction(mixed)
    assert d["sign"] == 0 and d["agreement"] == pytest.approx(0.6)
    assert _reader(min_agreement=0.6).direction(mixed)["sign"] != 0
    assert _reader().direction([])["sign"] == 0


def _level(header, image=None, geometry=None):
    from lumbargrade.pipeline import LevelResult

    g = geometry or _geometry()
    img = image if image is not None else np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    disc = np.zeros((64, 64), bool)
    disc[20:30, 20:44] = True
    regions = np.zeros((64, 64), np.uint8)
    regions[40:46, 10:18] = 3
    lv = LevelResult(level="L4/L5", series_instance_uid="1.2.3", sop_instance_uid="1.2.3.4", geometry=g,
                     image=img, slice_choice={}, source=SimpleNamespace(header=header))
    lv.disc_mask, lv.regions, lv.sac_mask = disc.copy(), regions.copy(), np.zeros((64, 64), bool)
    return lv


def test_pipeline_correction_moves_disc_back_and_records_it():
    from lumbargrade.pipeline import correct_fat_shift

    header = SimpleNamespace(MagneticFieldStrength=1.5, PixelBandwidth=149.0, InPlanePhaseEncodingDirection="COL")
    lv = _level(header)
    before = _centroid(lv.disc_mask)
    correct_fat_shift([lv], _reader())
    size = 3.5 * 42.576 * 1.5 / 149.0
    rec = lv.fat_shift
    assert rec["applied"] and rec["fat_displaced_towards"] == "left"
    assert rec["moved_back_px"] == pytest.approx(0.75 * size, abs=1e-3)
    assert rec["moved_back_mm"] == pytest.approx(0.75 * size * 0.5, abs=1e-3)
    assert _centroid(lv.disc_mask)[1] == pytest.approx(before[1] - 0.75 * size, abs=0.3)
    record = lv.to_record("labels/x.png")
    assert record["fat_water_shift"]["correction"]["applied"] is True

    lv2 = _level(header)
    correct_fat_shift([lv2], None)  # a pack without a reader: nothing moves, the record says why
    assert np.array_equal(lv2.disc_mask, _level(header).disc_mask)
    assert lv2.fat_shift["applied"] is False and "no fat-shift reader" in lv2.fat_shift["reason"]

    lv3 = _level(SimpleNamespace(MagneticFieldStrength=1.5))  # no bandwidth: no size, nothing to do
    correct_fat_shift([lv3], _reader())
    assert lv3.fat_shift is None and np.array_equal(lv3.disc_mask, _level(header).disc_mask)


def test_shipped_reader_reads_the_phantoms_direction_and_its_mirror(phantom_cohort):
    """The bundled pack's reader on every phantom study of the test cohort (rendered with fat
    displaced towards higher stored indices): the right direction; the series mirrored along the
    readout (which is what the other readout polarity looks like): the other one."""
    import pydicom

    from lumbargrade.io.acquisition import readout_index_axis
    from lumbargrade.modelpack import load_pack

    reader = load_pack().get("fat_shift")
    if reader is None:
        pytest.fail("the bundled pack has no fat_shift reader")
    n = 0
    for truth_p in sorted(phantom_cohort.glob("P*/truth.json")):
        mr = json.loads(truth_p.read_text())["mr"]
        files = sorted((truth_p.parent / "dicom" / "ax_t2").glob("*.dcm"))
        ds = [pydicom.dcmread(f) for f in files]
        axis = readout_index_axis(ds[0])
        assert axis == mr["readout_axis"]
        turned = [readout_rows(d.pixel_array.astype(np.float32), axis) for d in ds]
        want = 1 if mr["chemical_shift_px"] > 0 else -1
        assert reader.direction(turned)["sign"] == want, truth_p.parent.name
        assert reader.direction([t[:, ::-1] for t in turned])["sign"] == -want, truth_p.parent.name
        n += 1
    assert n >= 2


def test_train_command_writes_a_loadable_reader(phantom_cohort, tmp_path, capsys):
    """`lumbargrade train fat-shift` on a manifest (a few steps): config, weights and metrics
    written, the run loads as a reader; the direction comes from the fat_shift_sign column where
    there is one; an unknown --set key is a one-line error."""
    import csv

    from lumbargrade.cli import main
    from lumbargrade.segmentation.fat_shift import _known_sign, load_fat_shift_reader

    with (phantom_cohort / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    pids = sorted({r["patient_id"] for r in rows})
    for r in rows:
        r["split"] = "val" if r["patient_id"] == pids[-1] else "train"
        r["axial_image"] = str(phantom_cohort / r["axial_image"])
        r["study_dir"] = str(phantom_cohort / r["study_dir"])
    m = tmp_path / "manifest.csv"
    with m.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) + ["fat_shift_sign"])
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "run"
    assert main(["train", "fat-shift", "--data", str(m), "--out", str(out), "--set", "steps=3",
                 "--set", "batch_size=4"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_val_slices"] == sum(r["split"] == "val" for r in rows) and metrics["val"]["n_series"] == 1
    reader = load_fat_shift_reader(out, runtime="torch")
    assert reader.config["steps"] == 3 and reader.direction([np.ones((40, 40), np.float32)])["n_slices"] == 1
    assert _known_sign({"fat_shift_sign": "-1"}, {}) == -1
    assert _known_sign({"patient_id": pids[0], "_base_dir": str(phantom_cohort)}, {}) == 1  # truth.json
    capsys.readouterr()
    assert main(["train", "fat-shift", "--data", str(m), "--out", str(tmp_path / "r2"), "--set", "stepz=3"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stepz" in err[0]
    bad = tmp_path / "bad.json"
    bad.write_text('{"alpha": 0.5, "stepz": 3}')
    assert main(["train", "fat-shift", "--data", str(m), "--out", str(tmp_path / "r3"), "--config", str(bad)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stepz" in err[0] and "bad.json" in err[0]
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()  # nothing written on a mistake
