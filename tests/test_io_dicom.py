"""lumbargrade.io on synthetic DICOM studies written with pydicom (lumbargrade.io.testing)."""

import json
import zipfile

import numpy as np
import pytest

from lumbargrade.errors import InputError
from lumbargrade.geometry import find_slice
from lumbargrade.io import load_rules, read_study
from lumbargrade.io.dicom import read_header
from lumbargrade.io.testing import (
    axial_block,
    make_dataset,
    new_uid,
    pattern_value,
    sagittal_stack,
    write_dataset,
    write_example_study,
    write_series,
)


pytestmark = pytest.mark.core  # needs only the inference core


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    return write_example_study(root, seed=11)


def test_example_study_series_roles_blocks(example):
    s = read_study(example["root"])
    assert s.study_instance_uid == example["study_uid"]
    by_uid = {x.series_instance_uid: x for x in s.series}
    assert set(by_uid) == {example["axial_uid"], example["sagittal_uid"], example["scout_uid"]}
    ax, sag, scout = (
        by_uid[example["axial_uid"]],
        by_uid[example["sagittal_uid"]],
        by_uid[example["scout_uid"]],
    )
    assert (ax.plane, ax.n_blocks, ax.n_slices, ax.role) == ("axial", 3, 12, "axial_t2")
    assert (sag.plane, sag.n_blocks, sag.n_slices, sag.role) == ("sagittal", 1, 9, "sagittal_t2")
    assert scout.role is None and scout.is_localizer
    assert s.find("axial_t2") is ax and s.find("sagittal_t2") is sag and s.find("nope") is None
    assert ax.pixel_spacing == (1.0, 1.0) and ax.slice_thickness == 4.0
    assert sag.pixel_spacing == pytest.approx((0.8, 0.8)) and (sag.rows, sag.columns) == (48, 40)
    # the junk file is a warning naming it
    assert len(s.warnings) == 1 and "notes.txt" in s.warnings[0]
    assert len(ax.all_slices()) == 12


def test_blocks_sorted_by_geometry_not_names_or_instance_numbers(example):
    s = read_study(example["root"])
    ax = s.find("axial_t2")
    for block, truth in zip(ax.blocks, example["axial_blocks"]):
        got = [r.geometry.position for r in block.slices]
        assert np.allclose(got, [g.position for g in truth], atol=1e-4)
    # the files were written with shuffled instance numbers: order must not follow them
    inst = [r.instance_number for r in ax.all_slices()]
    assert inst != sorted(inst)
    sag = s.find("sagittal_t2").blocks[0]
    d = [r.geometry.position @ sag.normal for r in sag.slices]
    assert np.all(np.diff(d) > 0)


def test_volume_voxels_match_patient_pattern(example):
    s = read_study(example["root"])
    rng = np.random.default_rng(0)
    for series in (s.find("axial_t2"), s.find("sagittal_t2")):
        for block in series.blocks:
            v = block.volume()
            assert v.array.dtype == np.float32 and v.array.shape[0] == len(block)
            ijk = np.stack([rng.integers(0, n, 20) for n in v.array.shape], axis=1)
            expect = pattern_value(v.voxel_to_patient(ijk))
            got = v.array[tuple(ijk.T)]
            assert np.all(np.abs(got - expect) <= 0.5 + 1e-3)
            back = v.patient_to_voxel(v.voxel_to_patient(ijk))
            assert np.allclose(back, ijk)


def test_point_found_in_right_block_and_slice(example):
    s = read_study(example["root"])
    ax = s.find("axial_t2")
    for bi, truth in enumerate(example["axial_blocks"]):
        for k, g in enumerate(truth):
            p = g.pixel_to_patient([12.0, 20.0]) - 0.6 * g.normal
            hit = find_slice(p, ax.block_geometries())
            assert (
                hit is not None and hit[:2] == (bi, k) and hit[2] == pytest.approx(-0.6, abs=1e-3)
            )
            ref, _ = ax.find_slice(p)
            assert ref is ax.blocks[bi].slices[k]
            r, c, _ = ref.geometry.patient_to_pixel(p)
            assert (r, c) == pytest.approx((12.0, 20.0), abs=1e-3)


