"""lumbargrade.geometry: pure functions, checked on synthetic slices with known geometry."""

import numpy as np
import pytest

from lumbargrade import geometry as G
from lumbargrade.io.testing import axial_block, sagittal_stack, slice_through


pytestmark = pytest.mark.core  # needs only the inference core


def test_from_dicom_values_normalises_and_names_axes():
    g = G.SliceGeometry.from_dicom_values(
        [1, 2, 3], [2, 0, 0, 0, 3, 0], ["0.5", "0.7"], 10, 20, "4"
    )
    assert np.allclose(g.row_cosine, [1, 0, 0]) and np.allclose(g.col_cosine, [0, 1, 0])
    assert np.allclose(g.normal, [0, 0, 1])
    assert g.pixel_spacing == (0.5, 0.7) and g.thickness == 4.0
    # pixel (row 1, col 0) moves along col_cosine by the row spacing; (0, 1) along row_cosine
    assert np.allclose(g.pixel_to_patient([1, 0]), [1, 2.5, 3])
    assert np.allclose(g.pixel_to_patient([0, 1]), [1.7, 2, 3])
    with pytest.raises(ValueError):
        G.SliceGeometry.from_dicom_values([0, 0, 0], [0, 0, 0, 0, 1, 0], [1, 1], 2, 2)
    for bad in (float("inf"), float("nan")):  # a damaged header: an error, not a NaN geometry
        with pytest.raises(ValueError, match="not finite"):
            G.SliceGeometry.from_dicom_values([0, 0, 0], [bad, 0, 0, 0, 1, 0], [1, 1], 2, 2)


@pytest.mark.parametrize(
    "iop, plane",
    [
        ([1, 0, 0, 0, 1, 0], "axial"),
        ([0, 1, 0, 0, 0, -1], "sagittal"),
        ([1, 0, 0, 0, 0, -1], "coronal"),
        ([1, 0, 0, 0, np.cos(np.radians(30)), np.sin(np.radians(30))], "axial"),  # L5/S1 tilt
        ([1, 0, 0, 0, np.cos(np.radians(35)), -np.sin(np.radians(35))], "axial"),
        ([1, 0, 0, 0, np.cos(np.radians(45)), np.sin(np.radians(45))], "oblique"),
        ([0, 1, 0, np.sin(np.radians(20)), 0, -np.cos(np.radians(20))], "sagittal"),
    ],
)
def test_plane_of(iop, plane):
    assert G.plane_of(iop) == plane


def test_pixel_patient_round_trip_tilted_slice():
    rng = np.random.default_rng(1)
    g = axial_block((3, -7, 20), n=1, tilt_deg=23, rows=30, columns=40, pixel_spacing=(0.6, 0.9))[0]
    rc = rng.uniform(-5, 45, size=(50, 2))
    xyz = g.pixel_to_patient(rc)
    back = g.patient_to_pixel(xyz)
    assert np.allclose(back[:, :2], rc) and np.allclose(back[:, 2], 0, atol=1e-9)
    # a point 2.5 mm along the normal is 2.5 mm away, with the right sign
    p = g.pixel_to_patient([4, 5]) + 2.5 * g.normal
    assert g.signed_distance(p) == pytest.approx(2.5)
    assert g.patient_to_pixel(p)[2] == pytest.approx(2.5)
    grid = g.pixel_grid_lps()
    assert grid.shape == (30, 40, 3) and np.allclose(grid[7, 9], g.pixel_to_patient([7, 9]))


def test_affine_voxel_patient_round_trip_matches_slices():
    geoms = axial_block(
        (0, 5, -12), n=5, spacing=3.3, tilt_deg=12, rows=20, columns=24, pixel_spacing=(0.7, 0.8)
    )
    a = G.affine_from_slices(geoms)
    rng = np.random.default_rng(2)
    ijk = rng.uniform(0, 4, size=(40, 3)) * [1, 5, 6]
    xyz = G.voxel_to_patient(a, ijk)
    assert np.allclose(G.patient_to_voxel(a, xyz), ijk)
    # integer voxels agree with each slice's own geometry
    for k, g in enumerate(geoms):
        assert np.allclose(G.voxel_to_patient(a, [k, 3, 4]), g.pixel_to_patient([3, 4]))
    vol = G.Volume(array=np.zeros((5, 20, 24), np.float32), affine=a, slices=geoms)
    assert vol.spacing == pytest.approx((3.3, 0.7, 0.8))
    derived = G.Volume(array=vol.array, affine=a).slice_geometry(2)
    assert np.allclose(derived.position, geoms[2].position)
    assert np.allclose(derived.normal, geoms[2].normal)
    assert derived.pixel_spacing == pytest.approx(geoms[2].pixel_spacing)


def test_single_slice_affine_uses_normal_and_thickness():
    g = sagittal_stack(n=1, thickness=3.0)[0]
    a = G.affine_from_slices([g])
    assert np.allclose(a[:3, 0], g.normal * 3.0)
    with pytest.raises(ValueError):
        G.affine_from_slices([])


