"""lumbargrade.segmentation: registry, resampling round trip, augmentation, training, inference."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from lumbargrade.errors import InputError


def _ellipse(shape, spacing, centre_mm, axes_mm, angle_deg=0.0):
    """Boolean ellipse on a [rows, cols] grid with spacing (row_mm, col_mm); centre in mm."""
    r = np.arange(shape[0])[:, None] * spacing[0] - centre_mm[0]
    c = np.arange(shape[1])[None, :] * spacing[1] - centre_mm[1]
    a = np.deg2rad(angle_deg)
    u = r * np.cos(a) + c * np.sin(a)
    v = -r * np.sin(a) + c * np.cos(a)
    return (u / axes_mm[0]) ** 2 + (v / axes_mm[1]) ** 2 <= 1.0


# ---------------------------------------------------------------- registry


def test_registry_all_models_tiny_input():
    import torch

    from lumbargrade.segmentation.models import create_model, list_models, model_divisor

    torch.set_num_threads(1)
    names = list_models()
    assert {"vnet", "unet_small"} <= set(names)
    for name in names:
        d = model_divisor(name)
        side = 2 * d
        m = create_model(name).eval()
        n_params = sum(p.numel() for p in m.parameters())
        assert n_params < 20_000_000, name
        with torch.inference_mode():
            y = m(torch.zeros(2, 1, side, side))
        assert y.shape == (2, 3, side, side), name
    small = sum(p.numel() for p in create_model("unet_small").parameters())
    assert 300_000 < small < 2_000_000
    ps = create_model("unet_small", per_structure=True).eval()
    with torch.inference_mode():
        assert ps(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(KeyError):
        create_model("no_such_net")


def test_register_model_decorator():
    from lumbargrade.segmentation import models

    @models.register_model("_test_identity", divisor=1)
    def _ident(in_channels, out_channels, **kw):
        import torch

        return torch.nn.Conv2d(in_channels, out_channels, 1)

    try:
        assert "_test_identity" in models.list_models()
        assert models.create_model("_test_identity", out_channels=3).out_channels == 3
        with pytest.raises(ValueError):
            models.register_model("_test_identity")(_ident)
    finally:
        models._REGISTRY.pop("_test_identity", None)
        models._DIVISOR.pop("_test_identity", None)


# ---------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("spacing", [(0.5, 0.5), (0.9, 1.2), (1.45, 1.45)])
def test_resample_round_trip_keeps_area(spacing):
    from lumbargrade.segmentation.preprocessing import (
        from_field,
        labels_to_field,
        make_grid,
        to_field,
    )

    fov = 240.0
    shape = (int(fov / spacing[0]), int(fov / spacing[1]))
    sac = _ellipse(shape, spacing, (130, 117), (7, 9), 20)  # 14 x 18 mm, a dural sac's size
    grid = make_grid(shape, spacing, 0.75, (256, 256))
    f = to_field(sac.astype(np.float32), grid, order=1, antialias=False)
    back = from_field(f, grid, order=1) > 0.5
    assert back.shape == shape
    area = sac.sum() * spacing[0] * spacing[1]
    assert abs(back.sum() * spacing[0] * spacing[1] - area) / area < 0.02
    # the field's own area (in mm2) matches too, via the label path
    lab = labels_to_field(sac.astype(np.uint8), grid, 2)
    assert abs((lab == 1).sum() * 0.75**2 - area) / area < 0.03
    # Dice between the round trip and the original is high (position preserved)
    assert 2 * (back & sac).sum() / (back.sum() + sac.sum()) > 0.95


def test_grid_inverse_and_centre():
    from lumbargrade.segmentation.preprocessing import make_grid, preprocess

    g = make_grid((300, 200), (0.8, 1.1), 0.75, (64, 48), centre=(140.0, 90.0))
    i, j = np.array([0.0, 10.5, 63.0]), np.array([3.0, 20.0, 47.0])
    r, c = g.field_to_image(i, j)
    i2, j2 = g.image_to_field(r, c)
    np.testing.assert_allclose(i2, i)
    np.testing.assert_allclose(j2, j)
    r0, c0 = g.field_to_image(np.array(31.5), np.array(23.5))
    assert (float(r0), float(c0)) == pytest.approx((140.0, 90.0))
    rng = np.random.default_rng(0)
    img = rng.normal(100, 10, (300, 200)).astype(np.float32)
    x, grid = preprocess(img, (0.8, 1.1), 0.75, 64)
    assert x.shape == (64, 64) and x.dtype == np.float32
    assert -0.2 < np.percentile(x, 1) < 0.2 and 0.8 < np.percentile(x, 99) < 1.2


# ---------------------------------------------------------------- augmentation


def test_augmentation_shapes_and_identity():
    from lumbargrade.segmentation.augment import (
        AugmentConfig,
        centre_crop,
        intensity_augment,
        spatial_augment,
    )

    rng = np.random.default_rng(1)
    img = rng.random((80, 80)).astype(np.float32)
    lab = np.zeros((80, 80), np.uint8)
    lab[30:50, 35:45] = 1
    lab[50:60, 20:60] = 2
    cfg = AugmentConfig()
    for _ in range(5):
        a, b = spatial_augment(img, lab, (64, 64), rng, cfg)
        assert a.shape == b.shape == (64, 64)
        assert set(np.unique(b)) <= {0, 1, 2}
        assert abs((b == 1).sum() - 200) < 200 * 0.35  # scaling within +-10% -> area within ~21%
        x = intensity_augment(a, rng, cfg)
        assert x.shape == a.shape and np.isfinite(x).all()
    none = AugmentConfig(rotate_deg=0, scale=0, translate_px=0, p_flip=0)
    a, b = spatial_augment(img, lab, (64, 64), rng, none)
    np.testing.assert_allclose(a, centre_crop(img, (64, 64)), atol=1e-5)
    np.testing.assert_array_equal(b, centre_crop(lab, (64, 64)))
    flip = AugmentConfig(rotate_deg=0, scale=0, translate_px=0, p_flip=1.0)
    a, b = spatial_augment(img, lab, (64, 64), rng, flip)
    np.testing.assert_array_equal(b, centre_crop(lab, (64, 64))[:, ::-1])


# ---------------------------------------------------------------- training + inference


def _synthetic_slice(rng, shape=(96, 96), spacing=(1.0, 1.0)):
    """Noise + a disc (anterior, grey) and a dural sac (posterior, bright); label map 1 sac, 2 disc."""
    cr = shape[0] * spacing[0] / 2 + rng.uniform(-5, 5)
    cc = shape[1] * spacing[1] / 2 + rng.uniform(-5, 5)
    disc = _ellipse(shape, spacing, (cr - 8, cc), (12, 20), rng.uniform(-10, 10))
    sac = _ellipse(shape, spacing, (cr + 14, cc), (6, 8))
    img = rng.normal(0.2, 0.05, shape)
    img[disc] = rng.normal(0.55, 0.05, disc.sum())
    img[sac] = rng.normal(0.95, 0.05, sac.sum())
    lab = np.zeros(shape, np.uint8)
    lab[disc] = 2
    lab[sac] = 1
    lab[:10, :10] = 3  # a box label: ignored by segmentation
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), lab


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("segcohort")
    rng = np.random.default_rng(0)
    rows = []
    for k in range(10):
        sp = (1.0, 1.0) if k % 2 else (0.8, 0.8)
        shape = (96, 96) if k % 2 else (120, 120)
        img, lab = _synthetic_slice(rng, shape, sp)
        Image.fromarray(img).save(d / f"img{k}.png")
        Image.fromarray(lab).save(d / f"lab{k}.png")
        rows.append(
            dict(
                patient_id=f"p{k}",
                split="val" if k >= 8 else "train",
                level="L4/L5",
                axial_image=f"img{k}.png",
                pixel_spacing_row_mm=sp[0],
                pixel_spacing_col_mm=sp[1],
                label_map=f"lab{k}.png",
            )
        )
    with open(d / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return d


TINY = [
    "size=64",
    "target_spacing=1.5",
    "margin=8",
    "batch_size=4",
    "num_threads=1",
    "progress=false",
    "lr=0.01",
    'model_kwargs={"channels": [8, 8, 16, 16, 32]}',
    "regions=false",
]


def _args(data, out, sets, overwrite=False, config=None):
    import argparse

    return argparse.Namespace(
        data=str(data),
        out=str(out),
        config=config,
        set=list(sets),
        seed=0,
        overwrite=overwrite,
        model=None,
    )


def test_config_resolution(tmp_path):
    from lumbargrade.segmentation.training import resolve_config

    p = tmp_path / "c.json"
    p.write_text(json.dumps({"epochs": 7, "lr": 0.002}))
    cfg = resolve_config(str(p), ["epochs=3", "bf16=true"], model="vnet", seed=5)
    assert (cfg.epochs, cfg.lr, cfg.bf16, cfg.model, cfg.seed) == (3, 0.002, True, "vnet", 5)
    with pytest.raises(InputError, match="unknown"):
        resolve_config(None, ["no_such_key=1"])
    with pytest.raises(InputError, match="multiple of 16"):
        resolve_config(None, ["size=100"])
    with pytest.raises(InputError):
        resolve_config(None, ["epochs=abc"])


def test_train_resume_and_segment(tiny_cohort, tmp_path):
    from lumbargrade.manifest import load_axial, load_label_map, read_manifest
    from lumbargrade.segmentation.inference import load_segmenter
    from lumbargrade.segmentation.training import run_cli

    out = tmp_path / "run"
    assert run_cli(_args(tiny_cohort, out, TINY + ["epochs=3"])) == 0
    for name in ("config.json", "model.safetensors", "metrics.json", "checkpoint.pt", "train.log"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["finished"] and m["epochs_done"] == 3 and m["n_train"] == 8 and m["n_val"] == 2
    losses = [h["train_loss"] for h in m["history"]]
    assert losses[-1] < losses[0]
    assert set(m["val_dice"]) == {"dural_sac", "disc"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["epochs"] == 3 and cfg["size"] == 64

    # a finished run is not reused without --overwrite
    with pytest.raises(InputError, match="finished"):
        run_cli(_args(tiny_cohort, out, TINY + ["epochs=3"]))
    # raising epochs resumes from the checkpoint: the first three epochs are kept, not retrained
    assert run_cli(_args(tiny_cohort, out, TINY + ["epochs=5"])) == 0
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["epochs_done"] == 5 and m2["history"][:3] == m["history"]
    assert "resumed after epoch 3" in (out / "train.log").read_text()
    # a different config in the same folder is refused
    with pytest.raises(InputError, match="different config"):
        run_cli(_args(tiny_cohort, out, TINY + ["epochs=6", "lr=0.02"]))

    seg = load_segmenter(out, threads=1)
    rows = read_manifest(tiny_cohort)
    items = [load_axial(r) for r in rows[:3]]
    res = seg.segment_batch(items)
    for (img, _), (sac, disc) in zip(items, res):
        assert sac.shape == img.shape and disc.shape == img.shape
        assert sac.dtype == bool and not (sac & disc).any()
    one = seg.segment(*items[0])
    np.testing.assert_array_equal(one[0], res[0][0])  # batched == single
    lab = load_label_map(rows[0])
    assert lab.shape == res[0][0].shape
    from lumbargrade.segmentation.inference import evaluate_rows

    ev = evaluate_rows(seg, rows[8:])
    assert [e["patient_id"] for e in ev] == ["p8", "p9"]
    assert all(0.0 <= e["dural_sac"] <= 1.0 and 0.0 <= e["disc"] <= 1.0 for e in ev)


@pytest.mark.slow
def test_training_learns_synthetic_shapes(tiny_cohort, tmp_path):
    from lumbargrade.segmentation.training import run_cli

    out = tmp_path / "run"
    run_cli(_args(tiny_cohort, out, TINY + ["epochs=25"]))
    m = json.loads((out / "metrics.json").read_text())
    assert m["val_dice"]["dural_sac"] > 0.8 and m["val_dice"]["disc"] > 0.8


def _threshold_segmenter(**cfg_over):
    """A Segmenter whose 'network' calls bright pixels dural sac (no training needed)."""
    import torch

    from lumbargrade.segmentation.inference import Segmenter
    from lumbargrade.segmentation.training import SegConfig

    class Bright(torch.nn.Module):
        def forward(self, x):
            return torch.cat(
                [torch.zeros_like(x), 20 * (x - 0.5), torch.full_like(x, -20.0)], dim=1
            )

    cfg = SegConfig.from_dict(dict(dict(size=64, target_spacing=1.5, margin=8), **cfg_over))
    return Segmenter(Bright(), cfg)


def test_inference_maps_back_and_recentres():
    spacing = (0.5, 0.5)
    shape = (400, 400)  # 200 mm; the field is 64 px x 1.5 mm = 96 mm round the centre
    blob = _ellipse(shape, spacing, (100, 145), (10, 10))  # 45 mm right of centre: partly outside
    img = blob.astype(np.float32)
    sac, disc = _threshold_segmenter().segment(img, spacing)
    assert sac.shape == shape and not disc.any()
    assert 2 * (sac & blob).sum() / (sac.sum() + blob.sum()) > 0.97  # recentred: whole blob found
    # a field centred on the image centre without recentring sees only part of the blob
    centre = ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    (cut, _), = _threshold_segmenter(recentre_mm=0).segment_batch([(img, spacing)], centres=[centre])
    assert cut.sum() < 0.9 * blob.sum() and not (cut & ~blob).sum() > 0.02 * blob.sum()
    # without a given centre the sac is located by a search over the slice, even without recentring
    found, _ = _threshold_segmenter(recentre_mm=0).segment(img, spacing)
    assert 2 * (found & blob).sum() / (found.sum() + blob.sum()) > 0.97
    # largest component: a second, smaller blob is dropped unless asked to keep it
    two = blob | _ellipse(shape, spacing, (100, 90), (3, 3))
    s1, _ = _threshold_segmenter().segment(two.astype(np.float32), spacing)
    (s2, _), = _threshold_segmenter(largest_component=False, recentre_mm=0).segment_batch(
        [(two.astype(np.float32), spacing)], centres=[centre]
    )
    assert not s1[200, 180] and s2[200, 180]


def test_per_structure_training(tiny_cohort, tmp_path):
    from lumbargrade.manifest import load_axial, read_manifest
    from lumbargrade.segmentation.inference import load_segmenter
    from lumbargrade.segmentation.training import run_cli

    out = tmp_path / "ps"
    run_cli(_args(tiny_cohort, out, TINY + ["epochs=1", "per_structure=true", "max_train_items=4"]))
    m = json.loads((out / "metrics.json").read_text())
    assert m["per_structure"] and m["n_train"] == 4
    seg = load_segmenter(out)
    img, sp = load_axial(read_manifest(tiny_cohort)[0])
    sac, disc = seg.segment(img, sp)
    assert sac.shape == img.shape and not (sac & disc).any()


def test_small_sac_oversampling_weights():
    """Slices with small dural sacs are drawn more often (capped at 4x), uniform at power 0."""
    from lumbargrade.segmentation.dataset import SegmentationDataset

    ds = SegmentationDataset.__new__(SegmentationDataset)
    ds.rng = np.random.default_rng(0)
    labs = []
    for r in (12, 12, 12, 8, 4):  # sac radii in pixels
        lab = np.zeros((64, 64), np.int64)
        yy, xx = np.mgrid[:64, :64]
        lab[(yy - 32) ** 2 + (xx - 32) ** 2 <= r * r] = 1
        labs.append(lab)
    ds.labels = labs
    ds.images = [np.zeros((64, 64), np.float32)] * len(labs)
    assert ds.sampling_weights(0.0) is None
    w = ds.sampling_weights(2.0)
    assert np.isclose(w.sum(), 1.0)
    assert np.isclose(w[0], w[1]) and w[3] > w[0] and np.isclose(w[4] / w[0], 4.0)
    ds.augment, ds.size = None, (64, 64)
    drawn = np.concatenate([y.reshape(len(y), -1).sum(1) for _ in range(50)
                            for _, y in ds.batches(5, shuffle=True, weights=w)])
    assert abs((drawn < 100).mean() - 4 / 11) < 0.08  # the smallest sac (~50 px) has 4 of 11 weight units
    # slices whose tissue map holds the spinal cord weigh cord_weight times more, on top
    from lumbargrade.phantom.tissues import Tissue

    cord = np.zeros((64, 64), np.uint8)
    cord[30:34, 30:34] = Tissue.CORD
    ds.tissues = [None, cord, np.zeros((64, 64), np.uint8), cord, None]
    assert ds.sampling_weights(0.0, 1.0) is None
    w0, w3 = ds.sampling_weights(0.0, 3.0), ds.sampling_weights(2.0, 3.0)
    assert np.allclose(w0 / w0[0], [1, 3, 1, 3, 1])
    assert np.allclose(w3 / w, (w3 / w)[0] * np.array([1, 3, 1, 3, 1]))


def _write_axial_dicom(path, pixels, geometry):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation, ds.SamplesPerPixel, ds.PhotometricInterpretation = 0, 1, "MONOCHROME2"
    ds.PixelSpacing = [float(v) for v in geometry.pixel_spacing]
    ds.ImageOrientationPatient = [float(v) for v in (*geometry.row_cosine, *geometry.col_cosine)]
    ds.ImagePositionPatient = [float(v) for v in geometry.position]
    ds.SliceThickness = 4.0
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("layout", ["+x-y", "-y+x", "-x-y"])
def test_training_items_are_in_the_canonical_view_whatever_the_stored_layout(tmp_path, layout):
    """A prone, transposed or feet-first stored slice gives the trainer the same canonical image and
    labels as the radiological layout (the pipeline segments the canonical view)."""
    from lumbargrade.geometry import SliceGeometry
    from lumbargrade.io.orientation import restore
    from lumbargrade.segmentation.dataset import SegmentationDataset

    rng = np.random.default_rng(1)
    img, lab = _synthetic_slice(rng, (96, 80), (0.8, 0.9))
    lab[70:, :12] = 2  # something asymmetric: a flip or transpose changes the picture
    g = SliceGeometry(position=np.array([-40.0, -60.0, 10.0]), row_cosine=np.array([1.0, 0, 0]),
                      col_cosine=np.array([0, 1.0, 0]), pixel_spacing=(0.8, 0.9), rows=96, columns=80,
                      thickness=4.0)
    rows = []
    for name, lay in (("standard", "+x+y"), ("other", layout)):
        pix, g2 = restore(img.astype(np.uint16), g, lay) if lay != "+x+y" else (img, g)
        labs, _ = restore(lab, g, lay) if lay != "+x+y" else (lab, g)
        _write_axial_dicom(tmp_path / f"{name}.dcm", np.asarray(pix), g2)
        Image.fromarray(np.ascontiguousarray(labs).astype(np.uint8)).save(tmp_path / f"{name}.png")
        rows.append({"patient_id": name, "split": "train", "level": "L4/L5", "axial_image": f"{name}.dcm",
                     "label_map": f"{name}.png", "_base_dir": str(tmp_path)})
    assert np.asarray(Image.open(tmp_path / "other.png")).tolist() != lab.tolist()  # stored differently
    ds = SegmentationDataset(rows, size=(64, 64), target_spacing=1.5, margin=8)
    np.testing.assert_array_equal(ds.labels[0], ds.labels[1])
    np.testing.assert_allclose(ds.images[0], ds.images[1], atol=1e-5)


# ---------------------------------------------------------------- dural sac refiner


def _bright_net(threshold: float, classes: int):
    """A 'network' calling pixels brighter than ``threshold`` dural sac (logit channels: background,
    sac and, for 3 classes, a disc that never wins)."""
    import torch

    class Bright(torch.nn.Module):
        def forward(self, x):
            out = [torch.zeros_like(x), 40 * (x - threshold)]
            if classes == 3:
                out.append(torch.full_like(x, -20.0))
            return torch.cat(out, dim=1)

    return Bright()


def test_sac_refiner_replaces_the_first_outline():
    """The refiner's finer field, centred on the first sac, replaces the sac: pixels only the first
    look called sac go back to the most likely other class; quality records the agreement."""
    from lumbargrade.segmentation.inference import Segmenter
    from lumbargrade.segmentation.training import SegConfig

    spacing = (0.8, 0.8)
    shape = (160, 160)
    core = _ellipse(shape, spacing, (60, 70), (6, 9))
    halo = _ellipse(shape, spacing, (60, 70), (9, 12)) & ~core
    img = np.where(core, 1.0, np.where(halo, 0.45, 0.0)).astype(np.float32)
    img[5:15, 5:15] = 1.0  # a second bright spot: not the sac's component
    base = Segmenter(_bright_net(0.2, 3), SegConfig.from_dict(
        {"size": 64, "target_spacing": 1.5, "margin": 8, "regions": False, "mirror_tta": False}))
    first = base.segment_batch([(img, spacing)])[0][0]
    assert first[halo].mean() > 0.9  # the first look takes the halo too
    base.refiner = Segmenter(_bright_net(0.6, 2), SegConfig.from_dict(
        {"role": "sac_refiner", "size": 64, "target_spacing": 0.4, "margin": 8, "regions": False,
         "mirror_tta": False}))
    out = base.predict([(img, spacing)])[0]
    assert out.sac.shape == shape
    dice = 2 * (out.sac & core).sum() / (out.sac.sum() + core.sum())
    assert dice > 0.95 and not out.sac[halo].mean() > 0.05
    assert not out.sac[5:15, 5:15].any()  # outside the refiner's field round the first sac
    assert not (out.labels[halo] == 1).any() and set(np.unique(out.labels)) <= {0, 1}
    assert out.quality["sac_refined"] is True
    assert 0.3 < out.quality["refiner_dice_sac"] < 0.8
    np.testing.assert_allclose(out.probs[0][core].mean(), 1.0, atol=0.05)
    # a slice where the first look finds no sac is left as it is
    empty = base.predict([(np.zeros(shape, np.float32), spacing)])[0]
    assert not empty.sac.any() and "sac_refined" not in empty.quality


def test_sac_refiner_weight_blends_the_two_looks():
    """refiner_weight w: the sac probability is w x the refiner's + (1 - w) x the first look's, the
    sac where that exceeds 0.5; w = 1 is the refiner's outline alone. A weight outside (0, 1] is an
    error naming where it came from."""
    from lumbargrade.errors import InputError
    from lumbargrade.segmentation.inference import Segmenter, check_refiner_weight
    from lumbargrade.segmentation.training import SegConfig

    spacing, shape = (0.8, 0.8), (160, 160)
    core = _ellipse(shape, spacing, (60, 70), (6, 9))
    halo = _ellipse(shape, spacing, (60, 70), (9, 12)) & ~core
    img = np.where(core, 1.0, np.where(halo, 0.45, 0.0)).astype(np.float32)
    base = Segmenter(_bright_net(0.2, 3), SegConfig.from_dict(
        {"size": 64, "target_spacing": 1.5, "margin": 8, "regions": False, "mirror_tta": False}))
    first = base.predict([(img, spacing)])[0]
    base.refiner = Segmenter(_bright_net(0.6, 2), SegConfig.from_dict(
        {"role": "sac_refiner", "size": 64, "target_spacing": 0.4, "margin": 8, "regions": False,
         "mirror_tta": False}))
    alone = base.predict([(img, spacing)])[0]
    assert base.refiner_weight == 1.0 and alone.sac[halo].mean() < 0.05  # the refiner's outline
    assert first.sac[halo].mean() > 0.9  # the first look takes the halo
    for w, halo_share in ((0.6, (0.0, 0.25)), (0.1, (0.9, 1.0))):
        base.refiner_weight = w
        out = base.predict([(img, spacing)])[0]
        near = alone.probs[0] > 0  # the refiner's field
        blend = w * alone.probs[0][near] + (1 - w) * first.probs[0][near]
        np.testing.assert_allclose(out.probs[0][near], blend, atol=1e-6)
        np.testing.assert_array_equal(out.sac[near], blend > 0.5)
        assert halo_share[0] <= out.sac[halo].mean() <= halo_share[1] and out.sac[core].all()
        assert out.quality["refiner_dice_sac"] == alone.quality["refiner_dice_sac"]  # the refiner alone
    for bad in (0, 1.5, -0.2, float("nan"), "half", None):
        with pytest.raises(InputError, match=r"weight must be a number in \(0, 1\]"):
            check_refiner_weight(bad, "pack.json")


def test_sac_refiner_training_dataset_and_pack(tiny_cohort, tmp_path, capsys):
    """role=sac_refiner trains a sac-only network on fields centred on the sac; a model pack with a
    sac_refiner folder attaches it to its segmenter; a wrong or missing refiner is a clear error."""
    from lumbargrade.manifest import load_axial, read_manifest
    from lumbargrade.modelpack import build_pack, load_pack
    from lumbargrade.segmentation.dataset import SegmentationDataset
    from lumbargrade.segmentation.inference import load_segmenter
    from lumbargrade.segmentation.training import resolve_config, run_cli

    rows = read_manifest(tiny_cohort)
    ds = SegmentationDataset(rows[:4], 0.5, (32, 32), 4, sac_field=True)
    for k in range(4):
        _, y = ds[k]
        assert set(np.unique(y)) <= {0, 1} and y.any()
        ii, jj = np.nonzero(y)
        assert abs(ii.mean() - 15.5) < 1.5 and abs(jj.mean() - 15.5) < 1.5  # centred on the sac
    with pytest.raises(InputError, match="role"):
        resolve_config(None, ["role=refiner"])

    seg_run, ref_run = tmp_path / "seg", tmp_path / "ref"
    assert run_cli(_args(tiny_cohort, seg_run, TINY + ["epochs=1"])) == 0
    ref_sets = [s for s in TINY if not s.startswith(("size", "target_spacing"))]
    assert run_cli(_args(tiny_cohort, ref_run, ref_sets + ["epochs=1", "role=sac_refiner", "size=32",
                                                          "target_spacing=0.75"])) == 0
    m = json.loads((ref_run / "metrics.json").read_text())
    assert m["task"] == "sac_refiner" and set(m["val_dice"]) == {"dural_sac"}
    ref = load_segmenter(ref_run)
    assert ref.cfg.role == "sac_refiner" and ref.classes == ("background", "dural_sac") and ref.refiner is None

    img, sp = load_axial(rows[0])
    assert load_segmenter(seg_run).refiner is None  # a run folder: nothing attached by itself
    seg = load_segmenter(seg_run, refiner=ref_run)
    out = seg.predict([(img, sp)])[0]
    assert out.labels.shape == img.shape
    with pytest.raises(InputError, match="no sac_refiner"):
        load_segmenter(seg_run, refiner=True)
    with pytest.raises(InputError, match="not a dural sac refiner"):
        load_segmenter(seg_run, refiner=seg_run)

    pack = load_pack(build_pack(tmp_path / "pack", {"segmentation": seg_run, "sac_refiner": ref_run}),
                     runtime="torch")
    assert pack.get("segmentation").refiner is not None
    assert pack.get("sac_refiner").cfg.role == "sac_refiner"
    manifest = tmp_path / "pack" / "pack.json"
    assert "sac_refiner" in json.loads(manifest.read_text())["components"]
    assert pack.get("segmentation").refiner_weight == 1.0  # no weight listed: the refiner's outline

    # the refiner's weight: written by pack build, read with the pack, overridable; bad values refused
    blend = build_pack(tmp_path / "pack_w", {"segmentation": seg_run, "sac_refiner": ref_run}, sac_refiner_weight=0.5)
    assert json.loads((blend / "pack.json").read_text())["components"]["sac_refiner"]["weight"] == 0.5
    assert load_pack(blend, runtime="torch").get("segmentation").refiner_weight == 0.5
    assert load_segmenter(blend / "segmentation", runtime="torch", refiner_weight=0.7).refiner_weight == 0.7
    from lumbargrade.cli import main

    assert main(["pack", "info", str(blend)]) == 0
    assert "weight 0.5: its dural sac probability blended" in capsys.readouterr().out
    with pytest.raises(InputError, match="needs a dural sac refiner"):
        build_pack(tmp_path / "pack_x", {"segmentation": seg_run}, sac_refiner_weight=0.5)
    with pytest.raises(InputError, match="weight must be"):
        build_pack(tmp_path / "pack_y", {"segmentation": seg_run, "sac_refiner": ref_run}, sac_refiner_weight=2.0)
    d = json.loads((blend / "pack.json").read_text())
    d["components"]["sac_refiner"]["weight"] = 0
    (blend / "pack.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"pack\.json \(components\.sac_refiner\.weight\).*weight must be"):
        load_segmenter(blend / "segmentation", runtime="torch")

    # Only what pack.json lists is attached: the loader and ModelPack.has agree on a hand-edited pack.
    d = json.loads(manifest.read_text())
    del d["components"]["sac_refiner"]
    manifest.write_text(json.dumps(d))
    edited = load_pack(tmp_path / "pack", runtime="torch")
    assert not edited.has("sac_refiner") and edited.get("segmentation").refiner is None
    d["components"]["sac_refiner"] = {"folder": "sac_refiner"}
    manifest.write_text(json.dumps(d))
    shutil.rmtree(tmp_path / "pack" / "sac_refiner")
    with pytest.raises(InputError, match="folder is missing"):
        load_segmenter(tmp_path / "pack" / "segmentation")


@pytest.mark.parametrize("centre", [(60.0, 70.0), (3.0, 150.0), (-40.0, 80.0)])
def test_from_field_within_equals_from_field(centre):
    """Mapping back only the pixels a small field covers gives exactly from_field's values."""
    from lumbargrade.segmentation.preprocessing import from_field, from_field_within, make_grid

    grid = make_grid((160, 180), (0.8, 0.7), 0.35, (32, 32), centre)
    field = np.random.default_rng(1).random((2, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(from_field_within(field, grid), from_field(field, grid))
    np.testing.assert_array_equal(from_field_within(field[0], grid, order=0), from_field(field[0], grid, order=0))


def test_segmenter_ensemble_averages_its_members():
    """An ensemble's probabilities are the mean of its members'; its outline follows that mean."""
    from lumbargrade.segmentation.inference import Segmenter
    from lumbargrade.segmentation.training import SegConfig

    cfg = SegConfig.from_dict({"role": "sac_refiner", "size": 64, "target_spacing": 0.5, "margin": 8,
                               "regions": False, "mirror_tta": False})
    spacing = (0.5, 0.5)
    inner = _ellipse((64, 64), spacing, (32, 32), (5, 5))
    outer = _ellipse((64, 64), spacing, (32, 32), (9, 9))
    img = np.where(inner, 1.0, np.where(outer, 0.5, 0.0)).astype(np.float32)
    wide, narrow = Segmenter(_bright_net(0.3, 2), cfg), Segmenter(_bright_net(0.7, 2), cfg)
    ens = Segmenter(None, cfg, members=[wide, narrow])
    field = [img]
    np.testing.assert_allclose(ens._probs_fields(field)[0],
                               0.5 * (wide._probs_fields(field)[0] + narrow._probs_fields(field)[0]), atol=1e-6)
    assert ens.runtime == wide.runtime and ens.model is wide.model
    # the halo is sac for one member and not for the other: a tie, so the mean decides by a hair,
    # while the core (both agree) stays sac and the background (both agree) stays out
    p = ens._probs_fields(field)[0][0]
    assert (p[inner] > 0.99).all() and (p[~outer] < 0.01).all()
    np.testing.assert_allclose(p[outer & ~inner], 0.5, atol=0.01)


def test_sac_refiner_ensemble_training_and_pack(tiny_cohort, tmp_path):
    """``--ensemble 2`` trains two members (seeds 0, 1) into OUT/members, scores the mean of their
    probabilities on the validation fields, keeps a finished member when run again, and the result
    loads as one refiner (torch and, after export, ONNX) from a run folder or a model pack."""
    from lumbargrade.modelpack import build_pack, export_pack_onnx, load_pack
    from lumbargrade.segmentation.inference import load_segmenter
    from lumbargrade.segmentation.training import run_cli

    seg_run, ens = tmp_path / "seg", tmp_path / "ens"
    assert run_cli(_args(tiny_cohort, seg_run, TINY + ["epochs=1"])) == 0
    ref_sets = [s for s in TINY if not s.startswith(("size", "target_spacing"))]
    args = _args(tiny_cohort, ens, ref_sets + ["epochs=1", "role=sac_refiner", "size=32", "target_spacing=0.75"])
    args.ensemble = 0
    with pytest.raises(InputError, match="--ensemble.*at least 1"):
        run_cli(args)
    assert not ens.exists()
    args.ensemble = 2
    assert run_cli(args) == 0
    cfg = json.loads((ens / "config.json").read_text())
    assert cfg["members"] == ["members/seed0", "members/seed1"] and cfg["seeds"] == [0, 1]
    assert cfg["role"] == "sac_refiner"
    m = json.loads((ens / "metrics.json").read_text())
    assert m["ensemble"] == 2 and set(m["val_dice"]) == {"dural_sac"} and len(m["members"]) == 2
    w0 = (ens / "members" / "seed0" / "model.safetensors").read_bytes()
    w1 = (ens / "members" / "seed1" / "model.safetensors").read_bytes()
    assert w0 != w1  # two seeds, two networks

    ref = load_segmenter(ens, runtime="torch")
    assert ref.cfg.role == "sac_refiner" and len(ref.members) == 2 and ref.refiner is None
    x = [np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)]
    mean = np.mean([mm._probs_fields(x)[0] for mm in ref.members], axis=0)
    np.testing.assert_allclose(ref._probs_fields(x)[0], mean, atol=1e-6)
    assert np.abs(ref.members[0]._probs_fields(x)[0] - ref.members[1]._probs_fields(x)[0]).max() > 1e-4

    stamp = (ens / "members" / "seed1" / "model.safetensors").stat().st_mtime_ns
    assert run_cli(args) == 0  # run again: both members are kept, the ensemble rescored
    assert (ens / "members" / "seed1" / "model.safetensors").stat().st_mtime_ns == stamp

    pack_dir = build_pack(tmp_path / "pack", {"segmentation": seg_run, "sac_refiner": ens})
    assert (pack_dir / "sac_refiner" / "members" / "seed1" / "model.safetensors").is_file()
    pack = load_pack(pack_dir, runtime="torch")
    assert [f.name for f in pack.network_folders("sac_refiner")] == ["seed0", "seed1"]
    torch_probs = pack.get("segmentation").refiner._probs_fields(x)[0]
    rec = export_pack_onnx(pack_dir, ["segmentation", "sac_refiner"])
    assert "error" not in rec["segmentation"]
    assert [("error" not in r) for r in rec["sac_refiner"]["members"]] == [True, True]
    onnx_ref = load_pack(pack_dir, runtime="onnx").get("segmentation").refiner
    assert onnx_ref.runtime == "onnx" and len(onnx_ref.members) == 2
    np.testing.assert_allclose(onnx_ref._probs_fields(x)[0], torch_probs, atol=2e-2)

    # members that disagree on the field are a clear error
    c1 = ens / "members" / "seed1" / "config.json"
    c1.write_text(json.dumps(dict(json.loads(c1.read_text()), size=48)))
    with pytest.raises(InputError, match="must share size"):
        load_segmenter(ens, runtime="torch")
