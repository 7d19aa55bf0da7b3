"""``report.html``: one self-contained page (pictures embedded as base64 PNG) a radiologist can read
on a phone or print, and ``overlays/<L4-L5>.png`` (axial) / ``overlays/<L4-L5>_sagittal.png``.

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

__all__ = ["draw_pictures", "prepare_html", "render_html", "sagittal_source", "write_html"]

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
@media (max-width:600px){body{font-size:15px}th,td{padding:3px 4px}}
@media print{body{font-size:11pt;padding:0}a{color:#000;text-decoration:none}
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


def _finding_cell(f: Any) -> str:
    if not f or f.get("label") is None:
        return "<td>-</td>"
    cls = _GRADE_CLASS.get(f["label"], "")
    p = f.get("probability")
    return f'<td class="{cls}">{_e(f["label"])}<br><small>p={_num(p, 2)}</small></td>'


def _summary(report: dict[str, Any]) -> str:
    rows = []
    for rec in report.get("levels", []):
        c = rec.get("central_canal") or {}
        g = c.get("grade")
        tree = c.get("tree") or {}
        anchor = "level-" + rec["level"].replace("/", "-")
        cells = [
            f'<td><a href="#{anchor}">{_e(rec["level"])}</a></td>',
            f'<td class="{_GRADE_CLASS.get(g or "", "")}">{_e(g or "-")}'
            f"<br><small>{_e(c.get('grade_source') or '')}</small></td>",
            f"<td>{_num(tree.get('ratio'))}<br><small>{_e(tree.get('ratio_name') or '')}</small></td>",
            f"<td>{_num((rec.get('measurements') or {}).get('dural_sac_area_mm2'))}</td>",
        ]
        cells += [_finding_cell(rec.get(k)) for k, _ in _FINDINGS]
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


def _tree_words(c: dict[str, Any]) -> str:
    tree = c.get("tree")
    if not tree:
        return '<p class="note">No decision-tree grade (the model pack has no tree, or the ratio could not be measured).</p>'
    return (
        f"<p>Decision tree: the ratio <b>{_e(tree.get('ratio_name'))} = {_num(tree.get('ratio'), 4)}</b> "
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


def render_html(
    report: dict[str, Any], pictures: dict[str, dict[str, Any]], notes: dict[str, str] | None = None
) -> str:
    """The page as a string. ``pictures[level] = {"axial": png bytes, "sagittal": png bytes or None}``;
    ``notes[level]`` explains a missing sagittal picture."""
    notes = notes or {}
    defs = _definitions(report)
    sw = report.get("software") or {}
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
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
    legend = (
        '<p class="legend"><span style="background:#00dcff">dural sac</span><span style="background:#ffd200">disc</span>'
        '<span style="background:#ff4646">facet box</span><span style="background:#3ce65a">foramen box</span>'
        '<span style="background:#ff3cc8">landmark</span><span style="background:#ffa000">axial slice</span></p>'
    )
    for rec in report.get("levels", []):
        level = rec["level"]
        pics = pictures.get(level, {})
        anchor = "level-" + level.replace("/", "-")
        sc = rec.get("slice_choice") or {}
        parts.append(f'<section class="level" id="{anchor}"><h2>{_e(level)}</h2>')
        parts.append(_grade_line(rec))
        figs = ['<div class="figs">']
        if pics.get("axial"):
            figs.append(
                f"<figure>{_img_tag(pics['axial'], level + ' axial slice')}"
                f"<figcaption>Axial slice (SOPInstanceUID {_e(rec.get('axial_sop_instance_uid'))}); chosen by "
                f"{_e(sc.get('method', '-'))}"
                + (
                    f", {_num(sc.get('distance_mm'))} mm from the disc centre"
                    if sc.get("distance_mm") is not None
                    else ""
                )
                + ". Patient's right on the image's left unless marked otherwise.</figcaption></figure>"
            )
        if pics.get("sagittal"):
            figs.append(
                f"<figure>{_img_tag(pics['sagittal'], level + ' sagittal slice')}"
                "<figcaption>Mid-sagittal slice with the disc landmarks and the line of this level's axial "
                "slice (orange; other levels grey).</figcaption></figure>"
            )
        figs.append("</div>")
        parts.append("".join(figs))
        if not pics.get("sagittal") and notes.get(level):
            parts.append(f'<p class="note">{_e(notes[level])}</p>')
        parts.append(legend)
        parts.append("<h3>Measurements</h3>" + _measurements_table(rec, defs))
        parts.append(
            "<h3>Central canal: the rule</h3>" + _tree_words(rec.get("central_canal") or {})
        )
        parts.append("<h3>CNN probabilities</h3>" + _cnn_table(rec))
        if rec.get("regraded"):
            r = rec["regraded"]
            parts.append(
                f'<p class="warn">Masks edited by {_e(r.get("by"))} on {_e(r.get("when"))}; measurements, boxes '
                "and grades recomputed from the edited masks.</p>"
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
                f"<li>{_e(h.get('when'))}: {_e(h.get('level'))} regraded by {_e(h.get('by'))} ({_e(h.get('reason'))}); "
                f"previous results in <code>{_e(h.get('previous'))}</code></li>"
                for h in report["history"]
            )
            + "</ul>"
        )
    parts.append("</main></body></html>")
    return "\n".join(parts)


def draw_pictures(
    levels: list[tuple], sag_img: Any, sag_geom: Any, landmarks: dict[str, tuple[float, float]]
) -> dict[str, tuple[bytes, bytes | None]]:
    """PNG bytes of each level's pictures: ``{level: (axial, sagittal or None)}``.

    ``levels``: ``(level, image, sac_mask, disc_mask, boxes, geometry)`` per level; the sagittal
    picture (``sag_img`` with its ``sag_geom``) highlights the level's line. Pure and picklable:
    runs in the drawing process (:mod:`lumbargrade.report.drawing_process`)."""
    from .overlays import axial_overlay, png_bytes, sagittal_overlay

    axial_geoms = {lv[0]: lv[5] for lv in levels}
    out = {}
    for level, image, sac, disc, boxes, geom in levels:
        pic = axial_overlay(image, sac, disc, boxes, left_is_higher_col=bool(geom.row_cosine[0] >= 0), title=level)
        spng = None
        if sag_img is not None:
            spng = png_bytes(sagittal_overlay(sag_img, sag_geom, landmarks, axial_geoms, highlight=level))
        out[level] = (png_bytes(pic), spng)
    return out


def prepare_html(result: Any, folder: str | Path, report: dict[str, Any]) -> tuple[dict, dict]:
    """Draw (in the drawing process) and write ``overlays/<L4-L5>.png`` (axial) and
    ``overlays/<L4-L5>_sagittal.png`` (when a sagittal slice is available); returns
    ``(pictures, notes)`` for :func:`render_html`. Reads nothing the DICOM writers change, so it may
    run in a thread beside them."""
    from ..levels.names import level_dirname
    from . import drawing_process

    folder = Path(folder)
    ov = folder / "overlays"
    ov.mkdir(parents=True, exist_ok=True)
    sag_img, sag_geom, sag_note = sagittal_source(result, folder, report)
    levels = [(lv.level, lv.image, lv.sac_mask, lv.disc_mask, dict(lv.boxes or {}), lv.geometry)
              for lv in result.levels]
    pngs = drawing_process.call(draw_pictures, levels, sag_img, sag_geom, _landmark_points(report))
    pictures: dict[str, dict[str, Any]] = {}
    notes: dict[str, str] = {}
    for lv in result.levels:
        name = level_dirname(lv.level)
        png, spng = pngs[lv.level]
        (ov / f"{name}.png").write_bytes(png)
        pictures[lv.level] = {"axial": png, "sagittal": spng}
        if spng is not None:
            (ov / f"{name}_sagittal.png").write_bytes(spng)
        elif sag_note:
            notes[lv.level] = sag_note
    return pictures, notes


def write_html(result: Any, folder: str | Path, report: dict[str, Any],
               prepared: tuple[dict, dict] | None = None) -> Path:
    """Write the overlays (see :func:`prepare_html`, or take its ``prepared`` result) and
    ``report.html`` into ``folder``; returns the HTML path."""
    pictures, notes = prepared if prepared is not None else prepare_html(result, folder, report)
    path = Path(folder) / "report.html"
    path.write_text(render_html(report, pictures, notes), encoding="utf-8")
    return path


#: report writers may offer a ``prepare`` step that runs in a thread beside the other writers
write_html.prepare = prepare_html
write_html.output = "report.html"
write_html.what = "HTML report"
