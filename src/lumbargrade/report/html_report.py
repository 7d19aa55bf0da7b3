"""``report.html``: one self-contained page a radiologist can read on a phone or print, and
``overlays/<L4-L5>.png`` (axial) / ``overlays/<L4-L5>_sagittal.png`` (pictures for other uses).

The page draws its overlays in the browser: per level one embedded picture (the axial slice,
cropped around the masks) and its label map as run lengths, and one sagittal picture for the study
with the landmarks and axial slice lines as coordinates (:mod:`lumbargrade.report.views`); a small
inline script draws the dural sac, disc and facet / foramen regions over them, with switches and an
opacity slider. Without JavaScript the plain pictures remain.

:func:`write_html` has the extra-writer signature of :func:`lumbargrade.report.write_outputs`:
``write_html(result, folder, report)``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["browser_views", "draw_pictures", "prepare_html", "render_html", "sagittal_source", "write_html"]

_FINDINGS = (
    ("foramen_left", "Foramen L"),
    ("foramen_right", "Foramen R"),
    ("facet_left", "Facet L"),
    ("facet_right", "Facet R"),
)
_LONG = {
    "foramen_left": "Foraminal stenosis, left",
    "foramen_right": "Foraminal stenosis, right",
    "facet_left": "Facet arthropathy, left",
    "facet_right": "Facet arthropathy, right",
}
_MEAS_ORDER = (
    "dural_sac_area_mm2",
    "disc_area_mm2",
    "dural_sac_ap_mm",
    "disc_ap_mm",
    "dural_sac_transverse_mm",
    "disc_transverse_mm",
    "area_ratio",
    "ap_ratio",
    "sqrt_area_ratio",
)
_GRADE_CLASS = {
    "normal": "g0",
    "mild": "g1",
    "moderate": "g2",
    "severe": "g3",
    "normal/mild": "g0",
    "moderate/severe": "g3",
}

_CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0;padding:0 12px 24px;
 color:#1b1b1b;background:#fff;line-height:1.4;font-size:16px}
main{max-width:1100px;margin:0 auto}
h1{font-size:1.5em;margin:.6em 0 .2em}h2{font-size:1.25em;margin:1.2em 0 .4em;border-bottom:2px solid #ddd}
h3{font-size:1.05em;margin:.8em 0 .3em}
.meta{color:#555;font-size:.9em}
.banner{border:2px solid #b36b00;background:#fff4e0;padding:10px 12px;border-radius:6px;margin:10px 0}
.banner.neutral{border-color:#777;background:#f3f3f3}
.warn{color:#8a4b00}
table{border-collapse:collapse;width:100%;margin:.4em 0;font-size:.95em}
th,td{border:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f2f2f2}
.scroll{overflow-x:auto}
td.g0{background:#e8f6e8}td.g1{background:#fdf6d8}td.g2{background:#fde3c8}td.g3{background:#f9d0d0}
.figs{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;flex:1 1 320px;max-width:520px}
figure img{width:100%;height:auto;max-width:100%;display:block;border:1px solid #999;background:#000}
figcaption{font-size:.85em;color:#444}
.legend span{display:inline-block;padding:0 6px;margin-right:6px;border-radius:3px;color:#000;font-size:.85em}
.rule{font-family:ui-monospace,Menlo,Consolas,monospace;background:#f6f6f6;padding:2px 4px}
.level{page-break-inside:avoid;break-inside:avoid}
.note{color:#555;font-style:italic}
figure canvas{width:100%;height:auto;display:block;border:1px solid #999;background:#000}
.lg-controls{position:sticky;top:0;background:#fff;padding:6px 0;z-index:2;font-size:.9em;border-bottom:1px solid #ddd}
.lg-controls label{margin-right:10px;white-space:nowrap}
.signed{border:2px solid #2a7a2a;background:#eaf6ea;padding:8px 12px;border-radius:6px}
.reader{font-weight:bold}
@media (max-width:600px){body{font-size:15px}th,td{padding:3px 4px}}
@media print{body{font-size:11pt;padding:0}a{color:#000;text-decoration:none}.lg-controls{display:none}
 .level{page-break-before:always}figure{max-width:48%}.banner{border-width:1px}}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(digits - 1, 1)}f}"
    return _e(v)


def _img_tag(png: bytes, alt: str) -> str:
    return (
        f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
    )


def sagittal_source(
    result: Any, folder: Path, report: dict[str, Any]
) -> tuple[Any, Any, str | None]:
    """``(image, geometry, note)`` of the sagittal slice the landmarks were found on.

    Uses ``result.sagittal_slice`` (a :class:`lumbargrade.io.SliceRef`) when the pipeline provides
    it; otherwise re-reads the study named in ``folder/config.json`` (``"input"``) and takes slice
    ``slice_index`` of the largest block of the sagittal series ``series_instance_uid`` recorded
    in ``report["sagittal"]``. ``note`` says why there is no picture when image is None.
    """
    ref = getattr(result, "sagittal_slice", None)
    if ref is not None:
        try:
            return np.asarray(ref.pixels(), np.float32), ref.geometry, None
        except Exception as e:  # a picture must not stop the report
            return None, None, f"sagittal slice unreadable ({type(e).__name__}: {e})"
    sag = report.get("sagittal") or {}
    uid, k = sag.get("series_instance_uid"), sag.get("slice_index")
    if not sag or uid is None or k is None:
        return (
            None,
            None,
            "no landmarks on a sagittal series (axial slices chosen per block): no sagittal picture",
        )
    cfg_path = Path(folder) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
        from ..io import read_study

        study = read_study(cfg["input"])
        series = next((s for s in study.series if s.series_instance_uid == uid), None)
        if series is None:
            return None, None, "the sagittal series was not found when re-reading the study"
        block = max(series.blocks, key=len)
        ref = block.slices[int(k)]
        return np.asarray(ref.pixels(), np.float32), ref.geometry, None
    except Exception as e:  # a picture must not stop the report
        return None, None, f"sagittal slice not available ({type(e).__name__}: {e})"


def _landmark_points(report: dict[str, Any]) -> dict[str, tuple[float, float]]:
    lms = (report.get("sagittal") or {}).get("landmarks") or {}
    out = {}
    for level, v in lms.items():
        if isinstance(v, dict) and v.get("row") is not None and v.get("col") is not None:
            out[level] = (float(v["row"]), float(v["col"]))
    return out


def _banner(report: dict[str, Any]) -> str:
    sw = report.get("software") or {}
    trained = sw.get("model_pack_trained_on")
    pack = sw.get("model_pack") or "no model pack"
    text = f"Models: <b>{_e(pack)}</b>; trained on: <b>{_e(trained or 'not stated in the model pack')}</b>. "
    low = str(trained or "").lower()
    if not trained or "phantom" in low or "synthetic" in low:
        return (
            f'<div class="banner" role="note">{text}Models trained on synthetic phantom data (or on data '
            "the pack does not state) are for demonstration and testing only, <b>not for clinical use</b>. "
            "Every number below is shown with its definition so that it can be checked.</div>"
        )
    return (
        f'<div class="banner neutral" role="note">{text}Research software, not a medical device: '
        "check every finding against the images.</div>"
    )


def _finding_cell(f: Any, reader: str | None = None) -> str:
    if reader:
        model = (f or {}).get("label") or "-"
        return (f'<td class="{_GRADE_CLASS.get(reader, "")}"><span class="reader">{_e(reader)}</span>'
                f"<br><small>reader (model: {_e(model)})</small></td>")
    if not f or f.get("label") is None:
        return "<td>-</td>"
    cls = _GRADE_CLASS.get(f["label"], "")
    p = f.get("probability")
    return f'<td class="{cls}">{_e(f["label"])}<br><small>p={_num(p, 2)}</small></td>'


def _reader(rec: dict[str, Any]) -> dict[str, str]:
    grades = (rec.get("reader") or {}).get("grades") or {}
    return {k: v for k, v in grades.items() if v}


def _summary(report: dict[str, Any]) -> str:
    rows = []
    for rec in report.get("levels", []):
        c = rec.get("central_canal") or {}
        g = c.get("grade")
        tree = c.get("tree") or {}
        reader = _reader(rec)
        anchor = "level-" + rec["level"].replace("/", "-")
        if reader.get("central_canal"):
            rg = reader["central_canal"]
            central = (f'<td class="{_GRADE_CLASS.get(rg, "")}"><span class="reader">{_e(rg)}</span>'
                       f"<br><small>reader (model: {_e(g or '-')})</small></td>")
        else:
            central = (f'<td class="{_GRADE_CLASS.get(g or "", "")}">{_e(g or "-")}'
                       f"<br><small>{_e(c.get('grade_source') or '')}</small></td>")
        review = rec.get("needs_review")
        cells = [
            f'<td><a href="#{anchor}">{_e(rec["level"])}</a>'
            + ('<br><small class="warn" title="' + _e("; ".join(rec.get("review_reasons") or []))
               + '">needs review</small>' if review else "") + "</td>",
            central,
            f"<td>{_num(tree.get('ratio'))}<br><small>{_e(tree.get('ratio_name') or '')}</small></td>",
            f"<td>{_num((rec.get('measurements') or {}).get('dural_sac_area_mm2'))}</td>",
        ]
        cells += [_finding_cell(rec.get(k), reader.get(k)) for k, _ in _FINDINGS]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = (
        "<tr><th>Level</th><th>Central canal</th><th>Ratio</th><th>Dural sac mm²</th>"
        + "".join(f"<th>{_e(t)}</th>" for _, t in _FINDINGS)
        + "</tr>"
    )
    return f'<div class="scroll"><table><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div>'


def _definitions(report: dict[str, Any]) -> dict[str, str]:
    d = dict(report.get("definitions") or {})
    try:
        from ..measurements import MEASUREMENT_DEFINITIONS

        d = {**MEASUREMENT_DEFINITIONS, **d}
    except ImportError:  # pragma: no cover
        pass
    return d


def _measurements_table(rec: dict[str, Any], defs: dict[str, str]) -> str:
    m = rec.get("measurements") or {}
    keys = [k for k in _MEAS_ORDER if k in m] + [
        k
        for k in m
        if k not in _MEAS_ORDER and isinstance(m[k], (int, float)) and not isinstance(m[k], bool)
    ]
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{_num(m.get(k), 4)}</td><td>{_e(defs.get(k, ''))}</td></tr>"
        for k in keys
    )
    return (
        '<div class="scroll"><table><thead><tr><th>Measurement</th><th>Value</th><th>Definition</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def _fat_water_note(rec: dict[str, Any]) -> str:
    """One line on the slice's fat-water shift (from the header), when known."""
    f = rec.get("fat_water_shift")
    if not isinstance(f, dict) or f.get("mm") is None:
        return ""
    along = f"along the {_e(f['readout_axis'])} axis" if f.get("readout_axis") else "along the readout axis"
    head = (f'<p class="note">Fat-water shift of this slice (from its header): {_num(f["mm"], 2)} mm '
            f"({_num(f.get('pixels'), 2)} pixels) {along}. ")
    c = f.get("correction")
    if isinstance(c, dict) and c.get("applied"):
        agree = c.get("agreement")
        share = f"{float(agree):.0%}" if isinstance(agree, (int, float)) else "-"
        return head + (f"Fat appears displaced towards the patient's {_e(c.get('fat_displaced_towards'))} (read from "
                       f"the images, {share} of {_e(c.get('n_slices'))} slices agreeing); the "
                       f"disc and the facet and foramen outlines were moved back by {_num(c.get('moved_back_mm'), 2)} mm "
                       "before measuring. The dural sac (water) was not moved.</p>")
    why = f" ({_e(c.get('reason'))})" if isinstance(c, dict) and c.get("reason") else ""
    return head + ("Outlines drawn against fat (the disc's lateral and posterior margins, the facet and foramen "
                   "regions) may be displaced by up to this distance along that axis; the dural sac is not. They "
                   f"were not corrected{why}.</p>")


