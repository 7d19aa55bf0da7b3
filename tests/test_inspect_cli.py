"""``lumbargrade inspect``: JSON schema and values, the table, and bad input -> exit 2, one line."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from lumbargrade.cli import main
from lumbargrade.io.testing import (
    axial_block,
    make_dataset,
    new_uid,
    write_dataset,
    write_example_study,
    write_series,
)

pytestmark = pytest.mark.core  # needs only the inference core


KEYS = {
    "series_instance_uid",
    "description",
    "plane",
    "n_slices",
    "n_blocks",
    "rows",
    "columns",
    "pixel_spacing_mm",
    "slice_thickness_mm",
    "role",
}


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example_study(tmp_path_factory.mktemp("study"), seed=5)


def test_inspect_json(example, capsys):
    assert main(["inspect", str(example["root"]), "--json"]) == 0
    out = capsys.readouterr().out
    d = json.loads(out)  # exactly one JSON object
    assert set(d) == {"study_instance_uid", "series", "warnings"}
    assert d["study_instance_uid"] == example["study_uid"]
    rows = {s["series_instance_uid"]: s for s in d["series"]}
    for s in d["series"]:
        assert set(s) == KEYS
    ax, sag, scout = (
        rows[example["axial_uid"]],
        rows[example["sagittal_uid"]],
        rows[example["scout_uid"]],
    )
    assert (ax["role"], ax["plane"], ax["n_blocks"], ax["n_slices"]) == ("axial_t2", "axial", 3, 12)
    assert ax["pixel_spacing_mm"] == [1.0, 1.0] and ax["slice_thickness_mm"] == 4.0
    assert (ax["rows"], ax["columns"]) == (32, 32)
    assert (sag["role"], sag["plane"], sag["n_blocks"], sag["n_slices"]) == (
        "sagittal_t2",
        "sagittal",
        1,
        9,
    )
    assert sag["pixel_spacing_mm"] == pytest.approx([0.8, 0.8]) and sag["slice_thickness_mm"] == 3.0
    assert scout["role"] is None and scout["n_slices"] == 1
    assert len(d["warnings"]) == 1 and "notes.txt" in d["warnings"][0]


def test_inspect_table_and_rules(example, tmp_path, capsys):
    assert main(["inspect", str(example["root"])]) == 0
    out = capsys.readouterr().out
    assert "AX T2 TSE" in out and "axial_t2" in out and "sagittal_t2" in out and "notes.txt" in out
    rules = tmp_path / "r.json"
    rules.write_text(json.dumps({"roles": {"sagittal_t2": None}}))
    assert main(["inspect", str(example["root"]), "--json", "--rules", str(rules)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert sorted(str(s["role"]) for s in d["series"]) == ["None", "None", "axial_t2"]


def test_inspect_nifti_fixture(capsys):
    from pathlib import Path

    p = Path(__file__).parent / "fixtures" / "nifti" / "t2_lumbar.nii.gz"
    assert main(["inspect", str(p), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["series"][0]["plane"] == "sagittal" and d["series"][0]["n_slices"] == 38


def _bad_inputs(tmp_path):
    """name -> (path, text that the error line must contain)."""
    cases = {}
    p = tmp_path / "empty"
    p.mkdir()
    cases["empty folder"] = (p, "empty folder")
    p = tmp_path / "nodicom"
    p.mkdir()
    (p / "a.txt").write_text("hello\n" * 50)
    (p / "b.csv").write_text("1,2,3\n")
    cases["no dicom"] = (p, "no readable DICOM images")
    p = tmp_path / "notimage.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    cases["not an image"] = (p, "not a DICOM")
    for tag in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        p = tmp_path / f"no_{tag}"
        write_series(p, axial_block(n=3), description="AX T2", omit=(tag,))
        cases[f"missing {tag}"] = (p, tag)
    p = tmp_path / "sizes"
    uid, st = new_uid(), new_uid()
    write_series(p / "a", axial_block(n=2, rows=32, columns=32), study_uid=st, series_uid=uid)
    write_series(
        p / "b", axial_block((0, 0, 30), n=2, rows=20, columns=24), study_uid=st, series_uid=uid
    )
    cases["different sizes"] = (p, "different sizes")
    p = tmp_path / "truncated"
    f = write_dataset(
        make_dataset(axial_block(n=1)[0], study_uid=st, series_uid=new_uid()), p / "IM1"
    )
    f.write_bytes(f.read_bytes()[:-500])
    cases["truncated folder"] = (p, "truncated")
    cases["truncated file"] = (f, "truncated")
    cases["nonexistent"] = (tmp_path / "does" / "not" / "exist", "no such file")
    p = tmp_path / "corrupt.zip"
    p.write_bytes(b"PK\x03\x04" + bytes(100))
    cases["corrupt zip"] = (p, "zip")
    p = tmp_path / "sag_nothing.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("readme.txt", "no images here")
    cases["zip without dicom"] = (p, "no readable DICOM images")
    p = tmp_path / "broken.nii"
    p.write_bytes(bytes(100))
    cases["broken nifti"] = (p, "NIfTI")
    return cases


def test_bad_inputs_exit_2_one_line(tmp_path, capsys):
    for name, (path, text) in _bad_inputs(tmp_path).items():
        code = main(["inspect", str(path), "--json"])
        cap = capsys.readouterr()
        assert code == 2, name
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1, (name, cap.err)
        assert lines[0].startswith("lumbargrade: error: "), name
        assert text in lines[0], (name, lines[0])
        assert "Traceback" not in cap.err and cap.out == "", name
        if name.startswith("missing") or name == "different sizes":
            desc = "AX T2" if name.startswith("missing") else "T2 TSE"
            assert f"series '{desc}'" in lines[0], (name, lines[0])
        else:
            assert path.name in lines[0], (name, lines[0])


def test_bad_rules_file_exit_2(example, tmp_path, capsys):
    r = tmp_path / "rules.json"
    r.write_text("[1, 2")
    assert main(["inspect", str(example["root"]), "--rules", str(r)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rules.json" in err[0]


def test_console_script_subprocess(example, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "lumbargrade")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "lumbargrade"]
    r = subprocess.run(
        cmd + ["inspect", str(example["root"]), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert sorted(str(s["role"]) for s in d["series"]) == ["None", "axial_t2", "sagittal_t2"]
    r = subprocess.run(
        cmd + ["inspect", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "no such file" in r.stderr and "Traceback" not in r.stderr


def test_inspect_module_import_is_light():
    code = (
        "import sys, lumbargrade.commands.inspect as m, argparse; "
        "p = argparse.ArgumentParser(); m.register(p.add_subparsers()); "
        "print(sorted(k for k in ('pydicom', 'nibabel', 'torch', 'numpy') if k in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
