"""lumbargrade.io NIfTI reading: the committed sct t2_lumbar fixture and synthetic NIfTI files."""

from pathlib import Path

import numpy as np
import pytest

from lumbargrade.errors import InputError
from lumbargrade.io import read_study
from lumbargrade.io.nifti import choose_slice_axis

pytestmark = pytest.mark.core  # needs only the inference core


FIXTURE = Path(__file__).parent / "fixtures" / "nifti" / "t2_lumbar.nii.gz"


@pytest.fixture(scope="module")
def sct():
    import nibabel as nib

    img = nib.load(str(FIXTURE))
    s = read_study(FIXTURE)
    return img, s, s.series[0].blocks[0].volume()


def test_fixture_series_summary(sct):
    _, s, vol = sct
    assert len(s.series) == 1 and s.study_instance_uid is None
    se = s.series[0]
    # acquired sagittally: 38 sagittal slices of 201 x 257 (rows superior -> inferior)
    assert se.plane == "sagittal" and se.n_slices == 38 and se.n_blocks == 1
    assert (se.rows, se.columns) == (201, 257) and vol.shape == (38, 201, 257)
    assert se.role == "sagittal_t2"
    g = se.blocks[0].slices[0].geometry
    assert np.allclose(g.col_cosine, [0, 0, -1], atol=1e-6)  # row index grows inferiorly
    assert np.allclose(g.row_cosine, [0, 1, 0], atol=1e-6)  # column index grows posteriorly


def test_fixture_voxels_agree_with_nibabel_affine(sct):
    img, s, vol = sct
    data = np.asarray(img.dataobj, dtype=np.float32)
    aff = img.affine
    rng = np.random.default_rng(0)
    for _ in range(25):
        ijk = rng.integers(0, vol.shape)
        lps = vol.voxel_to_patient(ijk)
        # the same point through nibabel's RAS affine, x and y negated
        nifti_ijk = np.linalg.solve(aff[:3, :3], lps * [-1, -1, 1] - aff[:3, 3])
        assert np.allclose(nifti_ijk, np.round(nifti_ijk), atol=1e-4)
        nijk = tuple(int(v) for v in np.round(nifti_ijk))
        assert np.allclose((aff @ [*nijk, 1])[:3] * [-1, -1, 1], lps, atol=1e-4)
        assert vol.array[tuple(ijk)] == data[nijk]
    # per-slice geometry agrees with the volume affine, so find_slice works
    se = s.series[0]
    for k in (0, 17, 37):
        p = vol.voxel_to_patient([k, 100.2, 50.7])
        ref, d = se.find_slice(p)
        assert ref is se.blocks[0].slices[k] and abs(d) < 1e-6
        assert np.allclose(ref.geometry.patient_to_pixel(p)[:2], [100.2, 50.7])


def _write(tmp_path, data, aff, name="vol.nii.gz"):
    import nibabel as nib

    p = tmp_path / name
    nib.save(nib.Nifti1Image(data, aff), str(p))
    return p


def test_axial_thick_slices_chosen_and_ordered(tmp_path):
    # LAS-like axes with 4 mm slices along k: axial, slices ascending along the normal
    aff = np.diag([-0.8, 0.8, 4.0, 1.0])
    aff[:3, 3] = [50, -40, -60]
    data = np.arange(10 * 12 * 6, dtype=np.int16).reshape(10, 12, 6)
    p = _write(tmp_path, data, aff, "ax_t2.nii")
    s = read_study(p)
    se = s.series[0]
    assert (
        se.plane == "axial" and se.n_slices == 6 and se.pixel_spacing == pytest.approx((0.8, 0.8))
    )
    assert se.slice_thickness == pytest.approx(4.0) and se.role == "axial_t2"
    v = se.blocks[0].volume()
    g = se.blocks[0].slices[0].geometry
    assert np.allclose(g.row_cosine, [1, 0, 0]) and np.allclose(g.col_cosine, [0, 1, 0])
    pos = [r.geometry.position @ g.normal for r in se.blocks[0].slices]
    assert np.all(np.diff(pos) > 0)
    for ijk in [(0, 0, 0), (5, 7, 3), (2, 11, 9)]:
        lps = v.voxel_to_patient(ijk)
        n = np.linalg.solve(aff[:3, :3], lps * [-1, -1, 1] - aff[:3, 3])
        assert v.array[ijk] == data[tuple(round(x) for x in n)]


def test_choose_slice_axis_rule():
    assert choose_slice_axis(np.diag([1, 1, 1, 1.0]), (38, 257, 201)) == 0
    assert choose_slice_axis(np.diag([0.5, 4, 0.5, 1.0]), (300, 20, 300)) == 1
    assert choose_slice_axis(np.diag([1, 1, 3.0, 1.0]), (10, 10, 40)) == 2


def test_bad_nifti(tmp_path):
    p = tmp_path / "broken.nii.gz"
    p.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match="broken.nii.gz"):
        read_study(p)
