"""The review app in a real browser: Playwright drives the system's Chromium (Debian ``chromium``,
nothing downloaded) against ``lumbargrade review`` started as a process. Open the worklist, open a
study, paint on the dural sac, save, check report.json and the SR, move a landmark to another axial
slice, give a grade, sign off, export; and report.html draws its overlays in the browser."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("starlette")
sync_api = pytest.importorskip("playwright.sync_api")

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "review"))

from analyzed import review_copy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-test-token-0123456789"
READER = "Dr Browser"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def root(tmp_path_factory, tmp_path):
    return review_copy(tmp_path_factory, tmp_path / "root")


@pytest.fixture()
def server(root):
    """``lumbargrade review ROOT`` on a free port; its printed address."""
    proc = subprocess.Popen([sys.executable, "-m", "lumbargrade", "review", str(root), "--port", "0", "--token", TOKEN],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("open http://"):
                url = line.split()[1]
                break
        assert url, "the review app did not print its address"
        assert url.startswith("http://127.0.0.1:") and url.endswith(f"/?token={TOKEN}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _page(browser, errors):
    page = browser.new_page(viewport={"width": 1400, "height": 1700}, accept_downloads=True)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(120_000)
    return page


def _report(root: Path, sid: str) -> dict:
    return json.loads((root / sid / "report.json").read_text())


def _level(report: dict, level: str) -> dict:
    return next(r for r in report["levels"] if r["level"] == level)


def test_review_a_study_in_the_browser(browser, server, root, tmp_path):
    import highdicom as hd
    import pydicom

    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(server)  # the printed address: token -> cookie, then the worklist without it
    page.wait_for_selector("body[data-ready='1']")
    assert "token" not in page.url
    rows = page.locator("#worklist tbody tr")
    assert rows.count() == 2
    page.fill("#reader", READER)
    page.dispatch_event("#reader", "change")
    sid = rows.nth(0).get_attribute("data-id")
    rows.nth(0).click()
    page.wait_for_url(f"**/study/{sid}**")
    page.wait_for_selector("body[data-ready='1']")
    page.click("#level-tabs button[data-level='L4/L5']")
    page.wait_for_selector("body[data-level='L4/L5']")
    before = _level(_report(root, sid), "L4/L5")

    # paint a stroke along the lower edge of the dural sac, then save
    page.click("[data-tool=brush]")
    page.select_option("#label", "1")
    page.fill("#radius", "2")
    page.dispatch_event("#radius", "input")
    pts = page.evaluate("""() => {
      const a = window.lgReview.axial, lab = a.labels, w = a.cols;
      let r1 = -1, c0 = 1e9, c1 = -1;
      for (let i = 0; i < lab.length; i++) if (lab[i] === 1) {
        const r = Math.floor(i / w), c = i % w; r1 = Math.max(r1, r); c0 = Math.min(c0, c); c1 = Math.max(c1, c); }
      const b = a.canvas.getBoundingClientRect(), v = a.view;
      const xy = (r, c) => [b.left + v.ox + (c + 0.5) * v.s, b.top + v.oy + (r + 0.5) * v.s * a.aspect];
      return [xy(r1 + 1, c0 + 1), xy(r1 + 1, c1 - 1)];
    }""")
    page.mouse.move(*pts[0])
    page.mouse.down()
    page.mouse.move(*pts[1], steps=12)
    page.mouse.up()
    assert page.is_enabled("#save")
    page.screenshot(path=str(tmp_path / "editing.png"))
    page.click("#save")
    page.wait_for_selector("#messages .msg:has-text('saved and regraded')")
    after = _level(_report(root, sid), "L4/L5")
    assert after["measurements"]["dural_sac_area_mm2"] > before["measurements"]["dural_sac_area_mm2"]
    assert after["regraded"]["by"] == READER and _report(root, sid)["history"][-1]["by"] == READER
    sr = hd.sr.srread(root / sid / "sr.dcm")
    groups = {str(g.tracking_identifier): g for g in sr.content.get_planar_roi_measurement_groups()}
    area = {m.name.value: m.value for m in groups["L4/L5 dural sac"].get_measurements()}["42798000"]
    assert area == pytest.approx(after["measurements"]["dural_sac_area_mm2"])
    shot = tmp_path / "study.png"
    page.screenshot(path=str(shot), full_page=False)
    if os.environ.get("LUMBARGRADE_REVIEW_SCREENSHOT"):  # how docs/images/review-study.png is made
        shutil.copyfile(shot, os.environ["LUMBARGRADE_REVIEW_SCREENSHOT"])

    # drag the L4/L5 landmark 6 mm down: the preview shows another slice; use it
    target = page.evaluate("""() => {
      const s = window.lgReview.sag, L = s._layout(), p = s.v.landmarks['L4/L5'];
      const q = [p[0] + 6 / s.v.spacing[0], p[1]], b = s.canvas.getBoundingClientRect();
      const a = s._xy(p, L), c = s._xy(q, L);
      return [[b.left + a[0], b.top + a[1]], [b.left + c[0], b.top + c[1]]];
    }""")
    page.mouse.move(*target[0])
    page.mouse.down()
    page.mouse.move(*target[1], steps=10)
    page.mouse.up()
    page.wait_for_selector("#preview-bar:not([hidden])")
    page.click("#use-slice")
    page.wait_for_selector("#messages .msg:has-text('new axial slice analysed')")
    moved = _level(_report(root, sid), "L4/L5")
    assert moved["slice_choice"]["method"] == "reader"
    assert moved["axial_sop_instance_uid"] != after["axial_sop_instance_uid"]

    # the reader's grade, then the sign-off
    page.select_option("#grades-form select[name=central_canal]", "severe")
    page.click("#grades-form button[type=submit]")
    page.wait_for_selector("#messages .msg:has-text('your grades are saved')")
    assert _level(_report(root, sid), "L4/L5")["reader"]["grades"] == {"central_canal": "severe"}
    page.click("#signoff-open")
    page.fill("#signoff-org", "Test Hospital")
    page.click("#signoff-confirm")
    page.wait_for_selector("#messages .msg:has-text('Signed by')")
    assert _report(root, sid)["signed"]["by"] == READER
    ds = pydicom.dcmread(root / sid / "sr.dcm")
    assert ds.VerificationFlag == "VERIFIED" and ds.VerifyingObserverSequence[0].VerifyingOrganization == "Test Hospital"
    assert page.inner_text("#status").startswith("signed")

    # the worklist shows it signed; the export holds the corrected level with the reader's grade
    page.click("#back")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator(f"#worklist tbody tr[data-id='{sid}'] .badge").inner_text() == "signed"
    with page.expect_download() as dl:
        page.click("#export")
    data = Path(dl.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        lines = zf.read("lumbargrade-cohort/manifest.csv").decode().strip().splitlines()
    row = dict(zip(lines[0].split(","), lines[1].split(",")))
    assert len(lines) == 2 and row["level"] == "L4/L5" and row["central_canal"] == "3" and row["signed"] == "1"
    # the study's report.html, served by the app (sandboxed), draws its overlays
    page.goto(server.split("/?")[0] + f"/api/studies/{sid}/files/report.html")
    page.wait_for_function("document.querySelectorAll('section.level figure canvas').length >= 10")
    assert "Signed by" in page.inner_text("body")
    assert not errors, errors


def test_report_html_draws_its_overlays(browser, root):
    errors: list[str] = []
    page = _page(browser, errors)
    sid = sorted(p.name for p in root.iterdir() if p.is_dir())[0]
    page.goto((root / sid / "report.html").as_uri())
    page.wait_for_function("document.querySelectorAll('figure canvas').length >= 6")
    page.wait_for_timeout(300)
    counts = page.evaluate("""() => Array.from(document.querySelectorAll('section.level figure canvas')).map(c => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let sac = 0, line = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i] < 40 && d[i + 1] > 190 && d[i + 2] > 230) sac++;
        if (d[i] > 230 && d[i + 1] > 140 && d[i + 1] < 180 && d[i + 2] < 30) line++;
      }
      return [c.className, sac, line];
    })""")
    axial = [c for c in counts if c[0] != "lg-sag"]
    sagittal = [c for c in counts if c[0] == "lg-sag"]
    assert len(axial) == 5 and all(sac > 50 for _, sac, _ in axial)  # the dural sac outline, drawn
    assert len(sagittal) == 5 and all(line > 20 for _, _, line in sagittal)  # this level's slice line
    # switching the dural sac off removes it
    page.uncheck(".lg-controls input[data-show='1']")
    off = page.evaluate("""() => { const c = document.querySelector('section.level figure canvas');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] < 40 && d[i + 1] > 190 && d[i + 2] > 230) n++; return n; }""")
    assert off < 5
    assert not errors, errors