def test_sort_slices_along_normal_ignores_input_order():
    geoms = axial_block(n=7, spacing=2.0, tilt_deg=15)
    perm = np.random.default_rng(3).permutation(7)
    shuffled = [geoms[i] for i in perm]
    order = G.sort_slices_along_normal(shuffled)
    assert [int(perm[i]) for i in order] == list(range(7))
    d = [float(shuffled[i].position @ shuffled[0].normal) for i in order]
    assert np.all(np.diff(d) > 0)


def _three_blocks():
    tilts = (0.0, 10.0, 30.0)
    blocks = [
        axial_block((0, 10, 40 - 40 * i), n=4, spacing=4.0, tilt_deg=t) for i, t in enumerate(tilts)
    ]
    return tilts, blocks


def test_split_into_blocks_three_angled_blocks():
    tilts, blocks = _three_blocks()
    flat = [g for b in blocks for g in b]
    perm = np.random.default_rng(4).permutation(len(flat))
    shuffled = [flat[i] for i in perm]
    out = G.split_into_blocks(shuffled)
    assert len(out) == 3
    for bi, idx in enumerate(out):  # superior block first, each sorted along its normal
        got = [shuffled[i] for i in idx]
        assert [id(g) for g in got] == [id(g) for g in blocks[bi]]
        n = got[0].normal
        assert np.degrees(np.arccos(n @ [0, 0, 1])) == pytest.approx(tilts[bi], abs=1e-6)


def test_split_into_blocks_same_normal_different_inplane_rotation():
    a = axial_block(n=3)
    rot = [slice_through(g.position, [0, 1, 0], [-1, 0, 0], 32, 32) for g in a]
    out = G.split_into_blocks(a + rot)
    assert sorted(len(b) for b in out) == [3, 3]


def test_find_slice_right_block_and_slice():
    _, blocks = _three_blocks()
    for bi, block in enumerate(blocks):
        for k, g in enumerate(block):
            p = g.pixel_to_patient([10.0, 20.0]) + 0.4 * g.normal
            hit = G.find_slice(p, blocks)
            assert hit is not None
            assert hit[:2] == (bi, k)
            assert hit[2] == pytest.approx(0.4)
    # outside every field of view
    assert G.find_slice(np.array([500.0, 0, 0]), blocks) is None
    # signed distances to one block's planes are spaced by the slice spacing
    d = G.signed_distances(blocks[0][0].position, blocks[0])
    assert np.allclose(d, [0, -4, -8, -12])


def test_contains_margin():
    g = axial_block(n=1, rows=10, columns=10)[0]
    edge = g.pixel_to_patient([-0.7, 5])
    assert not g.contains(edge) and g.contains(edge, margin_px=0.5)


def test_ras_to_lps_and_nifti_affine_transpose():
    rng = np.random.default_rng(5)
    aff = np.eye(4)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    aff[:3, :3] = q * [0.8, 1.1, 3.0]
    aff[:3, 3] = [10, -20, 30]
    data = rng.normal(size=(5, 6, 7))
    for axis in range(3):
        out, order = G.nifti_to_volume_affine(aff, axis)
        t = np.transpose(data, order)
        assert order[0] == axis
        for _ in range(5):
            v = rng.integers(0, t.shape)
            nifti_ijk = np.empty(3)
            nifti_ijk[list(order)] = v
            ras = aff[:3, :3] @ nifti_ijk + aff[:3, 3]
            assert np.allclose(G.voxel_to_patient(out, v), ras * [-1, -1, 1])
            assert t[tuple(v)] == data[tuple(nifti_ijk.astype(int))]
    assert np.allclose(G.ras_to_lps(aff) @ [1, 2, 3, 1], (aff @ [1, 2, 3, 1]) * [-1, -1, 1, 1])


def test_split_into_blocks_parallel_blocks_with_gap():
    upper = axial_block((0, 0, 40), n=4, spacing=4.0)
    lower = axial_block((0, 0, 0), n=3, spacing=4.0)
    flat = lower + upper
    out = G.split_into_blocks(flat)
    assert [[id(flat[i]) for i in b] for b in out] == [
        [id(g) for g in upper],
        [id(g) for g in lower],
    ]
    # each block is then a regular grid: the affine puts every slice where it is
    for b in out:
        a = G.affine_from_slices([flat[i] for i in b])
        for k, i in enumerate(b):
            assert np.allclose(G.voxel_to_patient(a, [k, 2, 3]), flat[i].pixel_to_patient([2, 3]))
    # a uniform stack stays one block; gap_factor=inf disables the split
    assert len(G.split_into_blocks(axial_block(n=10, spacing=3.0))) == 1
    assert len(G.split_into_blocks(flat, gap_factor=np.inf)) == 1