def _tree_words(c: dict[str, Any]) -> str:
    tree = c.get("tree")
    if not tree:
        return '<p class="note">No decision-tree grade (the model pack has no tree, or its input could not be measured).</p>'
    return (
        f"<p>Decision tree: <b>{_e(tree.get('ratio_name'))} = {_num(tree.get('ratio'), 4)}</b> "
        f'satisfies the rule <span class="rule">{_e(tree.get("rule"))}</span>, so the tree grades the central '
        f"canal <b>{_e(tree.get('grade'))}</b>.</p>"
    )


def _cnn_table(rec: dict[str, Any]) -> str:
    c = rec.get("central_canal") or {}
    cnn = c.get("cnn") or {}
    rows = []
    probs = cnn.get("probabilities")
    if probs:
        from ..grading.names import CENTRAL_GRADES as names
        rows.append(
            "<tr><td>Central canal (4 grades)</td><td>"
            + _e(cnn.get("grade"))
            + "</td><td>"
            + ", ".join(f"{n} {_num(p, 2)}" for n, p in zip(names, probs))
            + "</td></tr>"
        )
    if cnn.get("binary_probability") is not None:
        rows.append(
            f"<tr><td>Central canal moderate/severe</td><td></td><td>p={_num(cnn['binary_probability'], 2)}</td></tr>"
        )
    for key, title in _FINDINGS:
        f = rec.get(key)
        if f:
            rows.append(
                f"<tr><td>{_e(_LONG[key])}</td><td>{_e(f.get('label') or '-')}</td><td>p(moderate/severe)={_num(f.get('probability'), 2)}</td></tr>"
            )
    if not rows:
        return '<p class="note">No CNN classifier output (the model pack has no classifiers).</p>'
    return (
        '<div class="scroll"><table><thead><tr><th>CNN</th><th>Result</th><th>Probabilities</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _grade_line(rec: dict[str, Any]) -> str:
    c = rec.get("central_canal") or {}
    src = c.get("grade_source")
    return (
        f"<p>Central canal: <b>{_e(c.get('grade') or '-')}</b>"
        + (f" (reported from the {_e(src)})" if src else "")
        + "</p>"
    )


def _signature(report: dict[str, Any]) -> str:
    signed = report.get("signed")
    if not signed:
        return ('<p class="meta">Not signed: the results below are as computed (and as corrected, '
                "where marked); no reader has signed them.</p>")
    org = f" ({_e(signed['organization'])})" if signed.get("organization") else ""
    return (f'<p class="signed" role="note">Signed by <b>{_e(signed.get("by"))}</b>{org} on '
            f"{_e(signed.get('when'))}. Grades marked <i>reader</i> were given by the reader.</p>")


#: The inline script that draws the overlays (a package file, embedded in every page).
_SCRIPT_FILE = Path(__file__).with_name("html_overlay.js")

_CONTROLS = (
    '<div class="lg-controls" hidden>Show: '
    '<label><input type="checkbox" data-show="1" checked> <span style="color:#00a8c8">&#9632;</span> dural sac</label>'
    '<label><input type="checkbox" data-show="2" checked> <span style="color:#c8a000">&#9632;</span> disc</label>'
    '<label><input type="checkbox" data-show="3,4" checked> <span style="color:#ff4646">&#9632;</span> facets</label>'
    '<label><input type="checkbox" data-show="5,6" checked> <span style="color:#32c850">&#9632;</span> foramina</label>'
    '<label><input type="checkbox" data-show="lines" checked> landmarks and slice lines</label>'
    '<label>fill <input type="range" min="0" max="100" value="25" data-opacity></label></div>'
)


def _json_script(data: Any) -> str:
    text = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return f'<script type="application/json" id="lg-data">{text}</script>'


def render_html(
    report: dict[str, Any], views: dict[str, Any], notes: dict[str, str] | None = None
) -> str:
    """The page as a string. ``views`` (:func:`browser_views`): ``{"levels": {level:
    axial view}, "sagittal": sagittal view with its "png", or None}``; ``notes[level]`` explains a
    missing sagittal picture."""
    notes = notes or {}
    defs = _definitions(report)
    sw = report.get("software") or {}
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    level_views = views.get("levels") or {}
    sag = views.get("sagittal")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>lumbargrade report</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<h1>Lumbar spine: stenosis and facet report</h1>",
        f'<p class="meta">Study {_e(report.get("study_instance_uid") or "-")} · {_e(sw.get("name", "lumbargrade"))} '
        f"{_e(sw.get('version', ''))} · model pack {_e(sw.get('model_pack') or '-')} · page written {now}</p>",
        _banner(report),
        _signature(report),
        "<h2>Summary</h2>",
        _summary(report),
        '<p class="meta">Central canal: normal / mild / moderate / severe (Schizas-based). Foramen (Lee) and facet '
        "(Weishaupt) are binarised: normal/mild vs moderate/severe, with the CNN's calibrated probability of "
        "moderate/severe. Left and right are the <b>patient's</b>.</p>",
    ]
    if report.get("warnings"):
        parts.append(
            "<h3>Study warnings</h3><ul>"
            + "".join(f'<li class="warn">{_e(w)}</li>' for w in report["warnings"])
            + "</ul>"
        )
    if sag is not None:
        sag_img_tag = _img_tag(sag["png"], "mid-sagittal slice").replace("<img ", '<img id="lg-sag" ', 1)
        parts.append(
            '<figure class="lg-sagittal-overview" style="max-width:360px">'
            f"{sag_img_tag}"
            "<figcaption>Mid-sagittal slice with the disc landmarks and the lines of the chosen axial "
            "slices.</figcaption></figure>"
        )
    parts.append(_CONTROLS)
    parts.append('<noscript><p class="note">The outlines of the dural sac, disc and facet / foramen '
                 "regions are drawn by the page's script; with scripts off only the slices show.</p></noscript>")
    data: dict[str, Any] = {"levels": {}, "sagittal": None}
    if sag is not None:
        data["sagittal"] = {k: sag[k] for k in ("shape", "spacing", "landmarks", "lines")}
    for rec in report.get("levels", []):
        level = rec["level"]
        view = level_views.get(level)
        anchor = "level-" + level.replace("/", "-")
        sc = rec.get("slice_choice") or {}
        parts.append(f'<section class="level" id="{anchor}"><h2>{_e(level)}</h2>')
        parts.append(_grade_line(rec))
        figs = ['<div class="figs">']
        if view is not None:
            data["levels"][level] = {k: view[k] for k in ("labels", "size", "crop", "spacing", "edges")}
            img = _img_tag(view["png"], level + " axial slice").replace(
                "<img ", f'<img class="lg-axial" data-level="{_e(level)}" ', 1)
            figs.append(
                f"<figure>{img}"
                f"<figcaption>Axial slice (SOPInstanceUID {_e(rec.get('axial_sop_instance_uid'))}); chosen by "
                f"{_e(sc.get('method', '-'))}"
                + (
                    f", {_num(sc.get('distance_mm'))} mm from the disc centre"
                    if sc.get("distance_mm") is not None
                    else ""
                )
                + ". The letters at the edges give the patient's side.</figcaption></figure>"
            )
        if sag is not None:
            figs.append(
                f'<figure><canvas class="lg-sag" data-level="{_e(level)}"></canvas>'
                "<figcaption>Mid-sagittal slice with the disc landmarks and the line of this level's axial "
                "slice (orange; other levels grey).</figcaption></figure>"
            )
        figs.append("</div>")
        parts.append("".join(figs))
        if sag is None and notes.get(level):
            parts.append(f'<p class="note">{_e(notes[level])}</p>')
        parts.append("<h3>Measurements</h3>" + _measurements_table(rec, defs) + _fat_water_note(rec))
        parts.append(
            "<h3>Central canal: the rule</h3>" + _tree_words(rec.get("central_canal") or {})
        )
        parts.append("<h3>CNN probabilities</h3>" + _cnn_table(rec))
        reader = _reader(rec)
        if reader:
            r = rec.get("reader") or {}
            parts.append(
                f'<p class="warn">Grades given by the reader {_e(r.get("by"))} on {_e(r.get("when"))}: '
                + ", ".join(f"{_e(k.replace('_', ' '))} <b>{_e(v)}</b>" for k, v in reader.items())
                + ".</p>"
            )
        if rec.get("regraded"):
            r = rec["regraded"]
            parts.append(
                f'<p class="warn">Changed by {_e(r.get("by"))} on {_e(r.get("when"))} ({_e(r.get("source"))}); '
                "measurements, boxes and grades recomputed.</p>"
            )
        if rec.get("needs_review"):
            parts.append(
                '<h3 class="warn">Needs review</h3><p>The plausibility check failed; do not use these grades '
                "without looking at the masks:</p><ul>"
                + "".join(f'<li class="warn">{_e(w)}</li>' for w in rec.get("review_reasons") or [])
                + "</ul>"
            )
        if rec.get("warnings"):
            parts.append(
                "<h3>Warnings</h3><ul>"
                + "".join(f'<li class="warn">{_e(w)}</li>' for w in rec["warnings"])
                + "</ul>"
            )
        parts.append("</section>")
    dicom = report.get("dicom") or {}
    if dicom.get("seg") or dicom.get("sr"):
        files = [i["file"] for i in (dicom.get("seg") or {}).get("instances", [])]
        if dicom.get("sr"):
            files.append(dicom["sr"]["file"])
        parts.append(
            "<h2>DICOM outputs</h2><p>"
            + ", ".join(f"<code>{_e(f)}</code>" for f in files)
            + " (Segmentation and TID 1500 measurement report, for PACS / OHIF / 3D Slicer).</p>"
        )
    if report.get("history"):
        parts.append(
            "<h2>History</h2><ul>"
            + "".join(
                f"<li>{_e(h.get('when'))}: {_e(h.get('level') or 'study')}: {_e(h.get('reason'))} "
                f"by {_e(h.get('by'))}; previous results in <code>{_e(h.get('previous'))}</code></li>"
                for h in report["history"]
            )
            + "</ul>"
        )
    parts.append(_json_script(data))
    parts.append(f"<script>{_SCRIPT_FILE.read_text(encoding='utf-8')}</script>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def draw_pictures(
    levels: list[tuple], sag_img: Any, sag_geom: Any, landmarks: dict[str, tuple[float, float]]
) -> dict[str, tuple[bytes, bytes | None]]:
    """PNG bytes of each level's pictures: ``{level: (axial, sagittal or None)}``.

    ``levels``: ``(level, image, sac_mask, disc_mask, boxes, geometry, regions)`` per level, the
    arrays and boxes in the slice's canonical view (radiological display, whatever the stored
    layout); the sagittal picture (``sag_img`` with its ``sag_geom``) highlights the level's line.
    Pure and picklable: runs in the drawing process (:mod:`lumbargrade.report.drawing_process`)."""
    from .overlays import axial_overlay, png_bytes, sagittal_overlay

    axial_geoms = {lv[0]: lv[5] for lv in levels}
    out = {}
    for level, image, sac, disc, boxes, geom, regions in levels:
        pic = axial_overlay(image, sac, disc, boxes, title=level, regions=regions)
        spng = None
        if sag_img is not None:
            spng = png_bytes(sagittal_overlay(sag_img, sag_geom, landmarks, axial_geoms, highlight=level))
        out[level] = (png_bytes(pic), spng)
    return out