def test_rescale_applied_and_pixels_lazy(tmp_path):
    geoms = axial_block(n=3, rows=8, columns=8)
    write_series(tmp_path, geoms, description="AX T2", rescale=(2.0, -100.0))
    s = read_study(tmp_path)
    block = s.series[0].blocks[0]
    assert all(r._pixels is None for r in block.slices)  # headers only until asked
    v = block.volume()
    expect = pattern_value(v.voxel_to_patient(np.array([1, 3, 4])))
    assert abs(float(v.array[1, 3, 4]) - expect) <= 1.0 + 1e-3  # one stored unit = 2
    assert "PixelData" not in block.slices[0].header


def test_files_without_preamble_and_nested_folders(tmp_path):
    geoms = axial_block(n=4)
    write_series(tmp_path / "a" / "b" / "c", geoms, preamble=False, rng=np.random.default_rng(1))
    raw = next((tmp_path / "a" / "b" / "c").iterdir()).read_bytes()
    assert raw[128:132] != b"DICM"
    s = read_study(tmp_path)
    assert s.series[0].n_slices == 4 and s.warnings == []
    assert s.series[0].blocks[0].volume().array.shape == (4, 32, 32)


def test_zip_of_folder(tmp_path, example):
    z = tmp_path / "study.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(example["root"].rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(example["root"]).as_posix())
    with read_study(z) as s:
        assert {x.role for x in s.series} == {"axial_t2", "sagittal_t2", None}
        assert s.find("axial_t2").n_blocks == 3
        assert any("study.zip:notes.txt" in w for w in s.warnings)
        v = s.find("axial_t2").blocks[2].volume()  # pixels read from the extracted copy
        assert v.array.shape == (4, 32, 32)
        tmp = s._tmpdir.name
    import os

    assert not os.path.exists(tmp)


def test_bad_files_among_good_ones_are_warnings(tmp_path):
    geoms = axial_block(n=5)
    paths = write_series(tmp_path, geoms, description="AX T2")
    b = paths[2].read_bytes()
    paths[2].write_bytes(b[:-100])  # truncated pixel data, header intact
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)) * 4)
    s = read_study(tmp_path)
    assert s.series[0].n_slices == 4
    w = "\n".join(s.warnings)
    assert f"{paths[2]}: file truncated" in w
    assert "empty.dcm: empty file" in w and "junk.bin" in w
    assert len(s.warnings) == 3


def test_read_header_detects_truncation_and_non_images(tmp_path):
    g = axial_block(n=1, rows=16, columns=16)[0]
    ds = make_dataset(g, study_uid=new_uid(), series_uid=new_uid())
    p = write_dataset(ds, tmp_path / "ok")
    assert read_header(p)[1] is None
    data = p.read_bytes()
    (tmp_path / "t").write_bytes(data[: len(data) - 1])
    assert "truncated" in read_header(tmp_path / "t")[1]
    (tmp_path / "h").write_bytes(data[:200])  # cut inside the header
    assert read_header(tmp_path / "h")[1] is not None
    nop = make_dataset(g, study_uid=new_uid(), series_uid=new_uid())
    del nop.PixelData
    assert "no pixel data" in read_header(write_dataset(nop, tmp_path / "nopix"))[1]
    short = make_dataset(g, study_uid=new_uid(), series_uid=new_uid())
    short.PixelData = short.PixelData[:100]
    assert "too short" in read_header(write_dataset(short, tmp_path / "short"))[1]


