"""report.html and the overlays: one section per level, embedded pictures that decode, the
training-data banner, the sagittal with axial slice lines; the drawing helpers."""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))

from synthetic_result import LEVELS, write_analysis


pytestmark = pytest.mark.core  # needs only the inference core


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    out, study, result, pack = write_analysis(tmp_path_factory.mktemp("html"))
    return out, result, json.loads((out / "report.json").read_text())


def _images(html: str) -> list:
    from PIL import Image

    out = []
    for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html):
        out.append(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
    return out


def test_one_section_per_level_with_decodable_images(analysis):
    out, result, report = analysis
    html = (out / "report.html").read_text()
    sections = re.findall(r'<section class="level" id="level-([A-Z0-9-]+)"', html)
    assert sections == [lv.replace("/", "-") for lv in LEVELS]
    imgs = _images(html)
    assert len(imgs) == len(LEVELS) + 1  # one axial picture per level, one sagittal for the study
    assert all(im.width >= 32 and im.height >= 32 for im in imgs)
    assert (
        "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    )  # self-contained
    for lv in LEVELS:
        name = lv.replace("/", "-")
        from PIL import Image

        Image.open(out / "overlays" / f"{name}.png").verify()
        Image.open(out / "overlays" / f"{name}_sagittal.png").verify()


def test_page_content_banner_measurements_rule_and_warnings(analysis):
    out, result, report = analysis
    html = (out / "report.html").read_text()
    assert "synthetic phantom studies (test)" in html and "not for clinical use" in html
    assert '<meta name="viewport"' in html and "@media print" in html and "max-width:100%" in html
    rec = report["levels"][1]
    assert rec["central_canal"]["tree"]["rule"].replace(">", "&gt;") in html
    assert "dural sac cross-sectional area" in html  # definitions shown
    assert "synthetic test level" in html and "a study warning" in html
    summary = html.split("<h2>Summary</h2>")[1].split("</table>")[0]
    assert summary.count("<tr>") == len(LEVELS) + 1


def test_axial_overlay_draws_outlines_and_boxes_where_the_masks_are(analysis):
    from lumbargrade.report.overlays import COLORS, axial_overlay, outline

    out, result, report = analysis
    lv = result.levels[0]
    pic = np.asarray(axial_overlay(lv.image, lv.sac_mask, lv.disc_mask, lv.boxes, zoom=False))
    k = pic.shape[0] // lv.image.shape[0]
    r, c = np.argwhere(outline(lv.sac_mask))[0]
    block = pic[r * k : (r + 1) * k, c * k : (c + 1) * k].reshape(-1, 3)
    assert (block == COLORS["dural_sac"]).all(axis=1).any()
    r0, c0, r1, c1 = lv.boxes["facet_left"]
    edge = pic[((r0 + r1) // 2) * k, c0 * k]
    assert tuple(edge) == COLORS["facet"]
    # interior of the sac is not painted
    rr, cc = np.argwhere(lv.sac_mask & ~outline(lv.sac_mask))[len(np.argwhere(lv.sac_mask)) // 3]
    assert not (pic[rr * k + k // 2, cc * k + k // 2] == COLORS["dural_sac"]).all()


def test_zoom_window_frames_masks_and_boxes():
    from lumbargrade.report.overlays import crop_window

    big = np.zeros((200, 200), bool)
    big[80:100, 90:110] = True
    r0, r1, c0, c1 = crop_window(big.shape, [big], {"facet_left": [100, 110, 120, 130]})
    assert r0 <= 80 and r1 >= 120 and c0 <= 90 and c1 >= 130 and (r1 - r0) < 200
    assert crop_window((50, 60), [None], {}) == (0, 50, 0, 60)


def test_missing_sagittal_gives_a_note_not_a_failure(tmp_path, analysis):
    from lumbargrade.report.html_report import write_html

    out, result, report = analysis
    rep = dict(report, sagittal=None)
    html = write_html(result, tmp_path, rep).read_text()
    assert len(_images(html)) == len(LEVELS) and 'id="lg-sag"' not in html
    assert "no sagittal picture" in html
    assert not list((tmp_path / "overlays").glob("*_sagittal.png"))


def test_window_and_outline():
    from lumbargrade.report.overlays import outline, window

    img = np.arange(100, dtype=float).reshape(10, 10)
    w = window(img, 0, 100)
    assert w.dtype == np.uint8 and w.min() == 0 and w.max() == 255
    assert window(np.ones((4, 4))).max() == 0
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    o = outline(m)
    assert o.sum() == 16 and not o[3, 3] and o[1, 3]


def test_axial_line_on_sagittal_follows_the_axial_plane():
    from lumbargrade.io.testing import axial_block, sagittal_stack
    from lumbargrade.report.overlays import axial_line_on_sagittal

    sag = sagittal_stack(centre=(0, 0, 0), n=1, rows=80, columns=60, pixel_spacing=(1.0, 1.0))[0]
    for tilt in (0.0, 20.0):
        ax = axial_block((0, 0, 5.0), n=1, tilt_deg=tilt, rows=64, columns=64)[0]
        seg = axial_line_on_sagittal(sag, ax)
        assert seg is not None
        pts = sag.pixel_to_patient(np.stack(seg))
        assert np.allclose(
            ax.signed_distance(pts), 0.0, atol=1e-6
        )  # both ends lie in the axial plane
        assert np.linalg.norm(pts[0] - pts[1]) > 30  # spans the axial field of view
    parallel = sagittal_stack(centre=(10, 0, 0), n=1)[0]
    assert axial_line_on_sagittal(sag, parallel) is None
    far = axial_block((0, 0, 500.0), n=1)[0]  # outside the sagittal field of view
    assert axial_line_on_sagittal(sag, far) is None


def test_png_pictures_keep_greys_within_one_level_and_overlay_colours_exact():
    import io

    from PIL import Image

    from lumbargrade.report.overlays import COLORS, axial_overlay, png_bytes

    rng = np.random.default_rng(0)
    img = rng.normal(100, 30, (96, 96))
    sac = np.zeros((96, 96), bool)
    sac[40:55, 40:60] = True
    disc = np.zeros((96, 96), bool)
    disc[20:38, 30:70] = True
    pic = axial_overlay(img, sac, disc, {"facet_left": [50, 62, 70, 80]}, title="L4/L5")
    a = np.asarray(pic).astype(int)
    png = png_bytes(pic)
    back = Image.open(io.BytesIO(png))
    assert back.mode == "P"
    b = np.asarray(back.convert("RGB")).astype(int)
    grey = (a[..., 0] == a[..., 1]) & (a[..., 1] == a[..., 2])
    assert np.abs(a - b)[grey].max() <= 1
    for c in (COLORS["dural_sac"], COLORS["disc"], COLORS["facet"]):
        where = (a == c).all(-1)
        assert where.any() and (b[where] == c).all()


def test_the_page_carries_each_label_map_exactly(analysis):
    """The overlays are drawn in the browser from run lengths embedded in the page: they decode to
    the label map written beside it, over the picture's window."""
    from PIL import Image

    out, result, report = analysis
    html = (out / "report.html").read_text()
    text = re.search(r'<script type="application/json" id="lg-data">(.*?)</script>', html, re.S).group(1)
    data = json.loads(text.replace("<\\/", "</"))
    assert set(data["levels"]) == set(LEVELS)
    for rec in report["levels"]:
        d = data["levels"][rec["level"]]
        rle = np.asarray(d["labels"]).reshape(-1, 2)
        decoded = np.repeat(rle[:, 0], rle[:, 1]).astype(np.uint8).reshape(d["size"])
        r0, r1, c0, c1 = d["crop"]
        lab = np.asarray(Image.open(out / rec["label_map"]))
        np.testing.assert_array_equal(decoded, lab[r0:r1, c0:c1])
        assert (decoded == 1).any() and (decoded == 2).any()
        assert d["edges"] == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    sag = data["sagittal"]
    assert set(sag["landmarks"]) == set(LEVELS) and set(sag["lines"]) <= set(LEVELS)


def test_fat_water_shift_note_only_when_the_header_gave_it():
    from lumbargrade.report.html_report import _fat_water_note

    note = _fat_water_note({"fat_water_shift": {"pixels": 2.346, "mm": 1.565, "readout_axis": "left-right"}})
    assert "1.6 mm (2.3 pixels)" in note
    assert "left-right" in note and "dural sac is not" in note
    assert "readout axis" in _fat_water_note({"fat_water_shift": {"pixels": 1.0, "mm": 0.8, "readout_axis": None}})
    assert _fat_water_note({"fat_water_shift": None}) == "" and _fat_water_note({}) == ""


def test_fat_water_shift_note_says_what_was_moved():
    from lumbargrade.report.html_report import _fat_water_note

    f = {"pixels": 2.0, "mm": 1.4, "readout_axis": "left-right"}
    moved = _fat_water_note({"fat_water_shift": {**f, "correction": {
        "applied": True, "fat_displaced_towards": "left", "agreement": 1.0, "n_slices": 5, "moved_back_mm": 1.05}}})
    assert "patient's left" in moved and "moved back by 1.1 mm" in moved and "not corrected" not in moved
    assert "100% of 5 slices" in moved
    kept = _fat_water_note({"fat_water_shift": {**f, "correction": {
        "applied": False, "reason": "the direction was not agreed on (60% of 5 slices, needs 80%)"}}})
    assert "not corrected" in kept and "not agreed on" in kept and "moved back" not in kept