def browser_views(result: Any, sag_img: Any, sag_geom: Any, report: dict[str, Any]) -> dict[str, Any]:
    """What the page draws from (see :func:`render_html`): per level the axial view
    (:func:`lumbargrade.report.views.axial_view`) of its image and label map, and the sagittal view
    with its 8-bit picture (``"png"``) when there is a sagittal slice."""
    from .overlays import window
    from .views import axial_view, png_gray, sagittal_view

    # every level in its canonical view (radiological display), whatever the stored layout
    levels = {lv.level: axial_view(lv.canonical(lv.image), lv.canonical(lv.label_map()), lv.canonical_geometry(),
                                   lv.canonical_boxes()) for lv in result.levels}
    sag = None
    if sag_img is not None:
        sag = sagittal_view(sag_img, sag_geom, _landmark_points(report),
                            {lv.level: lv.geometry for lv in result.levels})
        sag["png"] = png_gray(window(sag.pop("image")))
    return {"levels": levels, "sagittal": sag}


def prepare_html(result: Any, folder: str | Path, report: dict[str, Any]) -> tuple[dict, dict]:
    """Draw (in the drawing process) and write ``overlays/<L4-L5>.png`` (axial) and
    ``overlays/<L4-L5>_sagittal.png`` (when a sagittal slice is available), and build the page's
    views (:func:`browser_views`); returns ``(views, notes)`` for :func:`render_html`. Reads nothing
    the DICOM writers change, so it may run in a thread beside them."""
    from ..levels.names import level_dirname
    from . import drawing_process

    folder = Path(folder)
    ov = folder / "overlays"
    ov.mkdir(parents=True, exist_ok=True)
    sag_img, sag_geom, sag_note = sagittal_source(result, folder, report)
    levels = [(lv.level, lv.canonical(lv.image), lv.canonical(lv.sac_mask), lv.canonical(lv.disc_mask),
               lv.canonical_boxes(), lv.geometry, lv.canonical(lv.regions)) for lv in result.levels]
    pngs = drawing_process.call(draw_pictures, levels, sag_img, sag_geom, _landmark_points(report))
    notes: dict[str, str] = {}
    for lv in result.levels:
        name = level_dirname(lv.level)
        png, spng = pngs[lv.level]
        (ov / f"{name}.png").write_bytes(png)
        if spng is not None:
            (ov / f"{name}_sagittal.png").write_bytes(spng)
        elif sag_note:
            notes[lv.level] = sag_note
    return browser_views(result, sag_img, sag_geom, report), notes


def write_html(result: Any, folder: str | Path, report: dict[str, Any],
               prepared: tuple[dict, dict] | None = None) -> Path:
    """Write the overlays (see :func:`prepare_html`, or take its ``prepared`` result) and
    ``report.html`` into ``folder``; returns the HTML path."""
    views, notes = prepared if prepared is not None else prepare_html(result, folder, report)
    path = Path(folder) / "report.html"
    path.write_text(render_html(report, views, notes), encoding="utf-8")
    return path


#: report writers may offer a ``prepare`` step that runs in a thread beside the other writers
write_html.prepare = prepare_html
write_html.output = "report.html"
write_html.what = "HTML report"