def test_series_missing_tags_dropped_with_warning_when_others_are_good(tmp_path):
    st = new_uid()
    write_series(tmp_path / "good", axial_block(n=3), study_uid=st, description="AX T2")
    write_series(
        tmp_path / "bad",
        sagittal_stack(n=4),
        study_uid=st,
        description="SAG T2",
        series_number=2,
        omit=("ImagePositionPatient",),
    )
    s = read_study(tmp_path)
    assert len(s.series) == 1 and s.series[0].role == "axial_t2"
    assert any("series 'SAG T2'" in w and "ImagePositionPatient" in w for w in s.warnings)


@pytest.mark.parametrize(
    "omit", ["ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"]
)
def test_series_missing_geometry_is_input_error(tmp_path, omit):
    write_series(tmp_path, axial_block(n=3), description="AX T2", omit=(omit,))
    with pytest.raises(InputError) as e:
        read_study(tmp_path)
    msg = e.value.one_line()
    assert omit in msg and "series 'AX T2'" in msg and "\n" not in msg


def test_different_sizes_is_input_error(tmp_path):
    uid, st = new_uid(), new_uid()
    write_series(
        tmp_path / "a", axial_block(n=3, rows=32, columns=32), study_uid=st, series_uid=uid
    )
    write_series(
        tmp_path / "b",
        axial_block((0, 0, 20), n=2, rows=24, columns=24),
        study_uid=st,
        series_uid=uid,
    )
    with pytest.raises(InputError, match="different sizes"):
        read_study(tmp_path)


def test_two_candidates_tie_break_and_warning(tmp_path):
    st = new_uid()
    write_series(
        tmp_path / "a", axial_block(n=4), study_uid=st, description="AX T2", series_number=4
    )
    write_series(
        tmp_path / "b", axial_block(n=6), study_uid=st, description="AX T2 TSE", series_number=5
    )
    write_series(
        tmp_path / "c", axial_block(n=8), study_uid=st, description="AX T1 TSE", series_number=6
    )
    write_series(
        tmp_path / "d", axial_block(n=9), study_uid=st, description="AX STIR", series_number=7
    )
    s = read_study(tmp_path)
    roles = {x.description: x.role for x in s.series}
    # T1 and STIR excluded; among the T2 series equal score -> most slices
    assert roles == {"AX T2": None, "AX T2 TSE": "axial_t2", "AX T1 TSE": None, "AX STIR": None}
    assert any("2 series qualify for axial_t2" in w for w in s.warnings)


def test_tags_decide_when_description_is_silent(tmp_path):
    st = new_uid()
    write_series(
        tmp_path / "a",
        axial_block(n=5),
        study_uid=st,
        description="AX",
        series_number=1,
        echo_time=10.0,
        repetition_time=500.0,
        scanning_sequence="SE",
    )  # T1 by tags
    write_series(
        tmp_path / "b",
        axial_block(n=4),
        study_uid=st,
        description="AX",
        series_number=2,
        echo_time=110.0,
        repetition_time=3500.0,
        scanning_sequence="SE",
    )
    s = read_study(tmp_path)
    assert [x.role for x in s.series] == [None, "axial_t2"]


def test_user_rules_override(tmp_path):
    write_series(tmp_path / "s", axial_block(n=4), description="AX T1 TSE")
    assert read_study(tmp_path / "s").series[0].role is None
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"roles": {"axial_t2": {"exclude": []}}}))
    assert read_study(tmp_path / "s", rules=rules).series[0].role == "axial_t2"
    merged = load_rules(rules)
    assert merged["roles"]["axial_t2"]["plane"] == "axial"  # other fields kept
    assert "sagittal_t2" in merged["roles"]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        load_rules(bad)
    with pytest.raises(InputError, match="plane"):
        load_rules({"roles": {"axial_t2": {"plane": "diagonal"}}})


