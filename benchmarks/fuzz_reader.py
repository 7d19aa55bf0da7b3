"""Fuzz the study reader: damaged phantom DICOM files, studies, zips and NIfTI files, in-process.

Usage::

    nice -n 10 python benchmarks/fuzz_reader.py --inputs 1000000 --jobs 2   # the long run
    python benchmarks/fuzz_reader.py --inputs 2000 --jobs 1                # a quick look
    python benchmarks/fuzz_reader.py --replay 12345                        # one input again

Every input is made from valid seeds by seeded mutations (input ``i`` of seed ``s`` is always the
same input for the same seeds): byte flips, damaged VRs and lengths, truncation (in the pixel data
too), spliced bytes; re-encoded headers with huge Rows x Columns or NumberOfFrames, negative, zero,
NaN or textual spacing, NaN / zero / non-orthogonal orientation, odd BitsAllocated, other transfer
syntaxes, missing tags, duplicate UIDs; study folders with damaged, duplicated and removed files and
symbolic-link loops; zips with path traversal, compression bombs, lying sizes and damaged bytes;
NIfTI files with damaged headers (dims, pixdim, datatype, vox_offset, quaternions, magic) or data.

Each input goes through what ``lumbargrade inspect`` runs (``read_study`` + the JSON summary); a
share also through pixel decoding of every slice (``--pixels-share``) and through the whole
``lumbargrade analyze`` on the phantom study with one or two files damaged (bundled model pack,
SEG and SR written; ``--analyze-share``). The outcome
must be success or :class:`lumbargrade.errors.InputError`; anything else is a *finding*: another
exception, more than ``--time-limit`` s of CPU for one input, a worker that makes no progress for
``--stall-s`` s (killed and restarted), or a worker over ``--max-rss-mb``. Findings are saved with
the input under ``--findings`` (default ``benchmarks/results/fuzz_findings/``).

Writes ``benchmarks/results/fuzz_reader.json`` (``--out``): inputs run, rate, outcomes by kind,
the most common refusals, peak resident memory per worker, the machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
KINDS = ("dicom_bytes", "dicom_tags", "study", "zip", "nifti")
WEIGHTS = (0.45, 0.17, 0.10, 0.10, 0.18)
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
        b"OD", b"OF", b"OL", b"OW", b"OV", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
        b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}


class _Timeout(BaseException):
    """Raised by the CPU-time alarm: not an Exception, so no reader code can swallow it."""


# ---------------------------------------------------------------------------------------- seeds
def build_seeds(root: Path) -> dict[str, Any]:
    """Valid inputs the mutations start from: a phantom study (28 DICOM files), a small synthetic
    study (22 files, one series without preamble), a zip of it, and NIfTI volumes."""
    import nibabel as nib

    from lumbargrade.io.testing import write_example_study
    from lumbargrade.phantom.cohort import generate_cohort

    root.mkdir(parents=True, exist_ok=True)
    generate_cohort(root / "cohort", 1, 7, split=(0, 0, 1), progress=False)
    phantom = next((root / "cohort").glob("P*/dicom"))
    write_example_study(root / "synthetic", seed=3, junk=False)
    synthetic = root / "synthetic"
    files = sorted(p for p in synthetic.rglob("*") if p.is_file())
    ph_files = sorted(p for p in phantom.rglob("*") if p.is_file())
    rng = np.random.default_rng(0)
    vol = (rng.random((24, 20, 8)) * 1000).astype(np.int16)
    aff = np.diag([0.8, 0.8, 4.0, 1.0])
    for name in ("vol.nii", "vol.nii.gz"):
        nib.save(nib.Nifti1Image(vol, aff), str(root / name))
    return {
        "phantom": phantom,
        "synthetic": synthetic,
        "dicom_files": [f.read_bytes() for f in files] + [ph_files[0].read_bytes(), ph_files[-1].read_bytes()],
        "study_files": [(f.relative_to(synthetic).as_posix(), f.read_bytes()) for f in files],
        "nifti": [(root / "vol.nii").read_bytes(), (root / "vol.nii.gz").read_bytes()],
        "bomb": make_bomb(),
    }


# ------------------------------------------------------------------------------- byte mutations
def _vr_offsets(b: bytes) -> list[int]:
    """Offsets of explicit-VR element headers (tag + 2-letter VR) in a DICOM byte string."""
    out = []
    for i in range(0, len(b) - 8, 2):
        if b[i + 4:i + 6] in _VRS and struct.unpack_from("<H", b, i)[0] in (2, 8, 0x10, 0x18, 0x20, 0x28, 0x7FE0):
            out.append(i)
        if len(out) > 400:
            break
    return out


def mutate_bytes(b: bytes, rng: np.random.Generator, others: list[bytes]) -> tuple[bytes, str]:
    """1-3 byte-level mutations; returns the bytes and a description."""
    buf = bytearray(b)
    done = []
    for _ in range(int(rng.integers(1, 4))):
        op = rng.choice(["flip", "vr", "length", "truncate", "insert", "delete", "splice", "header"])
        n = len(buf)
        if n < 16:
            op = "insert"
        if op in ("vr", "length"):
            offs = _vr_offsets(bytes(buf[:8192]))
            if not offs:
                op = "flip"
            else:
                i = int(rng.choice(offs))
                if op == "vr":
                    if rng.random() < 0.5:
                        buf[i + 4:i + 6] = bytes(rng.integers(65, 91, 2).tolist())
                    else:
                        buf[i + 4 + int(rng.integers(0, 2))] = int(rng.integers(0, 256))
                else:
                    val = int(rng.choice([0, 1, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, rng.integers(0, 1 << 16)]))
                    if buf[i + 4:i + 6] in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF"):
                        buf[i + 8:i + 12] = struct.pack("<I", val & 0xFFFFFFFF)
                    else:
                        buf[i + 6:i + 8] = struct.pack("<H", val & 0xFFFF)
        if op == "flip":
            for _ in range(int(rng.integers(1, 9))):
                i = int(rng.integers(0, min(n, 4096) if rng.random() < 0.8 else n))
                buf[i] ^= 1 << int(rng.integers(0, 8)) if rng.random() < 0.5 else int(rng.integers(1, 256))
        elif op == "header":
            i = int(rng.integers(0, min(n, 1024)))
            k = int(rng.integers(1, 9))
            buf[i:i + k] = bytes(rng.integers(0, 256, k).tolist())
        elif op == "truncate":
            cut = int(rng.integers(0, n)) if rng.random() < 0.5 else n - int(rng.integers(1, max(2, n // 4)))
            del buf[max(cut, 0):]
        elif op == "insert":
            i = int(rng.integers(0, max(n, 1)))
            buf[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 64))).tolist())
        elif op == "delete":
            i = int(rng.integers(0, n))
            del buf[i:i + int(rng.integers(1, 64))]
        elif op == "splice":
            o = others[int(rng.integers(0, len(others)))]
            i, j = int(rng.integers(0, max(n, 1))), int(rng.integers(0, len(o)))
            k = int(rng.integers(1, 512))
            buf[i:i + k] = o[j:j + k]
        done.append(op)
    return bytes(buf), "+".join(done)


# ---------------------------------------------------------------------------- tag mutations
_TS = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50",
       "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99", "1.2.3.4.5", ""]


def _set_text(ds: Any, keyword: str, values: list[str]) -> None:
    """Set a tag to these strings as written (no validation): a raw element with its own VR."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(tag_for_keyword(keyword))
    raw = "\\".join(values).encode("latin-1")
    if len(raw) % 2:
        raw += b" "
    ds._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, False, True)


