"""The review app's HTTP API (Starlette's test client) over real ``analyze`` outputs: the token,
paths that try to leave ROOT, uploads that are too large or not label maps, and every change
(mask edit, landmark, grades, sign-off, export) checked against report.json and the SR."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "review"))

from analyzed import review_copy

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture()
def root(tmp_path_factory, tmp_path):
    return review_copy(tmp_path_factory, tmp_path / "root")


@pytest.fixture()
def client(root):
    from starlette.testclient import TestClient

    from lumbargrade.service.review.app import create_app

    c = TestClient(create_app(root, TOKEN, max_upload_bytes=200_000), follow_redirects=False)
    c.headers["Authorization"] = f"Bearer {TOKEN}"
    return c


def _png(arr: np.ndarray, mode: str = "L") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def _first(client) -> tuple[str, dict]:
    sid = client.get("/api/studies").json()["studies"][0]["id"]
    return sid, client.get(f"/api/studies/{sid}").json()


def _labels(client, level_info) -> np.ndarray:
    r = client.get(level_info["labels_url"])
    assert r.status_code == 200
    return np.frombuffer(r.content, np.uint8).reshape(int(r.headers["x-rows"]), int(r.headers["x-columns"])).copy()


def test_every_request_needs_the_token(root):
    from starlette.testclient import TestClient

    from lumbargrade.service.review.app import create_app

    c = TestClient(create_app(root, TOKEN), follow_redirects=False)
    for path in ("/", "/api/studies", "/static/study.js", "/study/x", "/api/export.zip", "/nothing"):
        r = c.get(path)
        assert r.status_code == 401, path
        assert "token" in r.text
    assert c.get("/api/studies", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert c.get("/api/studies?token=wrong").status_code == 401
    assert c.put("/api/studies/x/levels/L4-L5/labels", content=b"x").status_code == 401
    # each of the three ways in
    assert c.get("/api/studies", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert c.get(f"/api/studies?token={TOKEN}").status_code == 200
    r = c.get(f"/?token={TOKEN}")  # a page opened from the printed address
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    name, value = cookie.split(";")[0].split("=", 1)
    assert value == TOKEN
    page = c.get("/", cookies={name: value})
    assert page.status_code == 200 and "Worklist" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    fresh = TestClient(create_app(root, TOKEN), follow_redirects=False)
    assert fresh.get("/api/studies", cookies={name: "not-the-token"}).status_code == 401
    assert fresh.get("/api/studies", cookies={name: TOKEN}).status_code == 200


def test_changes_from_another_origin_are_refused(client):
    sid, d = _first(client)
    r = client.post(f"/api/studies/{sid}/signoff", json={"by": "Eve"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert client.get(f"/api/studies/{sid}").json()["status"] == "new"


@pytest.mark.parametrize("path", [
    "/api/studies/..",
    "/api/studies/%2e%2e",
    "/api/studies/..%2F..%2Fetc",
    "/api/studies/.hidden",
    "/api/studies/%2Fetc%2Fpasswd",
    "/study/..%2F..",
    "/static/..%2Fapi.py",
    "/static/../app.py",
])
def test_no_path_leads_out_of_root(client, path):
    r = client.get(path)
    assert r.status_code in (404, 405), (path, r.status_code)


def test_files_of_a_study_are_a_fixed_list_and_links_out_are_refused(client, root, tmp_path):
    sid, d = _first(client)
    page = client.get(f"/api/studies/{sid}/files/report.html")
    assert page.status_code == 200 and "sandbox allow-scripts" in page.headers["content-security-policy"]
    assert client.get(f"/api/studies/{sid}/files/sr.dcm").headers["content-type"] == "application/dicom"
    for name in ("config.json", "..%2Fbatch_log.jsonl", "levels%2FL4-L5%2Flabels.png", "history"):
        assert client.get(f"/api/studies/{sid}/files/{name}").status_code == 404, name
    assert client.get(f"/api/studies/{sid}/levels/L9-L10/labels").status_code == 404
    # a study folder that is a link to a folder outside ROOT is not a study
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "report.json").write_text("{}")
    (outside / "config.json").write_text("{}")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    assert client.get("/api/studies/linked").status_code == 404
    assert "linked" not in [s["id"] for s in client.get("/api/studies").json()["studies"]]


def test_uploads_are_checked_for_size_type_shape_and_values(client, root):
    sid, d = _first(client)
    lv = next(x for x in d["levels"] if x["level"] == "L4/L5")
    url = lv["labels_url"] + "?by=Dr%20Test"
    lab = _labels(client, lv)
    before = (root / sid / "report.json").read_text()
    cases = [
        (b"x" * 300_000, "image/png", 413),  # over the app's limit (declared size)
        (_png(lab), "application/octet-stream", 415),
        (b"GIF89a" + b"0" * 100, "image/png", 415),
        (_png(np.stack([lab] * 3, -1), "RGB"), "image/png", 415),
        (_png(lab[:-1]), "image/png", 422),
        (_png(np.where(lab == 1, 9, lab).astype(np.uint8)), "image/png", 422),
        (_png(np.zeros_like(lab)), "image/png", 422),  # no sac and no disc
    ]
    for body, ctype, status in cases:
        r = client.put(url, content=body, headers={"Content-Type": ctype})
        assert r.status_code == status, (ctype, status, r.text)
        assert "error" in r.json()
    # a body sent without a declared length is cut off at the limit too
    r = client.put(url, content=iter([b"\x89PNG\r\n\x1a\n", b"0" * 300_000]), headers={"Content-Type": "image/png"})
    assert r.status_code == 413
    assert client.put(lv["labels_url"], content=_png(lab), headers={"Content-Type": "image/png"}).status_code == 422  # no reader
    assert (root / sid / "report.json").read_text() == before
    assert not (root / sid / "history").exists()


def test_mask_edit_regrades_and_the_sr_follows(client, root):
    import highdicom as hd

    sid, d = _first(client)
    lv = next(x for x in d["levels"] if x["level"] == "L4/L5")
    lab = _labels(client, lv)
    old = next(r for r in d["report"]["levels"] if r["level"] == "L4/L5")
    rows, cols = np.nonzero(lab == 1)
    grown = lab.copy()
    grown[max(rows.min() - 3, 0): rows.max() + 4, max(cols.min() - 3, 0): cols.max() + 4][
        lab[max(rows.min() - 3, 0): rows.max() + 4, max(cols.min() - 3, 0): cols.max() + 4] == 0] = 1
    r = client.put(lv["labels_url"] + "?by=Dr%20Test", content=_png(grown), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    new_detail = r.json()
    assert new_detail["status"] == "in review"
    report = json.loads((root / sid / "report.json").read_text())
    assert report == new_detail["report"]
    rec = next(x for x in report["levels"] if x["level"] == "L4/L5")
    px = float(np.prod(rec["pixel_spacing_mm"]))
    assert rec["measurements"]["dural_sac_area_mm2"] > old["measurements"]["dural_sac_area_mm2"]
    assert rec["regraded"]["by"] == "Dr Test" and report["history"][-1]["by"] == "Dr Test"
    assert abs(rec["measurements"]["dural_sac_area_mm2"] - (_labels(client, lv) == 1).sum() * px) < 0.5 * (
        (grown == 1).sum() * px)  # measured on the saved mask (largest component)
    np.testing.assert_array_equal(_labels(client, lv) == 1, grown == 1)
    sr = hd.sr.srread(root / sid / "sr.dcm")
    groups = {str(g.tracking_identifier): g for g in sr.content.get_planar_roi_measurement_groups()}
    area = {m.name.value: m.value for m in groups["L4/L5 dural sac"].get_measurements()}["42798000"]
    assert area == pytest.approx(rec["measurements"]["dural_sac_area_mm2"])
    assert str(sr.SOPInstanceUID) != str(hd.sr.srread(root / sid / report["history"][-1]["previous"] / "sr.dcm").SOPInstanceUID)
    summary = next(s for s in client.get("/api/studies").json()["studies"] if s["id"] == sid)
    assert summary["status"] == "in review" and summary["last_change"]["by"] == "Dr Test"


def test_landmark_grades_signoff_and_export(client, root):
    import pydicom

    sid, d = _first(client)
    sag = d["sagittal"]
    rec = next(r for r in d["report"]["levels"] if r["level"] == "L4/L5")
    lm = d["report"]["sagittal"]["landmarks"]["L4/L5"]
    # move the landmark 6 mm down the sagittal slice: another axial slice is analysed
    spacing = d["report"]["sagittal"].get("pixel_spacing") or sag["geometry"]["pixel_spacing"]
    r = client.post(f"/api/studies/{sid}/levels/L4-L5/landmark",
                    json={"by": "Dr Test", "row": lm["row"] + 6.0 / spacing[0], "col": lm["col"]})
    assert r.status_code == 200, r.text
    rec2 = next(x for x in r.json()["report"]["levels"] if x["level"] == "L4/L5")
    assert rec2["axial_sop_instance_uid"] != rec["axial_sop_instance_uid"]
    assert rec2["slice_choice"]["method"] == "reader"
    cand = {c["sop_instance_uid"] for c in sag["candidates"]}
    assert rec2["axial_sop_instance_uid"] in cand
    assert client.get(f"/api/studies/{sid}/axial/{rec2['axial_sop_instance_uid']}").status_code == 200
    assert client.get(f"/api/studies/{sid}/axial/1.2.3.4").status_code == 404
    bad = client.post(f"/api/studies/{sid}/levels/L4-L5/landmark", json={"by": "Dr Test", "row": "x", "col": 1})
    assert bad.status_code == 422
    # the reader's grades
    r = client.put(f"/api/studies/{sid}/levels/L4-L5/grades",
                   json={"by": "Dr Test", "grades": {"central_canal": "severe", "facet_left": "moderate/severe"}})
    assert r.status_code == 200, r.text
    assert client.put(f"/api/studies/{sid}/levels/L4-L5/grades",
                      json={"by": "Dr Test", "grades": {"central_canal": "awful"}}).status_code == 422
    # sign-off: a new verified SR
    r = client.post(f"/api/studies/{sid}/signoff", json={"by": "Dr Test", "organization": "Test Hospital"})
    assert r.status_code == 200 and r.json()["status"] == "signed"
    sr = pydicom.dcmread(root / sid / "sr.dcm")
    assert sr.VerificationFlag == "VERIFIED" and str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Dr Test^"
    # export: the corrected level with the reader's grades
    z = client.get("/api/export.zip")
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        manifest = zf.read("lumbargrade-cohort/manifest.csv").decode()
        names = set(zf.namelist())
    lines = manifest.strip().splitlines()
    assert len(lines) == 2  # header + the one corrected level
    row = dict(zip(lines[0].split(","), lines[1].split(",")))
    assert row["level"] == "L4/L5" and row["central_canal"] == "3" and row["facet_left"] == "1"
    assert row["signed"] == "1" and row["grades_from"] == "reader+signed"
    assert f"lumbargrade-cohort/{row['axial_image']}" in names and f"lumbargrade-cohort/{row['label_map']}" in names
    assert row["landmark_row"] and row["sagittal_image"]
    assert int(client.get("/api/export.zip?signed=1").headers["x-levels"]) == len(d["report"]["levels"])


def test_a_study_whose_images_moved_is_read_only(client, root):
    sid, d = _first(client)
    cfg = json.loads((root / sid / "config.json").read_text())
    cfg["input"] = str(root / "gone")
    (root / sid / "config.json").write_text(json.dumps(cfg))
    d = client.get(f"/api/studies/{sid}").json()
    assert not d["editable"] and "not reachable" in d["source"]["message"]
    assert all(x["image_url"] is None and x["picture_url"] for x in d["levels"])
    assert client.get(d["levels"][0]["picture_url"]).headers["content-type"] == "image/png"
    r = client.post(f"/api/studies/{sid}/signoff", json={"by": "Dr Test"})
    assert r.status_code == 409 and "not reachable" in r.json()["error"]


def test_review_command_token_port_and_errors(root, monkeypatch, capsys):
    import socket

    import lumbargrade.service.review.app as app_mod
    from lumbargrade.cli import main

    seen = {}
    monkeypatch.setattr(app_mod, "serve", lambda *a, **k: seen.update(k, root=a[0]))
    monkeypatch.setenv("LUMBARGRADE_REVIEW_TOKEN", "from-the-environment-0123")
    assert main(["review", str(root), "--port", "9999"]) == 0
    assert seen["token"] == "from-the-environment-0123" and seen["port"] == 9999 and seen["host"] == "127.0.0.1"
    assert main(["review", str(root), "--token", "given-on-the-command-line"]) == 0
    assert seen["token"] == "given-on-the-command-line"
    monkeypatch.delenv("LUMBARGRADE_REVIEW_TOKEN")
    assert main(["review", str(root)]) == 0 and seen["token"] is None  # serve() draws a random one
    monkeypatch.undo()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        cases = [
            ["review", str(root), "--token", "short"],
            ["review", str(root), "--port", str(busy.getsockname()[1]), "--token", TOKEN],
            ["review", str(root / "missing"), "--token", TOKEN],
            ["review", str(next(p for p in root.iterdir() if p.is_dir())), "--token", TOKEN],  # one study
            ["review", "export"],
        ]
        for argv in cases:
            assert main(argv) == 2, argv
            err = capsys.readouterr().err.strip()
            assert err.startswith("lumbargrade: error:") and "\n" not in err, err
    finally:
        busy.close()


def test_new_tokens_are_random_and_long():
    from lumbargrade.service.review.app import new_token

    a, b = new_token(), new_token()
    assert a != b and len(a) >= 40


def test_the_printed_address_accepts_connections_at_once(tmp_path):
    """serve() listens before it shows the address: a browser opened the moment the address is
    printed is queued, not refused (the server loop has not started yet when on_ready runs)."""
    import socket

    from lumbargrade.service.review.app import serve

    class Shown(Exception):
        pass

    def on_ready(text):
        url = text.split("open ", 1)[1].split()[0]
        port = int(url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # refused before the fix
        raise Shown

    (tmp_path / "root").mkdir()
    with pytest.raises(Shown):
        serve(tmp_path / "root", port=0, token=TOKEN, on_ready=on_ready)