def test_two_slice_series_in_other_plane_is_scout(tmp_path):
    st = new_uid()
    write_series(tmp_path / "ax", axial_block(n=5), study_uid=st, description="AX T2")
    write_series(
        tmp_path / "cor",
        [sagittal_stack(n=2)[0], sagittal_stack(n=2)[1]],
        study_uid=st,
        description="T2 quick",
        series_number=9,
    )
    s = read_study(tmp_path)
    small = next(x for x in s.series if x.n_slices == 2)
    assert small.is_localizer and small.role is None


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.mkdir(), "empty folder"),
        (lambda p: (p.mkdir(), (p / "a.txt").write_text("x" * 300)), "no readable DICOM images"),
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"PK\x03\x04garbage"), "zip"),
    ],
)
def test_bad_paths(tmp_path, make, match):
    p = tmp_path / ("x.zip" if match == "zip" else "x")
    make(p)
    with pytest.raises(InputError, match=match) as e:
        read_study(p)
    assert str(p) in e.value.one_line()


def test_dicom_without_image_is_skipped(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    write_series(tmp_path / "img", axial_block(n=3), description="AX T2")
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    sr.file_meta.MediaStorageSOPInstanceUID = new_uid()
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID
    sr.Modality = "SR"
    write_dataset(sr, tmp_path / "report")
    s = read_study(tmp_path)
    assert len(s.series) == 1
    assert s.warnings == [f"{tmp_path / 'report'}: DICOM file without an image (Modality SR)"]


def test_non_mr_modality_gets_no_role(tmp_path):
    write_series(tmp_path / "ct", axial_block(n=6), description="AX T2", modality="CT")
    s = read_study(tmp_path)
    assert s.series[0].role is None and s.series[0].plane == "axial"


def test_enhanced_multiframe_blocks_and_pixels(tmp_path):
    from lumbargrade.io.testing import make_multiframe_dataset

    st, uid = new_uid(), new_uid()
    b1 = axial_block((0, 0, 30), n=3, tilt_deg=0, rows=16, columns=20)
    b2 = axial_block((0, 0, -10), n=4, tilt_deg=15, rows=16, columns=20)
    frames = [b2[2], b1[0], b2[0], b1[2], b2[3], b1[1], b2[1]]  # scrambled frame order
    ds = make_multiframe_dataset(
        frames, study_uid=st, series_uid=uid, description="AX T2 TSE", rescale=(0.5, 10.0)
    )
    write_dataset(ds, tmp_path / "enhanced.dcm")
    s = read_study(tmp_path)
    se = s.series[0]
    assert (se.n_blocks, se.n_slices, se.role, se.plane) == (2, 7, "axial_t2", "axial")
    for block, truth in zip(se.blocks, (b1, b2)):
        assert np.allclose(
            [r.geometry.position for r in block.slices], [g.position for g in truth], atol=1e-4
        )
        v = block.volume()
        ijk = np.array([[0, 0, 0], [len(truth) - 1, 15, 19], [1, 7, 3]])
        assert np.all(
            np.abs(v.array[tuple(ijk.T)] - pattern_value(v.voxel_to_patient(ijk))) <= 0.25 + 1e-3
        )
    assert {r.frame for r in se.all_slices()} == set(range(7))


def test_parallel_blocks_with_gap_and_uneven_spacing(tmp_path):
    st = new_uid()
    geoms = axial_block((0, 0, 40), n=3, spacing=4.0) + axial_block((0, 0, 0), n=3, spacing=4.0)
    write_series(
        tmp_path / "a", geoms, study_uid=st, description="AX T2", rng=np.random.default_rng(2)
    )
    s = read_study(tmp_path / "a")
    assert s.series[0].n_blocks == 2 and s.warnings == []
    uneven = axial_block(n=4, spacing=4.0)
    uneven[3] = axial_block((0, 0, 7.0), n=1)[0]  # z = -6, -2, 2, 7: last step 5 mm
    write_series(tmp_path / "b", uneven, study_uid=st, description="AX T2")
    s = read_study(tmp_path / "b")
    assert s.series[0].n_blocks == 1
    assert any("uneven slice spacing" in w for w in s.warnings)