def mutate_tags(b: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Re-encode a DICOM file with one or two damaged tags (a pydicom round trip)."""
    import pydicom
    from pydicom.dataelem import RawDataElement

    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    ds = pydicom.dcmread(io.BytesIO(b), force=True)
    done = []
    for _ in range(int(rng.integers(1, 3))):
        op = str(rng.choice(["rows", "frames", "spacing", "orientation", "position", "bits", "ts",
                             "drop", "vr", "thickness", "photometric", "uid", "seq"]))
        if op == "rows":
            ds.Rows = int(rng.choice([0, 1, 65535, 40000]))
            ds.Columns = int(rng.choice([0, 1, 65535, 40000, ds.Columns]))
        elif op == "frames":
            _set_text(ds, "NumberOfFrames", [str(rng.choice(["0", "-3", "1000000000", "2", "x"]))])
        elif op == "spacing":
            _set_text(ds, "PixelSpacing", [str(rng.choice(["-0.5", "0", "nan", "inf", "1e308", "abc", "1"])),
                                           str(rng.choice(["0.8", "-1", "NaN"]))][: int(rng.integers(1, 3))])
        elif op == "orientation":
            opts = [[np.nan, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0], [1, 0, 0, 0, 1],
                    [1e308, 0, 0, 0, 1e308, 0], [1, 0, 0, 0, np.inf, 0]]
            _set_text(ds, "ImageOrientationPatient", [str(v) for v in opts[int(rng.integers(0, len(opts)))]])
        elif op == "position":
            opts = [[np.nan, 0, 0], [1e300, 1e300, 1e300], [0, 0], [-np.inf, 1, 2]]
            _set_text(ds, "ImagePositionPatient", [str(v) for v in opts[int(rng.integers(0, len(opts)))]])
        elif op == "bits":
            ds.BitsAllocated = int(rng.choice([0, 1, 3, 8, 12, 32, 64, 255]))
        elif op == "ts":
            ds.file_meta.TransferSyntaxUID = str(rng.choice(_TS))
        elif op == "drop":
            tags = list(ds.keys())
            del ds[tags[int(rng.integers(0, len(tags)))]]
        elif op == "vr":
            tags = [t for t in ds.keys() if t != 0x7FE00010]
            tag = tags[int(rng.integers(0, len(tags)))]
            value = bytes(rng.integers(0, 256, 2 * int(rng.integers(0, 6))).tolist())
            vr = str(rng.choice(["UN", "OB", "SQ", "US", "FD", "AT", "DS", "UI"]))
            ds._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)  # tag: a BaseTag
        elif op == "thickness":
            _set_text(ds, "SliceThickness", [str(rng.choice(["-4", "nan", "0", "1e400", "x"]))])
        elif op == "photometric":
            ds.PhotometricInterpretation = str(rng.choice(["RGB", "PALETTE COLOR", "YBR_FULL_422", "XYZ"]))
            ds.SamplesPerPixel = int(rng.choice([1, 3, 0]))
        elif op == "uid":
            ds.SeriesInstanceUID = str(rng.choice(["", "1.2.3", ds.StudyInstanceUID]))
        elif op == "seq":
            from pydicom.dataset import Dataset
            from pydicom.sequence import Sequence

            item = Dataset()
            _set_text(item, "PixelSpacing", ["nan", "1"])
            _set_text(item, "ImageOrientationPatient", ["0"] * 6)
            ds.SharedFunctionalGroupsSequence = Sequence([Dataset()])
            ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence = Sequence([item])
            _set_text(ds, "NumberOfFrames", ["2"])
        done.append(op)
    out = io.BytesIO()
    implicit = ds.file_meta.get("TransferSyntaxUID", "") == "1.2.840.10008.1.2"
    big = ds.file_meta.get("TransferSyntaxUID", "") == "1.2.840.10008.1.2.2"
    try:
        ds.save_as(out, implicit_vr=implicit, little_endian=not big)
    except Exception:
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        try:
            ds.save_as(out, implicit_vr=False, little_endian=True)
        except Exception:  # pydicom cannot write it: fall back to bytes damage
            return mutate_bytes(b, rng, [b])[0], "tags-unwritable+bytes"
    return out.getvalue(), "+".join(done)


# ----------------------------------------------------------------------------- NIfTI mutations
_NII_FIELDS = {  # name: (offset, struct format) in a NIfTI-1 header
    "sizeof_hdr": (0, "<i"), "dim": (40, "<8h"), "datatype": (70, "<h"), "bitpix": (72, "<h"),
    "pixdim": (76, "<8f"), "vox_offset": (108, "<f"), "scl_slope": (112, "<f"), "qform_code": (252, "<h"),
    "sform_code": (254, "<h"), "quatern": (256, "<6f"), "srow": (280, "<12f"), "magic": (344, "4s"),
}


def mutate_nifti(b: bytes, gz: bool, rng: np.random.Generator) -> tuple[bytes, str]:
    import gzip

    raw = bytearray(gzip.decompress(b) if gz else b)
    done = []
    for _ in range(int(rng.integers(1, 3))):
        name = str(rng.choice(list(_NII_FIELDS) + ["bytes", "truncate"]))
        if name == "bytes":
            raw = bytearray(mutate_bytes(bytes(raw), rng, [bytes(raw)])[0])
        elif name == "truncate":
            del raw[int(rng.integers(0, len(raw))):]
        else:
            off, fmt = _NII_FIELDS[name]
            if len(raw) < off + struct.calcsize(fmt):
                continue
            vals = list(struct.unpack_from(fmt, raw, off))
            if name == "magic":
                vals = [bytes(rng.integers(0, 256, 4).tolist())]
            else:
                k = int(rng.integers(0, len(vals)))
                if fmt.endswith("f"):
                    vals[k] = float(rng.choice([np.nan, -np.inf, np.inf, -1.0, 0.0, 1e30, -3.5]))
                else:
                    vals[k] = int(rng.choice([0, -1, 1, 7, 8, 32767, -32768, 3]))
            struct.pack_into(fmt, raw, off, *vals)
        done.append(name)
    data = bytes(raw)
    if gz:
        data = gzip.compress(data, compresslevel=1)
        if rng.random() < 0.2:
            data = mutate_bytes(data, rng, [data])[0]
            done.append("gzbytes")
    return data, "+".join(done)


# ----------------------------------------------------------------------------- zip mutations
def make_bomb() -> bytes:
    """A zip whose one member inflates 1000 : 1 to 256 MiB of zeros (about 260 kB)."""
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("IM0000.dcm", "w", force_zip64=True) as f:
        block = bytes(1 << 20)
        for _ in range(256):
            f.write(block)
    return bio.getvalue()


def make_zip(files: list[tuple[str, bytes]], rng: np.random.Generator, bomb: bytes = b"") -> tuple[bytes, str]:
    op = str(rng.choice(["traversal", "bomb", "bomb_declared", "bytes", "dupe", "plain"]))
    bio = io.BytesIO(bomb if op == "bomb" and bomb else b"")
    with zipfile.ZipFile(bio, "a" if op == "bomb" and bomb else "w", zipfile.ZIP_DEFLATED) as zf:
        for k, (name, data) in enumerate(files):
            if op == "traversal" and k % 3 == 0:
                name = str(rng.choice(["../../evil/", "/abs/", "C:/win/", "a/../../"])) + name
            zf.writestr(name, data)
            if op == "dupe" and k % 4 == 0:
                zf.writestr(name, data)
        if op == "bomb" and not bomb:
            zf.writestr("zeros.dcm", bytes(int(rng.integers(2, 12)) << 20))
    data = bio.getvalue()
    if op == "bomb_declared":  # the central directory claims a huge uncompressed size
        buf = bytearray(data)
        i = buf.rfind(b"PK\x01\x02")
        struct.pack_into("<I", buf, i + 24, 0xFFFFFFF0)
        data = bytes(buf)
    elif op == "bytes":
        data = mutate_bytes(data, rng, [data])[0]
    return data, op


# ----------------------------------------------------------------------------- one input
def make_input(index: int, seed: int, seeds: dict, scratch: Path) -> tuple[Path, str, str]:
    """Write input ``index`` under ``scratch``; returns ``(path, kind, description)``."""
    rng = np.random.default_rng([seed, index])
    kind = str(rng.choice(KINDS, p=WEIGHTS))
    files = seeds["dicom_files"]
    if kind == "dicom_bytes":
        b, desc = mutate_bytes(files[int(rng.integers(0, len(files)))], rng, files)
        p = scratch / "in.dcm"
        p.write_bytes(b)
    elif kind == "dicom_tags":
        b, desc = mutate_tags(files[int(rng.integers(0, len(files)))], rng)
        if rng.random() < 0.3:
            b, d2 = mutate_bytes(b, rng, files)
            desc += "/" + d2
        p = scratch / "in.dcm"
        p.write_bytes(b)
    elif kind == "study":
        p = scratch / "study"
        sf = seeds["study_files"]
        ops = []
        for k, (name, data) in enumerate(sf):
            r = rng.random()
            if r < 0.06:
                ops.append("remove")
                continue
            if r < 0.18:
                data, d = mutate_bytes(data, rng, files) if rng.random() < 0.6 else mutate_tags(data, rng)
                ops.append(d)
            (p / name).parent.mkdir(parents=True, exist_ok=True)
            (p / name).write_bytes(data)
            if r > 0.95:
                (p / (name + ".copy")).write_bytes(data)  # same SOPInstanceUID twice
                ops.append("duplicate")
        if rng.random() < 0.3:
            (p / "loop_a").symlink_to("loop_b")
            (p / "loop_b").symlink_to("loop_a")
            (p / "series_a" / "up").symlink_to("..", target_is_directory=True)
            (p / "self").symlink_to("self")
            ops.append("symlink-loops")
        desc = "+".join(ops) or "unchanged"
    elif kind == "zip":
        sf = list(seeds["study_files"])
        if rng.random() < 0.5:
            k = int(rng.integers(0, len(sf)))
            sf[k] = (sf[k][0], mutate_bytes(sf[k][1], rng, files)[0])
        b, desc = make_zip(sf, rng, seeds.get("bomb", b""))
        p = scratch / "in.zip"
        p.write_bytes(b)
    else:
        gz = bool(rng.random() < 0.5)
        b, desc = mutate_nifti(seeds["nifti"][int(gz)], gz, rng)
        p = scratch / ("in.nii.gz" if gz else "in.nii")
        p.write_bytes(b)
    return p, kind, desc


def run_input(path: Path, pixels: bool, analyze: Any = None) -> str:
    """What ``inspect`` runs, then optionally every slice's pixels and ``analyze``; returns
    ``'ok'`` or the InputError's line. Any other exception propagates (a finding)."""
    from lumbargrade.errors import InputError
    from lumbargrade.io import read_study

    try:
        study = read_study(path)
        try:
            text = json.dumps(study.to_dict())
            assert text
            if pixels:
                for s in study.series:
                    for b in s.blocks:
                        b.volume()
        finally:
            study.close()
        if analyze is not None:
            analyze(path)
        return "ok"
    except InputError as e:
        line = e.one_line()
        if "\n" in line or not line:
            raise AssertionError(f"InputError is not one line: {line!r}") from None
        return line


def _analyzer(work: Path):
    """``analyze`` in-process with the bundled pack (SEG and SR written, no HTML helper)."""
    from lumbargrade.analysis_runner import analyze_one
    from lumbargrade.modelpack import load_pack
    from lumbargrade.pipeline import AnalysisConfig

    pack = load_pack(None)
    config = AnalysisConfig()

    def run(path: Path) -> None:
        out = work / "analyze-out"
        shutil.rmtree(out, ignore_errors=True)
        analyze_one(path, out, pack, config, overwrite=True, outputs=("seg", "sr"))
        shutil.rmtree(out, ignore_errors=True)

    return run


def _phantom_input(index: int, seed: int, seeds: dict, scratch: Path) -> tuple[Path, str]:
    """For the analyze share: the phantom study with one or two files damaged."""
    rng = np.random.default_rng([seed, index, 1])
    p = scratch / "phantom"
    shutil.copytree(seeds["phantom"], p)
    files = sorted(f for f in p.rglob("*") if f.is_file())
    ops = []
    for _ in range(int(rng.integers(1, 3))):
        f = files[int(rng.integers(0, len(files)))]
        b = f.read_bytes()
        if rng.random() < 0.5:
            b, d = mutate_bytes(b, rng, [b])
        else:
            b, d = mutate_tags(b, rng)
        f.write_bytes(b)
        ops.append(f"{f.name}:{d}")
    return p, "+".join(ops)


# ----------------------------------------------------------------------------- workers
def _worker(wid: int, jobs: int, start: int, stop_at: int, seed: int, seeds: dict, opts: dict,
            progress: Any, result_dir: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    scratch_root = Path(tempfile.mkdtemp(prefix=f"lgfuzz-w{wid}-", dir=opts["scratch"]))
    analyze = None
    stats: dict[str, Any] = {"outcomes": {}, "refusals": {}, "findings": [], "max_wall_s": 0.0,
                             "max_cpu_s": 0.0, "over_10s_wall": 0, "n": 0, "analyzed": 0, "pixels": 0}

    def on_alarm(signum, frame):
        raise _Timeout()

    stop = []
    signal.signal(signal.SIGPROF, on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
    import warnings

    warnings.simplefilter("ignore")  # pydicom / zipfile warnings: only exceptions matter here
    stats_path = result_dir / f"worker{wid}-{start}.json"
    last_dump = time.time()
    for index in range(start, stop_at, jobs):
        if stop:
            break
        progress[wid * 2] = index
        scratch = scratch_root / "in"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        rng = np.random.default_rng([seed, index, 2])
        do_analyze = rng.random() < opts["analyze_share"]
        do_pixels = rng.random() < opts["pixels_share"]
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            if do_analyze:
                if analyze is None:
                    analyze = _analyzer(scratch_root)
                path, desc = _phantom_input(index, seed, seeds, scratch)
                kind = "phantom_analyze"
            else:
                path, kind, desc = make_input(index, seed, seeds, scratch)
        except Exception as e:  # a mutation that could not be built: not the reader's fault
            k = f"harness_error/{type(e).__name__}"
            stats["outcomes"][k] = stats["outcomes"].get(k, 0) + 1
            stats["n"] += 1
            progress[wid * 2 + 1] = stats["n"]
            continue
        try:
            signal.setitimer(signal.ITIMER_PROF, opts["time_limit"])
            try:
                outcome = run_input(path, do_pixels or do_analyze, analyze if do_analyze else None)
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
            status = "ok" if outcome == "ok" else "input_error"
            if status == "input_error":
                key = _refusal_key(outcome)
                stats["refusals"][key] = stats["refusals"].get(key, 0) + 1
        except _Timeout:
            status = "hang"
            _save_finding(result_dir, index, kind, desc, "hang", "CPU time limit", scratch, stats)
        except Exception as e:  # the findings this harness exists for
            status = "finding"
            _save_finding(result_dir, index, kind, desc, type(e).__name__, traceback.format_exc(),
                          scratch, stats)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        stats["max_wall_s"] = max(stats["max_wall_s"], wall)
        stats["max_cpu_s"] = max(stats["max_cpu_s"], cpu)
        stats["over_10s_wall"] += wall > 10
        k = f"{kind}/{status}"
        stats["outcomes"][k] = stats["outcomes"].get(k, 0) + 1
        stats["n"] += 1
        stats["analyzed"] += do_analyze
        stats["pixels"] += do_pixels
        progress[wid * 2 + 1] = stats["n"]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if rss > opts["max_rss_mb"]:
            _save_finding(result_dir, index, kind, desc, "memory", f"peak RSS {rss:.0f} MB", scratch, stats)
        if time.time() - last_dump > 10:
            _dump(stats_path, stats)
            last_dump = time.time()
    stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _dump(stats_path, stats)
    shutil.rmtree(scratch_root, ignore_errors=True)


def _refusal_key(line: str) -> str:
    """A refusal message without its file name and numbers, to count kinds of refusal."""
    import re

    text = line.split(": ", 1)[-1] if ": " in line else line
    text = re.sub(r"\(.*", "", text)
    text = re.sub(r"[0-9]+", "N", text)
    return text.strip()[:70]


def _dump(path: Path, stats: dict) -> None:
    stats = dict(stats, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats))
    tmp.replace(path)


def _save_finding(result_dir: Path, index: int, kind: str, desc: str, what: str, detail: str,
                  scratch: Path, stats: dict) -> None:
    stats["findings"].append({"index": index, "kind": kind, "mutation": desc, "what": what,
                              "detail": detail.strip().splitlines()[-1][:300]})
    dest = result_dir / "findings" / f"{index:08d}-{kind}-{what}"
    if len(stats["findings"]) <= 200:
        shutil.copytree(scratch, dest / "input", symlinks=True, dirs_exist_ok=True)
        (dest / "traceback.txt").write_text(f"{kind} {desc}\n{detail}\n")


def run(n: int, jobs: int, seed: int, opts: dict, out_dir: Path, start: int = 0) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    seeds_dir = Path(tempfile.mkdtemp(prefix="lgfuzz-seeds-", dir=opts["scratch"]))
    seeds = build_seeds(seeds_dir)
    run_dir = out_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    progress = ctx.Array("q", 2 * jobs, lock=False)
    t0 = time.time()
    procs: dict[int, Any] = {}
    restarts: list[dict] = []
    for w in range(jobs):
        progress[2 * w] = start + w
        procs[w] = ctx.Process(target=_worker, args=(w, jobs, start + w, start + n, seed, seeds, opts, progress, run_dir))
        procs[w].start()
    last = {w: (-1, 0) for w in procs}
    stopping: list[int] = []

    def on_stop(signum, frame):  # SIGINT / SIGTERM: workers finish their input, stats are kept
        stopping.append(signum)
        for p in procs.values():
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    while any(p.is_alive() for p in procs.values()):
        time.sleep(1.0)
        if stopping:
            continue
        for w, p in list(procs.items()):
            if not p.is_alive():
                continue
            cur = progress[2 * w]
            seen, polls = last[w]
            polls = polls + 1 if cur == seen else 0
            last[w] = (cur, polls)
            if polls >= opts["stall_s"]:  # counted in polls, so a paused run is no stall
                p.kill()
                p.join()
                restarts.append({"index": int(cur), "what": "stall (no progress)", "worker": w})
                procs[w] = ctx.Process(target=_worker, args=(w, jobs, int(cur) + jobs, start + n, seed, seeds, opts, progress, run_dir))
                procs[w].start()
                last[w] = (-1, 0)
        done = sum(progress[2 * w + 1] for w in procs)
        if opts["verbose"]:
            print(f"\r{done} inputs, {done / max(time.time() - t0, 1e-9):.0f}/s", end="", file=sys.stderr)
    elapsed = time.time() - t0
    shutil.rmtree(seeds_dir, ignore_errors=True)
    res = _summary(run_dir, restarts, elapsed, n, jobs, seed, opts)
    res["stopped_early"] = bool(stopping)
    return res


def _summary(run_dir: Path, restarts: list, elapsed: float, n: int, jobs: int, seed: int, opts: dict) -> dict:
    outcomes: dict[str, int] = {}
    refusals: dict[str, int] = {}
    findings: list = []
    total = analyzed = pixels = over10 = 0
    peak = max_wall = max_cpu = 0.0
    for f in sorted(run_dir.glob("worker*.json")):
        s = json.loads(f.read_text())
        total += s["n"]
        analyzed += s["analyzed"]
        pixels += s["pixels"]
        over10 += s["over_10s_wall"]
        peak = max(peak, s["peak_rss_mb"])
        max_wall, max_cpu = max(max_wall, s["max_wall_s"]), max(max_cpu, s["max_cpu_s"])
        findings += s["findings"]
        for k, v in s["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
        for k, v in s["refusals"].items():
            refusals[k] = refusals.get(k, 0) + v
    return {
        "inputs_requested": n, "inputs_run": total, "jobs": jobs, "seed": seed,
        "elapsed_s": round(elapsed, 1), "inputs_per_s": round(total / max(elapsed, 1e-9), 1),
        "through_pixels": pixels, "through_analyze": analyzed,
        "uncaught_exceptions": sum(1 for f in findings if f["what"] not in ("hang", "memory")),
        "hangs_cpu_limit": sum(1 for f in findings if f["what"] == "hang"),
        "stalls_killed": len(restarts), "inputs_over_10s_wall": over10,
        "memory_findings": sum(1 for f in findings if f["what"] == "memory"),
        "max_input_wall_s": round(max_wall, 2), "max_input_cpu_s": round(max_cpu, 2),
        "peak_rss_mb_per_worker": round(peak, 1), "limits": opts,
        "outcomes": dict(sorted(outcomes.items())),
        "refusals_top": dict(sorted(refusals.items(), key=lambda kv: -kv[1])[:25]),
        "findings": findings[:200], "stalls": restarts,
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _machine() -> dict:
    import platform

    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(), "loadavg_at_end": os.getloadavg()}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            info["cpu_flags_simd"] = sorted(f for f in line.split(":", 1)[1].split()
                                            if f.startswith(("avx", "sse4", "amx", "fma")))
            break
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", type=int, default=10000)
    ap.add_argument("--start", type=int, default=0, help="first input index")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=10.0, help="CPU seconds per input")
    ap.add_argument("--stall-s", type=int, default=600,
                    help="seconds without progress before a worker is killed (wall time: generous on a shared machine)")
    ap.add_argument("--max-rss-mb", type=float, default=2048.0)
    ap.add_argument("--pixels-share", type=float, default=0.25)
    ap.add_argument("--analyze-share", type=float, default=0.0005)
    ap.add_argument("--scratch", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    ap.add_argument("--results", default=str(HERE / "results" / "fuzz"), help="folder for findings and worker stats")
    ap.add_argument("--out", default=str(HERE / "results" / "fuzz_reader.json"))
    ap.add_argument("--replay", type=int, help="run one input index and print its outcome")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    opts = {"time_limit": a.time_limit, "stall_s": a.stall_s, "max_rss_mb": a.max_rss_mb,
            "pixels_share": a.pixels_share, "analyze_share": a.analyze_share, "scratch": a.scratch,
            "verbose": not a.quiet}
    if a.replay is not None:
        work = Path(tempfile.mkdtemp(prefix="lgfuzz-replay-", dir=a.scratch))
        seeds = build_seeds(work / "seeds")
        (work / "in").mkdir()
        path, kind, desc = make_input(a.replay, a.seed, seeds, work / "in")
        print(f"input {a.replay}: {kind} {desc} at {path}")
        print(run_input(path, True))
        return 0
    res = run(a.inputs, a.jobs, a.seed, opts, Path(a.results), a.start)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"\n{res['inputs_run']} inputs in {res['elapsed_s']:.0f} s ({res['inputs_per_s']} / s); "
          f"{res['uncaught_exceptions']} uncaught exceptions, {res['hangs_cpu_limit']} over the CPU limit, "
          f"{res['stalls_killed']} stalls, {res['inputs_over_10s_wall']} over 10 s wall; peak RSS "
          f"{res['peak_rss_mb_per_worker']} MB per worker; {a.out}")
    return 0 if res["uncaught_exceptions"] == 0 and res["hangs_cpu_limit"] == 0 and not res["stalls"] else 1


if __name__ == "__main__":
    sys.exit(main())
