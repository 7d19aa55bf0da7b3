"""Segmentation training on a phantom slice bank: regions and domain randomisation."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

TINY = ["size=64", "target_spacing=1.75", "margin=8", "batch_size=4", "num_threads=1", "progress=false",
        'model_kwargs={"channels": [8, 8, 16, 16, 32]}', "samples_per_epoch=8", "val_synth_items=6"]


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    from lumbargrade.phantom.cohort import generate_cohort

    root = tmp_path_factory.mktemp("bank")
    generate_cohort(root, 2, seed=4, split=(1, 1, 0), progress=False)
    return root


def _args(data, out, sets):
    return argparse.Namespace(data=str(data), out=str(out), config=None, set=list(sets), seed=0, overwrite=False,
                              model=None)


def test_train_on_the_slice_bank_with_regions_and_synthetic_images(bank, tmp_path):
    from lumbargrade.segmentation.inference import load_segmenter
    from lumbargrade.segmentation.training import run_cli

    out = tmp_path / "run"
    assert run_cli(_args(bank / "slices.csv", out, TINY + ["epochs=2"])) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["val_dice"]) == {"dural_sac", "disc", "facet", "foramen"}
    assert set(m["val_dice_synth"]) == set(m["val_dice"])
    assert m["n_val"] == 5  # the val patient's disc-centre slices, not its whole bank
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["regions"] and cfg["p_synth"] == 0.7
    assert {"p_t2_prior", "resolution_mm", "crop_band_mm", "elastic_mm"} <= set(cfg["synth"])  # recipe recorded
    log = (out / "train.log").read_text()
    assert "with tissue maps" in log and "domain-randomised val" in log
    seg = load_segmenter(out)
    assert seg.classes == ("background", "dural_sac", "disc", "facet", "foramen")
    img = np.random.default_rng(0).uniform(0, 1, (100, 90)).astype(np.float32)
    (o,) = seg.predict([(img, (1.0, 1.0))])
    assert o.labels.shape == img.shape and o.probs.shape == (4, 100, 90)
    assert {"sac_confidence", "mirror_dice_sac", "located"} <= set(o.quality)


def test_training_without_regions_on_a_bank_that_has_none(bank, tmp_path):
    """A dataset without labels 3-6 needs regions=false (a clear error otherwise)."""
    import csv

    from PIL import Image

    from lumbargrade.errors import InputError
    from lumbargrade.segmentation.training import run_cli

    rows = list(csv.DictReader(open(bank / "manifest.csv")))
    for r in rows:
        lab = np.asarray(Image.open(bank / r["label_map"]))
        p = tmp_path / r["label_map"]
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.where(lab <= 2, lab, 0).astype(np.uint8)).save(p)
        r["axial_image"] = str(bank / r["axial_image"])
        r["tissue_map"] = ""
    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(InputError, match="regions=false"):
        run_cli(_args(tmp_path / "manifest.csv", tmp_path / "r1", TINY + ["epochs=1"]))
    assert run_cli(_args(tmp_path / "manifest.csv", tmp_path / "r2", TINY + ["epochs=1", "regions=false"])) == 0
    log = (tmp_path / "r2" / "train.log").read_text()
    assert "domain randomisation is off" in log


@pytest.mark.parametrize("option", ["p_cord", "p_rootlet_layer"])
def test_label_map_options_change_training_draws_not_the_fixed_validation_images(bank, option):
    """synth.p_cord and synth.p_rootlet_layer act on training draws only: the domain-randomised
    validation images are the same with and without them, so runs with and without them are
    scored on the same images."""
    import csv

    from lumbargrade.segmentation.dataset import SegmentationDataset
    from lumbargrade.segmentation.synth import SynthConfig
    from lumbargrade.segmentation.training import SegConfig, _synthetic_val

    rows = [dict(r, **{k: str(bank / r[k]) for k in ("axial_image", "label_map", "tissue_map")})
            for r in csv.DictReader((bank / "slices.csv").read_text().splitlines()) if r["kind"] == "disc_centre"]
    cfg = SegConfig(val_synth_items=4)

    def dataset(p):
        return SegmentationDataset(rows, 1.0, (96, 96), 8, regions=True, synth=SynthConfig(**{option: p}))

    plain, cords = dataset(0.0), dataset(1.0)
    for a, b in zip(_synthetic_val(plain, cfg).items, _synthetic_val(cords, cfg).items):
        np.testing.assert_array_equal(a[0], b[0])
    # a training draw with it differs from the same draw without it
    i = next(k for k, y in enumerate(plain.labels) if (y == 1).sum() > 150)
    img_plain, _ = plain._synthetic(i)
    img_cords, lab = cords._synthetic(i)
    assert not np.array_equal(img_plain, img_cords)
    assert (lab == 1).any()
