"""Malformed input: every damaged file gives success or the one-line InputError, never a traceback.

The corpus in tests/fixtures/malformed/ (made by its make_fixtures.py) holds one small file per kind
of damage that the fuzzer (benchmarks/fuzz_reader.py) produces; several of them made the reader
raise another exception, hang or allocate without bound before it was hardened. A short fuzz run
through hypothesis checks the same property on freshly mutated inputs.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from lumbargrade.cli import main
from lumbargrade.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fixtures" / "malformed"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())


def _limit_module(name: str):
    from lumbargrade.io import dicom, study

    return {"MAX_INFLATED_BYTES": dicom, "MAX_ZIP_BYTES": study}[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_inspect_gives_one_line_or_success(name, capsys, monkeypatch):
    exp = EXPECTED[name]
    if "limit" in exp:  # a bomb kept small in the repository: lower the limit it must trip
        monkeypatch.setattr(_limit_module(exp["limit"]), exp["limit"], 1 << 20)
    code = main(["inspect", str(CORPUS / name)])
    out, err = capsys.readouterr()
    assert code == exp["exit"], (out, err)
    if exp["exit"] == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lumbargrade: error: "), err
        assert exp["stderr"] in lines[0]
        assert name in lines[0] or "series" in lines[0]  # names the file (or its series)
    else:
        assert exp["stdout"] in out
    if exp.get("pixels"):  # what analyze reads next
        from lumbargrade.io import read_study

        for s in read_study(CORPUS / name).series:
            for b in s.blocks:
                assert b.volume().array.shape[1:] == (32, 32)


def test_corpus_files_are_small():
    sizes = {p.name: p.stat().st_size for p in CORPUS.iterdir() if p.name in EXPECTED}
    assert set(sizes) == set(EXPECTED)
    assert max(sizes.values()) < 100_000


def test_unknown_vr_in_a_study_folder_keeps_the_study(tmp_path):
    """The reported bug: a header byte that makes a VR unknown no longer stops `inspect`."""
    from lumbargrade.io import read_study
    from lumbargrade.io.testing import write_example_study

    info = write_example_study(tmp_path / "s", seed=2, junk=False)
    victim = sorted((tmp_path / "s" / "series_a").iterdir())[0]
    b = victim.read_bytes()
    i = b.index(b"\x20\x00\x13\x00IS", 132)  # InstanceNumber, explicit VR
    victim.write_bytes(b[: i + 4] + b"Ih" + b[i + 6:])
    s = read_study(tmp_path / "s")
    assert s.find("axial_t2").n_slices == 12
    assert any("undecodable element(s) (0020,0013)" in w for w in s.warnings)
    assert s.study_instance_uid == info["study_uid"]


def test_symlink_loops_are_skipped(tmp_path, capsys):
    from lumbargrade.io.testing import write_example_study

    root = tmp_path / "s"
    write_example_study(root, seed=4, junk=False)
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    (root / "self").symlink_to("self")
    (root / "series_a" / "up").symlink_to("..", target_is_directory=True)
    assert main(["inspect", str(root), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert sorted(s["n_slices"] for s in d["series"]) == [1, 9, 12]  # nothing read twice
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert main(["inspect", str(loop)]) == 2
    assert "symbolic link to nothing (broken or a loop)" in capsys.readouterr().err


def test_analyze_refuses_a_malformed_study_with_one_line(tmp_path, capsys):
    code = main(["analyze", str(CORPUS / "unknown_vr_rows.dcm"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "undecodable element (0028,0010)" in err[0]


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz_reader", ROOT / "benchmarks" / "fuzz_reader.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    mod = _fuzz_module()
    return mod, mod.build_seeds(tmp_path_factory.mktemp("seeds"))


def test_fuzzed_inputs_end_in_success_or_input_error(fuzz, tmp_path):
    """Hypothesis picks input indices of the fuzzer (each a seeded mutation of a phantom or
    synthetic DICOM file, study, zip or NIfTI); every one must read, decode or fail as InputError."""
    import shutil

    from hypothesis import HealthCheck, given, settings, strategies as st

    mod, seeds = fuzz

    @settings(max_examples=int(os.environ.get("LUMBARGRADE_FUZZ_EXAMPLES", "40")), deadline=None,
              suppress_health_check=list(HealthCheck), database=None)
    @given(st.integers(min_value=0, max_value=2**40))
    def check(index):
        work = tmp_path / "in"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        path, kind, desc = mod.make_input(index, 0, seeds, work)
        try:
            mod.run_input(path, pixels=True)
        except InputError:  # pragma: no cover - run_input returns InputError lines itself
            raise AssertionError("InputError escaped run_input") from None

    check()


def _raw_ds(ds, tag: int, value: bytes) -> None:
    """Put ``value`` into ``ds`` as the raw bytes of a DS element, unvalidated (as a damaged file holds it)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    value = value + b" " * (len(value) % 2)
    ds[Tag(tag)] = RawDataElement(Tag(tag), "DS", len(value), value, 0, False, True)


def _damaged_copy(phantom_patient, tmp_path, damage) -> Path:
    """A copy of the phantom study whose axial slices get ``damage(ds)``."""
    import shutil

    import pydicom

    study = tmp_path / "study"
    shutil.copytree(phantom_patient / "dicom", study)
    for f in sorted((study / "ax_t2").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        damage(ds)
        ds.save_as(f)
    return study


def test_damaged_optional_headers_do_not_stop_the_seg_and_sr(phantom_patient, tmp_path, capsys):
    """Found by the fuzzer: a PatientSex outside M/F/O, a SpacingBetweenSlices that is not a number
    or a StudyDate that is not a date made highdicom fail while writing the SEG; such values are
    unknown, and the outputs are written without them."""
    def damage(ds):
        ds.PatientSex = "X9"
        _raw_ds(ds, 0x00180088, b"abc")  # SpacingBetweenSlices
        ds.StudyDate = "tomorrow"

    study = _damaged_copy(phantom_patient, tmp_path, damage)
    assert main(["analyze", str(study), "--out", str(tmp_path / "o"), "--outputs", "seg,sr"]) == 0, capsys.readouterr().err
    assert list((tmp_path / "o").glob("seg*.dcm")) and (tmp_path / "o" / "sr.dcm").is_file()


@pytest.mark.parametrize("keyword, message", [("StudyInstanceUID", "StudyInstanceUID is missing"),
                                              ("SliceThickness", "SliceThickness is not a number")])
def test_a_source_slice_the_seg_cannot_reference_is_named(phantom_patient, tmp_path, capsys, keyword, message):
    def damage(ds):
        if keyword == "StudyInstanceUID":
            del ds.StudyInstanceUID
        else:
            _raw_ds(ds, 0x00180050, b"x")  # SliceThickness

    study = _damaged_copy(phantom_patient, tmp_path, damage)
    code = main(["analyze", str(study), "--out", str(tmp_path / "o"), "--outputs", "seg,sr"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert message in err[0] and "ax_t2" in err[0] and ".dcm" in err[0]
